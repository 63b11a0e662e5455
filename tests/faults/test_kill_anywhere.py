"""A property of every run: killed at any moment, by SIGKILL or SIGTERM, any number of
times, and resumed each time, it ends with the weights of a run that never stopped. Kill
times come from a seeded generator, so a failure is reproducible. Also: two processes racing
for the same new run folder, and several submitting to one ledger at once."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
from pathlib import Path

from inflame.ledger import Ledger
from tests.conftest import guarded_env
from tests.helpers import inflame_popen


def _start(tmp_path: Path, *args: str | Path) -> subprocess.Popen[str]:
    env = guarded_env(INFLAME_RUNS_DIR=str(tmp_path / "runs"), INFLAME_HOME=str(tmp_path / "h"))
    return inflame_popen(["train", "--local", *args], cwd=tmp_path, env=env)


def test_killed_anywhere_any_number_of_times_the_run_ends_the_same(cli, write_spec, tmp_path):
    spec = write_spec(hyperparameters={"epochs": 4})
    reference = json.loads(
        (
            Path(cli("train", "--local", spec, check=True).stdout.split()[-1]) / "manifest.json"
        ).read_text()
    )["weights_sha256"]
    rng = random.Random(20261202)
    run = tmp_path / "run"
    kills = []
    for _attempt in range(12):
        started = (run / "manifest.json").is_file()
        args = ("--resume", run) if started else (spec, "--run-dir", run)
        proc = _start(tmp_path, *args)
        if len(kills) < 4:  # four kills at random moments, then let it finish
            delay, how = rng.uniform(0.3, 6.0), rng.choice([signal.SIGKILL, signal.SIGTERM])
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(how)
                kills.append((round(delay, 2), how.name))
        _, err = proc.communicate(timeout=300)
        assert "Traceback" not in err, err
        if proc.returncode == 0:
            break
        assert proc.returncode in (-signal.SIGKILL, -signal.SIGTERM, 143), (proc.returncode, err)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "completed", kills
    assert manifest["weights_sha256"] == reference, kills
    assert kills, "no kill landed: the runs were too quick for this test"


def test_two_processes_racing_for_one_new_run_folder_one_wins(write_spec, tmp_path):
    spec = write_spec(hyperparameters={"epochs": 1})
    run = tmp_path / "contested"
    procs = [_start(tmp_path, spec, "--run-dir", run) for _ in range(2)]
    results = [(p.wait(timeout=300), p.communicate()[1]) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = " ".join(next(err for code, err in results if code == 2).split())
    assert "Traceback" not in loser
    assert "in use by another process" in loser or "not empty" in loser or "filled" in loser
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    winner = next(p for p, (code, _) in zip(procs, results, strict=True) if code == 0)
    assert manifest["pid"] == winner.pid


def test_concurrent_submissions_are_all_recorded_once(tmp_path):
    path = tmp_path / "ledger.sqlite"
    Ledger(path)
    ids: list[int] = []
    errors: list[BaseException] = []

    def submit(n: int) -> None:
        try:
            for i in range(10):
                ids.append(
                    Ledger(path).begin(
                        target="t",
                        name=f"job-{n}-{i}",
                        spec_sha256="s",
                        bundle_sha256="b",
                        request={"n": n, "i": i},
                    )
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    records = Ledger(path).all()
    assert len(records) == 60 and len(set(ids)) == 60
    assert {r.name for r in records} == {f"job-{n}-{i}" for n in range(6) for i in range(10)}


def test_a_users_own_spec_toml_in_the_run_dir_is_never_removed(cli, write_spec, tmp_path):
    mine = tmp_path / "project"
    mine.mkdir()
    (mine / "spec.toml").write_text("# my notes, not a run\n")
    result = cli("train", "--local", write_spec(), "--run-dir", mine)
    assert result.returncode == 2 and "not empty" in result.stderr
    assert (mine / "spec.toml").read_text() == "# my notes, not a run\n"
