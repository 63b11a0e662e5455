"""`inflame deploy --target vertex`: the exact requests offline (each parses as the API's own
request message and follows Vertex AI's rules), the model archive's handler run by TorchServe's
own loader in a Python holding only the prediction image's packages, and the real calls
(gapic REST clients, Cloud Storage) against the loopback fake, with the ledger."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import zipfile
from pathlib import Path

import pytest

from inflame.deploy.vertex import validate_deploy_request
from inflame.errors import InflameError
from inflame.ledger import Ledger
from inflame.predict import Predictor
from tests.emulation import image_env, make_image_python
from tests.fakes.gcp import FakeGCP
from tests.helpers import assert_clean_error, run_inflame

OVERRIDES = [
    "targets.vertex.project=my-proj",
    "targets.vertex.region=europe-west4",
    "targets.vertex.staging_bucket=gs://my-staging/team",
]
SETTINGS = [part for value in OVERRIDES for part in ("--set", value)]
PARENT = "projects/my-proj/locations/europe-west4"


@pytest.fixture
def gcp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("INFLAME_HOME", str(tmp_path / "home"))
    with FakeGCP(tmp_path / "gcs") as fake:
        fake.install(monkeypatch)
        yield fake


def test_dry_run_shows_the_exact_valid_requests_offline(run: Path, tmp_path: Path):
    result = run_inflame("deploy", run, "--target", "vertex", "--dry-run", *SETTINGS, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert [r["operation"] for r in plan["requests"]] == [
        "UploadModel",
        "CreateEndpoint",
        "DeployModel",
    ]
    for request in plan["requests"]:
        validate_deploy_request(request["operation"], request["request"])
    upload, create, deploy = (r["request"] for r in plan["requests"])
    name = plan["endpoint"]
    sha = plan["archive"]["sha256"]
    folder = f"gs://my-staging/team/inflame/models/{sha}/"
    assert plan["archive"]["uri"] == folder + "model.mar"
    assert upload["model"]["artifactUri"] == folder
    assert upload["model"]["containerSpec"] == {
        "imageUri": "europe-docker.pkg.dev/vertex-ai/prediction/pytorch-cpu.2-4:latest",
        "env": [{"name": "INFLAME_TOP_K", "value": "5"}],  # `endpoint_top_k`'s default
    }
    assert (upload["parent"], upload["modelId"], create["endpointId"]) == (PARENT, name, name)
    assert deploy["endpoint"] == f"{PARENT}/endpoints/{name}"
    assert deploy["deployedModel"]["model"] == f"{PARENT}/models/{name}"
    resources = deploy["deployedModel"]["dedicatedResources"]
    assert resources == {
        "machineSpec": {"machineType": "n1-standard-4"},
        "minReplicaCount": 1,
        "maxReplicaCount": 1,
    }
    manifest = json.loads((run / "manifest.json").read_text())
    assert plan["weights_sha256"] == manifest["weights_sha256"]
    assert upload["model"]["labels"]["inflame-weights"] == manifest["weights_sha256"][:12]
    assert not (tmp_path / "home" / "ledger.sqlite").exists()  # a dry run records nothing

    gpu = run_inflame(
        "deploy", run, "--target", "vertex", "--dry-run", *SETTINGS,
        "--set", "targets.vertex.endpoint_machine_type=g2-standard-8",
        "--set", "targets.vertex.endpoint_replicas=2", cwd=tmp_path,
    )  # fmt: skip
    assert gpu.returncode == 0, gpu.stderr
    gpu_plan = json.loads(gpu.stdout)
    gpu_upload, _, gpu_deploy = (r["request"] for r in gpu_plan["requests"])
    assert gpu_upload["model"]["containerSpec"]["imageUri"].endswith("/pytorch-gpu.2-4:latest")
    assert gpu_deploy["deployedModel"]["dedicatedResources"] == {
        "machineSpec": {
            "machineType": "g2-standard-8",
            "acceleratorType": "NVIDIA_L4",
            "acceleratorCount": 1,
        },
        "minReplicaCount": 2,
        "maxReplicaCount": 2,
    }
    typo = run_inflame(
        "deploy", run, "--target", "vertex", "--dry-run", *SETTINGS,
        "--set", "targets.vertex.region=europe-wst1", cwd=tmp_path,
    )  # fmt: skip
    assert_clean_error(typo, "targets.vertex.region", "Did you mean `europe-west1`?")
    for machine in ("a4-highgpu-8g", "n1-standard-3"):  # training only / no such machine
        wrong = run_inflame(
            "deploy", run, "--target", "vertex", "--dry-run", *SETTINGS,
            "--set", f"targets.vertex.endpoint_machine_type={machine}", cwd=tmp_path,
        )  # fmt: skip
        assert_clean_error(wrong, "endpoint_machine_type", "serves predictions on")


def test_requests_that_break_vertex_rules_are_refused():
    parent = PARENT
    good = {
        "endpoint": f"{parent}/endpoints/fowl-1",
        "deployedModel": {
            "model": f"{parent}/models/fowl-1",
            "dedicatedResources": {
                "machineSpec": {"machineType": "n1-standard-4"},
                "minReplicaCount": 1,
            },
        },
        "trafficSplit": {"0": 100},
    }
    validate_deploy_request("DeployModel", good)
    broken = {
        "trafficSplit": {"0": 90},
        "deployedModel": {**good["deployedModel"], "dedicatedResources": {"machineSpec": {}}},
    }
    for change, message in (
        ({"trafficSplit": {"0": 90}}, "sums to 90"),
        (
            {
                "deployedModel": {
                    **good["deployedModel"],
                    "dedicatedResources": {
                        "machineSpec": {"machineType": "a4-highgpu-8g"},
                        "minReplicaCount": 1,
                    },
                }
            },
            "'a4-highgpu-8g' does not serve predictions",
        ),
        ({"deployedModel": {"model": "fowl-1"}}, "not a model's resource name"),
        (broken, "minReplicaCount: required"),
        ({"deployedModel": {**good["deployedModel"], "extra": 1}}, "not a valid"),
    ):
        with pytest.raises(InflameError, match=message):
            validate_deploy_request("DeployModel", {**good, **change})
    model = {
        "displayName": "fowl",
        "artifactUri": "gs://b-1/m/",
        "containerSpec": {"imageUri": "i"},
    }
    for request, message in (
        ({"parent": parent, "modelId": "1fowl", "model": model}, "modelId"),
        ({"parent": parent, "model": {**model, "artifactUri": "gs://b-1/m.mar"}}, "folder"),
        ({"parent": parent, "model": {**model, "containerSpec": {}}}, "imageUri: required"),
        ({"parent": parent, "model": {**model, "labels": {"Job": "x"}}}, "labels"),
    ):
        with pytest.raises(InflameError, match=message):
            validate_deploy_request("UploadModel", request)
    with pytest.raises(InflameError, match="endpointId"):
        validate_deploy_request(
            "CreateEndpoint",
            {"parent": parent, "endpointId": "fowl-", "endpoint": {"displayName": "f"}},
        )


def test_the_handler_answers_as_predict_under_torchserve(run: Path, tmp_path: Path):
    """The archive unpacked as TorchServe unpacks it, its handler loaded by TorchServe's own
    model loader with the JSON envelope, and called with a batch as TorchServe builds it."""
    from inflame.deploy.plan import plan_deployment

    plan = plan_deployment(run, "vertex", [*OVERRIDES, "targets.vertex.endpoint_top_k=2"])
    container = plan.requests[0][1]["model"]["containerSpec"]
    model_dir = tmp_path / "model-store" / "model"
    with zipfile.ZipFile(io.BytesIO(plan.archive.data)) as archive:
        archive.extractall(model_dir)
    manifest = json.loads((model_dir / "MAR-INF" / "MANIFEST.json").read_text())
    test_input = json.loads((run / "manifest.json").read_text())["data"]["inputs"]["test"]
    images = sorted(Path(test_input["path"]).rglob("*.jpg"))[:3]
    request = {"instances": [{"b64": base64.b64encode(p.read_bytes()).decode()} for p in images]}
    request["instances"][1] = {"data": request["instances"][1]}  # the other accepted form
    bad = {"instances": [{"b64": base64.b64encode(b"not an image").decode()}]}
    driver = tmp_path / "driver.py"
    driver.write_text(
        "import json, sys\n"
        f"sys.path.append({str(model_dir)!r})  # TorchServe puts the model folder on the path\n"
        "from ts.model_loader import TsModelLoader\n"
        "from ts.service import Service\n"
        "def call(service, body):\n"
        "    batch = [{'requestId': b'1', 'parameters': [{'name': 'body', 'value': body,\n"
        "              'contentType': 'application/json'}]}]\n"
        "    _, rows, _ = Service.retrieve_data_for_inference(batch)\n"
        "    try:\n"
        "        return service._entry_point(rows, service.context)\n"
        "    except Exception as exc:\n"
        "        return [f'refused {getattr(exc, \"error_code\", None)}: {exc}']\n"
        f"handler = {manifest['model']['handler']!r}\n"
        f"request, bad = json.loads({json.dumps(json.dumps(request))}), "
        f"json.loads({json.dumps(json.dumps(bad))})\n"
        f"enveloped = TsModelLoader().load('model', {str(model_dir)!r}, handler, envelope='json')\n"
        "print(json.dumps(call(enveloped, request)))\n"
        "print(json.dumps(call(enveloped, bad)))\n"
        f"whole = TsModelLoader().load('model', {str(model_dir)!r}, handler)\n"
        "print(json.dumps(call(whole, request)))\n"
        "print(sys.modules['inflame'].__file__)\n"
    )
    bin_dir = make_image_python(tmp_path / "image", extra=["torchserve", "pyyaml"])
    result = subprocess.run(
        [str(bin_dir / "python"), str(driver)],
        capture_output=True,
        text=True,
        env=image_env(bin_dir, **{e["name"]: e["value"] for e in container["env"]}),
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    enveloped, refused, whole, imported = result.stdout.splitlines()[-4:]
    [envelope_body] = json.loads(enveloped)  # TorchServe's JSON envelope: one body per request
    [whole_body] = json.loads(whole)
    expected = list(Predictor.from_run(run).predict(images, top_k=2))
    for answers in (json.loads(envelope_body)["predictions"], whole_body["predictions"]):
        assert len(answers) == len(images)
        for answer, want in zip(answers, expected, strict=True):
            assert len(answer["top_k"]) == 2  # of 3 classes: the model's `endpoint_top_k`
            assert answer["label"] == want["label"]
            assert answer["probability"] == pytest.approx(want["probability"], abs=1e-4)
            assert [r["label"] for r in answer["top_k"]] == [r["label"] for r in want["top_k"]]
    [message] = json.loads(refused)
    assert message.startswith("refused 400: instances[0]: not an image"), message
    assert imported == str(model_dir / "inflame" / "__init__.py")  # the archive's own inflame


def test_deploy_follows_and_undeploys_against_the_fake(gcp: FakeGCP, run: Path, tmp_path: Path):
    from inflame.deploy.plan import deploy, plan_deployment, refresh, undeploy

    ledger = Ledger(tmp_path / "home" / "ledger.sqlite")
    plan = plan_deployment(run, "vertex", OVERRIDES)
    record = deploy(plan, ledger)
    assert record.status == "creating" and record.name == plan.name
    assert "console.cloud.google.com/vertex-ai" in (record.console_url or "")
    stored = tmp_path / "gcs" / "my-staging" / "team" / "inflame" / "models" / plan.archive.sha256
    assert (stored / "model.mar").read_bytes() == plan.archive.data
    model_name, endpoint_name = f"{PARENT}/models/{plan.name}", f"{PARENT}/endpoints/{plan.name}"
    assert gcp.vertex.models[model_name]["artifactUri"] == plan.archive_uri.removesuffix(
        "model.mar"
    )
    [deployed] = gcp.vertex.endpoints[endpoint_name]["deployedModels"]
    assert deployed["model"] == model_name
    assert refresh(record, ledger).status == "in_service"

    again = deploy(plan_deployment(run, "vertex", OVERRIDES), ledger)  # same archive: no upload
    uploads = [r for r in gcp.requests if r[0] == "POST" and r[1].startswith("/upload/")]
    assert len(uploads) == 1
    undeploy(refresh(again, ledger), ledger)
    undeploy(ledger.find_deployment(plan.name), ledger)
    assert gcp.vertex.models == {} and gcp.vertex.endpoints == {}
    assert ledger.deployments() == []
    assert {r.status for r in ledger.deployments(include_deleted=True)} == {"deleted"}


def test_a_deployment_in_progress_or_failed_is_reported(gcp: FakeGCP, run: Path, tmp_path: Path):
    from inflame.deploy.plan import deploy, plan_deployment, refresh, undeploy

    ledger = Ledger(tmp_path / "home" / "ledger.sqlite")
    gcp.vertex.deploy_done = False
    slow = deploy(plan_deployment(run, "vertex", OVERRIDES), ledger)
    assert refresh(slow, ledger).status == "creating"
    operation = ledger.find_deployment(slow.name).locator["deploy_operation"]
    assert operation.startswith(f"{PARENT}/endpoints/{slow.name}/operations/")
    gcp.vertex.deploy_error = "Model server never became ready"
    broken = deploy(plan_deployment(run, "vertex", OVERRIDES), ledger)
    current = refresh(broken, ledger)
    assert (current.status, current.error) == ("failed", "Model server never became ready")
    with pytest.raises(InflameError, match="still being deployed"):
        undeploy(slow, ledger)  # Vertex refuses too: the deployment must end first
    gcp.vertex.finish_deploys()
    assert refresh(slow, ledger).status == "in_service"
    for record in (slow, broken):
        undeploy(record, ledger)
    assert gcp.vertex.models == {} and gcp.vertex.endpoints == {}
    assert refresh(ledger.find_deployment(slow.name), ledger).status == "deleted"


def test_a_failed_deploy_leaves_nothing_behind(gcp: FakeGCP, run: Path, tmp_path: Path):
    from inflame.deploy.plan import deploy, plan_deployment

    ledger = Ledger(tmp_path / "home" / "ledger.sqlite")
    gcp.fail_next[r":deployModel"] = 1
    with pytest.raises(InflameError, match="Deploying the model to the endpoint: Google Cloud"):
        deploy(plan_deployment(run, "vertex", OVERRIDES), ledger)
    assert gcp.vertex.models == {} and gcp.vertex.endpoints == {}
    [record] = ledger.deployments()
    assert record.status == "failed" and "overloaded" in (record.error or "")
