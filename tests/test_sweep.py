"""`inflame sweep`: the [sweep] table validated like the rest of the spec, real Optuna
studies in SQLite, every trial a real `inflame train` run (a small MLP that trains in a
second, tests/apps/blobs), pruning through the run's stop file, a killed sweep continued
from the trials' checkpoints, parallel trials, and the best trial's run used as any run."""

from __future__ import annotations

import itertools
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from inflame import tomlfile
from inflame.errors import SpecError
from inflame.spec import load_spec
from inflame.sweep.runner import Sweep, prepare_sweep
from tests.conftest import guarded_env
from tests.helpers import assert_clean_error, inflame_popen, run_inflame

BLOBS = Path(__file__).parent / "apps" / "blobs"
GOOD, BAD = 0.5, 1e-5  # learning rates: ~99 % after one epoch, and near chance


def blobs_spec(path: Path, sweep: dict, seed: int = 1, **hyperparameters) -> Path:
    spec = {
        "job": {"name": "blobs", "app": str(BLOBS), "seed": seed},
        "hyperparameters": {"epochs": 3, **hyperparameters},
        "sweep": sweep,
    }
    path.write_text(tomlfile.dumps(spec), encoding="utf-8")
    return path


def trial_dir(sweep_dir: Path, number: int) -> Path:
    return sweep_dir / "trials" / f"trial-{number:04d}"


def saved_value(run: Path, metric: str = "val_accuracy") -> float:
    """The metric at the epoch the run saved, read independently of inflame.sweep."""
    saved = json.loads((run / "manifest.json").read_text())["saved"]["epoch"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return next(r[metric] for r in records if r.get("epoch") == saved)


def epochs_of(run: Path) -> list[int]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["epoch"] for line in lines if '"epoch"' in line]


# ---- the [sweep] table ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sweep", "says"),
    [
        ({"trails": 3}, "unknown key `sweep.trails`. Did you mean `trials`?"),
        ({"sampler": "bayes"}, "`sweep.sampler` must be one of 'tpe', 'random', 'grid'"),
        ({"direction": "up"}, "`sweep.direction` must be one of"),
        ({"trials": 0}, "`sweep.trials` must be a whole number from 1"),
        ({"metric": ""}, "`sweep.metric` must name a metric"),
        (
            {"hyperparameters": {"learning_rate": {"log_uniformm": [1e-4, 1e-1]}}},
            "Did you mean `log_uniform`?",
        ),
        ({"hyperparameters": {"learning_rate": 0.1}}, "A fixed value belongs in [hyperparameters]"),
        ({"hyperparameters": {"learning_rate": {"uniform": [0.1, 0.1]}}}, "low < high"),
        ({"hyperparameters": {"learning_rate": {"log_uniform": [0, 1]}}}, "low must be above 0"),
        ({"hyperparameters": {"hidden": {"int": [1.5, 4]}}}, "two whole numbers"),
        ({"hyperparameters": {"hidden": {"int": [1, 4], "step": 5}}}, "does not fit in [1, 4]"),
        ({"hyperparameters": {"optimizer": {"choice": []}}}, "non-empty list"),
        ({"hyperparameters": {"optimizer": {"choice": ["sgd", "sgd"]}}}, "lists a value twice"),
        (
            {"hyperparameters": {"learning_rate": {"uniform": [0, 1], "choice": [1]}}},
            "exactly one distribution",
        ),
        (
            {"sampler": "grid", "hyperparameters": {"learning_rate": {"log_uniform": [1e-4, 1]}}},
            "a grid search needs a finite set of values",
        ),
    ],
)
def test_the_sweep_table_is_checked_with_the_spec(tmp_path: Path, sweep, says):
    with pytest.raises(SpecError) as caught:
        load_spec(blobs_spec(tmp_path / "job.toml", sweep))
    message = " ".join(str(caught.value).split())
    assert says in message and "job.toml:" in message


@pytest.mark.parametrize(
    ("space", "says"),
    [
        ({"learning_rat": {"uniform": [0.1, 0.5]}}, "Did you mean `learning_rate`?"),
        ({"hidden": {"uniform": [2.0, 8.0]}}, "`hidden` is declared int"),
        ({"optimizer": {"choice": ["sgd", "lbfgs"]}}, "would try 'lbfgs'"),
        ({"epochs": {"int": [-1, 3]}}, "would try -1"),
    ],
)
def test_the_space_is_checked_against_the_app(tmp_path: Path, space, says):
    spec = blobs_spec(tmp_path / "job.toml", {"hyperparameters": space})
    if "epochs" in space:  # the blobs app does not bound epochs: the fowl app does
        spec.write_text(spec.read_text().replace(str(BLOBS), "fowl_classifier"))
    with pytest.raises(SpecError, match=r"sweep\.hyperparameters") as caught:
        prepare_sweep(spec, [])
    assert says in " ".join(str(caught.value).split())


