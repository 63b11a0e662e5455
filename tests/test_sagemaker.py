"""The SageMaker target with the real boto3/botocore: dry-run validated by botocore's model,
the submit path against moto, and the job's own command run in a simulated container."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from inflame import tomlfile
from inflame.errors import InflameError
from inflame.ledger import Ledger
from inflame.submit import cancel, download, job_logs, plan_submission, refresh, submit_plan
from inflame.targets.sagemaker import validate_request
from tests.conftest import guarded_env
from tests.helpers import write_cloud_spec

BUCKET = "inflame-test"
ROLE = "arn:aws:iam::123456789012:role/inflame-sagemaker"


@pytest.fixture
def sm_spec(tmp_path: Path):
    def write(**tables: dict) -> Path:
        return write_cloud_spec(
            tmp_path / "sm.toml",
            "tiny_sm",
            {"train": f"s3://{BUCKET}/data/train", "val": f"s3://{BUCKET}/data/val"},
            "sagemaker",
            {"role": ROLE, "region": "us-east-1", "output": f"s3://{BUCKET}/inflame"},
            **tables,
        )

    return write


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield


def test_dry_run_is_offline_exact_and_valid(sm_spec, tmp_path: Path):
    out = tmp_path / "request.json"
    env = guarded_env(
        INFLAME_HOME=str(tmp_path / "home"),
        AWS_CONFIG_FILE="/nonexistent",
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
    )
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        env.pop(key, None)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "inflame",
            "submit",
            str(sm_spec()),
            "--target",
            "sagemaker",
            "--dry-run",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    request = json.loads(result.stdout)
    assert json.loads(out.read_text()) == request
    validate_request(request)  # botocore's own model of CreateTrainingJob
    assert request["RoleArn"] == ROLE
    channels = {
        c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"]
        for c in request["InputDataConfig"]
    }
    assert channels["train"] == f"s3://{BUCKET}/data/train"
    assert channels["code"].startswith(f"s3://{BUCKET}/inflame/code/")
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"] == {
        "MaxRuntimeInSeconds": 3600,
        "MaxWaitTimeInSeconds": 7200,
    }
    assert request["CheckpointConfig"]["LocalPath"] == "/opt/ml/checkpoints"
    assert request["Environment"]["INFLAME_PLATFORM"] == "sagemaker"
    assert (
        "python -m inflame.job spec.toml"
        in request["AlgorithmSpecification"]["ContainerArguments"][0]
    )
    summary = " ".join(result.stderr.split())
    for fragment in (
        "instance type ml.g5.xlarge",
        "GPUs x nodes 1 x 1",
        "spot yes",
        "code bundle",
        "pytorch-training",
    ):
        assert fragment in summary
    assert not (tmp_path / "home").exists()  # nothing recorded, nothing uploaded


@pytest.mark.parametrize(
    ("tables", "fragments"),
    [
        ({"targets": {"sagemaker": {"role": "admin"}}}, ["must be an IAM role ARN"]),
        ({"targets": {"sagemaker": {"output": "/tmp/out"}}}, ["must be an S3 prefix"]),
        (
            {"targets": {"sagemaker": {"instance": "ml.p3.2xlarge"}}},
            ["unknown key `targets.sagemaker.instance`", "Did you mean `instance_type`?"],
        ),
        ({"hyperparameters": {"epoch": 2}}, ["unknown hyperparameter `epoch`"]),
    ],
)
def test_plan_errors_are_precise(sm_spec, tables, fragments):
    with pytest.raises(InflameError) as info:
        plan_submission(sm_spec(**tables), "sagemaker")
    message = " ".join(str(info.value).split())
    for fragment in fragments:
        assert fragment in message


def test_missing_role_names_the_key_and_the_line(sm_spec):
    path = sm_spec()
    spec = tomlfile.loads(path.read_text())
    del spec["targets"]["sagemaker"]["role"]
    path.write_text(tomlfile.dumps(spec))
    with pytest.raises(InflameError) as info:
        plan_submission(path, "sagemaker")
    message = " ".join(str(info.value).split())
    assert "missing required key `targets.sagemaker.role`" in message
    assert f"{path}:" in message  # file and line of [targets.sagemaker]


def test_local_data_and_unknown_targets_are_refused(sm_spec, demo_set: Path):
    with pytest.raises(InflameError, match="SageMaker reads data from S3"):
        plan_submission(sm_spec(), "sagemaker", [f"data.train={demo_set / 'train'}"])
    with pytest.raises(InflameError, match="Did you mean `sagemaker`"):
        plan_submission(sm_spec(), "sagemake")


def _training_job(name: str):
    from moto.sagemaker.models import sagemaker_backends

    return sagemaker_backends["123456789012"]["us-east-1"].training_jobs[name]


def test_submit_status_logs_and_cancel_against_moto(aws, sm_spec, tmp_path: Path, monkeypatch):
    from botocore.client import BaseClient

    calls: list[str] = []
    real_call = BaseClient._make_api_call

    def spy(self, operation, params):
        calls.append(operation)
        return real_call(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", spy)
    ledger = Ledger(tmp_path / "ledger.sqlite")
    plan = plan_submission(sm_spec(), "sagemaker")
    record = submit_plan(plan, ledger)
    assert record.status == "submitted" and record.provider_id == plan.job_name
    assert "us-east-1.console.aws.amazon.com/sagemaker" in record.console_url
    s3 = boto3.client("s3", region_name="us-east-1")
    key = f"inflame/code/{plan.bundle.sha256}.tar.gz"
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == plan.bundle.data
    described = boto3.client("sagemaker").describe_training_job(TrainingJobName=plan.job_name)
    assert described["RoleArn"] == ROLE
    assert described["AlgorithmSpecification"]["ContainerEntrypoint"] == ["/bin/bash", "-c"]
    assert calls.count("PutObject") == 1 and calls.count("CreateTrainingJob") == 1

    # a job still in flight with the same spec and code: refused unless --again
    _training_job(plan.job_name).training_job_status = "InProgress"
    again_plan = plan_submission(sm_spec(), "sagemaker")
    with pytest.raises(InflameError, match="already submitted to sagemaker"):
        submit_plan(again_plan, ledger)
    submit_plan(again_plan, ledger, again=True)
    assert calls.count("PutObject") == 1  # the same code hash is not uploaded twice

    state = refresh(record, ledger)
    assert state.state == "running" and ledger.get(record.id).status == "running"

    now = int(time.time() * 1000)
    logs = boto3.client("logs", region_name="us-east-1")
    logs.create_log_group(logGroupName="/aws/sagemaker/TrainingJobs")
    stream = f"{plan.job_name}/algo-1-1700000000"
    logs.create_log_stream(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream)
    logs.put_log_events(
        logGroupName="/aws/sagemaker/TrainingJobs",
        logStreamName=stream,
        logEvents=[
            {"timestamp": now, "message": "epoch 1/2  train_loss 1.0"},
            {"timestamp": now + 1, "message": "epoch 2/2  train_loss 0.5"},
        ],
    )
    assert list(job_logs(record)) == ["epoch 1/2  train_loss 1.0", "epoch 2/2  train_loss 0.5"]

    from moto.core.responses import ActionResult
    from moto.sagemaker.responses import SageMakerResponse

    def stop_training_job(self):  # moto does not implement StopTrainingJob
        _training_job(self._get_param("TrainingJobName")).training_job_status = "Stopping"
        return ActionResult({})

    monkeypatch.setattr(SageMakerResponse, "stop_training_job", stop_training_job, raising=False)
    cancel(record, ledger)
    assert refresh(record, ledger).state == "stopping"


def test_missing_credentials_get_the_aws_hint(sm_spec, tmp_path: Path, monkeypatch):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    ledger = Ledger(tmp_path / "ledger.sqlite")
    with pytest.raises(InflameError, match="no AWS credentials found"):
        submit_plan(plan_submission(sm_spec(), "sagemaker"), ledger)
    assert ledger.all()[0].status == "submit-failed"


def _simulate_container(
    plan, demo_set: Path, root: Path, checkpoints: Path
) -> subprocess.CompletedProcess:
    """Lay out /opt/ml under `root` as SageMaker would and run the job's own command."""
    code = root / "input" / "data" / "code"
    code.mkdir(parents=True, exist_ok=True)
    (code / f"{plan.bundle.sha256}.tar.gz").write_bytes(plan.bundle.data)
    env = guarded_env(**plan.request["Environment"])
    for name in ("train", "val"):
        channel = root / "input" / "data" / name
        if not channel.exists():
            shutil.copytree(demo_set / name, channel)
        env[f"SM_CHANNEL_{name.upper()}"] = str(channel)
    env.update(
        SM_CHANNEL_CODE=str(code),
        SM_MODEL_DIR=str(root / "model"),
        INFLAME_CHECKPOINT_DIR=str(checkpoints),
        INFLAME_WORKDIR=str(root / "work"),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    )
    entrypoint = plan.request["AlgorithmSpecification"]["ContainerEntrypoint"]
    return subprocess.run(
        [*entrypoint, *plan.request["AlgorithmSpecification"]["ContainerArguments"]],
        env=env,
        capture_output=True,
        text=True,
        cwd=root,
    )


