"""Values of `${env:…}` references reach the job as environment variables and nowhere else:
not the code bundle, the ledger, a run's spec.toml or manifest, or what inflame prints."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from inflame.errors import InflameError
from inflame.ledger import Ledger
from inflame.redact import redact
from inflame.submit import plan_submission, submit_plan
from tests.conftest import guarded_env
from tests.emulation import assert_all_ok
from tests.helpers import write_cloud_spec
from tests.test_sagemaker import BUCKET, ROLE, run_sagemaker_job

SECRET = "tok-SECRET-7f3a9c2e"
APP = """\
import json


def train(ctx):
    ctx.output_dir.mkdir(parents=True, exist_ok=True)
    (ctx.output_dir / "seen.json").write_text(json.dumps({"token": ctx.hparams["api_token"]}))
"""


@pytest.fixture
def secret_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MY_API_TOKEN", SECRET)
    monkeypatch.setenv("INFLAME_HOME", str(tmp_path / "home"))
    app = tmp_path / "tokenapp"
    app.mkdir()
    (app / "app.py").write_text(APP)
    return write_cloud_spec(
        tmp_path / "secret.toml",
        "uses_a_token",
        {"train": f"s3://{BUCKET}/data/train", "val": f"s3://{BUCKET}/data/val"},
        "sagemaker",
        {"role": ROLE, "region": "us-east-1", "output": f"s3://{BUCKET}/inflame"},
        job={"app": str(app)},
        hyperparameters={"api_token": "${env:MY_API_TOKEN}"},
        compute={"gpus_per_node": 0, "spot": False},
        targets={"sagemaker": {"instance_type": "ml.m5.xlarge"}},
    )


def bundle_text(plan) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(plan.bundle.data), mode="r:gz") as tar:
        return b"".join(tar.extractfile(m).read() for m in tar.getmembers() if m.isfile())


def test_a_secret_travels_only_as_an_environment_variable(
    secret_spec: Path, demo_set: Path, tmp_path: Path, image_python: Path, monkeypatch
):
    plan = plan_submission(secret_spec, "sagemaker")
    assert plan.request["Environment"]["MY_API_TOKEN"] == SECRET  # how the job gets it
    assert SECRET.encode() not in plan.bundle.data and SECRET.encode() not in bundle_text(plan)
    assert b'api_token = "${env:MY_API_TOKEN}"' in bundle_text(plan)
    assert SECRET not in plan.rendered and SECRET not in json.dumps(plan.summary)

    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        ledger_file = tmp_path / "ledger.sqlite"
        submit_plan(plan, Ledger(ledger_file))
    assert SECRET.encode() not in ledger_file.read_bytes()

    # inside the job, the app sees the value; the run's records hold only the reference
    results = run_sagemaker_job(plan, demo_set, tmp_path / "job", tmp_path / "ckpt", image_python)
    assert_all_ok(results)
    run = tmp_path / "job" / "algo-1" / "opt" / "ml" / "model"
    assert json.loads((run / "model" / "seen.json").read_text()) == {"token": SECRET}
    for record in ("manifest.json", "spec.toml"):
        assert SECRET not in (run / record).read_text(), record
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["hyperparameters"]["api_token"] == "${env:MY_API_TOKEN}"


def test_nothing_printed_or_stored_locally_holds_the_secret(secret_spec: Path, tmp_path: Path):
    env = guarded_env(MY_API_TOKEN=SECRET, INFLAME_HOME=str(tmp_path / "home"))
    dry = subprocess.run(
        [
            sys.executable,
            "-m",
            "inflame",
            "submit",
            str(secret_spec),
            "--target",
            "sagemaker",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert dry.returncode == 0, dry.stderr
    assert SECRET not in dry.stdout + dry.stderr
    assert json.loads(dry.stdout)["Environment"]["MY_API_TOKEN"] == "***"

    # the same app trained here: run folder and `inflame runs show` keep the reference only
    spec_text = secret_spec.read_text().replace(f"s3://{BUCKET}/data", str(tmp_path / "d"))
    for name in ("train", "val"):
        (tmp_path / "d" / name).mkdir(parents=True)
    local_spec = tmp_path / "local.toml"
    local_spec.write_text(spec_text)
    train = subprocess.run(
        [
            sys.executable,
            "-m",
            "inflame",
            "train",
            "--local",
            str(local_spec),
            "--run-dir",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert train.returncode == 0, train.stderr
    assert json.loads((tmp_path / "run" / "model" / "seen.json").read_text())["token"] == SECRET
    for record in ("manifest.json", "spec.toml"):
        assert SECRET not in (tmp_path / "run" / record).read_text(), record
    shown = subprocess.run(
        [sys.executable, "-m", "inflame", "runs", "show", str(tmp_path / "run"), "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert shown.returncode == 0 and SECRET not in shown.stdout + shown.stderr


PROVIDERS = {
    "vertex": (
        {"train": "gs://my-data/t", "val": "gs://my-data/v"},
        {"project": "my-proj", "region": "us-central1", "staging_bucket": "gs://my-staging"},
    ),
    "azure": (
        {"train": "azureml://datastores/d/paths/t", "val": "azureml://datastores/d/paths/v"},
        {
            "subscription_id": "00000000-0000-0000-0000-000000000000",
            "resource_group": "rg",
            "workspace": "ws",
            "instance_type": "Standard_NC24ads_A100_v4",
        },
    ),
}


@pytest.mark.parametrize("target", sorted(PROVIDERS))
def test_every_provider_passes_the_secret_as_a_variable_only(
    target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("MY_API_TOKEN", SECRET)
    monkeypatch.setenv("INFLAME_HOME", str(tmp_path / "home"))
    (tmp_path / "tokenapp").mkdir()
    (tmp_path / "tokenapp" / "app.py").write_text(APP)
    data, settings = PROVIDERS[target]
    spec = write_cloud_spec(
        tmp_path / "secret.toml",
        "uses_a_token",
        data,
        target,
        settings,
        job={"app": str(tmp_path / "tokenapp")},
        hyperparameters={"api_token": "${env:MY_API_TOKEN}"},
        compute={"gpus_per_node": 1, "spot": False},
    )
    plan = plan_submission(spec, target)
    assert SECRET in json.dumps(plan.request)  # the job's environment carries it
    assert SECRET not in json.dumps(plan.stored_request)  # what the ledger keeps
    assert SECRET not in plan.rendered and SECRET not in json.dumps(plan.summary)
    assert SECRET.encode() not in bundle_text(plan)


def test_a_variable_of_the_platform_cannot_be_overridden(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("INFLAME_HOME", str(tmp_path / "home"))
    spec = write_cloud_spec(
        tmp_path / "s.toml",
        "x",
        PROVIDERS["vertex"][0],
        "vertex",
        PROVIDERS["vertex"][1],
        hyperparameters={"architecture": "${env:INFLAME_PLATFORM_ROOT:-resnet18}"},
    )
    monkeypatch.setenv("INFLAME_PLATFORM_ROOT", "resnet18")
    with pytest.raises(InflameError, match=r"hyperparameters\.architecture.*INFLAME_PLATFORM_ROOT"):
        plan_submission(spec, "vertex")
    monkeypatch.delenv("INFLAME_PLATFORM_ROOT")
    plan = plan_submission(spec, "vertex")  # unset: the default, and nothing to pass on
    [pool] = plan.request["jobSpec"]["workerPoolSpecs"]
    assert "INFLAME_PLATFORM_ROOT" not in {e["name"] for e in pool["containerSpec"]["env"]}


def test_redaction_masks_known_values_secret_names_and_credential_shapes():
    request = {
        "Environment": {"WANDB_API_KEY": "abc", "PLAIN": "value-from-env"},
        "env": [{"name": "GITHUB_TOKEN", "value": "x"}, {"name": "EPOCHS", "value": "3"}],
        "uri": "https://acct.blob.core.windows.net/c?sv=2021&sig=abc%2Fdef&se=1",
        "note": "key AKIAABCDEFGHIJKLMNOP in text",
        "tokenizer": "bert-base",
    }
    masked = redact(request, ["value-from-env"])
    assert masked["Environment"] == {"WANDB_API_KEY": "***", "PLAIN": "***"}
    assert masked["env"] == [
        {"name": "GITHUB_TOKEN", "value": "***"},
        {"name": "EPOCHS", "value": "3"},
    ]
    assert masked["uri"] == "https://acct.blob.core.windows.net/c?sv=2021&sig=***&se=1"
    assert masked["note"] == "key *** in text" and masked["tokenizer"] == "bert-base"
    assert request["Environment"]["WANDB_API_KEY"] == "abc"  # a copy: the request is intact


def test_a_spec_never_shows_a_secret_in_its_repr(secret_spec: Path):
    """A spec may be printed in a traceback or a debug log: the values of its `${env:…}`
    references stay out of its repr."""
    from inflame.spec import load_spec

    spec = load_spec(secret_spec)
    assert SECRET in spec.env_values.values()  # it holds the value, for the job's environment
    assert SECRET not in repr(spec)
