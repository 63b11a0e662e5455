"""The SageMaker target with the real boto3/botocore: requests checked against botocore's whole
model of CreateTrainingJob (which botocore's own validator and moto do not enforce), the
submit path against a moto made as strict as that model, and the job's own container command
run as SageMaker starts it: /opt/ml layout, resourceconfig.json, no SM_* variables, a Python
holding only the image's packages, no network, two nodes of two processes on loopback whose
host names resolve late, and a spot restart that resumes."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import boto3
import pytest
from botocore.validate import ParamValidator
from moto import mock_aws

from inflame import tomlfile
from inflame.errors import InflameError
from inflame.hashing import sha256_file
from inflame.ledger import Ledger
from inflame.submit import (
    cancel,
    download,
    follow,
    job_logs,
    plan_submission,
    refresh,
    submit_plan,
)
from inflame.targets.sagemaker import _botocore_model, instance_gpus, validate_request
from tests.emulation import assert_all_ok, image_env, make_image_python, run_nodes
from tests.helpers import loop_data, offline_aws_env, write_cloud_spec

BUCKET = "inflame-test"
ROLE = "arn:aws:iam::123456789012:role/inflame-sagemaker"


@pytest.fixture
def sm_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("INFLAME_HOME", str(tmp_path / "home"))

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
def aws(monkeypatch: pytest.MonkeyPatch):
    """moto, made as strict as SageMaker: CreateTrainingJob requests that break botocore's
    model (lengths, patterns, enums…) or SageMaker's documented rules are refused."""
    from moto.sagemaker.responses import SageMakerResponse

    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    lenient = SageMakerResponse.create_training_job

    def strict(self):
        validate_request(json.loads(self.body))  # raises: the call fails, as AWS would
        return lenient(self)

    monkeypatch.setattr(SageMakerResponse, "create_training_job", strict)
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield


def test_dry_run_is_offline_exact_and_valid(sm_spec, tmp_path: Path):
    out = tmp_path / "request.json"
    env = offline_aws_env(tmp_path / "home")
    spec = sm_spec()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "inflame",
            "submit",
            str(spec),
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
    validate_request(request)
    assert request["RoleArn"] == ROLE
    channels = {
        c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"]
        for c in request["InputDataConfig"]
    }
    # a prefix ending in / takes data/train/ only, not data/train_old/
    assert channels["train"] == f"s3://{BUCKET}/data/train/"
    assert channels["code"].startswith(f"s3://{BUCKET}/inflame/code/")
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"] == {
        "MaxRuntimeInSeconds": 3600,
        "MaxWaitTimeInSeconds": 7200,
    }
    assert request["CheckpointConfig"]["LocalPath"] == "/opt/ml/checkpoints"
    assert request["Environment"]["INFLAME_PLATFORM"] == "sagemaker"
    # the default image: the region's DLC at an exact torch version, recorded for the job
    assert request["AlgorithmSpecification"]["TrainingImage"] == (
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.10.0-gpu-py313"
    )
    assert request["Environment"]["INFLAME_IMAGE_TORCH"] == "2.10.0"
    summary = " ".join(result.stderr.split())
    for fragment in (
        "instance type ml.g5.xlarge",
        "GPUs x nodes 1 x 1",
        "spot yes",
        "(torch 2.10.0)",
        "checked against",
        "botocore's model of CreateTrainingJob, in full",
        "would send CreateTrainingJob at https://api.sagemaker.us-east-1.amazonaws.com",
        "would upload code bundle (",
        f"to s3://{BUCKET}/inflame/code/",
    ):
        assert fragment in summary, fragment
    assert not (tmp_path / "home" / "ledger.sqlite").exists()  # nothing recorded or sent


def _good_request(sm_spec) -> dict:
    return plan_submission(sm_spec(), "sagemaker").request


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        # the defect this check exists for: one argument over SageMaker's 256 characters
        (
            lambda r: r["AlgorithmSpecification"].update(ContainerArguments=["x" * 300]),
            "ContainerArguments[0]: has 300 characters, allowed 0..256",
        ),
        (lambda r: r.update(TrainingJobName="my_job"), "does not match the pattern"),
        (lambda r: r.update(TrainingJobName="x" * 64), "allowed 1..63"),
        (lambda r: r["ResourceConfig"].update(InstanceType="ml.g5.huge"), "not one of"),
        (lambda r: r["InputDataConfig"][1].update(ChannelName="my data"), "does not match"),
        (
            lambda r: r["Environment"].update({f"V{i}": "x" for i in range(100)}),
            "entries, allowed 0..100",
        ),
        (lambda r: r["Environment"].update({"1BAD": "x"}), "key '1BAD'"),
        (lambda r: r["Environment"].update(LONG="x" * 513), "allowed 0..512"),
        (lambda r: r.update(Tags=[{"Key": "k", "Value": "v"}] * 51), "allowed 0..50"),
        (lambda r: r.update(Surprise=1), "unknown member"),
        (lambda r: r.pop("RoleArn"), "RoleArn: required"),
        (lambda r: r["StoppingCondition"].update(MaxWaitTimeInSeconds=60), "at least Max"),
        (lambda r: r.update(EnableManagedSpotTraining=False), "only for managed spot"),
        (
            lambda r: r["StoppingCondition"].update(MaxRuntimeInSeconds=30 * 86400),
            "more than 28 days",
        ),
        (lambda r: r["InputDataConfig"].append(r["InputDataConfig"][1]), "appears twice"),
    ],
)
def test_requests_are_checked_against_the_whole_model(sm_spec, change, fragment):
    request = _good_request(sm_spec)
    validate_request(request)
    change(request)
    with pytest.raises(InflameError, match="would be rejected") as info:
        validate_request(request)
    assert fragment in str(info.value)


