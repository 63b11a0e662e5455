"""`fit`: the training loop every app shares.

Per epoch: train, validate, pick the best model on validation, early-stop, log one metrics
line, write one checkpoint atomically. Shuffling and augmentation are seeded from
(seed, epoch) alone, so resuming from any checkpoint replays the run exactly: a killed run
resumed with `--resume` ends with the same weights as one that never stopped.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from inflame import stopping
from inflame.errors import InflameError
from inflame.performance import Performance
from inflame.runtime import Context
from inflame.training import fastpath
from inflame.training.checkpoint import (
    CheckpointWriter,
    TrainingState,
    latest_checkpoint,
    remove_stale_temps,
)
from inflame.training.distributed import all_reduce_sum, barrier
from inflame.training.loading import EpochOrder, auto_workers, make_loader
from inflame.training.preview import preview
from inflame.training.progress import Reporter, make_reporter
from inflame.training.seeding import epoch_seed, seed_rngs


@dataclass
class FitResult:
    model: nn.Module  # holds the best weights (on validation) when fit returns
    best_epoch: int | None
    best_metrics: dict[str, Any]
    epochs_completed: int
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _EpochStats:
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.seen, 1)

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.seen, 1)


def _match_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give each loaded state tensor (momentum, Adam's moments) its parameter's memory layout.
    A checkpoint holds contiguous tensors; next to channels_last parameters they would keep
    the optimizer's multi-tensor kernels off their fast path for the rest of the run."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            for key, value in state.items():
                if (
                    isinstance(value, torch.Tensor)
                    and value.shape == param.shape
                    and value.stride() != param.stride()
                ):
                    state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def _state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    """The best epoch's weights, kept in host memory: not a second model on the GPU."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _seed_epoch(seed: int, epoch: int, rank: int = 0) -> None:
    """Seed this epoch's training-process randomness (dropout, say), per process."""
    seed_rngs((epoch_seed(seed, epoch) + rank * 104_729) % (2**63))


_hinted: list[bool] = []


def _allocator_hint(reporter: Reporter) -> None:
    """Once per process, on CPU with glibc malloc: how to get a faster one (only when none
    is installed; `inflame train` preloads one that is)."""
    from inflame.allocator import ENV_VAR, find_allocator, install_hint

    if _hinted or os.environ.get(ENV_VAR, "") not in ("", "auto"):
        return
    _hinted.append(True)
    try:
        if find_allocator() is None:
            reporter.message(install_hint())
    except InflameError:
        pass


def _is_better(score: float, best: float | None, minimize: bool) -> bool:
    if best is None:
        return True
    return score < best if minimize else score > best


