"""Checkpoints without pickle: tensors in safetensors, everything else as JSON metadata.

One file per epoch (`epoch-0003.safetensors`), written to a temporary name, fsynced and
renamed, so a kill at any moment leaves either the old set of checkpoints or the new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from inflame import __version__
from inflame.errors import RunError
from inflame.tensorfile import load_tensors, read_metadata, save_tensors

_NAME_RE = re.compile(r"^epoch-(\d{4,})\.safetensors$")
_META_KEY = "inflame"
CHECKPOINT_FORMAT = 1  # the layout of the metadata and tensor names; raise it on a change


@dataclass
class TrainingState:
    """Everything needed to continue a run exactly where it stopped."""

    epoch: int  # epochs completed
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    best_epoch: int | None = None
    best_score: float | None = None
    best_model: dict[str, torch.Tensor] | None = None  # None: best is this epoch's model
    bad_epochs: int = 0
    stopped_early: bool = False
    scaler: dict[str, Any] | None = None  # the fp16 gradient scaler's state
    history: list[dict[str, Any]] = field(default_factory=list)


def checkpoint_path(folder: Path, epoch: int) -> Path:
    return folder / f"epoch-{epoch:04d}.safetensors"


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    found = []
    for child in folder.iterdir():
        match = _NAME_RE.match(child.name)
        if match:
            found.append((int(match.group(1)), child))
    return sorted(found)


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for pid, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{pid}.{key}"] = value
            else:
                plain.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "state": plain}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for pid, values in meta["state"].items():
        state.setdefault(int(pid), {}).update(values)
    for name, tensor in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = tensor
    return {"state": state, "param_groups": meta["param_groups"]}


def snapshot(state: TrainingState) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Copy `state` into CPU tensors and JSON-ready metadata that training can no longer
    change: the only part of a checkpoint that has to run on the training thread."""
    tensors: dict[str, torch.Tensor] = {f"model.{k}": v for k, v in state.model.items()}
    meta: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "inflame_version": __version__,
        "epoch": state.epoch,
        "best_epoch": state.best_epoch,
        "best_score": state.best_score,
        "bad_epochs": state.bad_epochs,
        "stopped_early": state.stopped_early,
        "history": state.history,
        "scheduler": state.scheduler,
        "has_best_model": state.best_model is not None,
        "scaler": state.scaler,
    }
    if state.best_model is not None:
        tensors.update({f"best.{k}": v for k, v in state.best_model.items()})
    if state.optimizer is not None:
        opt_tensors, meta["optimizer"] = _flatten_optimizer(state.optimizer)
        tensors.update(opt_tensors)
    copied = {k: _cpu_copy(v) for k, v in tensors.items()}
    return copied, json.loads(json.dumps(meta))  # a deep copy, and proof it is JSON


def _cpu_copy(tensor: torch.Tensor) -> torch.Tensor:
    tensor = tensor.detach()
    if tensor.device.type == "cpu":
        return tensor.contiguous().clone()
    return tensor.to("cpu").contiguous()


