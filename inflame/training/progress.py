"""Progress display: rich epoch and batch bars on a terminal, one plain line per epoch
otherwise (log files, CI, cloud job logs)."""

from __future__ import annotations

import sys
import time
from typing import Any, Protocol, TextIO


def format_epoch_line(epoch: int, epochs: int, metrics: dict[str, Any]) -> str:
    """`epoch 3/10  train_loss 0.4321  train_accuracy 0.8610  ...  412 img/s  3.1s`."""
    parts = [f"epoch {epoch}/{epochs}"]
    for key, value in metrics.items():
        if key in ("epoch", "images_per_second", "seconds"):
            continue
        parts.append(f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}")
    if "images_per_second" in metrics:
        parts.append(f"{metrics['images_per_second']:.0f} img/s")
    if "seconds" in metrics:
        parts.append(f"{metrics['seconds']:.1f}s")
    return "  ".join(parts)


class Reporter(Protocol):
    def start(self, epochs: int, first_epoch: int, batches: int) -> None: ...
    def phase(self, name: str, batches: int) -> None: ...
    def batch(self, images: int, loss: float, accuracy: float) -> None: ...
    def epoch_end(self, epoch: int, metrics: dict[str, Any]) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...


class PlainReporter:
    """One line per epoch on a stream; nothing per batch."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.epochs = 0

    def start(self, epochs: int, first_epoch: int, batches: int) -> None:
        self.epochs = epochs
        if first_epoch > 0:
            self.message(f"resuming at epoch {first_epoch + 1}/{epochs}")

    def phase(self, name: str, batches: int) -> None:
        pass

    def batch(self, images: int, loss: float, accuracy: float) -> None:
        pass

    def epoch_end(self, epoch: int, metrics: dict[str, Any]) -> None:
        self.message(format_epoch_line(epoch, self.epochs, metrics))

    def message(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def close(self) -> None:
        pass


class RichReporter:
    """An epoch bar and a batch bar with images/s, ETA, running loss and accuracy."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description:<6}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[stats]}"),
            console=self.console,
        )
        self.epoch_task: Any = None
        self.batch_task: Any = None
        self.epochs = 0
        self._images = 0
        self._t0 = 0.0

    def start(self, epochs: int, first_epoch: int, batches: int) -> None:
        self.epochs = epochs
        self.progress.start()
        self.epoch_task = self.progress.add_task(
            "epochs", total=epochs, completed=first_epoch, rate="", stats=""
        )
        self.batch_task = self.progress.add_task("train", total=batches, rate="", stats="")
        if first_epoch > 0:
            self.message(f"resuming at epoch {first_epoch + 1}/{epochs}")

    def phase(self, name: str, batches: int) -> None:
        self._images, self._t0 = 0, time.perf_counter()
        self.progress.reset(self.batch_task, total=batches, description=name, rate="", stats="")

    def batch(self, images: int, loss: float, accuracy: float) -> None:
        self._images += images
        rate = self._images / max(time.perf_counter() - self._t0, 1e-9)
        self.progress.update(
            self.batch_task,
            advance=1,
            rate=f"{rate:,.0f} img/s",
            stats=f"loss {loss:.4f} acc {accuracy:.3f}",
        )

    def epoch_end(self, epoch: int, metrics: dict[str, Any]) -> None:
        self.progress.update(self.epoch_task, completed=epoch)
        self.message(format_epoch_line(epoch, self.epochs, metrics))

    def message(self, text: str) -> None:
        self.progress.console.print(text, highlight=False, markup=False)

    def close(self) -> None:
        self.progress.stop()


class SilentReporter(PlainReporter):
    """For ranks other than 0: no output."""

    def message(self, text: str) -> None:
        pass


def make_reporter(enabled: bool = True, stream: TextIO | None = None) -> Reporter:
    if not enabled:
        return SilentReporter()
    target = stream or sys.stderr
    if stream is None and target.isatty():
        return RichReporter()
    return PlainReporter(target)