def test_numbers_at_the_models_bounds_pass_and_one_past_them_is_refused(sm_spec):
    request = _good_request(sm_spec)
    request["StoppingCondition"].update(MaxRuntimeInSeconds=1, MaxWaitTimeInSeconds=1)  # min 1
    validate_request(request)
    del request["EnableManagedSpotTraining"], request["StoppingCondition"]["MaxWaitTimeInSeconds"]
    request["ResourceConfig"]["KeepAlivePeriodInSeconds"] = 21600  # max 21600 (not with spot)
    validate_request(request)
    for where, key, value, says in (
        ("StoppingCondition", "MaxRuntimeInSeconds", 0, "0 is outside 1..None"),
        ("ResourceConfig", "KeepAlivePeriodInSeconds", 21601, "21601 is outside 0..21600"),
    ):
        bad = copy.deepcopy(request)
        bad[where][key] = value
        with pytest.raises(InflameError, match="would be rejected") as info:
            validate_request(bad)
        assert says in str(info.value)


def test_botocore_and_moto_alone_accept_what_sagemaker_rejects(sm_spec, aws, monkeypatch):
    """Why the strict check exists: an over-long argument passes botocore's validator."""
    request = _good_request(sm_spec)
    request["AlgorithmSpecification"]["ContainerArguments"] = ["x" * 300]
    shape = _botocore_model().operation_model("CreateTrainingJob").input_shape
    assert not ParamValidator().validate(request, shape).has_errors()
    with pytest.raises(Exception, match="would be rejected"):  # our strict moto refuses it
        boto3.client("sagemaker", region_name="us-east-1").create_training_job(**request)


REGIONS = {
    "us-east-1": "763104351884.dkr.ecr.us-east-1.amazonaws.com",
    "af-south-1": "626614931356.dkr.ecr.af-south-1.amazonaws.com",
    "me-south-1": "217643126080.dkr.ecr.me-south-1.amazonaws.com",
    "ap-east-1": "871362719292.dkr.ecr.ap-east-1.amazonaws.com",
    "il-central-1": "780543022126.dkr.ecr.il-central-1.amazonaws.com",
    "us-gov-west-1": "442386744353.dkr.ecr.us-gov-west-1.amazonaws.com",
    "cn-north-1": "727897471807.dkr.ecr.cn-north-1.amazonaws.com.cn",
}


@pytest.mark.parametrize("region", sorted(REGIONS))
@pytest.mark.parametrize(
    ("gpus", "nodes", "instance"),
    [
        (0, 1, "ml.m5.xlarge"),
        (1, 1, "ml.g5.xlarge"),
        (4, 2, "ml.g5.12xlarge"),
        (8, 4, "ml.p4d.24xlarge"),
    ],
)
@pytest.mark.parametrize("spot", [False, True])
def test_plan_matrix_is_valid_everywhere(sm_spec, region, gpus, nodes, instance, spot):
    long_name = "a-" + "very-long-experiment-name-" * 2 + "x"  # 56 characters
    plan = plan_submission(
        sm_spec(
            job={"name": long_name},
            data={"train_2024.v1-final": f"s3://{BUCKET}/d/t"},
            compute={"gpus_per_node": gpus, "nodes": nodes, "spot": spot},
            targets={"sagemaker": {"region": region, "instance_type": instance}},
        ),
        "sagemaker",
    )
    request = plan.request
    validate_request(request)
    assert len(request["TrainingJobName"]) <= 63
    assert all(len(a) <= 256 for a in request["AlgorithmSpecification"]["ContainerArguments"])
    image = request["AlgorithmSpecification"]["TrainingImage"]
    processor = "gpu" if gpus else "cpu"
    assert image == f"{REGIONS[region]}/pytorch-training:2.10.0-{processor}-py313"
    assert request["ResourceConfig"] == {
        "InstanceType": instance,
        "InstanceCount": nodes,
        "VolumeSizeInGB": 50,
    }
    launch = " --nnodes" in request["AlgorithmSpecification"]["ContainerArguments"][0]
    assert launch == (max(gpus, 1) * nodes > 1)
    assert ("MaxWaitTimeInSeconds" in request["StoppingCondition"]) == spot


def test_unknown_regions_need_an_image(sm_spec):
    with pytest.raises(InflameError, match="knows no PyTorch training image for region"):
        plan_submission(sm_spec(targets={"sagemaker": {"region": "xx-nowhere-1"}}), "sagemaker")
    image = "123456789012.dkr.ecr.xx-nowhere-1.amazonaws.com/mine:1.0"
    plan = plan_submission(
        sm_spec(targets={"sagemaker": {"region": "xx-nowhere-1", "image": image}}), "sagemaker"
    )
    assert plan.request["AlgorithmSpecification"]["TrainingImage"] == image


