"""The training loop and its checkpoints, in-process on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from inflame.errors import InflameError, RunError
from inflame.runtime import Context, DataInputs, MetricsLog
from inflame.training import fit, seed_everything
from inflame.training.checkpoint import (
    CHECKPOINT_FORMAT,
    DamagedCheckpoint,
    TrainingState,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    snapshot,
    write_snapshot,
)


def make_ctx(tmp_path: Path, seed: int = 0) -> Context:
    return Context(
        job_name="t",
        data=DataInputs({}),
        output_dir=tmp_path / "model",
        checkpoint_dir=tmp_path / "checkpoints",
        hparams={},
        seed=seed,
        run_dir=tmp_path,
        metrics=MetricsLog(tmp_path / "metrics.jsonl"),
    )


def make_data(n: int = 48, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return TensorDataset(x, y)


def make_model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3)
    )


def run_fit(tmp_path: Path, epochs: int, **kwargs):
    seed_everything(0)
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=kwargs.pop("lr", 0.05))
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    return fit(
        make_ctx(tmp_path),
        model,
        make_data(),
        make_data(24, seed=1),
        epochs=epochs,
        batch_size=8,
        optimizer=optimizer,
        scheduler=scheduler,
        **kwargs,
    )


def weights(model: nn.Module) -> list[torch.Tensor]:
    return [v.clone() for v in model.state_dict().values()]


def test_fit_learns_logs_and_checkpoints(tmp_path: Path):
    result = run_fit(tmp_path, epochs=4)
    assert result.epochs_completed == 4 and len(result.history) == 4
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.best_epoch == min(result.history, key=lambda h: h["val_loss"])["epoch"]
    assert [e for e, _ in list_checkpoints(tmp_path / "checkpoints")] == [3, 4]  # keep=2
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4 and '"val_accuracy"' in lines[0]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if ".tmp" in p.name]


def test_a_validation_set_of_one_sample_is_validated(tmp_path: Path):
    seed_everything(0)
    model = make_model()
    one = TensorDataset(*(t[:1] for t in make_data(24, seed=1).tensors))
    result = fit(
        make_ctx(tmp_path),
        model,
        make_data(),
        one,
        epochs=1,
        batch_size=8,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
    )
    model.eval()
    with torch.no_grad():
        expected = nn.functional.cross_entropy(model(one.tensors[0]), one.tensors[1]).item()
    assert result.history[0]["val_loss"] == pytest.approx(expected, rel=1e-5)


def test_resume_from_any_epoch_matches_an_uninterrupted_run(tmp_path: Path):
    full = weights(run_fit(tmp_path / "full", epochs=5).model)
    run_fit(tmp_path / "part", epochs=5)
    # drop the later checkpoints: as if the run had been killed after epoch 2
    for _, path in list_checkpoints(tmp_path / "part" / "checkpoints"):
        path.unlink()
    save_checkpoint(tmp_path / "part" / "checkpoints", _state_at(tmp_path, 2), keep=2)
    resumed = run_fit(tmp_path / "part", epochs=5)
    assert resumed.epochs_completed == 5
    assert all(torch.equal(a, b) for a, b in zip(full, weights(resumed.model), strict=True))
    lines = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 5  # stale lines for epochs 3-5 were dropped, then re-logged


def _state_at(tmp_path: Path, epoch: int) -> TrainingState:
    run_fit(tmp_path / f"to{epoch}", epochs=epoch)
    return latest_checkpoint(tmp_path / f"to{epoch}" / "checkpoints")


def test_checkpoint_round_trip_keeps_optimizer_and_best_model(tmp_path: Path):
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 6)).sum().backward()
    optimizer.step()
    best = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    state = TrainingState(
        epoch=3,
        model=model.state_dict(),
        optimizer=optimizer.state_dict(),
        best_epoch=1,
        best_score=0.5,
        best_model=best,
        bad_epochs=2,
        history=[{"epoch": 1}],
    )
    loaded = load_checkpoint(save_checkpoint(tmp_path, state, keep=2))
    assert (loaded.epoch, loaded.best_epoch, loaded.bad_epochs) == (3, 1, 2)
    assert all(torch.equal(loaded.model[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(loaded.best_model[k], v) for k, v in best.items())
    fresh = torch.optim.Adam(make_model().parameters())
    fresh.load_state_dict(loaded.optimizer)
    original = optimizer.state_dict()["state"][0]["exp_avg"]
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], original)


def test_early_stopping_stops_and_stays_stopped_on_resume(tmp_path: Path):
    result = run_fit(
        tmp_path, epochs=10, lr=1e-12, early_stopping_patience=2, monitor="val_accuracy"
    )
    assert result.stopped_early and result.epochs_completed < 10
    again = run_fit(
        tmp_path, epochs=10, lr=1e-12, early_stopping_patience=2, monitor="val_accuracy"
    )
    assert again.epochs_completed == result.epochs_completed


def test_diverging_loss_is_a_clear_error(tmp_path: Path):
    with pytest.raises(InflameError, match="Lower `learning_rate`"):
        run_fit(tmp_path, epochs=2, lr=1e30)


def test_a_damaged_checkpoint_says_which_and_what_to_do():
    from inflame.training.checkpoint import DamagedCheckpoint

    error = DamagedCheckpoint(Path("ck/epoch-0002.safetensors"), ValueError("bad digest"))
    assert str(error) == (
        "Cannot read checkpoint ck/epoch-0002.safetensors: bad digest. Delete it to resume "
        "from the checkpoint before it."
    )
    assert isinstance(error.cause, ValueError)


def test_damaged_checkpoint_is_a_clear_error(tmp_path: Path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "epoch-0001.safetensors").write_bytes(b"junk")
    with pytest.raises(InflameError, match="Cannot read checkpoint"):
        run_fit(tmp_path, epochs=2)


def test_an_optimizer_state_of_tensors_and_plain_values_comes_back_whole(tmp_path: Path):
    """Per-parameter state mixing tensors and plain values (a custom optimizer's step
    counter, a flag) is split across the tensor file and the JSON, and merged on load."""
    average = torch.arange(4.0)
    optimizer = {
        "state": {
            0: {"step": 3, "exp_avg": average},
            1: {"frozen": True},
            2: {"buf": average, "momentum.buffer": average * 2},  # a key with a dot
        },
        "param_groups": [{"params": [0, 1, 2], "lr": 0.1}],
    }
    state = TrainingState(epoch=1, model={"w": torch.ones(2)}, optimizer=optimizer)
    loaded = load_checkpoint(save_checkpoint(tmp_path, state, keep=1)).optimizer
    assert loaded["param_groups"] == optimizer["param_groups"]
    assert sorted(loaded["state"]) == [0, 1, 2]
    assert loaded["state"][0]["step"] == 3 and torch.equal(loaded["state"][0]["exp_avg"], average)
    assert loaded["state"][1] == {"frozen": True} and torch.equal(
        loaded["state"][2]["buf"], average
    )
    assert torch.equal(loaded["state"][2]["momentum.buffer"], average * 2)


def test_a_checkpoint_from_a_newer_format_is_refused_not_misread(tmp_path: Path):
    """Format 2 may lay out tensors and digests differently: the number is read first, so
    the file is refused as too new, never renamed as damaged or misread."""
    state = TrainingState(epoch=1, model={"w": torch.ones(2)})
    tensors, meta = snapshot(state)
    assert meta["format"] == CHECKPOINT_FORMAT
    future = {**meta, "format": CHECKPOINT_FORMAT + 1, "inflame_version": "9.0"}
    path = write_snapshot(tmp_path, 1, tensors, future, keep=2)
    with open(path, "r+b") as handle:  # a layout this version cannot check
        handle.seek(-1, 2)
        last = handle.read(1)
        handle.seek(-1, 2)
        handle.write(bytes([last[0] ^ 1]))
    with pytest.raises(RunError, match=r"format 2, written by a newer inflame \(9\.0\)") as caught:
        latest_checkpoint(tmp_path)
    assert "epoch-0001.safetensors" in str(caught.value) and "inflame 9.0" in str(caught.value)
    assert list_checkpoints(tmp_path)[0][1].name == "epoch-0001.safetensors"  # not moved aside
    write_snapshot(tmp_path, 2, tensors, {**meta, "format": "one"}, keep=2)  # nonsense: damaged
    with pytest.raises(DamagedCheckpoint, match="unknown checkpoint format 'one'"):
        load_checkpoint(tmp_path / "epoch-0002.safetensors")


def test_keep_prunes_to_the_newest_checkpoints_and_zero_keeps_all(tmp_path: Path):
    for keep, expected in ((1, [3]), (2, [2, 3]), (0, [1, 2, 3])):
        folder = tmp_path / f"keep{keep}"
        for epoch in (1, 2, 3):
            save_checkpoint(
                folder, TrainingState(epoch=epoch, model={"w": torch.ones(1)}), keep=keep
            )
        assert [epoch for epoch, _ in list_checkpoints(folder)] == expected, keep


def test_a_resume_without_the_metrics_file_writes_every_epoch_back(tmp_path: Path):
    """A restarted cloud job finds its checkpoints but no metrics.jsonl: the checkpoint's
    history refills it, so the run's record holds every epoch once."""
    run_fit(tmp_path, epochs=2)
    before = (tmp_path / "metrics.jsonl").read_text().splitlines()
    (tmp_path / "metrics.jsonl").unlink()
    run_fit(tmp_path, epochs=3)
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert [json.dumps(r) for r in records[:2]] == [json.dumps(json.loads(x)) for x in before]


