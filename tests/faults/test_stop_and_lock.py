"""Faults: two writers on one run folder, SIGTERM (preemption, `docker stop`) in the middle
of training, and what a stopped write leaves behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from inflame.errors import RunError
from inflame.runlock import LOCK_FILE, RunLock
from tests.conftest import guarded_env
from tests.helpers import assert_clean_error, inflame_popen


def manifest_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def _sigint_as_in_a_terminal() -> None:
    """A process started in the background of a shell (`pytest … &`, nohup) inherits SIGINT
    ignored, and Python then leaves it ignored: give the run a terminal's default."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_training(tmp_path: Path, *args: str | Path) -> subprocess.Popen[str]:
    env = guarded_env(INFLAME_RUNS_DIR=str(tmp_path / "runs"), INFLAME_HOME=str(tmp_path / "h"))
    return inflame_popen(["train", "--local", *args], cwd=tmp_path, env=env, sigint_default=True)


def wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run ended first:\n{proc.communicate()[1]}"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def test_the_lock_names_its_holder_and_a_dead_holders_lock_is_taken_over(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from inflame.runlock import RunLock; "
            f"RunLock(__import__('pathlib').Path({str(run)!r})).acquire(); "
            "print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunError, match=f"in use by another process: pid {holder.pid} on"):
            RunLock(run).acquire()
    finally:
        holder.kill()  # SIGKILL: no clean release, the file still names it
        holder.wait()
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == holder.pid
    with RunLock(run) as lock:
        assert lock.took_over["pid"] == holder.pid
        assert f"locked by pid {holder.pid}" in capsys.readouterr().err
        assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert (run / LOCK_FILE).read_text() == ""  # released cleanly: the next one says nothing
    with RunLock(run) as lock:
        assert lock.took_over is None