def test_gpus_per_node_must_match_the_instance(sm_spec):
    with pytest.raises(InflameError) as info:
        plan_submission(sm_spec(compute={"gpus_per_node": 4}), "sagemaker")
    message = " ".join(str(info.value).split())
    assert "ml.g5.xlarge has 1 GPU(s) but compute.gpus_per_node is 4" in message
    assert "targets.sagemaker.instance_type" in message and "ml.g5.12xlarge" in message
    assert instance_gpus()["ml.p4d.24xlarge"] == 8 and instance_gpus()["ml.m5.xlarge"] == 0
    # every GPU instance type of the table is one SageMaker accepts
    enum = set(_botocore_model().shape_for("TrainingInstanceType").enum)
    assert {name for name, n in instance_gpus().items() if n} <= enum


@pytest.mark.parametrize(
    ("tables", "fragments"),
    [
        ({"targets": {"sagemaker": {"role": "admin"}}}, ["must be an IAM role ARN"]),
        ({"targets": {"sagemaker": {"output": "/tmp/out"}}}, ["must be an S3 prefix"]),
        ({"targets": {"sagemaker": {"region": "US East"}}}, ["must be an AWS region name"]),
        (
            {"targets": {"sagemaker": {"instance": "ml.p3.2xlarge"}}},
            ["unknown key `targets.sagemaker.instance`", "Did you mean `instance_type`?"],
        ),
        ({"hyperparameters": {"epoch": 2}}, ["unknown hyperparameter `epoch`"]),
        ({"data": {"code": f"s3://{BUCKET}/c"}}, ["`code` is used by inflame itself"]),
        ({"data": {"my data": f"s3://{BUCKET}/c"}}, ["SageMaker channel names are 1-64"]),
        ({"data": {"train": "gs://bucket/train"}}, ["sagemaker reads data from s3://"]),
        ({"data": {"..": f"s3://{BUCKET}/c"}}, ["starting with a letter or digit"]),
        (
            {"targets": {"sagemaker": {"instance_type": "ml.g5.xlarg"}}},
            ["not a SageMaker training instance type", "Did you mean `ml.g5.xlarge`?"],
        ),
        ({"compute": {"max_runtime": "30d"}}, ["compute.max_runtime", "at most 28 days"]),
        (
            {"targets": {"sagemaker": {"max_wait": 60}}},
            ["targets.sagemaker.max_wait", "must be at least the maximum runtime"],
        ),
        (
            {"targets": {"sagemaker": {"keep_alive_seconds": 600}}},
            ["keep_alive_seconds", "warm pools cannot be used with spot"],
        ),
        (
            {"targets": {"sagemaker": {"volume_size": 0}}},
            ["volume_size` must be at least 1, got 0"],
        ),
        (
            {"targets": {"sagemaker": {"image": "${env:PATH}"}}},
            ["targets.sagemaker.image", "which the job's platform or inflame sets itself"],
        ),
    ],
)
def test_plan_errors_are_precise(sm_spec, tables, fragments):
    with pytest.raises(InflameError) as info:
        plan_submission(sm_spec(**tables), "sagemaker")
    message = " ".join(str(info.value).split())
    for fragment in fragments:
        assert fragment in message
    assert "sm.toml:" in message  # file and line


@pytest.mark.parametrize("key", ["role", "region", "output"])
def test_a_missing_required_setting_names_the_key_and_the_line(sm_spec, key):
    path = sm_spec()
    spec = tomlfile.loads(path.read_text())
    del spec["targets"]["sagemaker"][key]
    path.write_text(tomlfile.dumps(spec))
    with pytest.raises(InflameError) as info:
        plan_submission(path, "sagemaker")
    message = " ".join(str(info.value).split())
    assert f"missing required key `targets.sagemaker.{key}`" in message
    assert f"or give it with `--set targets.sagemaker.{key}=…`" in message  # deploy: no spec
    assert f"{path}:" in message


def test_gpu_counts_are_the_documented_ones_and_zero_instances_are_refused(sm_spec):
    from inflame.targets.sagemaker import instance_gpus

    documented = {  # aws.amazon.com/sagemaker/pricing, accelerated computing
        "ml.g5.xlarge": 1,
        "ml.g5.12xlarge": 4,
        "ml.g5.48xlarge": 8,
        "ml.p4d.24xlarge": 8,
        "ml.p5.48xlarge": 8,
        "ml.p6e-gb200.36xlarge": 4,
        "ml.m5.xlarge": 0,
    }
    table = instance_gpus()
    assert {name: table[name] for name in documented} == documented
    request = plan_submission(sm_spec(), "sagemaker").request
    request["ResourceConfig"]["InstanceCount"] = 0  # botocore's model allows 0 (warm pools)
    with pytest.raises(InflameError, match=r"ResourceConfig\.InstanceCount: at least 1"):
        validate_request(request)


def _training_job(name: str):
    from moto.sagemaker.models import sagemaker_backends

    return sagemaker_backends["123456789012"]["us-east-1"].training_jobs[name]