def test_a_bad_sweep_is_a_clean_error_before_anything_runs(tmp_path: Path):
    spec = blobs_spec(tmp_path / "job.toml", {"hyperparameters": {}})
    result = run_inflame("sweep", spec, cwd=tmp_path)
    assert_clean_error(result, "no [sweep.hyperparameters]: nothing to search")
    spec = blobs_spec(tmp_path / "job.toml", {"hyperparameters": {"hiden": {"int": [2, 8]}}})
    assert_clean_error(run_inflame("sweep", spec, cwd=tmp_path), "Did you mean `hidden`?")
    assert not (tmp_path / "sweeps").exists()


def test_every_distribution_is_drawn_within_its_space(tmp_path: Path):
    space = {
        "learning_rate": {"log_uniform": [1e-4, 1e-1]},
        "hidden": {"int": [4, 32], "step": 4},
        "samples": {"log_int": [64, 4096]},
        "optimizer": {"choice": ["sgd", "adam"]},
    }
    for sampler in ("tpe", "random"):
        spec = blobs_spec(
            tmp_path / f"{sampler}.toml", {"sampler": sampler, "hyperparameters": space}
        )
        plans = Sweep(spec, trials=12, out=tmp_path / sampler).plan()
        assert [p["trial"] for p in plans] == list(range(12))
        for plan in plans:
            params = plan["params"]
            assert 1e-4 <= params["learning_rate"] <= 1e-1
            assert isinstance(params["hidden"], int) and params["hidden"] % 4 == 0
            assert 4 <= params["hidden"] <= 32 and 64 <= params["samples"] <= 4096
            assert params["optimizer"] in ("sgd", "adam")
            assert f"""'hyperparameters.optimizer="{params["optimizer"]}"'""" in plan["command"]
            assert f"hyperparameters.hidden={params['hidden']} " in plan["command"]
        assert len({p["params"]["learning_rate"] for p in plans}) == 12  # drawn, not fixed
    assert not (tmp_path / "tpe").exists()  # a dry run stores nothing

    grid = {"hidden": {"int": [2, 6], "step": 2}, "optimizer": {"choice": ["sgd", "adam"]}}
    spec = blobs_spec(tmp_path / "grid.toml", {"sampler": "grid", "hyperparameters": grid})
    plans = Sweep(spec, trials=100, out=tmp_path / "grid").plan()  # capped at the grid's 6
    drawn = sorted((p["params"]["hidden"], p["params"]["optimizer"]) for p in plans)
    assert drawn == sorted(itertools.product([2, 4, 6], ["sgd", "adam"]))


# ---- sweeps that train ------------------------------------------------------------------