def test_the_progress_total_counts_the_batches_that_run(tmp_path: Path):
    """9 samples in batches of 8 leave a batch of one, which BatchNorm cannot train on: it
    is dropped, and the progress bar's total says 1 batch, not 2."""
    from inflame.training.progress import SilentReporter

    totals: list[tuple[str, int]] = []

    class Counting(SilentReporter):
        def phase(self, name: str, batches: int) -> None:
            totals.append((name, batches))

    reporter = Counting()
    model = make_model()
    fit(
        make_ctx(tmp_path),
        model,
        make_data(9),
        None,
        epochs=1,
        batch_size=8,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        num_workers=0,
        reporter=reporter,
    )
    assert totals == [("train", 1)]


def test_a_diverging_loss_names_the_phase_epoch_and_batch(tmp_path: Path):
    """The loss turns infinite at the 3rd training batch of epoch 2: the error says exactly
    that, so the user can find the batch."""
    from inflame.training.progress import SilentReporter

    where = {"epoch": 0, "phase": "", "batch": 0}

    class Tracking(SilentReporter):
        def phase(self, name: str, batches: int) -> None:
            where["phase"], where["batch"] = name, 0

        def epoch_end(self, epoch: int, metrics: dict) -> None:
            where["epoch"] += 1

    def poisoned(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        where["batch"] += 1
        loss = nn.functional.cross_entropy(outputs, targets)
        hit = (where["epoch"], where["phase"], where["batch"]) == (1, "train", 3)
        return loss * float("inf") if hit else loss

    with pytest.raises(InflameError) as caught:
        run_fit(tmp_path, epochs=3, loss_fn=poisoned, reporter=Tracking(), num_workers=0)
    assert str(caught.value).startswith("The train loss became inf at epoch 2, batch 3. Lower")


def test_progress_shows_each_phase_running_loss_and_accuracy(tmp_path: Path):
    """What the progress bar shows after a phase's last batch is that epoch's metric, and
    every image is counted once."""
    from inflame.training.progress import SilentReporter

    shown: list[tuple[str, int, float, float]] = []

    class Recording(SilentReporter):
        def phase(self, name: str, batches: int) -> None:
            self.name = name

        def batch(self, images: int, loss: float, accuracy: float) -> None:
            shown.append((self.name, images, loss, accuracy))

    result = run_fit(tmp_path, epochs=2, reporter=Recording(), num_workers=0)
    for epoch, metrics in enumerate(result.history):
        per_epoch = len(shown) // 2
        rows = shown[epoch * per_epoch : (epoch + 1) * per_epoch]
        for phase, size in (("train", 48), ("val", 24)):
            mine = [r for r in rows if r[0] == phase]
            assert sum(r[1] for r in mine) == size
            assert mine[-1][2] == pytest.approx(metrics[f"{phase}_loss"], rel=1e-6)
            assert mine[-1][3] == pytest.approx(metrics[f"{phase}_accuracy"])
            assert mine[0][2] != mine[-1][2]  # a running average, not the final value


def test_the_schedule_steps_once_per_epoch_and_each_epoch_is_reported_by_its_number(
    tmp_path: Path,
):
    from inflame.training.progress import SilentReporter

    ended: list[tuple[int, float]] = []

    class Recording(SilentReporter):
        def epoch_end(self, epoch: int, metrics: dict) -> None:
            ended.append((epoch, metrics["learning_rate"]))

    result = run_fit(tmp_path, epochs=4, reporter=Recording(), num_workers=0)
    # StepLR(step_size=2, gamma=0.5) from 0.05: halved after every second epoch
    assert [m["learning_rate"] for m in result.history] == [0.05, 0.05, 0.025, 0.025]
    assert ended == [(1, 0.05), (2, 0.05), (3, 0.025), (4, 0.025)]


def test_the_allocator_hint_shows_once_and_only_without_a_faster_allocator(
    monkeypatch: pytest.MonkeyPatch,
):
    from inflame import allocator
    from inflame.training import loop
    from inflame.training.progress import SilentReporter

    said: list[str] = []

    class Recording(SilentReporter):
        def message(self, text: str) -> None:
            said.append(text)

    monkeypatch.delenv(allocator.ENV_VAR, raising=False)
    monkeypatch.setattr(loop, "_hinted", [])
    monkeypatch.setattr(allocator, "find_allocator", lambda: None)
    loop._allocator_hint(Recording())
    loop._allocator_hint(Recording())
    assert said == [allocator.install_hint()]  # once per process
    monkeypatch.setattr(loop, "_hinted", [])
    monkeypatch.setattr(allocator, "find_allocator", lambda: Path("/usr/lib/libtcmalloc.so.4"))
    loop._allocator_hint(Recording())
    assert said == [allocator.install_hint()]  # one is installed: nothing to suggest