def test_a_held_lock_whose_file_is_unreadable_is_still_refused_cleanly(tmp_path: Path):
    """A holder caught halfway through writing its lock file (or a damaged one)."""
    import fcntl

    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_bytes(b'\xff{"pid": 12')
    fd = os.open(run / LOCK_FILE, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another open file: another holder
        with pytest.raises(RunError, match=r"in use by another process: pid \? on \?"):
            RunLock(run).acquire()
    finally:
        os.close(fd)


def test_a_run_that_is_training_cannot_be_written_by_another_process(cli, write_spec, tmp_path):
    spec = write_spec(hyperparameters={"epochs": 8})
    run = tmp_path / "run"
    first = start_training(tmp_path, spec, "--run-dir", run)
    try:
        wait_for(run / "checkpoints" / "epoch-0001.safetensors", first)
        resumed = cli("train", "--local", "--resume", run)
        assert_clean_error(resumed, f"Run folder {run} is in use by another process", "pid")
        assert f"pid {first.pid}" in resumed.stderr
        again = cli("train", "--local", spec, "--run-dir", run)
        assert_clean_error(again, "exists and is not empty")
    finally:
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    manifest = manifest_of(run)
    assert manifest["status"] == "completed" and "resumed" not in manifest
    assert manifest["pid"] == first.pid  # nobody else wrote it


def test_sigterm_stops_at_a_safe_point_and_the_run_resumes_exactly(cli, write_spec, tmp_path):
    spec = write_spec(hyperparameters={"epochs": 6})
    reference = manifest_of(Path(cli("train", "--local", spec, check=True).stdout.split()[-1]))
    run = tmp_path / "stopped"
    proc = start_training(tmp_path, spec, "--run-dir", run)
    kept = run / "checkpoints" / "epoch-0002.safetensors"
    wait_for(kept, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "Stopped by SIGTERM" in err
    assert f"inflame train --local --resume {run}" in " ".join(err.split())
    manifest = manifest_of(run)
    assert manifest["status"] == "interrupted" and manifest["stopped_by"] == "SIGTERM"
    assert manifest["resume_command"] == f"inflame train --local --resume {run}"
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert not [n for n in checkpoints if ".tmp-" in n], checkpoints  # nothing half-written
    done = int(checkpoints[-1][len("epoch-") : -len(".safetensors")])
    assert 2 <= done < 6
    before = (run / "metrics.jsonl").read_text().splitlines()
    assert len(before) == done  # the stopped epoch logged nothing

    # a write stopped by SIGKILL on an earlier attempt left a temp file: removed on resume
    stale = run / "checkpoints" / f".epoch-{done + 1:04d}.safetensors.tmp-99999"
    stale.write_bytes(b"\0" * 1024)
    resumed = cli("train", "--local", "--resume", run, check=True)
    assert f"resuming at epoch {done + 1}/6" in resumed.stderr  # it did not start over
    assert f"removed {stale.name}" in resumed.stderr and not stale.exists()
    after = (run / "metrics.jsonl").read_text().splitlines()
    assert after[:done] == before  # the finished epochs were not run again
    assert [json.loads(x).get("epoch") for x in after][:6] == [1, 2, 3, 4, 5, 6]
    final = manifest_of(run)
    assert final["status"] == "completed" and final["weights_sha256"] == reference["weights_sha256"]


def test_sigterm_while_a_checkpoint_is_written_lets_it_finish(tmp_path, monkeypatch):
    """SIGTERM during a slow checkpoint write: the training loop stops at its next batch, the
    write in flight completes, and the run is left with every completed epoch on disk."""
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset

    from inflame import stopping
    from inflame.runtime import Context, DataInputs, MetricsLog
    from inflame.training import checkpoint
    from inflame.training.checkpoint import list_checkpoints, load_checkpoint
    from inflame.training.loop import fit

    slow_write = checkpoint.write_snapshot

    def slow(*args, **kwargs):
        time.sleep(1.0)  # a slow disk: the next epoch starts while this is in flight
        return slow_write(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "write_snapshot", slow)

    class Signalling(TensorDataset):
        def __getitem__(self, index):
            if stopping_epoch[0] == 2 and index == 5:
                os.kill(os.getpid(), signal.SIGTERM)  # as a platform would, mid-epoch 2
            return super().__getitem__(index)

    stopping_epoch = [0]
    torch.manual_seed(0)
    data = Signalling(torch.randn(40, 4), torch.randint(0, 2, (40,)))
    model = nn.Linear(4, 2)
    ctx = Context(
        job_name="t",
        data=DataInputs({}),
        output_dir=tmp_path / "model",
        checkpoint_dir=tmp_path / "checkpoints",
        hparams={},
        seed=1,
        metrics=MetricsLog(tmp_path / "metrics.jsonl"),
    )

    class Count(nn.Module):  # tells the dataset which epoch runs
        def forward(self, outputs, targets):
            return nn.functional.cross_entropy(outputs, targets)

    original = fit.__globals__["_seed_epoch"]

    def seed_epoch(seed, epoch, rank=0):
        stopping_epoch[0] = epoch + 1
        original(seed, epoch, rank)

    monkeypatch.setitem(fit.__globals__, "_seed_epoch", seed_epoch)
    with stopping.on_sigterm(), pytest.raises(stopping.Terminated, match="epoch 2"):
        fit(
            ctx,
            model,
            data,
            None,
            epochs=4,
            batch_size=8,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            loss_fn=Count(),
            num_workers=0,
        )
    found = list_checkpoints(tmp_path / "checkpoints")
    assert [epoch for epoch, _ in found] == [1]  # epoch 1's write, in flight, completed
    assert load_checkpoint(found[0][1]).epoch == 1
    assert not list((tmp_path / "checkpoints").glob(".*tmp*"))


def _training_process(root: int, local_rank: int) -> int:
    """The pid of the training process with LOCAL_RANK=`local_rank` started below `root`."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    todo, below = [root], []
    while todo:
        found = children.get(todo.pop(), [])
        below += found
        todo += found
    for pid in sorted(below):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"LOCAL_RANK={local_rank}".encode() in env:
            return pid
    raise AssertionError(f"no process with LOCAL_RANK={local_rank} below pid {root}")


@pytest.mark.parametrize(
    ("signum", "to", "code", "says"),
    [
        (signal.SIGTERM, "rank 1", 143, "Stopped by SIGTERM"),
        (signal.SIGINT, "inflame", 130, "Interrupted (SIGINT"),
    ],
)
def test_a_stop_reaches_every_process_of_a_ddp_run(
    cli, write_spec, tmp_path, signum, to, code, says
):
    """Ctrl-C to `inflame train --nproc-per-node 2`, or SIGTERM to one of its training
    processes only (a platform stopping one container): every process stops at the same safe
    point, quietly (torchrun included), and the run resumes."""
    spec = write_spec(hyperparameters={"epochs": 5})
    run = tmp_path / "ddp"
    proc = start_training(tmp_path, spec, "--run-dir", run, "--nproc-per-node", "2")
    wait_for(run / "checkpoints" / "epoch-0001.safetensors", proc)
    if to == "inflame":
        proc.send_signal(signum)
    else:
        os.kill(_training_process(proc.pid, 1), signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err and says in err
    assert "stopped after train batch" in err or "stopped after val batch" in err
    manifest = manifest_of(run)
    assert manifest["status"] == "interrupted"
    assert manifest["stopped_by"] == signal.Signals(signum).name
    assert not [p for p in (run / "checkpoints").iterdir() if ".tmp-" in p.name]
    resumed = cli("train", "--local", "--resume", run, check=True)
    assert "resuming at epoch" in resumed.stderr
    assert manifest_of(run)["status"] == "completed"


@pytest.mark.parametrize(("stop", "code"), [("Terminated", 143), ("KeyboardInterrupt", 130)])
def test_a_cloud_job_process_that_stopped_exits_quietly(monkeypatch, capsys, stop, code):
    """Ranks other than 0 of a cloud job stop with the others: one line, the signal's code."""
    from types import SimpleNamespace

    from inflame import job, stopping

    error = getattr(stopping, stop, KeyboardInterrupt)

    def stopped(*args, **kwargs):
        raise error("SIGTERM arrived; stopped after train batch 3/9 of epoch 2")

    monkeypatch.setattr("inflame.launcher.run_in_job", stopped)
    monkeypatch.setattr("inflame.jobprep.prepare_job", lambda *a, **k: SimpleNamespace(spec=None))
    monkeypatch.setattr(
        "inflame.targets.get_target",
        lambda name: SimpleNamespace(job_paths=lambda *a: None, capabilities=None),
    )
    with pytest.raises(SystemExit) as exited:
        job.main(["spec.toml", "--platform", "sagemaker"])
    assert exited.value.code == code
    err = capsys.readouterr().err
    assert err.startswith("inflame: stopped (SIGTERM arrived") and "Traceback" not in err


def test_a_lock_file_in_folders_that_do_not_exist_yet(tmp_path: Path):
    """`locked` (the sweep study's and the decode cache's lock) makes the folders it needs."""
    from inflame.runlock import locked

    path = tmp_path / "a" / "b" / "study.db.lock"
    with locked(path):
        assert path.is_file()


def test_the_lock_file_is_readable_by_its_owner_only(tmp_path: Path):
    """It holds the command line that took it (which may carry a token)."""
    import stat

    run = tmp_path / "run"
    run.mkdir()
    umask = os.umask(0)  # the mode asked for is the mode the file gets
    try:
        with RunLock(run):
            mode = stat.S_IMODE((run / LOCK_FILE).stat().st_mode)
    finally:
        os.umask(umask)
    assert mode == 0o600