def test_container_runs_the_same_loop_resumes_and_downloads(
    aws, sm_spec, demo_set: Path, tmp_path: Path
):
    plan = plan_submission(sm_spec(hyperparameters={"epochs": 3}), "sagemaker")
    checkpoints = tmp_path / "s3-checkpoints"
    first = _simulate_container(plan, demo_set, tmp_path / "opt1", checkpoints)
    assert first.returncode == 0, first.stdout + first.stderr
    run = tmp_path / "opt1" / "model"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["platform"] == "sagemaker"
    assert (run / "model" / "weights.safetensors").is_file()
    # the job ran the bundle's own copies of the app and of inflame
    assert manifest["app"]["file"] == str(tmp_path / "opt1" / "work" / "app" / "app.py")
    assert manifest["environment"]["inflame_path"] == str(
        tmp_path / "opt1" / "work" / "vendor" / "inflame"
    )

    # a spot restart: a fresh container whose checkpoint folder (synced from S3) stops at 2
    (checkpoints / "epoch-0003.safetensors").unlink()
    second = _simulate_container(plan, demo_set, tmp_path / "opt2", checkpoints)
    assert second.returncode == 0, second.stdout + second.stderr
    resumed = json.loads((tmp_path / "opt2" / "model" / "manifest.json").read_text())
    assert resumed["resumed"] and resumed["weights_sha256"] == manifest["weights_sha256"]
    assert "resuming at epoch 3/3" in second.stderr
    epochs = [
        json.loads(x).get("epoch")
        for x in (tmp_path / "opt2" / "model" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [e for e in epochs if e] == [1, 2, 3]

    # SageMaker uploads /opt/ml/model as model.tar.gz; `download` brings it back
    ledger = Ledger(tmp_path / "ledger.sqlite")
    record = submit_plan(plan, ledger)
    artifact = _training_job(plan.job_name).model_artifacts["S3ModelArtifacts"]
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        tar.add(run, arcname=".")
    bucket, _, key = artifact[len("s3://") :].partition("/")
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=raw.getvalue())
    local = download(record, tmp_path / "downloaded")
    from inflame.predict import Predictor

    [answer] = Predictor.from_run(local).predict([next((demo_set / "test" / "square").iterdir())])
    assert answer["label"] in ("circle", "square", "triangle")
    with pytest.raises(InflameError, match="not empty"):
        download(record, tmp_path / "downloaded")


def test_cli_submit_jobs_status_logs_and_download(aws, sm_spec, tmp_path: Path, monkeypatch):
    from typer.testing import CliRunner

    from inflame.cli import app

    monkeypatch.setenv("INFLAME_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    submitted = runner.invoke(app, ["submit", str(sm_spec()), "--target", "sagemaker"])
    assert submitted.exit_code == 0, submitted.output
    job = submitted.stdout.strip().splitlines()[-1]
    assert job.startswith("tiny-sm-")

    listed = runner.invoke(app, ["jobs", "--json"])
    [row] = [json.loads(x) for x in listed.stdout.splitlines()]
    assert row["provider_id"] == job and row["status"] == "submitted"

    status = json.loads(runner.invoke(app, ["status", job]).stdout)
    assert status["state"] == "completed" and status["model"].endswith("model.tar.gz")
    assert json.loads(runner.invoke(app, ["jobs", "--json"]).stdout)["status"] == "completed"

    assert runner.invoke(app, ["logs", "1"]).exit_code == 0  # no log group yet: no lines
    waited = runner.invoke(app, ["submit", str(sm_spec()), "--target", "sagemaker", "--wait"])
    assert waited.exit_code == 0 and "Completed" in waited.output

    missing = runner.invoke(app, ["download", job, str(tmp_path / "dl")])
    assert isinstance(missing.exception, InflameError)  # model.tar.gz was never uploaded
    assert "NoSuchKey" in str(missing.exception)


def test_two_submissions_in_the_same_second_get_different_job_names(sm_spec):
    first, second = (plan_submission(sm_spec(), "sagemaker") for _ in range(2))
    assert first.job_name != second.job_name
    assert first.job_name.startswith("tiny-sm-") and second.job_name.startswith("tiny-sm-")
    assert len(first.job_name) <= 63


def test_several_gpus_and_nodes_map_to_instances_and_torchrun(sm_spec):
    plan = plan_submission(sm_spec(compute={"gpus_per_node": 4, "nodes": 2}), "sagemaker")
    validate_request(plan.request)
    assert plan.request["ResourceConfig"]["InstanceCount"] == 2
    script = plan.request["AlgorithmSpecification"]["ContainerArguments"][0]
    assert "python -m inflame.job spec.toml --nnodes 2 --nproc-per-node 4" in script


def test_container_starts_one_process_per_gpu(aws, sm_spec, demo_set: Path, tmp_path: Path):
    """gpus_per_node = 2 on one instance: the job relaunches itself under torchrun (here on
    CPU, with gloo) and the two processes train one model."""
    plan = plan_submission(sm_spec(compute={"gpus_per_node": 2}), "sagemaker")
    result = _simulate_container(plan, demo_set, tmp_path / "opt", tmp_path / "ckpt")
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = json.loads((tmp_path / "opt" / "model" / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["world_size"] == 2