def test_submit_status_logs_and_cancel_against_strict_moto(aws, sm_spec, tmp_path, monkeypatch):
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
    assert described["AlgorithmSpecification"]["ContainerEntrypoint"] == ["/bin/sh", "-c"]
    assert calls.count("PutObject") == 1 and calls.count("CreateTrainingJob") == 1

    # a job still in flight with the same spec and code: refused unless --again
    _training_job(plan.job_name).training_job_status = "InProgress"
    again_plan = plan_submission(sm_spec(), "sagemaker")
    with pytest.raises(InflameError, match="already submitted to sagemaker"):
        submit_plan(again_plan, ledger)
    submit_plan(again_plan, ledger, again=True)
    assert calls.count("PutObject") == 1  # the same code, checksum verified: not uploaded again

    # a bundle object whose bytes changed under its name is never reused
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"tampered")
    submit_plan(plan_submission(sm_spec(), "sagemaker"), ledger, again=True)
    assert calls.count("PutObject") == 3  # the tampering, and our upload again
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == plan.bundle.data

    # a submission that crashed before the provider answered: its fate is unknown, so it
    # still counts as in flight
    ledger.begin(
        target="sagemaker",
        name="lost",
        spec_sha256=plan.spec_sha256,
        bundle_sha256=plan.bundle.sha256,
        request={"locator": {}},
    )
    status = _training_job(plan.job_name).training_job_status
    _training_job(plan.job_name).training_job_status = "Completed"
    with pytest.raises(InflameError, match="already submitted to sagemaker"):
        submit_plan(plan_submission(sm_spec(), "sagemaker"), ledger)
    _training_job(plan.job_name).training_job_status = status

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

    job = _training_job(plan.job_name)
    for logs, expected in (
        (False, [f"{plan.job_name}: InProgress", f"{plan.job_name}: Completed"]),  # each change
        (True, ["epoch 1/2  train_loss 1.0", "epoch 2/2  train_loss 0.5"]),  # each line once
    ):
        job.training_job_status = "InProgress"
        later = iter(["InProgress", "InProgress", "Completed"])
        printed: list[str] = []

        def advance(seconds: float, later=later) -> None:
            job.training_job_status = next(later)

        state = follow(record, ledger, logs=logs, emit=printed.append, sleep=advance)
        # a state line ends with SageMaker's secondary status (`InProgress/Training`)
        shown = [line.split("/")[0] if not logs else line for line in printed]
        assert state.state == "completed" and shown == expected, printed
    job.training_job_status = "InProgress"

    from moto.core.responses import ActionResult
    from moto.sagemaker.responses import SageMakerResponse

    def stop_training_job(self):  # moto does not implement StopTrainingJob
        _training_job(self._get_param("TrainingJobName")).training_job_status = "Stopping"
        return ActionResult({})

    monkeypatch.setattr(SageMakerResponse, "stop_training_job", stop_training_job, raising=False)
    cancel(record, ledger)
    assert ledger.get(record.id).status == "stopping"  # recorded at once, before any refresh
    assert refresh(record, ledger).state == "stopping"


def test_a_finished_job_does_not_block_the_same_spec(aws, sm_spec, tmp_path):
    """Only jobs still in flight count as duplicates: once the provider says the job ended,
    the same spec and code go again without --again."""
    ledger = Ledger(tmp_path / "ledger.sqlite")
    first = submit_plan(plan_submission(sm_spec(), "sagemaker"), ledger)
    for ended in ("Completed", "Failed", "Stopped"):
        _training_job(first.provider_id).training_job_status = ended
        again = submit_plan(plan_submission(sm_spec(), "sagemaker"), ledger)
        assert again.provider_id != first.provider_id
        _training_job(again.provider_id).training_job_status = ended
    assert len(ledger.all()) == 4


