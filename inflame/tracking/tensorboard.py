"""TensorBoard event files from the metrics a run logs: one scalar per number, step = epoch."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

TENSORBOARD_DIR = "tensorboard"
# Vertex AI sets it when a job is tied to a Vertex TensorBoard instance
VERTEX_LOG_DIR_ENV = "AIP_TENSORBOARD_LOG_DIR"
_NOT_SCALARS = frozenset({"epoch", "step", "seconds"})


def log_dir(run_dir: Path, env: Mapping[str, str] | None = None) -> str:
    """Where the event files go: the platform's TensorBoard folder inside a Vertex job tied
    to a TensorBoard instance (through /gcs), else RUN/tensorboard (collected with the run)."""
    env = os.environ if env is None else env
    given = env.get(VERTEX_LOG_DIR_ENV)
    if not given:
        return str(run_dir / TENSORBOARD_DIR)
    # a gs:// URI: written through the job's Cloud Storage FUSE mount (/gcs/BUCKET/...)
    return f"/gcs/{given[len('gs://') :]}" if given.startswith("gs://") else given


def tag(name: str) -> str:
    """`train_loss` -> `loss/train`, `val_accuracy` -> `accuracy/val`: TensorBoard groups a
    split's curves under one chart; other names stay as logged."""
    split, _, kind = name.partition("_")
    if split in ("train", "val", "test") and kind:
        return f"{kind}/{split}"
    return name


class TensorBoardLog:
    """A metrics sink writing TensorBoard scalars. The first record this process logs sets
    `purge_step`: on a resume, TensorBoard drops the epochs the killed process logged after
    its last checkpoint, as metrics.jsonl does."""

    name = "tensorboard"

    def __init__(self, logdir: str, last_step: int = 0):
        self.logdir = logdir
        self._writer: Any = None
        self._step = last_step

    def __call__(self, record: Mapping[str, Any]) -> None:
        epoch = record.get("epoch", record.get("step"))
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(self.logdir, purge_step=epoch)
        step = epoch if isinstance(epoch, int) else self._step  # a test score: the last epoch
        for key, value in record.items():
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if number and key not in _NOT_SCALARS:
                self._writer.add_scalar(tag(key), value, step)
        self._writer.flush()
        self._step = step

    def describe(self) -> dict[str, Any]:
        return {"log_dir": self.logdir}

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def replay(records: list[Mapping[str, Any]], logdir: str) -> int:
    """Write a run's whole metrics history as new event files in `logdir` (the folder is
    emptied first); the number of records written."""
    import shutil

    shutil.rmtree(logdir, ignore_errors=True)
    sink = TensorBoardLog(logdir)
    try:
        for record in records:
            sink(record)
    finally:
        sink.close()
    return len(records)
