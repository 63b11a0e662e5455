"""`inflame deploy --target azure`: the exact requests offline (azure-ai-ml's schemas and Azure
ML's rules), the scoring script run by Azure ML's own inference server
(azureml-inference-server-http, installed by tools/install-test-deps.sh) in a Python holding
only the image's packages, and the real MLClient calls against the loopback fake, with the
ledger."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from inflame.deploy.azure import validate_online_request
from inflame.errors import InflameError
from inflame.ledger import Ledger
from inflame.predict import Predictor
from tests.emulation import image_env
from tests.fakes.azureml import FakeAzureML
from tests.helpers import assert_clean_error, run_inflame

SUB = "00000000-0000-0000-0000-000000000000"
OVERRIDES = [
    f"targets.azure.subscription_id={SUB}",
    "targets.azure.resource_group=rg",
    "targets.azure.workspace=ws",
    "targets.azure.compute=gpu-cluster",
]
SETTINGS = [part for value in OVERRIDES for part in ("--set", value)]
SERVER = Path(__file__).resolve().parent.parent / ".test-deps" / "azureml-inference-server"


@pytest.fixture
def azure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from inflame.targets.azure import TARGET

    monkeypatch.setenv("INFLAME_HOME", str(tmp_path / "home"))
    with FakeAzureML() as fake:
        for name in ("client", "credential", "blob_options"):
            monkeypatch.setattr(TARGET, name, getattr(fake, name))
        monkeypatch.setattr(TARGET.calls, "wait", 0.01)
        yield fake


def test_dry_run_shows_the_requests_offline(run: Path, tmp_path: Path):
    result = run_inflame("deploy", run, "--target", "azure", "--dry-run", *SETTINGS, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    name = plan["endpoint"]
    assert [r["operation"] for r in plan["requests"]] == [
        f"PUT onlineEndpoints/{name}",
        f"PUT onlineEndpoints/{name}/deployments/inflame",
        f"PUT onlineEndpoints/{name} (traffic)",
    ]
    endpoint, deployment, traffic = (r["request"] for r in plan["requests"])
    validate_online_request("endpoint", name, endpoint)
    validate_online_request("deployment", "inflame", deployment)
    validate_online_request("endpoint", name, traffic)
    assert endpoint["properties"]["authMode"] == "Key" and endpoint["properties"]["traffic"] == {}
    assert traffic["properties"]["traffic"] == {"inflame": 100}
    props = deployment["properties"]
    assert props["codeConfiguration"] == {"codeId": "CODE_ASSET_ID", "scoringScript": "score.py"}
    assert props["instanceType"] == "Standard_DS3_v2" and deployment["sku"]["capacity"] == 1
    assert props["environmentId"].startswith("azureml://registries/azureml/environments/acpt-")
    assert props["environmentVariables"] == {"INFLAME_TOP_K": "5"}  # `endpoint_top_k`'s default
    manifest = json.loads((run / "manifest.json").read_text())
    assert endpoint["tags"]["inflame:weights-sha256"] == manifest["weights_sha256"]
    assert not (tmp_path / "home" / "ledger.sqlite").exists()  # a dry run records nothing

    wrong = run_inflame(
        "deploy", run, "--target", "azure", "--dry-run", *SETTINGS,
        "--set", "targets.azure.endpoint_instance_type=Standard_NC6", cwd=tmp_path,
    )  # fmt: skip
    assert_clean_error(wrong, "endpoint_instance_type", "managed online endpoints run on")
    unknown = run_inflame("deploy", run, "--target", "gke", "--dry-run", cwd=tmp_path)
    assert_clean_error(unknown, "cannot deploy to 'gke'", "azure, sagemaker, vertex")


def test_bodies_that_break_azure_ml_rules_are_refused():
    good = {
        "location": "westeurope",
        "properties": {
            "endpointComputeType": "Managed",
            "instanceType": "Standard_DS3_v2",
            "codeConfiguration": {
                "codeId": "/subscriptions/x/codes/c/versions/1",
                "scoringScript": "score.py",
            },
            "environmentId": "azureml:env@latest",
            "requestSettings": {"requestTimeout": "PT1M"},
        },
        "sku": {"name": "Default", "capacity": 1},
    }
    validate_online_request("deployment", "inflame", good)
    props = good["properties"]
    texts = {**good, "properties": {**props, "environmentVariables": {"INFLAME_TOP_K": "3"}}}
    validate_online_request("deployment", "inflame", texts)
    for name, body, message in (
        ("-x", good, "3-32 letters"),
        ("inflame", {**good, "sku": {"capacity": 0}}, "sku.capacity"),
        ("inflame", {**good, "properties": {**props, "instanceType": "Standard_NC6"}}, "VM size"),
        ("inflame", {**good, "properties": {**props, "requestSettings": {"requestTimeout": "9"}}},
         "ISO 8601"),
        ("inflame", {**good, "properties": {**props, "environmentVariables": {"A-B": "1"}}}, "A-B"),
        ("inflame", {**good, "location": ""}, "location: required"),
        ("inflame", {**good, "properties": {**props, "environmentVariables": {"TOP_K": 3}}},
         "text value"),
    ):  # fmt: skip
        with pytest.raises(InflameError, match=message):
            validate_online_request("deployment", name, body)
    endpoint = {"location": "westeurope", "properties": {"authMode": "Key", "traffic": {"a": 60}}}
    with pytest.raises(InflameError, match="sums to 60"):
        validate_online_request("endpoint", "fowl-1", endpoint)
    with pytest.raises(InflameError, match="authMode"):
        validate_online_request(
            "endpoint", "fowl-1", {**endpoint, "properties": {"authMode": "Password"}}
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_scoring_script_answers_as_predict_in_the_inference_server(
    run: Path, tmp_path: Path, image_python: Path, monkeypatch: pytest.MonkeyPatch
):
    """The deployment's code folder served by azureml-inference-server-http as Azure ML
    starts it (gunicorn; `init()`, then `run()` per request on /score)."""
    from inflame.deploy.plan import plan_deployment

    if not (SERVER / ".complete").is_file():
        pytest.fail(f"{SERVER} is missing: run `bash tools/install-test-deps.sh`")
    monkeypatch.setenv("INFLAME_HOME", str(tmp_path / "home"))
    plan = plan_deployment(run, "azure", [*OVERRIDES, "targets.azure.endpoint_top_k=2"])
    variables = plan.requests[1][1]["properties"]["environmentVariables"]
    code = Path(plan.locator["code"])
    assert (code / "score.py").is_file() and (code / "model" / "model.json").is_file()
    port, log = _free_port(), tmp_path / "server.log"
    env = image_env(image_python, AML_APP_ROOT=str(code), **variables)  # the deployment's
    env["PYTHONPATH"] += os.pathsep + str(SERVER)
    server = subprocess.Popen(
        [str(image_python / "python"), "-m", "azureml_inference_server_http",
         "--entry_script", str(code / "score.py"), "--port", str(port)],
        env=env, cwd=tmp_path, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 240
        while True:
            try:
                if httpx.get(f"{url}/", timeout=5).status_code == 200:  # liveness
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        test_input = json.loads((run / "manifest.json").read_text())["data"]["inputs"]["test"]
        image = min(Path(test_input["path"]).rglob("*.jpg"))
        answer = httpx.post(
            f"{url}/score",
            content=image.read_bytes(),
            headers={"Content-Type": "image/jpeg"},
            timeout=120,
        )
        assert answer.status_code == 200, (answer.text, log.read_text())
        [prediction] = answer.json()["predictions"]
        expected = next(Predictor.from_run(run).predict([image], top_k=2))
        assert len(prediction["top_k"]) == 2  # of 3 classes: the deployment's `endpoint_top_k`
        assert prediction["label"] == expected["label"]
        assert prediction["probability"] == pytest.approx(expected["probability"], abs=1e-4)
        assert [r["label"] for r in prediction["top_k"]] == [r["label"] for r in expected["top_k"]]
        text = httpx.post(f"{url}/score", content=b"hi", headers={"Content-Type": "text/plain"})
        assert text.status_code == 415 and "one image per request" in text.json()["error"]
        junk = httpx.post(f"{url}/score", content=b"junk", headers={"Content-Type": "image/png"})
        assert junk.status_code == 400 and "not an image" in junk.json()["error"]
    finally:
        server.terminate()
        server.wait(timeout=60)  # the image has no inflame: the code folder's was served


def test_deploy_follows_and_undeploys_against_the_fake(
    azure: FakeAzureML, run: Path, tmp_path: Path
):
    from inflame.deploy.plan import deploy, plan_deployment, refresh, undeploy

    ledger = Ledger(tmp_path / "home" / "ledger.sqlite")
    plan = plan_deployment(run, "azure", OVERRIDES)
    record = deploy(plan, ledger)
    assert record.status == "creating" and "ml.azure.com/endpoints/realtime" in (
        record.console_url or ""
    )
    assert record.locator["scoring_uri"].endswith(".inference.ml.azure.com/score")
    endpoint = azure.online.endpoints[plan.name]
    assert endpoint["properties"]["traffic"] == {"inflame": 100}
    assert endpoint["location"] == "westeurope"  # the workspace's, read when deploying
    deployment = azure.online.deployments[(plan.name, "inflame")]
    code_id = deployment["properties"]["codeConfiguration"]["codeId"]
    assert code_id in azure.online.codes  # the code folder was uploaded and registered
    folder = urlsplit(azure.online.codes[code_id]["properties"]["codeUri"]).path
    uploaded = {p.removeprefix(folder + "/"): data for p, data in azure.blobs.items()}
    assert uploaded["score.py"] == (Path(plan.locator["code"]) / "score.py").read_bytes()
    assert (
        uploaded["model/weights.safetensors"]
        == (run / "model" / "weights.safetensors").read_bytes()
    )
    assert refresh(record, ledger).status == "in_service"

    undeploy(ledger.find_deployment(plan.name), ledger)
    assert azure.online.endpoints == {} and azure.online.deployments == {}
    assert refresh(ledger.find_deployment(plan.name), ledger).status == "deleted"


def test_a_failed_deployment_leaves_nothing_behind(azure: FakeAzureML, run: Path, tmp_path: Path):
    from inflame.deploy.plan import deploy, plan_deployment

    azure.online.deployment_state = "Failed"
    ledger = Ledger(tmp_path / "home" / "ledger.sqlite")
    with pytest.raises(InflameError, match=r"deployment of .* ended Failed.*get-logs"):
        deploy(plan_deployment(run, "azure", OVERRIDES), ledger)
    assert azure.online.endpoints == {} and azure.online.deployments == {}
    [record] = ledger.deployments()
    assert record.status == "failed" and record.error


def test_an_endpoint_that_was_never_created_is_not_deleted(
    azure: FakeAzureML, run: Path, tmp_path: Path
):
    """The rollback deletes only what this deploy created."""
    from inflame.deploy.plan import deploy, plan_deployment

    azure.fail_next[r"/onlineEndpoints/[^/?]+\?"] = 100  # every try to create it: 503
    ledger = Ledger(tmp_path / "home" / "ledger.sqlite")
    with pytest.raises(InflameError, match="Creating the endpoint"):
        deploy(plan_deployment(run, "azure", OVERRIDES), ledger)
    assert not [r for r in azure.requests if r[0] == "DELETE"]
    assert azure.online.endpoints == {}


# ---- Azure ML's published REST models (inflame/targets/azure_rest.py) ---------------------


def _model(operation: str) -> str:
    return "OnlineDeployment" if "/deployments/" in operation else "OnlineEndpoint"


def _planned_bodies(run: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *extra: str):
    from inflame.deploy.plan import plan_deployment

    monkeypatch.setenv("INFLAME_HOME", str(tmp_path / "home"))
    plan = plan_deployment(run, "azure", [*OVERRIDES, *extra])
    return plan.name, [(op, json.loads(json.dumps(body))) for op, body in plan.requests]


@pytest.mark.parametrize(
    "extra",
    [
        (),
        (
            "targets.azure.endpoint_instance_type=Standard_NC4as_T4_v3",
            "targets.azure.endpoint_instances=3",
        ),
    ],
)
def test_planned_bodies_follow_azure_mls_published_models(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: tuple[str, ...]
):
    from inflame.targets.azure_rest import model_violations

    _, requests = _planned_bodies(run, monkeypatch, tmp_path, *extra)
    assert len(requests) == 3
    for operation, body in requests:
        assert model_violations(_model(operation), body) == [], operation


@pytest.mark.parametrize(
    ("kind", "change", "message"),
    [
        ("endpoint", lambda b: b.update(kinds="x"), "kinds: unknown member of OnlineEndpoint"),
        (
            "endpoint",
            lambda b: b["properties"].update(authMode="Keys"),
            "properties.authMode: 'Keys' is not one of AMLToken, Key, AADToken",
        ),
        (
            "endpoint",
            lambda b: b["properties"]["traffic"].update(inflame="100"),
            "properties.traffic.inflame: must be an integer",
        ),
        (
            "endpoint",
            lambda b: b["properties"].update(scoringUri="https://x/score"),
            "properties.scoringUri: read-only (Azure ML sets it)",
        ),
        (
            "endpoint",
            lambda b: b["identity"].update(type="System"),
            "identity.type: 'System' is not one of None, SystemAssigned",
        ),
        ("endpoint", lambda b: b.pop("properties"), "properties: required"),
        (
            "deployment",
            lambda b: b["properties"]["codeConfiguration"].update(scoringScripts=["score.py"]),
            "properties.codeConfiguration.scoringScripts: unknown member of CodeConfiguration",
        ),
        (
            "deployment",
            lambda b: b["properties"].update(endpointComputeType="Managd"),
            "properties.endpointComputeType: 'Managd' is not one of Kubernetes, Managed",
        ),
        ("deployment", lambda b: b["sku"].update(capacity="1"), "sku.capacity: must be an integer"),
        (
            "deployment",
            lambda b: b["properties"].update(appInsightsEnabled="false"),
            "properties.appInsightsEnabled: must be true or false",
        ),
        (
            "deployment",
            lambda b: b["properties"]["requestSettings"].update(requestTimeout=60000),
            "properties.requestSettings.requestTimeout: 60000 is not an ISO 8601 duration",
        ),
        (
            "deployment",
            lambda b: b["properties"]["codeConfiguration"].pop("scoringScript"),
            "properties.codeConfiguration.scoringScript: required",
        ),
        (
            "deployment",
            lambda b: b["properties"].update(provisioningState="Succeeded"),
            "properties.provisioningState: read-only (Azure ML sets it)",
        ),
    ],
)
def test_the_published_models_refuse_what_azure_ml_would(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind, change, message
):
    from inflame.targets.azure_rest import model_violations

    name, requests = _planned_bodies(run, monkeypatch, tmp_path)
    [(operation, body)] = [
        (op, body) for op, body in requests[1:] if ("/deployments/" in op) == (kind == "deployment")
    ]  # the deployment, or the endpoint with its traffic
    change(body)
    [problem] = model_violations(_model(operation), body)
    assert problem.startswith(message)
    with pytest.raises(InflameError) as info:
        validate_online_request(kind, "inflame" if kind == "deployment" else name, body)
    assert message in str(info.value)


def test_the_sdks_own_models_send_an_unknown_member(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Why the model check exists: azure-ai-ml's generated model takes a deployment with a
    member Azure ML does not know and serializes it for the wire as it is."""
    from azure.ai.ml._restclient.arm_ml_service._utils.model_base import SdkJSONEncoder
    from azure.ai.ml._restclient.arm_ml_service.models import OnlineDeployment

    _, requests = _planned_bodies(run, monkeypatch, tmp_path)
    body = requests[1][1]
    body["properties"]["codeConfiguration"]["scoringScripts"] = ["score.py"]
    wire = json.dumps(OnlineDeployment(body), cls=SdkJSONEncoder, exclude_readonly=True)
    assert json.loads(wire)["properties"]["codeConfiguration"]["scoringScripts"] == ["score.py"]
    with pytest.raises(InflameError, match="scoringScripts: unknown member of CodeConfiguration"):
        validate_online_request("deployment", "inflame", body)


def test_mlclient_sends_endpoints_and_deployments_with_the_checked_api_versions(
    azure: FakeAzureML, run: Path, tmp_path: Path
):
    from inflame.deploy.plan import deploy, plan_deployment
    from inflame.targets.azure_rest import API_VERSIONS, model_violations

    plan = plan_deployment(run, "azure", OVERRIDES)
    deploy(plan, Ledger(tmp_path / "home" / "ledger.sqlite"))
    puts = [
        (url, body) for m, url, body in azure.requests if m == "PUT" and "/onlineEndpoints/" in url
    ]
    assert len(puts) == 3  # endpoint, deployment, traffic
    for url, body in puts:
        model = _model(urlsplit(url).path + "/")
        assert f"api-version={API_VERSIONS[model]}" in url, url
        assert model_violations(model, json.loads(body)) == [], url