def test_transient_errors_are_retried_for_reads_only(aws, sm_spec, tmp_path, monkeypatch):
    from botocore.client import BaseClient
    from botocore.exceptions import ClientError

    from inflame.targets.sagemaker import TARGET

    monkeypatch.setattr(TARGET.calls, "wait", 0.01)
    ledger = Ledger(tmp_path / "ledger.sqlite")
    record = submit_plan(plan_submission(sm_spec(), "sagemaker"), ledger)
    real_call, failures = BaseClient._make_api_call, {"DescribeTrainingJob": 2}

    def flaky(self, operation, params):
        if failures.get(operation, 0) > 0:
            failures[operation] -= 1
            raise ClientError(
                {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, operation
            )
        return real_call(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", flaky)
    assert refresh(record, ledger).state == "completed" and failures["DescribeTrainingJob"] == 0
    failures["StopTrainingJob"] = 1  # a call that changes something is sent once
    with pytest.raises(InflameError, match="ThrottlingException"):
        cancel(record, ledger)


@pytest.mark.parametrize("module", ["botocore", "sagemaker.core"])
def test_a_missing_sdk_names_the_extra(sm_spec, monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)  # as if the [aws] extra were absent
    with pytest.raises(InflameError, match=r'pip install "inflame\[aws\]"'):
        plan_submission(sm_spec(), "sagemaker")


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


# ---- the job, run as SageMaker runs it -------------------------------------------------


def sagemaker_node(
    plan,
    root: Path,
    host: str,
    hosts: list[str],
    data: dict[str, Path],
    checkpoints: Path,
    bin_dir: Path,
    hosts_file: Path,
    extra_env: dict[str, str] | None = None,
) -> tuple[list[str], dict[str, str], Path]:
    """One instance of the job: /opt/ml under `root` as SageMaker lays it out (the code and
    data channels downloaded, resourceconfig.json, checkpoints synced down from S3), the
    request's Environment plus what SageMaker itself sets, and the container's command."""
    opt = root / "opt" / "ml"
    code = opt / "input" / "data" / "code"
    code.mkdir(parents=True)
    code_uri = plan.request["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"]
    (code / code_uri.rsplit("/", 1)[-1]).write_bytes(plan.bundle.data)
    for name, source in data.items():
        shutil.copytree(source, opt / "input" / "data" / name)
    config = opt / "input" / "config"
    config.mkdir(parents=True)
    (config / "resourceconfig.json").write_text(
        json.dumps(
            {
                "current_host": host,
                "current_instance_type": plan.request["ResourceConfig"]["InstanceType"],
                "current_group_name": "homogeneousCluster",
                "hosts": hosts,
                "instance_groups": [
                    {
                        "instance_group_name": "homogeneousCluster",
                        "instance_type": plan.request["ResourceConfig"]["InstanceType"],
                        "hosts": hosts,
                    }
                ],
                "network_interface_name": "lo",
            }
        )
    )
    if checkpoints.is_dir():
        shutil.copytree(checkpoints, opt / "checkpoints")
    env = image_env(
        bin_dir,
        **plan.request["Environment"],
        TRAINING_JOB_NAME=plan.job_name,
        TRAINING_JOB_ARN=f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{plan.job_name}",
        INFLAME_PLATFORM_ROOT=str(root),
        INFLAME_TEST_HOSTS_FILE=str(hosts_file),
        **(extra_env or {}),
    )
    spec = plan.request["AlgorithmSpecification"]
    return [*spec["ContainerEntrypoint"], *spec["ContainerArguments"]], env, root


def run_sagemaker_job(
    plan,
    demo_set: Path | dict[str, Path],
    where: Path,
    checkpoints: Path,
    bin_dir: Path,
    extra_env: dict[str, str] | None = None,
):
    """All the job's instances at once; their host names resolve only a moment after they
    start; afterwards the checkpoints are synced up to "S3" (`checkpoints`)."""
    hosts = [f"algo-{i + 1}" for i in range(plan.request["ResourceConfig"]["InstanceCount"])]
    where.mkdir(parents=True)
    hosts_file = where / "dns"
    hosts_file.write_text("")
    data = (
        demo_set
        if isinstance(demo_set, dict)
        else {name: demo_set / name for name in ("train", "val")}
    )
    nodes = [
        sagemaker_node(
            plan, where / host, host, hosts, data, checkpoints, bin_dir, hosts_file, extra_env
        )
        for host in reversed(hosts)  # the workers first: their master does not resolve yet
    ]
    timer = threading.Timer(2.0, lambda: hosts_file.write_text("\n".join(hosts)))
    timer.start()
    try:
        results = run_nodes(nodes)
    finally:
        timer.cancel()
    for host in hosts:  # SageMaker uploads /opt/ml/checkpoints continuously
        local = where / host / "opt" / "ml" / "checkpoints"
        if local.is_dir():
            shutil.copytree(local, checkpoints, dirs_exist_ok=True)
    return results


def test_two_nodes_of_two_processes_train_resume_and_download(
    aws, sm_spec, demo_set: Path, tmp_path: Path, image_python: Path
):
    # 2 instances x 2 GPUs (ml.g7e.12xlarge), each GPU a process (gloo on CPU here)
    plan = plan_submission(
        sm_spec(
            compute={"gpus_per_node": 2, "nodes": 2},
            hyperparameters={"epochs": 2},
            targets={"sagemaker": {"instance_type": "ml.g7e.12xlarge"}},
        ),
        "sagemaker",
    )
    s3_checkpoints = tmp_path / "s3-checkpoints"
    first = run_sagemaker_job(plan, demo_set, tmp_path / "run1", s3_checkpoints, image_python)
    assert_all_ok(first)
    run = tmp_path / "run1" / "algo-1" / "opt" / "ml" / "model"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["platform"] == "sagemaker"
    assert manifest["world_size"] == 4 and (run / "model" / "weights.safetensors").is_file()
    # the job ran the bundle's own inflame, in an environment without pip installs
    work = tmp_path / "run1" / "algo-1" / "tmp" / "inflame"
    assert manifest["environment"]["inflame_path"] == str(work / "vendor" / "inflame")
    assert manifest["image"]["torch_expected"] == "2.10.0"
    assert "expected to have torch 2.10.0, but torch" in manifest["image"]["warning"]
    assert not (tmp_path / "run1" / "algo-2" / "opt" / "ml" / "model" / "manifest.json").exists()
    # an image without boto3 cannot list the channels: their files were hashed, and it says so
    train = manifest["data"]["inputs"]["train"]
    assert train["listing_unused"] == "boto3 is not installed in the job's image"
    assert "boto3 is not installed" in first[0].stderr + first[1].stderr

    # spot preemption after epoch 1: fresh instances, checkpoints synced down from S3
    (s3_checkpoints / "epoch-0002.safetensors").unlink()
    kept = (s3_checkpoints / "epoch-0001.safetensors").read_bytes()
    second = run_sagemaker_job(plan, demo_set, tmp_path / "run2", s3_checkpoints, image_python)
    assert_all_ok(second)
    resumed_run = tmp_path / "run2" / "algo-1" / "opt" / "ml" / "model"
    resumed = json.loads((resumed_run / "manifest.json").read_text())
    assert resumed["resumed"] and resumed["weights_sha256"] == manifest["weights_sha256"]
    assert "resuming at epoch 2/2" in "".join(r.stderr for r in second)
    assert (s3_checkpoints / "epoch-0001.safetensors").read_bytes() == kept  # not retrained
    epochs = [
        json.loads(line).get("epoch")
        for line in (resumed_run / "metrics.jsonl").read_text().splitlines()
    ]
    assert [e for e in epochs if e] == [1, 2]

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
    fetched = json.loads((local / "manifest.json").read_text())
    assert fetched["weights_sha256"] == manifest["weights_sha256"]
    # the image has no matplotlib: the job says so, and `download` draws the curves
    assert manifest["curves"]["error"].startswith("not drawn in the job")
    assert fetched["curves"]["drawn"] == "on download"
    assert fetched["curves"]["sha256"] == sha256_file(local / "curves.png")
    with pytest.raises(InflameError, match="not empty"):
        download(record, tmp_path / "downloaded")


@pytest.fixture(scope="module")
def dlc_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SageMaker PyTorch image: the image's packages and boto3, which every SageMaker
    training image carries (the sagemaker-training toolkit requires it)."""
    return make_image_python(tmp_path_factory.mktemp("dlc") / "venv", extra=("boto3",))


def test_the_job_fingerprints_its_channels_from_the_s3_listing(
    sm_spec, demo_set: Path, tmp_path: Path, dlc_python: Path
):
    from moto.server import ThreadedMotoServer

    plan = plan_submission(sm_spec(hyperparameters={"epochs": 1}), "sagemaker")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        endpoint = "http://{}:{}".format(*server.get_host_and_port())
        credentials = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        s3 = boto3.client("s3", endpoint_url=endpoint, **_client_keys(credentials))
        s3.create_bucket(Bucket=BUCKET)
        expected = {}
        for name in ("train", "val"):
            for path in sorted((demo_set / name).rglob("*")):
                if path.is_file():
                    relative = path.relative_to(demo_set / name).as_posix()
                    s3.put_object(
                        Bucket=BUCKET, Key=f"data/{name}/{relative}", Body=path.read_bytes()
                    )
                    if name == "train":
                        expected[relative] = f"s3-etag:{hashlib.md5(path.read_bytes()).hexdigest()}"
        env = {**credentials, "AWS_ENDPOINT_URL_S3": endpoint}  # the role's, in SageMaker
        results = run_sagemaker_job(
            plan, demo_set, tmp_path / "run", tmp_path / "ckpt", dlc_python, env
        )
    finally:
        server.stop()
    assert_all_ok(results)
    manifest = json.loads(
        (tmp_path / "run" / "algo-1" / "opt" / "ml" / "model" / "manifest.json").read_text()
    )
    assert manifest["status"] == "completed"
    train = manifest["data"]["inputs"]["train"]
    assert train["checksums"] == f"S3 ETag from the listing of s3://{BUCKET}/data/train"
    assert train["files"] == expected and "listing_unused" not in train
    assert "note: hashing" not in results[0].stderr


def _client_keys(credentials: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": credentials["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": credentials["AWS_SECRET_ACCESS_KEY"],
        "region_name": credentials["AWS_DEFAULT_REGION"],
    }


def test_a_master_that_never_resolves_fails_clearly():
    from inflame.job import resolve_host

    clock = iter(range(0, 10_000, 7))
    with pytest.raises(InflameError, match="'algo-1' did not resolve within 60 s"):
        resolve_host(
            "algo-1",
            60,
            lookup=lambda host: (_ for _ in ()).throw(OSError("Name or service not known")),
            sleep=lambda s: None,
            clock=lambda: float(next(clock)),
        )
    answers = iter([OSError("not yet"), OSError("not yet"), "10.0.0.1"])

    def lookup(host: str) -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert resolve_host("algo-1", 60, lookup=lookup, sleep=lambda s: None) == "10.0.0.1"


def test_cli_submit_jobs_status_logs_and_download(aws, sm_spec, tmp_path: Path, monkeypatch):
    from typer.testing import CliRunner

    from inflame.cli import app

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
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".dl")) == []


def test_two_submissions_in_the_same_second_get_different_job_names(sm_spec):
    first, second = (plan_submission(sm_spec(), "sagemaker") for _ in range(2))
    assert first.job_name != second.job_name
    assert first.job_name.startswith("tiny-sm-") and second.job_name.startswith("tiny-sm-")


# ---- a sweep whose trials are SageMaker jobs ----------------------------------------------


def test_a_sweep_on_sagemaker_submits_follows_and_downloads_each_trial(
    aws, sm_spec, demo_set: Path, tmp_path: Path, image_python: Path, monkeypatch
):
    """Each trial goes through the normal submit path (strict CreateTrainingJob, ledger,
    duplicate guard); here every job then runs at once, as SageMaker runs it, and uploads
    model.tar.gz; the sweep downloads each trial's run and reads its metric from it."""
    from types import SimpleNamespace

    from moto.sagemaker.responses import SageMakerResponse

    from inflame.sweep.runner import LEDGER_ATTR, Sweep
    from inflame.sweep.study import import_optuna

    strict = SageMakerResponse.create_training_job  # the aws fixture's, checked
    created: list[str] = []

    def run_the_job(self):
        answer = strict(self)
        request = json.loads(self.body)
        name = request["TrainingJobName"]
        created.append(name)
        code_uri = request["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"]
        bucket, _, key = code_uri[len("s3://") :].partition("/")
        s3 = boto3.client("s3", region_name="us-east-1")
        bundle = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        plan = SimpleNamespace(request=request, bundle=SimpleNamespace(data=bundle), job_name=name)
        where = tmp_path / "jobs" / name
        assert_all_ok(run_sagemaker_job(plan, demo_set, where, where / "ckpt", image_python))
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w:gz") as tar:
            tar.add(where / "algo-1" / "opt" / "ml" / "model", arcname=".")
        artifact = _training_job(name).model_artifacts["S3ModelArtifacts"]
        bucket, _, key = artifact[len("s3://") :].partition("/")
        s3.put_object(Bucket=bucket, Key=key, Body=raw.getvalue())
        return answer

    monkeypatch.setattr(SageMakerResponse, "create_training_job", run_the_job)
    spec = sm_spec(
        hyperparameters={"epochs": 1},
        sweep={"sampler": "grid", "hyperparameters": {"learning_rate": {"choice": [1e-3, 3e-3]}}},
    )
    out = tmp_path / "sweep"
    plans = Sweep(spec, target="sagemaker", out=out).plan()
    assert len(plans) == 2 and not created  # the dry run sends nothing
    assert len({p["job_name"] for p in plans}) == 2
    assert plans[0]["request"] != plans[1]["request"]  # each trial's own bundle and spec

    result = Sweep(spec, target="sagemaker", parallel=2, poll_s=0, out=out).run()
    assert result.finished == 2 and len(created) == 2
    optuna = import_optuna()
    study = optuna.load_study(study_name="tiny_sm", storage=f"sqlite:///{out / 'study.db'}")
    ledger = Ledger()
    for trial in study.trials:
        assert trial.state.name == "COMPLETE"
        record = ledger.get(trial.user_attrs[LEDGER_ATTR])
        assert record.provider_id in created and record.status == "completed"
        run = out / "trials" / f"trial-{trial.number:04d}"
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["platform"] == "sagemaker"
        assert manifest["hyperparameters"]["learning_rate"] == trial.params["learning_rate"]
        saved = manifest["saved"]["epoch"]
        records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert trial.value == next(r["val_accuracy"] for r in records if r.get("epoch") == saved)
    assert (out / "best" / "model" / "model.json").is_file()

    # run again: the study is complete, nothing is submitted twice
    Sweep(spec, target="sagemaker", parallel=2, poll_s=0, out=out).run()
    assert len(created) == 2


def test_tensorboard_events_go_where_sagemaker_uploads_them(aws, sm_spec, tmp_path: Path):
    """[tracking] tensorboard = true: the request carries TensorBoardOutputConfig (checked
    against the whole model and accepted by the strict fake), and inside the job the events
    are written to its LocalPath, which SageMaker uploads to S3 as the job runs."""
    from inflame.runtime import metrics_log
    from inflame.spec import load_spec
    from inflame.targets.sagemaker import TARGET, TENSORBOARD_PATH
    from tests.test_tracking import scalars

    spec_path = sm_spec(tracking={"tensorboard": True})
    plan = plan_submission(spec_path, "sagemaker")
    config = plan.request["TensorBoardOutputConfig"]
    assert config == {
        "LocalPath": TENSORBOARD_PATH,
        "S3OutputPath": f"s3://{BUCKET}/inflame/jobs/{plan.job_name}/tensorboard",
    }
    submit_plan(plan, Ledger(tmp_path / "ledger.sqlite"))
    described = boto3.client("sagemaker").describe_training_job(TrainingJobName=plan.job_name)
    assert described["TensorBoardOutputConfig"]["S3OutputPath"] == config["S3OutputPath"]

    env = {"INFLAME_PLATFORM_ROOT": str(tmp_path / "root")}
    paths = TARGET.job_paths(load_spec(spec_path), env, None)
    assert paths.tensorboard_dir == tmp_path / "root" / TENSORBOARD_PATH.lstrip("/")
    paths.run_dir.mkdir(parents=True)
    log = metrics_log(load_spec(spec_path), paths.run_dir, 0, env, paths.tensorboard_dir)
    log.append({"epoch": 1, "train_loss": 0.5, "val_accuracy": 0.75})
    log.close()
    expected = {"loss/train": [(1, 0.5)], "accuracy/val": [(1, 0.75)]}
    assert scalars(paths.tensorboard_dir) == expected
    assert not (paths.run_dir / "tensorboard").exists()
    assert "TensorBoardOutputConfig" not in plan_submission(sm_spec(), "sagemaker").request


def test_a_loop_retrains_each_round_as_a_sagemaker_job_from_the_last_model(
    aws, tmp_path: Path, image_python: Path, monkeypatch
):
    """`inflame loop --target sagemaker`: each round's training set goes to S3 under a folder
    of its own, the job reads its channels from there (fetched from moto's S3 as SageMaker
    downloads them), starts from the previous round's model carried in the code bundle, and
    its run comes back for the next query."""
    from types import SimpleNamespace

    from moto.sagemaker.responses import SageMakerResponse

    from inflame.active.loop import run_loop

    strict = SageMakerResponse.create_training_job  # the aws fixture's, checked
    s3 = boto3.client("s3", region_name="us-east-1")
    jobs: list[dict] = []

    def fetch(uri: str, folder: Path) -> Path:
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for item in (item for page in pages for item in page.get("Contents", [])):
            # S3Prefix: every key that starts with the prefix (the code bundle is one object)
            name = item["Key"][len(prefix) :].lstrip("/") or item["Key"].rsplit("/", 1)[-1]
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
        return folder

    def run_the_job(self):
        answer = strict(self)
        request = json.loads(self.body)
        name = request["TrainingJobName"]
        where = tmp_path / "jobs" / name
        channels = {
            c["ChannelName"]: fetch(
                c["DataSource"]["S3DataSource"]["S3Uri"], where / "s3" / c["ChannelName"]
            )
            for c in request["InputDataConfig"]
        }
        jobs.append({"request": request, "channels": channels})
        bundle = next(channels.pop("code").iterdir()).read_bytes()
        plan = SimpleNamespace(request=request, bundle=SimpleNamespace(data=bundle), job_name=name)
        assert_all_ok(
            run_sagemaker_job(plan, channels, where / "nodes", where / "ckpt", image_python)
        )
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w:gz") as tar:
            tar.add(where / "nodes" / "algo-1" / "opt" / "ml" / "model", arcname=".")
        artifact = _training_job(name).model_artifacts["S3ModelArtifacts"]
        bucket, _, key = artifact[len("s3://") :].partition("/")
        s3.put_object(Bucket=bucket, Key=key, Body=raw.getvalue())
        return answer

    monkeypatch.setattr(SageMakerResponse, "create_training_job", run_the_job)
    monkeypatch.setenv("INFLAME_HOME", str(tmp_path / "home"))
    app = tmp_path / "app"  # the app's folder holds the data, the pool and the loop too
    shutil.copytree(Path(__file__).parents[1] / "model_zoo" / "fowl_classifier", app)
    data, pool = loop_data(app)
    spec = write_cloud_spec(
        app / "job.toml",
        "loop_sm",
        {"train": "d/train", "val": "d/val"},
        "sagemaker",
        {"role": ROLE, "region": "us-east-1", "output": f"s3://{BUCKET}/inflame"},
        job={"app": "."},
        hyperparameters={"epochs": 1},
    )
    out, rows = run_loop(
        spec, pool=pool, oracle=data / "test", rounds=1, k=5, out=app / "loop",
        target="sagemaker", data_uri=f"s3://{BUCKET}/loops/fowl", poll_s=0,
    )  # fmt: skip
    assert [(r["round"], r["labelled"], r["added"]) for r in rows] == [(0, 12, 0), (1, 17, 5)]
    assert len(jobs) == 2
    # each round's job read that round's training set and the validation set, from S3,
    # under a folder of this loop's own
    prefix = json.loads((out / "loop.json").read_text())["data_uri"]
    assert re.fullmatch(rf"s3://{BUCKET}/loops/fowl/loop-[0-9a-f]{{6}}", prefix)
    for index, job in enumerate(jobs):
        uris = {
            c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"]
            for c in job["request"]["InputDataConfig"]
        }
        assert uris["train"] == f"{prefix}/round-{index}/train/"
        assert uris["val"] == f"{prefix}/inputs/val/"
    assert _tree(jobs[0]["channels"]["val"]) == _tree(data / "val")
    assert _tree(jobs[1]["channels"]["train"]) == _tree(out / "train")  # 12 + the 5 labelled
    assert len(_tree(jobs[0]["channels"]["train"])) == 12
    first, second = (
        json.loads((out / "runs" / f"round-{i}" / "manifest.json").read_text()) for i in (0, 1)
    )
    assert first["platform"] == second["platform"] == "sagemaker"
    assert "parent" not in first and "warm_start" not in first
    # round 1 began from round 0's model, which travelled in its code bundle
    assert second["parent"]["run"] == str((out / "runs" / "round-0").resolve())
    assert second["parent"]["weights_sha256"] == first["weights_sha256"]
    assert second["warm_start"]["new_classes"] == []
    code = tmp_path / "jobs" / jobs[1]["request"]["TrainingJobName"] / "s3" / "code"
    with tarfile.open(next(code.iterdir())) as bundle:
        carried = bundle.extractfile("parent/model/weights.safetensors").read()
        members = bundle.getnames()
    assert "app/app.py" in members  # the data travel as uploads, never in the bundle
    assert not [m for m in members if m.startswith(("app/d/", "app/pool/", "app/loop/"))]
    parent_weights = out / "runs" / "round-0" / "model" / "weights.safetensors"
    assert hashlib.sha256(carried).hexdigest() == sha256_file(parent_weights)
    assert json.loads((out / "loop.json").read_text())["target"] == "sagemaker"


def _tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_a_local_weights_file_travels_in_the_bundle_and_the_job_reads_its_copy(sm_spec, tmp_path):
    from inflame.packaging import safe_extract
    from inflame.spec import load_spec

    weights = tmp_path / "weights" / "start.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"the bytes of a weights file")
    pretrained = {"pretrained": "weights/start.safetensors"}  # relative to the spec
    plan = plan_submission(sm_spec(hyperparameters=pretrained), "sagemaker")
    job = tmp_path / "job"
    safe_extract(plan.bundle.data, job)  # as entry.sh runs it: spec.toml at the root
    spec = load_spec(job / "spec.toml")
    assert spec.hyperparameters["pretrained"] == "files/pretrained/start.safetensors"
    assert (spec.folder / spec.hyperparameters["pretrained"]).read_bytes() == weights.read_bytes()
    with pytest.raises(InflameError) as missing:  # refused before anything is sent
        plan_submission(sm_spec(hyperparameters={"pretrained": "weights/gone.pth"}), "sagemaker")
    said = " ".join(str(missing.value).split())
    assert (
        "(hyperparameters.pretrained)" in said and f"{tmp_path}/weights/gone.pth does not" in said
    )
    mounted = {"pretrained": "/opt/ml/input/data/weights/r50.pth"}  # only inside the job
    plan = plan_submission(sm_spec(hyperparameters=mounted), "sagemaker")
    safe_extract(plan.bundle.data, tmp_path / "job2")
    kept = load_spec(tmp_path / "job2" / "spec.toml").hyperparameters["pretrained"]
    assert kept == mounted["pretrained"]  # left to the job: not refused, not moved
