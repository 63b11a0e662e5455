"""Faults: what is reported must be what was saved. The model holds the weights of the best
epoch by an explicit metric and direction, the manifest says which epoch that was, and the
CLI and `inflame runs` report that epoch (not the best of another metric); a run that failed
before training leaves nothing that blocks running it again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from inflame.runtime import Context, DataInputs, MetricsLog
from inflame.training.loop import evaluate, fit
from tests.helpers import assert_clean_error


def _fit(tmp_path: Path, monitor: str, mode: str | None = None):
    torch.manual_seed(0)
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    vx, vy = torch.randn(32, 6), torch.randint(0, 3, (32,))  # noise: val metrics wander
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    ctx = Context(
        job_name="t",
        data=DataInputs({}),
        output_dir=tmp_path / "model",
        checkpoint_dir=tmp_path / monitor / "checkpoints",
        hparams={},
        seed=1,
        metrics=MetricsLog(tmp_path / monitor / "metrics.jsonl"),
    )
    result = fit(
        ctx,
        model,
        TensorDataset(x, y),
        TensorDataset(vx, vy),
        epochs=8,
        batch_size=16,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.5),
        monitor=monitor,
        mode=mode,
        num_workers=0,
    )
    return ctx, result, TensorDataset(vx, vy)


@pytest.mark.parametrize(("monitor", "pick"), [("val_loss", min), ("val_accuracy", max)])
def test_fit_returns_and_records_the_best_epoch_of_its_monitor(tmp_path, monitor, pick):
    ctx, result, val = _fit(tmp_path, monitor)
    values = [h[monitor] for h in result.history]
    best = values.index(pick(values)) + 1  # the first epoch reaching the best value
    assert result.best_epoch == best
    saved = ctx.records["saved"]
    assert saved["epoch"] == best and saved["monitor"] == monitor
    assert saved["mode"] == ("min" if pick is min else "max") and saved["value"] == values[best - 1]
    # the returned weights are that epoch's: they score exactly what that epoch logged
    scores = evaluate(result.model, val, batch_size=16)
    assert scores["loss"] == pytest.approx(result.history[best - 1]["val_loss"], abs=1e-6)
    if best != len(values):  # and not the last epoch's
        assert scores["loss"] != pytest.approx(result.history[-1]["val_loss"], abs=1e-9)


def test_an_explicit_mode_overrides_the_name(tmp_path):
    _, result, _ = _fit(tmp_path, "val_loss", mode="max")  # a perverse but explicit choice
    losses = [h["val_loss"] for h in result.history]
    assert result.best_epoch == losses.index(max(losses)) + 1


def test_the_cli_reports_the_saved_epoch(cli, write_spec):
    spec = write_spec(hyperparameters={"epochs": 4, "monitor": "val_loss"})
    result = cli("train", "--local", spec, check=True)
    run = Path(result.stdout.strip().splitlines()[-1])
    manifest = json.loads((run / "manifest.json").read_text())
    epochs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [e for e in epochs if "epoch" in e]
    losses = [e["val_loss"] for e in epochs]
    best = losses.index(min(losses)) + 1
    assert manifest["saved"]["epoch"] == best and manifest["saved"]["monitor"] == "val_loss"
    flat = " ".join(result.stderr.split())
    assert f"saved epoch {best} (best val_loss {min(losses):.4f})" in flat
    [row] = [json.loads(x) for x in cli("runs", "--json", check=True).stdout.splitlines()]
    assert row["saved_epoch"] == best and row["val_accuracy"] == epochs[best - 1]["val_accuracy"]


def test_a_run_that_fails_before_training_can_simply_be_run_again(
    cli, write_spec, demo_set, tmp_path
):
    data = tmp_path / "data"
    shutil.copytree(demo_set, data)
    victim = next((data / "train" / "square").iterdir())
    good = victim.read_bytes()
    victim.write_bytes(good[:100])  # truncated: found by the app when it builds the dataset
    spec = write_spec(data={"train": str(data / "train"), "val": str(data / "val")})
    target = tmp_path / "mine"
    failed = cli("train", "--local", spec, "--run-dir", target)
    assert_clean_error(failed, "unreadable image", "Nothing was trained", "was cleared")
    assert [p.name for p in target.iterdir() if p.name != ".lock"] == []
    named = cli("train", "--local", spec)
    assert_clean_error(named, "unreadable image")
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())

    victim.write_bytes(good)  # fixed: the same command, the same folder
    again = cli("train", "--local", spec, "--run-dir", target, check=True)
    assert Path(again.stdout.strip().splitlines()[-1]) == target
