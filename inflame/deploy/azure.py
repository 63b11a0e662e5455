"""Azure ML managed online endpoints: an endpoint (key auth), one deployment named `inflame`
whose code folder holds `score.py` (Azure ML's scoring-script convention, raw HTTP), inflame
and the run's model, on an environment that has the inference server (by default the curated
PyTorch environment the training jobs use), then all traffic to that deployment; through
azure-ai-ml's MLClient.

Each request is built by azure-ai-ml's own entities, checked with the SDK's schema (the YAML
loads back with load_online_endpoint / load_online_deployment) and against Azure ML's rules on
the REST bodies (names, auth mode, the managed SKU list, instance count, traffic, variables).
Creating waits for the deployment (Azure ML takes many minutes), since traffic can only go to
a deployment that exists.
"""

from __future__ import annotations

import ast
import contextlib
import json
import re
import secrets
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from inflame.deploy.archive import build_archive
from inflame.deploy.plan import TOP_K_ENV, Created, DeployPlan, finished_run, roll_back
from inflame.errors import InflameError
from inflame.targets import base
from inflame.targets.azure_rest import API_VERSIONS, MODEL_VERSION, refuse_body

SCORE = Path(__file__).with_name("azure_score.py")
DEPLOYMENT = "inflame"  # the endpoint's one deployment
WAIT_S = 3600  # Azure ML takes 10-20 minutes to create a deployment
LOCATION = "WORKSPACE_LOCATION"  # in the plan: read from the workspace when deploying
CODE_ID = "CODE_ASSET_ID"  # in the plan: the code folder's asset, uploaded when deploying
_NAME_RE = re.compile(r"[a-zA-Z](?:[-a-zA-Z0-9]{1,30}[a-zA-Z0-9])")  # 3-32 characters
AUTH_MODES = ("Key", "AMLToken", "AADToken")
# VM sizes managed online endpoints run on ("Managed online endpoints SKU list")
_SKU_RE = re.compile(
    r"Standard_(?:DS[1-5]_v2|F(?:2|4|8|16|32|48|64|72)s_v2|E(?:2|4|8|16|20|32|48|64)s_v3"
    r"|D(?:2|4|8|16|32|48|64|96)as?_v4|E(?:2|4|8|16|20|32|48|64|96)as?_v4"
    r"|NC(?:4|8|16|64)as_T4_v3|NC(?:6|12|24)s_v3|NC(?:24|48|96)ads_A100_v4|ND96asr_v4"
    r"|ND96amsr_A100_v4|NC40ads_H100_v5|NC80adis_H100_v5|ND96isr_H100_v5)",
    re.IGNORECASE,
)
_DURATION_RE = re.compile(r"P(?:\d+D)?(?:T(?:\d+H)?(?:\d+M)?(?:\d+(?:\.\d+)?S)?)?")
CHECKS = (
    "azure-ai-ml's own schemas (the endpoint and deployment YAML load back with "
    "load_online_endpoint and load_online_deployment); the scoring script parses",
    f"Azure ML's published REST models of the bodies (api-version {MODEL_VERSION}; MLClient "
    f"sends OnlineEndpoint with {API_VERSIONS['OnlineEndpoint']} and OnlineDeployment with "
    f"{API_VERSIONS['OnlineDeployment']}), in full: members, types, required and read-only "
    "members, enum values, compute type",
    "Azure ML's rules on the REST bodies: endpoint and deployment names, auth mode, the "
    "managed online SKU list, instance count, traffic, environment variables",
)


def endpoint_name(job: str) -> str:
    """A unique endpoint name (unique in its Azure region): 3-32 letters, digits and -,
    starting with a letter."""
    stem = re.sub(r"[^a-zA-Z0-9-]+", "-", job).strip("-")[:23].strip("-")
    stem = stem if stem[:1].isalpha() else f"e{stem}"
    return f"{stem}-{secrets.token_hex(4)}"


