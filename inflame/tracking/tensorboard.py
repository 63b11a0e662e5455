"""TensorBoard event files from the metrics a run logs: one scalar per number, step = epoch."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings
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
        self.drawn: list[str] = []  # what `preview` drew: "images", "graph"
        self.not_drawn: str | None = None

    def _open(self, purge_step: int | None) -> Any:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(self.logdir, purge_step=purge_step)
        return self._writer

    def __call__(self, record: Mapping[str, Any]) -> None:
        epoch = record.get("epoch", record.get("step"))
        writer = self._open(epoch)
        step = epoch if isinstance(epoch, int) else self._step  # a test score: the last epoch
        for key, value in record.items():
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if number and key not in _NOT_SCALARS:
                writer.add_scalar(tag(key), value, step)
        writer.flush()
        self._step = step

    def preview(self, model: Any, inputs: Any) -> None:
        """At a run's start (step 0), once: `inputs` as images when they are images (each
        one stretched to the full range: they arrive normalised), and the model's graph,
        traced on one input in eval mode. What cannot be drawn is a warning and is named in
        `describe()`; an event folder that cannot be written raises (the sink is dropped)."""
        import torch

        if self.drawn or self.not_drawn:
            return
        writer = self._open(0)
        missing: list[str] = []
        if inputs is None:
            missing.append("images and graph: the samples are not (tensor, target) pairs")
        elif inputs.ndim == 4 and inputs.shape[1] in (1, 3) and inputs.is_floating_point():
            writer.add_images("samples/train", _stretch(inputs.detach().float().cpu()), 0)
            self.drawn.append("images")
        else:
            missing.append(f"images: the inputs have shape {tuple(inputs.shape[1:])}")
        if inputs is not None:
            try:
                with (
                    torch.no_grad(),
                    warnings.catch_warnings(),
                    contextlib.redirect_stdout(io.StringIO()),  # add_graph prints its errors
                ):
                    warnings.simplefilter("ignore")  # tracing's deprecation and tracer warnings
                    writer.add_graph(model, inputs[:1])  # eval mode while traced, then restored
                self.drawn.append("graph")
            except Exception as exc:  # e.g. a forward that returns a dict, or data-dependent
                reason = (str(exc).strip().splitlines() or [""])[0]
                missing.append(f"graph: {type(exc).__name__}: {reason}".rstrip(": "))
                print(
                    f"warning: TensorBoard shows no model graph: it could not be traced "
                    f"({missing[-1]}); metrics are still logged.",
                    file=sys.stderr,
                )
        self.not_drawn = "; ".join(missing) or None
        writer.flush()

    def describe(self) -> dict[str, Any]:
        found: dict[str, Any] = {"log_dir": self.logdir}
        if self.drawn:
            found["drawn"] = self.drawn
        if self.not_drawn:
            found["not_drawn"] = self.not_drawn
        return found

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _stretch(images: Any) -> Any:
    """Each image scaled to [0, 1] by its own minimum and maximum."""
    flat = images.flatten(1)
    low = flat.min(dim=1).values.view(-1, 1, 1, 1)
    high = flat.max(dim=1).values.view(-1, 1, 1, 1)
    return (images - low) / (high - low).clamp_min(1e-8)


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
