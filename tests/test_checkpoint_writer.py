"""Checkpoints written on a background thread: the training loop pays only for the copy."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from torch import nn

from inflame.errors import RunError
from inflame.training import checkpoint as ckpt
from inflame.training.checkpoint import CheckpointWriter, TrainingState, load_checkpoint
from tests.test_training import run_fit


def _state(model: nn.Module, epoch: int) -> TrainingState:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    return TrainingState(epoch=epoch, model=model.state_dict(), optimizer=optimizer.state_dict())


@pytest.fixture
def gated_writes(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Writes wait until the returned event is set."""
    gate = threading.Event()
    real = ckpt.write_snapshot

    def gated(*args, **kwargs):
        assert gate.wait(30), "the test never opened the gate"
        return real(*args, **kwargs)

    monkeypatch.setattr(ckpt, "write_snapshot", gated)
    return gate


def test_submit_returns_before_the_write_and_writes_the_state_it_was_given(
    tmp_path: Path, gated_writes: threading.Event
):
    model = nn.Linear(4, 3)
    state = _state(model, epoch=1)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    writer = CheckpointWriter()
    writer.submit(tmp_path, state, keep=2)  # returns although the write cannot start yet
    assert not list(tmp_path.glob("epoch-*"))
    with torch.no_grad():  # training goes on and changes the weights in place
        for p in model.parameters():
            p.add_(100.0)
    gated_writes.set()
    writer.wait()
    written = load_checkpoint(tmp_path / "epoch-0001.safetensors")
    assert all(torch.equal(written.model[k], v) for k, v in expected.items())
    assert not torch.equal(written.model["weight"], model.weight)


def test_at_most_one_write_in_flight(tmp_path: Path, gated_writes: threading.Event):
    model = nn.Linear(4, 3)
    writer = CheckpointWriter()
    writer.submit(tmp_path, _state(model, 1), keep=2)
    second = threading.Thread(
        target=writer.submit, args=(tmp_path, _state(model, 2)), kwargs={"keep": 2}
    )
    second.start()
    second.join(0.5)
    assert second.is_alive()  # blocked behind the first write
    gated_writes.set()
    second.join(30)
    writer.wait()
    assert sorted(p.name for p in tmp_path.glob("epoch-*")) == [
        "epoch-0001.safetensors",
        "epoch-0002.safetensors",
    ]


def test_a_failed_write_is_raised_and_leaves_nothing_half_written(tmp_path: Path):
    blocker = tmp_path / "checkpoints"
    blocker.write_text("a file where the checkpoint folder should be")
    writer = CheckpointWriter()
    writer.submit(blocker, _state(nn.Linear(4, 3), 1), keep=2)
    with pytest.raises(RunError, match="Writing a checkpoint failed"):
        writer.wait()
    writer.wait()  # reported once


def test_fit_reports_a_checkpoint_folder_it_cannot_write(tmp_path: Path):
    (tmp_path / "checkpoints").write_text("not a folder")
    with pytest.raises(RunError, match="Writing a checkpoint failed"):
        run_fit(tmp_path, epochs=2)


def test_fit_returns_with_every_checkpoint_on_disk(tmp_path: Path, monkeypatch):
    real = ckpt.write_snapshot
    slow = threading.Event()

    def late(*args, **kwargs):
        slow.wait(0.3)  # each write finishes well after the epoch that asked for it
        return real(*args, **kwargs)

    monkeypatch.setattr(ckpt, "write_snapshot", late)
    result = run_fit(tmp_path, epochs=3)
    assert result.epochs_completed == 3
    last = load_checkpoint(tmp_path / "checkpoints" / "epoch-0003.safetensors")
    assert last.epoch == 3 and [h["epoch"] for h in last.history] == [1, 2, 3]
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert kept == ["epoch-0002.safetensors", "epoch-0003.safetensors"]  # fit keeps 2


def test_a_write_that_fails_midway_leaves_no_temporary_file(tmp_path: Path, monkeypatch):
    def half_then_fail(tensors, path, metadata=None, digest=False):
        Path(path).write_bytes(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt, "save_tensors", half_then_fail)
    writer = CheckpointWriter()
    writer.submit(tmp_path, _state(nn.Linear(4, 3), 1), keep=2)
    with pytest.raises(RunError, match="No space left"):
        writer.wait()
    assert list(tmp_path.iterdir()) == []


def test_the_interpreter_waits_for_a_write_in_flight_before_it_exits(tmp_path: Path):
    """A script that submits a checkpoint and ends at once (no `wait`) still leaves the whole
    checkpoint on disk: the writer thread is not a daemon the exit would cut off."""
    import subprocess
    import sys

    script = (
        "import sys, torch\n"
        "from pathlib import Path\n"
        "from inflame.training.checkpoint import CheckpointWriter, TrainingState\n"
        "state = TrainingState(epoch=1, model={'w': torch.ones(48_000_000)})\n"
        "CheckpointWriter().submit(Path(sys.argv[1]), state, keep=1)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    loaded = load_checkpoint(tmp_path / "epoch-0001.safetensors")
    assert torch.equal(loaded.model["w"], torch.ones(48_000_000))