def _rule_violations(kind: str, name: str, body: Mapping[str, Any]) -> Iterator[str]:
    """Azure ML's documented rules for an online endpoint or deployment (REST body)."""
    if not _NAME_RE.fullmatch(name):
        yield f"name: {name!r} must be 3-32 letters, digits or -, starting with a letter"
    if not body.get("location"):
        yield "location: required"
    props = body.get("properties") or {}
    if kind == "endpoint":
        if props.get("authMode") not in AUTH_MODES:
            yield f"properties.authMode: {props.get('authMode')!r} is not one of {AUTH_MODES}"
        traffic = props.get("traffic") or {}
        for deployment, share in traffic.items():
            if not isinstance(share, int) or not 0 <= share <= 100:
                yield f"properties.traffic.{deployment}: {share!r} is not a percentage"
        if traffic and sum(traffic.values()) not in (0, 100):
            yield f"properties.traffic: sums to {sum(traffic.values())}, not 100 (or 0)"
        return
    if props.get("endpointComputeType") != "Managed":
        yield "properties.endpointComputeType: inflame deploys Managed"
    instance = str(props.get("instanceType", ""))
    if not _SKU_RE.fullmatch(instance):
        yield f"properties.instanceType: {instance!r} is not a managed online endpoint VM size"
    if int((body.get("sku") or {}).get("capacity", 0)) < 1:
        yield "sku.capacity: at least 1"
    code = props.get("codeConfiguration") or {}
    if not code.get("codeId") or not code.get("scoringScript"):
        yield "properties.codeConfiguration: codeId and scoringScript are required"
    if not props.get("environmentId"):
        yield "properties.environmentId: required"
    for key, value in (props.get("environmentVariables") or {}).items():
        if not base.ENV_NAME.fullmatch(key) or not isinstance(value, str):
            yield f"properties.environmentVariables: {key!r} must be a name with a text value"
    timeout = (props.get("requestSettings") or {}).get("requestTimeout")
    if timeout is not None and not _DURATION_RE.fullmatch(str(timeout)):
        yield f"properties.requestSettings.requestTimeout: {timeout!r} is not an ISO 8601 duration"


def validate_online_request(kind: str, name: str, body: Mapping[str, Any]) -> None:
    """Check an online endpoint or deployment, as sent over REST, as Azure ML does: its
    published model (OnlineEndpoint or OnlineDeployment) in full, then Azure ML's rules."""
    model = "OnlineEndpoint" if kind == "endpoint" else "OnlineDeployment"
    refuse_body(f"Azure ML online {kind}", model, body, lambda: _rule_violations(kind, name, body))


def _state(provisioning_state: Any) -> str:
    """ "Succeeded", ...: the SDK gives enums (EndpointProvisioningState.SUCCEEDED) or text."""
    return str(getattr(provisioning_state, "value", provisioning_state) or "")


def _wait(calls: Any, what: str, poller: Any) -> Any:
    """A long-running operation's result, waited for at most WAIT_S. (azure-core's
    `result(timeout)` returns when the time is up, finished or not: checked here.)"""
    result = calls.run(what, poller.result, timeout=WAIT_S) if calls else poller.result(WAIT_S)
    if not poller.done():
        raise InflameError(
            f"{what}: Azure ML had not finished after {WAIT_S // 60} minutes (it may still); "
            "`inflame endpoints` shows where it stands."
        )
    return result