def fit(
    ctx: Context,
    model: nn.Module,
    train_data: Dataset,
    val_data: Dataset | None,
    *,
    epochs: int,
    batch_size: int,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    scheduler: Any | None = None,
    early_stopping_patience: int | None = None,
    monitor: str = "val_loss",
    mode: str | None = None,
    num_workers: int | None = None,
    keep_checkpoints: int = 2,
    reporter: Reporter | None = None,
) -> FitResult:
    """Train `model` for up to `epochs`, resuming from `ctx.checkpoint_dir` if it holds a
    checkpoint. Returns the model with the weights of its best epoch by `monitor`: lowest
    `val_loss` by default; `mode` is "min" or "max" (default: "min" for losses, else "max").
    The manifest records which epoch that was (`saved`: epoch, monitor, mode, metrics).

    The [compute] speed switches (`ctx.performance`) decide precision, memory format and
    determinism; `num_workers=None` picks the DataLoader workers from the CPU count. On a
    CPU with channels_last "auto", the first training sample is read once in this process
    to size the images (a dataset that opens files lazily must open them per process, as
    DataLoader workers need anyway)."""
    if epochs < 1:
        raise InflameError(f"epochs must be at least 1, got {epochs}.")
    if len(train_data) == 0:  # type: ignore[arg-type]
        raise InflameError("The training set is empty: nothing to train on.")
    batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    per_process = math.ceil(len(train_data) / max(ctx.world_size, 1))  # type: ignore[arg-type]
    if batch_norm and min(batch_size, per_process) < 2:
        raise InflameError(
            f"Training this model needs at least 2 images per batch (its BatchNorm layers "
            f"cannot learn from one), but the batch size is {batch_size} and each process "
            f"has {per_process} training image(s). Raise `batch_size`, or add images."
        )
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    if mode not in (None, "min", "max"):
        raise InflameError(f'fit(mode=…) must be "min" or "max", got {mode!r}.')
    minimize = mode == "min" if mode is not None else "loss" in monitor
    fast = fastpath.resolve(ctx.performance, ctx.device, model, train_data, ctx.seed)
    fastpath.apply(fast)
    fastpath.prepare_model(model, fast)
    reporter = reporter or make_reporter(enabled=ctx.is_main)

    distributed = ctx.world_size > 1
    if distributed and not dist.is_initialized():
        raise InflameError(
            "This job has several processes (WORLD_SIZE > 1) but no process "
            "group; launch it with `inflame train --nproc-per-node N`."
        )

    scaler = fast.scaler()
    if ctx.is_main:  # a killed write leaves a temp file as large as a checkpoint
        for stale in remove_stale_temps(ctx.checkpoint_dir):
            reporter.message(f"removed {stale.name}, left by a write that was stopped")
    state = latest_checkpoint(ctx.checkpoint_dir)
    if state is not None:
        model.load_state_dict(state.model)
        if state.optimizer is not None:
            optimizer.load_state_dict(state.optimizer)
            _match_layouts(optimizer)
        if scheduler is not None and state.scheduler is not None:
            scheduler.load_state_dict(state.scheduler)
        if state.scaler:
            scaler.load_state_dict(state.scaler)
        best_state = state.best_model if state.best_model is not None else _state_copy(model)
        done = state.epoch
        ctx.metrics.keep_through_epoch(done)
        logged = {r.get("epoch") for r in ctx.metrics.read()}
        for record in state.history:  # e.g. a restarted cloud job starts with no metrics file
            if record["epoch"] not in logged:
                ctx.log_metrics(record)
    else:
        state = TrainingState(epoch=0, model={})
        best_state = _state_copy(model)
        ctx.metrics.keep_through_epoch(0)  # a fresh start: no stale lines
    history = list(state.history)

    # DDP wraps the model after any checkpoint is loaded; `model` stays the plain module
    # (its state_dict is what checkpoints and the final weights hold).
    compiled = fastpath.maybe_compile(model, fast)  # once: a new DDP wrapper reuses it

    def wrap() -> nn.Module:
        """The model as this process trains it: compiled if asked, in DDP when distributed."""
        if not distributed:
            return compiled
        from torch.nn.parallel import DistributedDataParallel

        ids = [fast.device.index] if fast.device.type == "cuda" else None
        return DistributedDataParallel(compiled, device_ids=ids)

    n_train = len(train_data)  # type: ignore[arg-type]
    if distributed:  # each process sees its shard (padded to equal sizes)
        n_train = math.ceil(n_train / ctx.world_size)
    drop_last = n_train > batch_size and n_train % batch_size == 1  # BatchNorm needs >1
    batches = n_train // batch_size if drop_last else math.ceil(n_train / batch_size)
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    workers = num_workers if num_workers is not None else auto_workers(fast.device, local_processes)
    pin = fast.device.type == "cuda"
    world = {"rank": ctx.rank, "world": ctx.world_size}
    train_order = EpochOrder(len(train_data), ctx.seed, shuffle=True, **world)  # type: ignore[arg-type]
    train_loader = make_loader(
        train_data,
        train_order,
        batch_size=batch_size,
        workers=workers,
        pin_memory=pin,
        drop_last=drop_last,
    )
    val_loader = None
    if val_data is not None and len(val_data) > 0:  # type: ignore[arg-type]
        val_order = EpochOrder(len(val_data), ctx.seed, shuffle=False, **world)  # type: ignore[arg-type]
        val_loader = make_loader(
            val_data, val_order, batch_size=batch_size, workers=workers, pin_memory=pin
        )
    record = {**fast.record(), "data_workers": workers}
    ctx.record("performance", record)
    if fast.device.type == "cpu" and record["allocator"].startswith("glibc") and ctx.is_main:
        _allocator_hint(reporter)
    if state.epoch == 0:  # TensorBoard's sample images and graph, once per run
        preview(ctx, model, train_data, fast.device)
    step = _Stepper(wrap(), loss_fn, fast, reporter)
    state_epoch_at_start = state.epoch
    reporter.start(epochs, state.epoch, batches)
    writer = CheckpointWriter()
    try:
        with stopping.safe_points():  # SIGTERM stops between batches
            for epoch in range(state.epoch, epochs):
                if state.stopped_early:
                    break
                _seed_epoch(ctx.seed, epoch, ctx.rank)
                if distributed and epoch > state_epoch_at_start:
                    # DDP regroups its gradient buckets after its first step, which changes the
                    # order of the sums across processes; a fresh wrapper per epoch makes every
                    # epoch start as a resumed one does, so a resumed run ends bit-identical
                    step.net = wrap()
                train_order.set_epoch(epoch)
                train_stats = step.epoch(train_loader, optimizer, scaler, "train", batches, epoch)
                metrics: dict[str, Any] = {
                    "epoch": epoch + 1,
                    "train_loss": train_stats.loss,
                    "train_accuracy": train_stats.accuracy,
                }
                if val_loader is not None:
                    val_stats = step.epoch(val_loader, None, None, "val", len(val_loader), epoch)
                    metrics["val_loss"] = val_stats.loss
                    metrics["val_accuracy"] = val_stats.accuracy
                metrics["learning_rate"] = optimizer.param_groups[0]["lr"]
                if scheduler is not None:
                    scheduler.step()

                if monitor in metrics:
                    score = metrics[monitor]
                elif val_data is None:  # nothing to validate on: train loss decides
                    score, minimize = metrics["train_loss"], True
                else:
                    raise InflameError(
                        f"Cannot monitor `{monitor}`: each epoch reports {', '.join(metrics)}."
                    )
                if _is_better(score, state.best_score, minimize):
                    state.best_score, state.best_epoch = score, epoch + 1
                    state.bad_epochs = 0
                    best_state = _state_copy(model)
                else:
                    state.bad_epochs += 1
                if early_stopping_patience and state.bad_epochs >= early_stopping_patience:
                    state.stopped_early = True

                metrics["images_per_second"] = train_stats.seen / max(train_stats.seconds, 1e-9)
                metrics["seconds"] = train_stats.seconds
                history.append(metrics)
                ctx.log_metrics(metrics)  # committed by the checkpoint below
                state.epoch = epoch + 1
                state.model = model.state_dict()
                state.optimizer = optimizer.state_dict()
                state.scheduler = scheduler.state_dict() if scheduler is not None else None
                state.scaler = scaler.state_dict() if scaler.is_enabled() else None
                state.best_model = None if state.best_epoch == epoch + 1 else best_state
                state.history = history
                if ctx.is_main:  # copied now, written on a background thread
                    writer.submit(ctx.checkpoint_dir, state, keep=keep_checkpoints)
                reporter.epoch_end(epoch + 1, metrics)
                if state.stopped_early:
                    reporter.message(
                        f"early stopping: `{monitor}` did not improve for "
                        f"{early_stopping_patience} epochs; best epoch {state.best_epoch}"
                    )
        writer.wait()  # the last checkpoint is on disk before fit returns
    finally:
        reporter.close()
        try:
            writer.wait()  # a failure still leaves the last checkpoint complete
        except Exception as exc:  # the failure in flight is the error to report
            print(f"warning: {exc}", file=sys.stderr)
    barrier()  # no process returns before the last checkpoint is written

    model.load_state_dict(best_state)
    best = next((h for h in history if h["epoch"] == state.best_epoch), {})
    chosen_by = monitor if monitor in best or val_data is not None else "train_loss"
    ctx.record(
        "saved",
        {
            "epoch": state.best_epoch,
            "monitor": chosen_by,
            "mode": "min" if minimize or chosen_by == "train_loss" else "max",
            "value": best.get(chosen_by),
            "metrics": {k: v for k, v in best.items() if k.startswith(("val_", "train_"))},
        },
    )
    return FitResult(
        model=model,
        best_epoch=state.best_epoch,
        best_metrics=best,
        epochs_completed=state.epoch,
        stopped_early=state.stopped_early,
        history=history,
    )