def test_a_parallel_grid_sweep_finds_the_better_learning_rate(tmp_path: Path):
    space = {"learning_rate": {"choice": [BAD, GOOD]}}
    spec = blobs_spec(tmp_path / "job.toml", {"sampler": "grid", "hyperparameters": space})
    result = run_inflame("sweep", spec, "--out", "sw", "--parallel", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    sweep = tmp_path / "sw"
    manifests = [json.loads((trial_dir(sweep, n) / "manifest.json").read_text()) for n in (0, 1)]
    first, second = sorted(manifests, key=lambda m: m["created"])
    assert second["created"] < first["finished"]  # the second started before the first ended
    for manifest in manifests:  # the CPUs split between the trials
        assert manifest["environment"]["torch_threads"] == max(1, (os.cpu_count() or 1) // 2)
    summary = json.loads((sweep / "summary.json").read_text())
    best = summary["best"]
    assert best["params"] == {"learning_rate": GOOD}
    assert Path(result.stdout.strip()) == trial_dir(sweep, best["trial"]).relative_to(tmp_path)
    values = {}
    for row in summary["trials"]:
        run = trial_dir(sweep, row["trial"])
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["status"] == "completed"
        assert manifest["hyperparameters"]["learning_rate"] == row["params"]["learning_rate"]
        assert row["value"] == saved_value(run)
        values[row["params"]["learning_rate"]] = row["value"]
    assert values[GOOD] > 0.95 > 0.8 > values[BAD]
    assert summary["trials"][0]["trial"] == best["trial"]  # best first
    csv_rows = (sweep / "summary.csv").read_text().splitlines()
    assert csv_rows[0].startswith("trial,state,value,epochs,learning_rate")
    assert csv_rows[1].startswith(f"{best['trial']},complete,{best['value']!r}")
    assert (sweep / "best").resolve() == trial_dir(sweep, best["trial"]).resolve()
    for plot in ("optimization_history", "param_importances", "parallel_coordinate"):
        assert (sweep / "plots" / f"{plot}.png").read_bytes()[:4] == b"\x89PNG"
    assert "study.db" in os.listdir(sweep)

    shown = run_inflame("sweep", "show", "sw", "--json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    rows = [json.loads(line) for line in shown.stdout.splitlines()]
    assert [r["params"]["learning_rate"] for r in rows] == [GOOD, BAD]
    table = run_inflame("sweep", "show", "sw", cwd=tmp_path)
    assert "complete" in table.stdout and "learning_rate" in table.stdout

    again = run_inflame("sweep", spec, "--out", "sw", cwd=tmp_path)  # the study is done
    assert again.returncode == 0 and "started" not in again.stderr
    changed = blobs_spec(
        tmp_path / "job.toml", {"sampler": "grid", "hyperparameters": space}, seed=2
    )
    assert_clean_error(
        run_inflame("sweep", changed, "--out", "sw", cwd=tmp_path),
        "was started from a different spec or search space",
    )


def test_unpromising_trials_are_pruned(tmp_path: Path):
    space = {"learning_rate": {"choice": [GOOD, 0.3, 2e-5, BAD]}}
    table = {
        "sampler": "grid",
        "pruner_startup_trials": 2,
        "pruner_warmup_epochs": 0,
        "hyperparameters": space,
    }
    spec = blobs_spec(tmp_path / "job.toml", table, seed=4, epochs=3, samples=2000)
    order = [p["params"]["learning_rate"] for p in Sweep(spec, out=tmp_path / "sw").plan()]
    # the grid's order is fixed by the seed; this test needs the good rates first
    assert sorted(order[:2]) == [0.3, GOOD], f"choose another seed: the order is {order}"
    result = run_inflame("sweep", spec, "--out", "sw", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {r["trial"]: r for r in json.loads((tmp_path / "sw/summary.json").read_text())["trials"]}
    for number in (0, 1):
        assert rows[number]["state"] == "complete"
        assert epochs_of(trial_dir(tmp_path / "sw", number)) == [1, 2, 3]
    for number in (2, 3):  # near chance after epoch 1, far below the median: stopped
        run = trial_dir(tmp_path / "sw", number)
        manifest = json.loads((run / "manifest.json").read_text())
        assert rows[number]["state"] == "pruned", rows[number]
        assert manifest["status"] == "interrupted"
        assert manifest["stopped_by"] == "the sweep's pruner"
        # stopped at the first safe point after the sweep saw epoch 1: never all 3 epochs
        assert epochs_of(run) in ([1], [1, 2]), epochs_of(run)
        assert f"trial {number}: pruned after epoch 1" in result.stderr


def test_a_killed_sweep_continues_where_it_stopped(tmp_path: Path):
    space = {"learning_rate": {"choice": [GOOD, 0.3]}}
    table = {"sampler": "grid", "pruner": "none", "hyperparameters": space}
    spec = blobs_spec(tmp_path / "job.toml", table, epochs=4, samples=3000)
    sweep = tmp_path / "sw"
    env = guarded_env(INFLAME_HOME=str(tmp_path / "home"))
    process = inflame_popen(["sweep", spec, "--out", sweep], cwd=tmp_path, env=env)
    second = trial_dir(sweep, 1) / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while not (second.is_file() and epochs_of(trial_dir(sweep, 1))):
        assert process.poll() is None and time.monotonic() < deadline, "trial 1 never trained"
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)  # no chance to clean up
    process.wait()
    first_manifest = (trial_dir(sweep, 0) / "manifest.json").read_bytes()
    # the orphaned trial is told to stop (SIGTERM) and checkpoints
    while json.loads((trial_dir(sweep, 1) / "manifest.json").read_text())["status"] == "running":
        assert time.monotonic() < deadline, "the orphaned trial kept training"
        time.sleep(0.1)
    stopped_at = epochs_of(trial_dir(sweep, 1))

    result = run_inflame("sweep", spec, "--out", "sw", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "trial 0: started" not in result.stderr  # finished: not repeated
    assert (trial_dir(sweep, 0) / "manifest.json").read_bytes() == first_manifest
    assert "trial 1: resumed (left unfinished by an earlier sweep)" in result.stderr
    resumed = json.loads((trial_dir(sweep, 1) / "manifest.json").read_text())
    assert resumed["status"] == "completed" and resumed["resumed"]
    assert epochs_of(trial_dir(sweep, 1)) == [1, 2, 3, 4] and len(stopped_at) < 4
    rows = json.loads((sweep / "summary.json").read_text())["trials"]
    assert sorted(r["trial"] for r in rows) == [0, 1]
    assert {r["state"] for r in rows} == {"complete"}
    assert not trial_dir(sweep, 2).exists()


def test_the_best_trial_is_a_run_for_predict_and_eval(write_spec, demo_set: Path, tmp_path: Path):
    spec = write_spec(
        hyperparameters={"epochs": 1},
        sweep={"sampler": "grid", "hyperparameters": {"learning_rate": {"choice": [0.003]}}},
    )
    assert run_inflame("sweep", spec, "--out", "sw", cwd=tmp_path).returncode == 0
    image = sorted((demo_set / "test" / "circle").iterdir())[0]
    predicted = run_inflame("predict", image, "--run", "sw/best", cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    [answer] = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert answer["label"] in ("circle", "square", "triangle")
    evaluated = run_inflame("eval", "sw/best", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads((tmp_path / "sw/trials/trial-0000/eval/report.json").read_text())
    assert report["images"] == 12


def test_a_trial_is_taken_over_only_when_its_sweep_is_gone():
    from inflame.sweep.runner import _alive

    here = platform.node()
    assert _alive({"host": here, "pid": os.getppid()})  # a live process on this machine
    assert not _alive({"host": here, "pid": os.getpid()})  # a pid reused by this very sweep
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert not _alive({"host": here, "pid": dead.pid})
    assert _alive({"host": "another-machine", "pid": 1})  # cannot be checked from here
    assert not _alive(None)


def test_opening_a_sqlite_study_waits_for_another_process_opening_it(tmp_path: Path):
    """Optuna creates its tables unguarded; two sweeps starting together raced into
    "table already exists" until the opening was serialised by a lock beside study.db."""
    import threading

    from inflame.runlock import locked
    from inflame.sweep.study import default_storage, import_optuna, open_study

    import_optuna()  # imported before the wait below, so the wait measures the lock only

    space = {"learning_rate": {"log_uniform": [0.05, 0.5]}}
    sweep = load_spec(blobs_spec(tmp_path / "job.toml", {"hyperparameters": space})).sweep
    storage = default_storage(tmp_path)
    opened: list[object] = []
    opener = threading.Thread(
        target=lambda: opened.append(open_study(storage, "s", sweep, 0, "id")), daemon=True
    )
    with locked(tmp_path / "study.db.lock"):
        opener.start()
        opener.join(timeout=3)
        assert opener.is_alive() and opened == []  # waits for the holder
        assert not (tmp_path / "study.db").exists()
    opener.join(timeout=60)
    assert len(opened) == 1 and (tmp_path / "study.db").is_file()


def test_two_sweep_processes_share_one_study(tmp_path: Path):
    space = {"learning_rate": {"log_uniform": [0.05, 0.5]}}
    spec = blobs_spec(
        tmp_path / "job.toml", {"sampler": "random", "trials": 3, "hyperparameters": space}
    )
    command = ["sweep", spec, "--out", tmp_path / "sw"]
    env = guarded_env(INFLAME_HOME=str(tmp_path / "home"))
    sweeps = [inflame_popen(command, cwd=tmp_path, env=env) for _ in range(2)]
    outputs = [process.communicate(timeout=600)[1] for process in sweeps]
    assert [process.returncode for process in sweeps] == [0, 0], outputs
    rows = json.loads((tmp_path / "sw" / "summary.json").read_text())["trials"]
    # each process asks for a trial only while the study holds fewer than 3; two asking at
    # the same moment can make it 4, never more, and no trial is trained twice
    assert 3 <= len(rows) <= 4 and {r["state"] for r in rows} == {"complete"}
    started = [line for out in outputs for line in out.splitlines() if ": started" in line]
    assert len(started) == len(rows)
    assert all("started" in out for out in outputs)  # both did some of the work
    for row in rows:
        run = trial_dir(tmp_path / "sw", row["trial"])
        assert json.loads((run / "manifest.json").read_text())["status"] == "completed"
        assert row["value"] == saved_value(run)


def test_a_misspelt_metric_gets_the_reported_one_suggested(tmp_path: Path):
    from inflame.sweep.trials import MetricMissing, final_value

    (tmp_path / "manifest.json").write_text(json.dumps({"saved": {"epoch": 1}}))
    (tmp_path / "metrics.jsonl").write_text(
        json.dumps({"epoch": 1, "val_accuracy": 0.5, "val_loss": 1.0}) + "\n"
    )
    assert final_value(tmp_path, "val_accuracy") == 0.5
    with pytest.raises(MetricMissing) as missing:
        final_value(tmp_path, "val_acc")
    said = str(missing.value)
    assert "reports val_accuracy, val_loss. Did you mean `val_accuracy`?" in said