def _round_trip(entity: Any, load: Any, kind: str) -> None:
    """The SDK's own schema check: the entity's YAML must load back."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "entity.yml"
        import yaml

        dumped = json.loads(json.dumps(entity._to_dict()))  # plain dicts for safe_dump
        path.write_text(yaml.safe_dump(dumped), encoding="utf-8")
        try:
            load(source=path)
        except Exception as exc:
            raise InflameError(f"The Azure ML online {kind} does not validate: {exc}") from None


class AzureEndpoints:
    name = "azure"

    def __init__(self) -> None:
        from inflame.targets.azure import TARGET

        self.provider = TARGET  # its MLClient, credential and error translation

    def _entities(self, plan_like: Mapping[str, Any]) -> tuple[Any, Any]:
        """(endpoint, deployment) entities for a plan's settings."""
        from azure.ai.ml.entities import (
            CodeConfiguration,
            ManagedOnlineDeployment,
            ManagedOnlineEndpoint,
            OnlineRequestSettings,
        )

        endpoint = ManagedOnlineEndpoint(
            name=plan_like["name"], auth_mode="key", tags=dict(plan_like["tags"])
        )
        deployment = ManagedOnlineDeployment(
            name=DEPLOYMENT,
            endpoint_name=plan_like["name"],
            code_configuration=CodeConfiguration(code=plan_like["code"], scoring_script="score.py"),
            environment=plan_like["environment"],
            instance_type=plan_like["instance_type"],
            instance_count=plan_like["instances"],
            request_settings=OnlineRequestSettings(request_timeout_ms=60_000),
            environment_variables={TOP_K_ENV: str(plan_like["top_k"])},
            tags=dict(plan_like["tags"]),
        )
        return endpoint, deployment

    def plan(self, run_dir: Path, overrides: list[str]) -> DeployPlan:
        from inflame.targets.azure import SETTINGS, stage_bundle

        manifest, spec = finished_run(run_dir, overrides)
        settings = base.TargetSettings(spec, self.name, SETTINGS)
        ml = self.provider._sdk()
        instance_type = settings["endpoint_instance_type"]
        if not _SKU_RE.fullmatch(instance_type):
            raise settings.fail(
                "endpoint_instance_type",
                f"{instance_type!r} is not a VM size managed online endpoints run on. Use e.g. "
                "Standard_DS3_v2 (CPU) or Standard_NC4as_T4_v3 (one T4 GPU).",
            )
        archive = build_archive(run_dir, SCORE, "score.py", "")
        ast.parse(SCORE.read_text(encoding="utf-8"))  # what the SDK checks before uploading
        code = stage_bundle(archive)  # type: ignore[arg-type]  (data + sha256 is all it reads)
        name = endpoint_name(spec.job.name)
        tags = {
            "inflame:job": spec.job.name,
            "inflame:weights-sha256": str(manifest.get("weights_sha256")),
            "inflame:archive-sha256": archive.sha256,
        }
        details = {
            "name": name,
            "tags": tags,
            "code": str(code),
            "environment": settings["inference_environment"] or settings["environment"],
            "instance_type": instance_type,
            "instances": settings["endpoint_instances"],
            "top_k": settings["endpoint_top_k"],
        }
        endpoint, deployment = self._entities(details)
        _round_trip(endpoint, ml.load_online_endpoint, "endpoint")
        _round_trip(deployment, ml.load_online_deployment, "deployment")
        endpoint_body = endpoint._to_rest_online_endpoint(LOCATION).as_dict()
        deployment_body = deployment._to_rest_object(LOCATION).as_dict()
        deployment_body["properties"]["codeConfiguration"]["codeId"] = CODE_ID
        traffic_body = {**endpoint_body, "properties": {**endpoint_body["properties"]}}
        traffic_body["properties"]["traffic"] = {DEPLOYMENT: 100}
        requests: list[tuple[str, dict[str, Any]]] = [
            (f"PUT onlineEndpoints/{name}", endpoint_body),
            (f"PUT onlineEndpoints/{name}/deployments/{DEPLOYMENT}", deployment_body),
            (f"PUT onlineEndpoints/{name} (traffic)", traffic_body),
        ]
        validate_online_request("endpoint", name, endpoint_body)
        validate_online_request("deployment", DEPLOYMENT, deployment_body)
        validate_online_request("endpoint", name, traffic_body)
        locator = {key: settings[key] for key in ("subscription_id", "resource_group", "workspace")}
        return DeployPlan(
            target=self.name,
            name=name,
            run_dir=run_dir,
            weights_sha256=manifest.get("weights_sha256"),
            archive=archive,
            archive_uri=f"code asset from {code}",
            requests=requests,
            locator={**locator, **details, "name": name},
            where={
                "workspace": "/".join(locator.values()),
                "instance type": f"{instance_type} x {settings['endpoint_instances']}",
                "environment": details["environment"],
                "filled in when deploying": f"{LOCATION} (the workspace's), {CODE_ID}",
            },
            checks=CHECKS,
        )

    def create(self, plan: DeployPlan) -> Created:
        """Create the endpoint, then the deployment (its code folder uploaded as a code
        asset; waited for), then send it all traffic; a failure deletes the endpoint."""
        calls = self.provider.calls
        client = self.provider.client(plan.locator)
        endpoint, deployment = self._entities(plan.locator)
        created = False
        try:
            poller = calls.run(
                "Creating the endpoint", client.online_endpoints.begin_create_or_update, endpoint
            )
            created = True
            _wait(calls, "Waiting for the endpoint", poller)
            poller = calls.run(
                "Creating the deployment (uploading its code folder)",
                client.online_deployments.begin_create_or_update,
                deployment,
            )
            _wait(calls, "Waiting for the deployment (Azure ML takes minutes)", poller)
            made = calls.read(
                "Reading the deployment", client.online_deployments.get, DEPLOYMENT, plan.name
            )
            state = _state(made.provisioning_state)
            if state != "Succeeded":
                raise InflameError(
                    f"The deployment of {plan.name} ended {state}, so the endpoint is removed. "
                    "The reason is in its container's logs: deploy again and, while it is "
                    f"being created, run `az ml online-deployment get-logs --name {DEPLOYMENT} "
                    "--endpoint-name ENDPOINT` (the name `inflame deploy` prints)."
                )
            endpoint.traffic = {DEPLOYMENT: 100}
            poller = calls.run(
                "Sending all traffic to the deployment",
                client.online_endpoints.begin_create_or_update,
                endpoint,
            )
            live = _wait(calls, "Waiting for the traffic update", poller)
        except BaseException:
            if created:
                roll_back(lambda: self._delete(client, plan.name), plan.name)
            raise
        locator = plan.locator
        return Created(
            "https://ml.azure.com/endpoints/realtime/"
            f"{plan.name}/detail?wsid=/subscriptions/{locator['subscription_id']}/resourceGroups/"
            f"{locator['resource_group']}/providers/Microsoft.MachineLearningServices/workspaces/"
            f"{locator['workspace']}",
            locator={"scoring_uri": getattr(live, "scoring_uri", None)},
        )

    def status(self, record: Any) -> tuple[str, str]:
        from azure.core.exceptions import ResourceNotFoundError

        client = self.provider.client(record.locator)

        def read() -> tuple[Any, Any] | None:
            try:
                endpoint = client.online_endpoints.get(record.name)
            except ResourceNotFoundError:
                return None
            try:
                deployment = client.online_deployments.get(DEPLOYMENT, record.name)
            except ResourceNotFoundError:
                deployment = None
            return endpoint, deployment

        found = self.provider.calls.read("Reading the endpoint", read)
        if found is None:
            return "deleted", "the endpoint no longer exists"
        endpoint, deployment = found
        if deployment is None:
            return "out_of_service", "the endpoint has no deployment"
        states = [_state(endpoint.provisioning_state), _state(deployment.provisioning_state)]
        if "Failed" in states or "Canceled" in states:
            return "failed", f"provisioning state {' / '.join(states)}"
        if states == ["Succeeded", "Succeeded"]:
            traffic = dict(endpoint.traffic or {})
            if traffic.get(DEPLOYMENT, 0) > 0:
                return "in_service", ""
            return "out_of_service", "no traffic goes to the deployment"
        return ("deleting" if "Deleting" in states else "creating"), ""

    def delete(self, record: Any) -> None:
        self._delete(self.provider.client(record.locator), record.name)

    def _delete(self, client: Any, name: str) -> None:
        """Delete the endpoint (its deployments go with it); what is gone already is fine."""
        from azure.core.exceptions import ResourceNotFoundError

        def attempt() -> None:
            with contextlib.suppress(ResourceNotFoundError):
                _wait(
                    None,
                    f"Deleting endpoint {name}",
                    client.online_endpoints.begin_delete(name=name),
                )

        self.provider.calls.read(f"Deleting endpoint {name}", attempt)