def _correct(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor | int:
    """Correct predictions in a batch, as a tensor on the device (no synchronisation)."""
    if outputs.ndim == 2 and not torch.is_floating_point(targets):
        return (outputs.argmax(dim=1) == targets).sum()
    return 0


class _Stepper:
    """Runs epochs of forward (and backward) passes with the fast path's precision and
    memory format. Running totals stay on the device; on a GPU they are read back every
    `SYNC_EVERY` batches only, so the CPU can queue work ahead of the GPU."""

    SYNC_EVERY = 25

    def __init__(
        self,
        net: nn.Module,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        fast: fastpath.FastPath,
        reporter: Reporter,
    ):
        self.net, self.loss_fn, self.fast, self.reporter = net, loss_fn, fast, reporter
        self.sync_every = 1 if fast.device.type == "cpu" else self.SYNC_EVERY

    def epoch(
        self,
        loader: Iterable[Any],
        optimizer: torch.optim.Optimizer | None,
        scaler: torch.amp.GradScaler | None,
        phase: str,
        batches: int,
        epoch: int,
        *,
        reduce: bool = True,
    ) -> _EpochStats:
        training = optimizer is not None
        device = self.fast.device
        self.net.train(training)
        self.reporter.phase(phase, batches)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = checked = done = 0
        shown = (0.0, 0.0)
        start = time.perf_counter()
        with torch.set_grad_enabled(training):
            for step, (inputs, targets) in enumerate(loader):
                inputs = self.fast.to_device(inputs)
                targets = targets.to(device, non_blocking=True)
                with self.fast.autocast():
                    outputs = self._forward(inputs)
                    loss = self.loss_fn(outputs, targets)
                if self.sync_every == 1 and not torch.isfinite(loss):
                    self._diverged(phase, epoch, f"batch {step + 1}", loss.item())
                if training:
                    optimizer.zero_grad(set_to_none=True)  # type: ignore[union-attr]
                    if scaler is not None and scaler.is_enabled():
                        scaler.scale(loss).backward()
                        scaler.step(optimizer)  # type: ignore[arg-type]
                        scaler.update()
                    else:
                        loss.backward()
                        optimizer.step()  # type: ignore[union-attr]
                n = targets.shape[0]
                loss_sum += loss.detach().double() * n
                correct += _correct(outputs.detach(), targets)
                seen, done = seen + n, step + 1
                if done % self.sync_every == 0:
                    total = loss_sum.item()
                    if not math.isfinite(total):
                        self._diverged(phase, epoch, f"batches {checked + 1}-{done}", total)
                    checked = done
                    shown = (total / seen, int(correct.item()) / seen)
                self.reporter.batch(n, *shown)
                if self._stop_requested(done, agree=reduce):
                    raise stopping.Terminated(
                        f"{stopping.reason()} arrived; stopped after {phase} batch "
                        f"{done}/{batches} of epoch {epoch + 1}"
                    )
        stats = _EpochStats(float(loss_sum.item()), int(correct.item()), seen)
        if not math.isfinite(stats.loss_sum):
            self._diverged(phase, epoch, f"batches {checked + 1}-{done}", stats.loss)
        stats.seconds = time.perf_counter() - start
        if reduce:  # every process gets the totals over all shards
            stats.loss_sum, n_correct, n_seen = all_reduce_sum(
                [stats.loss_sum, float(stats.correct), float(stats.seen)], device
            )
            stats.correct, stats.seen = int(n_correct), int(n_seen)
        return stats

    def _stop_requested(self, done: int, *, agree: bool) -> bool:
        """SIGTERM asked to stop (a safe point: the step is complete). With `agree`, all
        processes of a distributed run decide together at their sync points (fit's phases,
        which every process runs); otherwise (a local evaluation) each decides alone."""
        if not (agree and dist.is_available() and dist.is_initialized()):
            return stopping.requested()
        if done % self.sync_every:
            return False
        return all_reduce_sum([float(stopping.requested())], self.fast.device)[0] > 0

    def _forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if not self.fast.compile:
            return self.net(inputs)
        try:  # torch.compile compiles at the first call, so its failures surface here
            return self.net(inputs)
        except Exception as exc:
            if not type(exc).__module__.startswith(("torch._dynamo", "torch._inductor")):
                raise
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise InflameError(
                f"torch.compile failed ({reason}). Set `compute.compile = false` to train "
                "without it, or install what it names (inductor needs a C++ compiler on CPU)."
            ) from None

    @staticmethod
    def _diverged(phase: str, epoch: int, where: str, value: float) -> None:
        raise InflameError(
            f"The {phase} loss became {value} at epoch {epoch + 1}, {where}. Lower "
            "`learning_rate` (or check the data) and train again."
        )


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 64,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    device: torch.device | None = None,
    num_workers: int = 0,
    performance: Performance | None = None,
) -> dict[str, float]:
    """Loss and accuracy of `model` on `dataset` (e.g. a held-out test set)."""
    from inflame.training.progress import SilentReporter

    device = device or next(model.parameters()).device
    # fp32 unless asked: a test score should not depend on the device's autocast
    fast = fastpath.resolve(performance or Performance(precision="fp32"), device, model, dataset)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    stepper = _Stepper(model, loss_fn or nn.CrossEntropyLoss(), fast, SilentReporter())
    # evaluate() may run on one process only: no reduction over processes
    stats = stepper.epoch(loader, None, None, "test", len(loader), 0, reduce=False)
    return {"loss": stats.loss, "accuracy": stats.accuracy}
