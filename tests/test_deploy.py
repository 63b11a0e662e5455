"""`inflame deploy --target sagemaker`: the exact requests offline (checked against botocore's
models of the operations), the handler run as the inference image runs it, and the real
calls against moto made as strict as SageMaker; `endpoints` and `undeploy`, with the ledger."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from inflame.errors import InflameError
from inflame.ledger import Ledger
from inflame.predict import Predictor
from tests.emulation import image_env
from tests.helpers import assert_clean_error, offline_aws_env, run_inflame

BUCKET = "inflame-deploy"
ROLE = "arn:aws:iam::123456789012:role/inflame-sagemaker"
SETTINGS = [
    "--set",
    f"targets.sagemaker.role={ROLE}",
    "--set",
    "targets.sagemaker.region=us-east-1",
    "--set",
    f"targets.sagemaker.output=s3://{BUCKET}/inflame",
]
OVERRIDES = [value for value in SETTINGS if value != "--set"]


def test_dry_run_shows_the_exact_valid_requests_offline(run: Path, tmp_path: Path):
    from inflame.targets.sagemaker import validate_operation

    env = offline_aws_env(tmp_path / "home")
    command = [sys.executable, "-m", "inflame", "deploy", str(run), "--target", "sagemaker"]
    result = subprocess.run(
        [*command, "--dry-run", *SETTINGS],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert [r["operation"] for r in plan["requests"]] == [
        "CreateModel",
        "CreateEndpointConfig",
        "CreateEndpoint",
    ]
    for request in plan["requests"]:
        validate_operation(request["operation"], request["request"])
    model = plan["requests"][0]["request"]
    sha = plan["archive"]["sha256"]
    assert plan["archive"]["uri"] == f"s3://{BUCKET}/inflame/models/{sha}/model.tar.gz"
    container = model["PrimaryContainer"]
    assert container["ModelDataUrl"] == plan["archive"]["uri"]
    assert container["Image"].endswith("/pytorch-inference:2.6-cpu-py312")
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert container["Environment"]["INFLAME_TOP_K"] == "5"  # `endpoint_top_k`'s default
    variant = plan["requests"][1]["request"]["ProductionVariants"][0]
    assert variant["ModelName"] == model["ModelName"] == plan["endpoint"]
    assert variant["InstanceType"] == "ml.m5.large"
    manifest = json.loads((run / "manifest.json").read_text())
    assert plan["weights_sha256"] == manifest["weights_sha256"]
    assert not (tmp_path / "home" / "ledger.sqlite").exists()  # a dry run records nothing

    wrong = run_inflame(
        "deploy", run, "--target", "sagemaker", "--dry-run", *SETTINGS,
        "--set", "targets.sagemaker.endpoint_instance_type=ml.m5.hugeish", cwd=tmp_path,
    )  # fmt: skip
    assert_clean_error(wrong, "not a SageMaker endpoint instance type", "endpoint_instance_type")
    none = run_inflame(
        "deploy", run, "--target", "sagemaker", "--dry-run", *SETTINGS,
        "--set", "targets.sagemaker.endpoint_top_k=0", cwd=tmp_path,
    )  # fmt: skip
    assert_clean_error(none, "targets.sagemaker.endpoint_top_k")


def test_the_handler_answers_as_predict_in_an_inference_image(
    run: Path, tmp_path: Path, image_python: Path
):
    from inflame.deploy.plan import plan_deployment
    from inflame.packaging import safe_extract

    plan = plan_deployment(run, "sagemaker", [*OVERRIDES, "targets.sagemaker.endpoint_top_k=2"])
    container = plan.requests[0][1]["PrimaryContainer"]
    model_dir = tmp_path / "opt" / "ml" / "model"
    safe_extract(plan.archive.data, model_dir)
    test_input = json.loads((run / "manifest.json").read_text())["data"]["inputs"]["test"]
    image = min(Path(test_input["path"]).rglob("*.jpg"))
    driver = tmp_path / "driver.py"
    driver.write_text(
        "import json, sys\n"
        f"sys.path.insert(0, {str(model_dir / 'code')!r})\n"
        "import inference\n"
        f"model = inference.model_fn({str(model_dir)!r})\n"
        f"body = open({str(image)!r}, 'rb').read()\n"
        "prediction = inference.predict_fn(inference.input_fn(body, 'image/jpeg'), model)\n"
        "print(inference.output_fn(prediction, 'application/json')[0])\n"
        "for content, kind in ((b'hello', 'text/plain'), (b'junk', 'image/png')):\n"
        "    try:\n"
        "        inference.predict_fn(inference.input_fn(content, kind), model)\n"
        "    except ValueError as exc:\n"
        "        print('refused:', exc)\n"
        "print(sys.modules['inflame'].__file__)\n"
    )
    result = subprocess.run(
        [str(image_python / "python"), str(driver)],
        capture_output=True,
        text=True,
        env=image_env(image_python, **container["Environment"]),  # the model's environment
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    [answer] = json.loads(lines[0])["predictions"]
    expected = next(Predictor.from_run(run).predict([image], top_k=2))
    assert len(answer["top_k"]) == 2  # of 3 classes: the deployment's `endpoint_top_k`
    assert answer["label"] == expected["label"]
    assert answer["probability"] == pytest.approx(expected["probability"], abs=1e-4)
    assert [r["label"] for r in answer["top_k"]] == [r["label"] for r in expected["top_k"]]
    assert lines[1].startswith("refused: Send one image per request") and "text/plain" in lines[1]
    assert lines[2].startswith("refused: request: not an image in a format inflame reads")
    assert lines[3] == str(model_dir / "code" / "inflame" / "__init__.py")  # the archive's


@pytest.fixture
def strict_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """moto, refusing any model, endpoint config or endpoint request that breaks botocore's
    model of its operation (as SageMaker does)."""
    from moto.sagemaker.responses import SageMakerResponse

    from inflame.targets.sagemaker import validate_operation

    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("INFLAME_HOME", str(tmp_path / "home"))
    for method, operation in (
        ("create_model", "CreateModel"),
        ("create_endpoint_config", "CreateEndpointConfig"),
        ("create_endpoint", "CreateEndpoint"),
    ):
        lenient = getattr(SageMakerResponse, method)

        def strict(self, lenient=lenient, operation=operation):
            validate_operation(operation, json.loads(self.body))
            return lenient(self)

        monkeypatch.setattr(SageMakerResponse, method, strict)
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield


def test_deploy_lists_and_undeploys_against_strict_moto(strict_aws, run: Path, tmp_path: Path):
    from inflame.deploy.plan import deploy, plan_deployment, refresh, undeploy

    ledger = Ledger(tmp_path / "home" / "ledger.sqlite")
    plan = plan_deployment(run, "sagemaker", OVERRIDES)
    record = deploy(plan, ledger)
    assert record.status == "creating" and record.name == plan.name
    assert "console.aws.amazon.com/sagemaker" in (record.console_url or "")
    s3 = boto3.client("s3", region_name="us-east-1")
    key = f"inflame/models/{plan.archive.sha256}/model.tar.gz"
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == plan.archive.data
    sm = boto3.client("sagemaker", region_name="us-east-1")
    model = sm.describe_model(ModelName=plan.name)
    assert model["PrimaryContainer"]["ModelDataUrl"] == plan.archive_uri
    assert model["ExecutionRoleArn"] == ROLE
    config = sm.describe_endpoint_config(EndpointConfigName=plan.name)
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.m5.large"
    assert sm.describe_endpoint(EndpointName=plan.name)["EndpointConfigName"] == plan.name

    listed = ledger.deployments()
    assert [(r.name, r.run) for r in listed] == [(plan.name, str(run))]
    current = refresh(listed[0], ledger)
    assert current.status == "in_service"  # what moto reports at once

    undeploy(current, ledger)
    for call, args in (
        (sm.describe_endpoint, {"EndpointName": plan.name}),
        (sm.describe_endpoint_config, {"EndpointConfigName": plan.name}),
        (sm.describe_model, {"ModelName": plan.name}),
    ):
        with pytest.raises(ClientError):
            call(**args)
    assert ledger.deployments() == [] and ledger.deployments(include_deleted=True)[0].status == (
        "deleted"
    )


def test_a_failed_deploy_leaves_nothing_behind(
    strict_aws, run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from moto.sagemaker.responses import SageMakerResponse

    from inflame.deploy.plan import deploy, plan_deployment

    def quota(self):
        from moto.core.exceptions import JsonRESTError

        raise JsonRESTError("ResourceLimitExceeded", "no capacity for ml.m5.large")

    monkeypatch.setattr(SageMakerResponse, "create_endpoint", quota)
    ledger = Ledger(tmp_path / "home" / "ledger.sqlite")
    plan = plan_deployment(run, "sagemaker", OVERRIDES)
    with pytest.raises(InflameError, match="Creating the endpoint: AWS said ResourceLimitExceeded"):
        deploy(plan, ledger)
    sm = boto3.client("sagemaker", region_name="us-east-1")
    with pytest.raises(ClientError):
        sm.describe_model(ModelName=plan.name)
    with pytest.raises(ClientError):
        sm.describe_endpoint_config(EndpointConfigName=plan.name)
    [record] = ledger.deployments()
    assert record.status == "failed" and record.error


def test_the_cli_deploys_lists_and_undeploys(strict_aws, run: Path, tmp_path: Path):
    """The commands as a user runs them, against moto on a loopback port."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        endpoint = "http://{}:{}".format(*server.get_host_and_port())
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket=BUCKET
        )
        env = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }
        created = run_inflame(
            "deploy", run, "--target", "sagemaker", *SETTINGS, cwd=tmp_path, **env
        )
        assert created.returncode == 0, created.stderr
        name = created.stdout.strip()
        listed = run_inflame("endpoints", "--json", cwd=tmp_path, **env)
        assert listed.returncode == 0, listed.stderr
        [row] = [json.loads(line) for line in listed.stdout.splitlines()]
        assert (row["name"], row["status"], row["run"]) == (name, "in_service", str(run))
        removed = run_inflame("undeploy", name, cwd=tmp_path, **env)
        assert removed.returncode == 0 and f"deleted endpoint {name}" in removed.stderr
        sm = boto3.client("sagemaker", endpoint_url=endpoint, region_name="us-east-1")
        with pytest.raises(ClientError):
            sm.describe_endpoint(EndpointName=name)
        assert run_inflame("endpoints", "--json", cwd=tmp_path, **env).stdout == ""
        missing = run_inflame("undeploy", name, cwd=tmp_path, **env)
        assert_clean_error(missing, f"Endpoint {name} was deleted already")
    finally:
        server.stop()