def write_snapshot(
    folder: Path, epoch: int, tensors: dict[str, torch.Tensor], meta: dict[str, Any], keep: int
) -> Path:
    """Atomically write one checkpoint (temporary name, fsync, rename, fsync the folder),
    then prune all but the last `keep`."""
    folder.mkdir(parents=True, exist_ok=True)
    target = checkpoint_path(folder, epoch)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        save_tensors(tensors, tmp, metadata={_META_KEY: json.dumps(meta)}, digest=True)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(folder)
    for old, path in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        if old != epoch:
            path.unlink(missing_ok=True)
    return target


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete checkpoint temp files a killed writer left (only the folder's one writer may
    call this, before it writes). Returns what was removed."""
    removed = []
    for path in folder.glob(".epoch-*.safetensors.tmp-*") if folder.is_dir() else ():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


def save_checkpoint(folder: Path, state: TrainingState, *, keep: int) -> Path:
    """Atomically write the checkpoint for `state.epoch`, then prune all but the last `keep`."""
    tensors, meta = snapshot(state)
    return write_snapshot(folder, state.epoch, tensors, meta, keep)


class CheckpointWriter:
    """Writes checkpoints on a background thread, so a checkpoint costs the training loop
    only the copy of its tensors. At most one write is in flight: `submit` waits for the
    previous one first. A failed write is raised by the next `submit` or by `wait`."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.written: list[Path] = []

    def submit(self, folder: Path, state: TrainingState, *, keep: int) -> None:
        self.wait()
        tensors, meta = snapshot(state)
        self._thread = threading.Thread(
            target=self._write,
            args=(folder, state.epoch, tensors, meta, keep),
            name=f"inflame-checkpoint-{state.epoch}",
            daemon=False,  # the interpreter waits for a write in flight before exiting
        )
        self._thread.start()

    def _write(self, *args: Any) -> None:
        try:
            self.written.append(write_snapshot(*args))
        except BaseException as exc:  # handed to the training thread
            self._error = exc

    def wait(self) -> None:
        """Block until the write in flight (if any) is on disk; raise its error."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise RunError(
                f"Writing a checkpoint failed: {error}. Check the free space and "
                "permissions of the checkpoint folder; the run can be resumed from its last "
                "complete checkpoint."
            ) from error


class DamagedCheckpoint(RunError):
    """A checkpoint that does not read back intact."""

    def __init__(self, path: Path, cause: Exception):
        super().__init__(
            f"Cannot read checkpoint {path}: {cause}. Delete it to resume from the "
            "checkpoint before it."
        )
        self.cause = cause


def load_checkpoint(path: Path) -> TrainingState:
    try:
        meta = json.loads(read_metadata(path)[_META_KEY])
    except Exception as exc:  # a foreign or damaged file
        raise DamagedCheckpoint(path, exc) from None
    written = meta.get("format") if isinstance(meta, dict) else None
    if isinstance(written, int) and written > CHECKPOINT_FORMAT:  # checked before the layout
        by = meta.get("inflame_version")
        raise RunError(
            f"Checkpoint {path} is in format {written}, written by a newer inflame"
            f"{f' ({by})' if by else ''}; this one ({__version__}) reads format "
            f"{CHECKPOINT_FORMAT}. Resume it with {f'inflame {by}' if by else 'that version'} "
            "(`pip install -U inflame`), or train from the start in a new folder."
        )
    try:
        if written != CHECKPOINT_FORMAT:
            raise ValueError(f"unknown checkpoint format {written!r}")
        tensors = load_tensors(path)  # checks the digest the file was written with
    except Exception as exc:
        raise DamagedCheckpoint(path, exc) from None

    def group(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    optimizer = None
    if "optimizer" in meta:
        optimizer = _unflatten_optimizer(group("optimizer."), meta["optimizer"])
    return TrainingState(
        epoch=meta["epoch"],
        model=group("model."),
        optimizer=optimizer,
        scheduler=meta.get("scheduler"),
        best_epoch=meta["best_epoch"],
        best_score=meta["best_score"],
        best_model=group("best.") if meta["has_best_model"] else None,
        bad_epochs=meta["bad_epochs"],
        stopped_early=meta["stopped_early"],
        history=meta["history"],
        scaler=meta.get("scaler"),
    )


def latest_checkpoint(folder: Path) -> TrainingState | None:
    """The newest checkpoint that reads back intact. Damaged newer ones (a digest or format
    that does not check) are renamed `*.damaged`, with a warning; when none is intact, a
    RunError (nothing is renamed, nothing starts over silently)."""
    found = list_checkpoints(folder)
    damaged: list[tuple[Path, DamagedCheckpoint]] = []
    for _, path in reversed(found):
        try:
            state = load_checkpoint(path)
        except DamagedCheckpoint as exc:
            damaged.append((path, exc))
            continue
        for bad, exc in damaged:
            aside = bad.with_name(bad.name + ".damaged")
            with contextlib.suppress(OSError):
                os.replace(bad, aside)
            print(
                f"warning: checkpoint {bad.name} is damaged ({exc.cause}); moved it to "
                f"{aside.name}, resuming from {path.name} instead",
                file=sys.stderr,
            )
        return state
    if damaged:
        listed = "; ".join(f"{p.name} ({exc.cause})" for p, exc in damaged)
        raise RunError(
            f"Cannot read checkpoint: every checkpoint in {folder} is damaged: {listed}. "
            "Restore one, or delete them to train from the start."
        )
    return None


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
