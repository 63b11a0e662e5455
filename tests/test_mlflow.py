"""MLflow tracking: a finished run logged to a real SQLite-backed MLflow store and read back
with MLflow's own client (parameters, per-epoch metric history, hash tags, artifacts), an
evaluation added to the same MLflow run, model registration, and a failing store that never
fails the run and is made good with `inflame runs sync`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from inflame import tomlfile
from inflame.errors import SpecError
from inflame.spec import load_spec
from tests.helpers import run_inflame

BLOBS = Path(__file__).parent / "apps" / "blobs"


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_run_its_evaluation_and_its_model_versions_in_mlflow(write_spec, tmp_path: Path):
    spec = write_spec(tracking={"mlflow": "sqlite:///store/mlflow.db"})  # beside the spec
    trained = run_inflame("train", "--local", spec, "--run-dir", "run", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    run = tmp_path / "run"
    manifest = json.loads((run / "manifest.json").read_text())
    record = manifest["tracking"]["mlflow"]
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    assert record["tracking_uri"] == uri
    client = MlflowClient(tracking_uri=uri)
    logged = client.get_run(record["run_id"])
    assert client.get_experiment(logged.info.experiment_id).name == "tiny"  # the job's name
    assert logged.info.status == "FINISHED" and logged.info.run_name == "run"
    hparams = manifest["hyperparameters"]
    assert logged.data.params["learning_rate"] == json.dumps(hparams["learning_rate"])
    assert logged.data.params["architecture"] == hparams["architecture"]
    assert logged.data.params["inflame.seed"] == "3"
    tags = logged.data.tags
    assert tags["inflame.weights_sha256"] == manifest["weights_sha256"]
    assert tags["inflame.spec_sha256"] == manifest["spec"]["resolved_sha256"]
    assert tags["inflame.data.train"] == manifest["data"]["inputs"]["train"]["fingerprint"]
    epochs = [r for r in records(run) if "epoch" in r]
    for metric in ("train_loss", "val_accuracy", "learning_rate"):
        history = client.get_metric_history(record["run_id"], metric)
        assert [(h.step, h.value) for h in history] == [(r["epoch"], r[metric]) for r in epochs]
    test_score = next(r for r in records(run) if "test_accuracy" in r)["test_accuracy"]
    assert logged.data.metrics["test_accuracy"] == test_score
    top = {a.path for a in client.list_artifacts(record["run_id"])}
    assert {"model", "metrics.jsonl", "manifest.json", "spec.toml", "curves.png"} <= top
    local = Path(client.download_artifacts(record["run_id"], "model", str(tmp_path / "dl")))
    weights = hashlib.sha256((local / "weights.safetensors").read_bytes()).hexdigest()
    assert weights == manifest["weights_sha256"]
    assert (tmp_path / "store" / "mlartifacts").is_dir()  # beside the database, not the cwd
    assert not (tmp_path / "mlruns").exists()

    evaluated = run_inflame("eval", "run", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads((run / "eval" / "report.json").read_text())
    metrics = client.get_run(record["run_id"]).data.metrics
    assert metrics["eval_test_accuracy"] == report["accuracy"]
    assert metrics["eval_test_loss"] == report["loss"]
    files = {a.path for a in client.list_artifacts(record["run_id"], "eval")}
    assert {"eval/report.html", "eval/report.json", "eval/results.csv"} <= files

    for version in (1, 2):
        registered = run_inflame("runs", "register", "run", "--name", "fowl", cwd=tmp_path)
        assert registered.returncode == 0, registered.stderr
        assert f"registered fowl version {version}" in registered.stdout
        model = client.get_model_version("fowl", str(version))
        assert model.run_id == record["run_id"]
        assert model.tags["inflame.weights_sha256"] == manifest["weights_sha256"]
    entries = json.loads((run / "manifest.json").read_text())["registered"]
    assert [(e["name"], e["version"]) for e in entries] == [("fowl", 1), ("fowl", 2)]

    # synced to another store (a relative path: from the current folder), the run's MLflow
    # run is that store's from then on: registering goes there
    synced = run_inflame("runs", "sync", "run", "--mlflow-uri", "sqlite:///b.db", cwd=tmp_path)
    assert synced.returncode == 0, synced.stderr
    other = f"sqlite:///{tmp_path / 'b.db'}"
    moved = json.loads((run / "manifest.json").read_text())["tracking"]["mlflow"]
    assert moved["tracking_uri"] == other and moved["run_id"] != record["run_id"]
    assert run_inflame("runs", "register", "run", "--name", "fowl", cwd=tmp_path).returncode == 0
    assert MlflowClient(tracking_uri=other).get_model_version("fowl", "1").run_id == moved["run_id"]


def test_a_failing_store_never_fails_the_run_and_sync_logs_it_later(tmp_path: Path):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the store's folder should be")
    spec = tmp_path / "job.toml"
    spec.write_text(
        tomlfile.dumps(
            {
                "job": {"name": "blobs", "app": str(BLOBS), "seed": 1},
                "hyperparameters": {"epochs": 2},
                "tracking": {"mlflow": f"sqlite:///{blocked}/mlflow.db"},
            }
        )
    )
    trained = run_inflame("train", "--local", spec, "--run-dir", "run", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "warning: MLflow" in trained.stderr and "runs sync" in trained.stderr
    assert "Traceback" not in trained.stderr
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["tracking"]["mlflow"]["error"]

    good = f"sqlite:///{tmp_path / 'good.db'}"
    synced = run_inflame("runs", "sync", "run", "--mlflow-uri", good, cwd=tmp_path)
    assert synced.returncode == 0, synced.stderr
    record = json.loads((tmp_path / "run" / "manifest.json").read_text())["tracking"]["mlflow"]
    client = MlflowClient(tracking_uri=good)
    history = client.get_metric_history(record["run_id"], "val_accuracy")
    expected = [(r["epoch"], r["val_accuracy"]) for r in records(tmp_path / "run")]
    assert [(h.step, h.value) for h in history] == expected and len(expected) == 2


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("mlflow.db", "must be an MLflow tracking URI"),
        ("https://me:hunter2@mlflow.example", "holds a password"),
        ("postgresql://me:hun/ter2@db.example/mlflow", "holds a password"),
        ("https://mlflow.example/?token=hunter2", "holds a password"),
        (3, "must be a tracking URI"),
    ],
)
def test_the_tracking_uri_is_checked(write_spec, uri, says):
    with pytest.raises(SpecError) as caught:
        load_spec(write_spec(tracking={"mlflow": uri}))
    assert says in str(caught.value) and "hunter2" not in str(caught.value)


def test_a_downloaded_cloud_run_is_logged_here_when_its_spec_asks(finished_run, tmp_path: Path):
    """A cloud job cannot reach this machine's tracking URI, so `download` logs the run from
    here; a run whose spec asks for no MLflow is left alone."""
    import shutil

    from inflame.submit import _log_to_mlflow

    untracked = tmp_path / "untracked"
    shutil.copytree(finished_run, untracked)
    _log_to_mlflow(untracked)
    assert "tracking" not in json.loads((untracked / "manifest.json").read_text())

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = tomlfile.loads((run / "spec.toml").read_text())
    spec["tracking"] = {"mlflow": uri}
    (run / "spec.toml").write_text(tomlfile.dumps(spec))
    _log_to_mlflow(run)
    record = json.loads((run / "manifest.json").read_text())["tracking"]["mlflow"]
    logged = MlflowClient(uri).get_run(record["run_id"])
    assert logged.data.tags["inflame.run_dir"] == str(run.absolute())
    manifest = json.loads((run / "manifest.json").read_text())
    assert logged.data.tags["inflame.weights_sha256"] == manifest["weights_sha256"]
