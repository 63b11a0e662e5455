"""Vertex AI online endpoints: the model archive (`model.mar`, TorchServe's format) in the
staging bucket, then UploadModel (Vertex's prebuilt PyTorch prediction image serving that
folder), CreateEndpoint and DeployModel, through the API's own gapic clients (REST).

Each request is written as the API's request message and parses as it (unknown fields are
errors), and is checked against the documented rules the message cannot express: IDs, names
and labels, the prediction machine types and their GPUs, replica counts, the traffic split.
The upload and the endpoint are waited for; the deployment (Vertex takes many minutes) is not:
`inflame endpoints` follows it through its long-running operation.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from inflame.deploy.archive import MAR_MODEL_NAME, build_mar
from inflame.deploy.plan import TOP_K_ENV, Created, DeployPlan, finished_run, roll_back
from inflame.errors import InflameError
from inflame.targets import base
from inflame.targets.sdk import import_sdk

HANDLER = Path(__file__).with_name("vertex_handler.py")
MAR_FILE = f"{MAR_MODEL_NAME}.mar"  # the prebuilt images serve <artifactUri>/model.mar
PREDICTION_TORCH = "2.4"  # the newest prebuilt PyTorch prediction image in the SDK's table
WAIT_S = 1800  # for the upload and the endpoint's creation (long-running operations)
CHECKS = (
    "the Vertex AI API's own request messages (aiplatform_v1 UploadModelRequest, "
    "CreateEndpointRequest, DeployModelRequest), unknown fields rejected",
    "Vertex AI's documented rules: model and endpoint IDs, names and labels, the prediction "
    "machine types and their GPUs, replica counts, a traffic split summing to 100",
    "the model archive: a TorchServe model.mar whose MAR-INF/MANIFEST.json names its handler",
)
_MESSAGES = {
    "UploadModel": "UploadModelRequest",
    "CreateEndpoint": "CreateEndpointRequest",
    "DeployModel": "DeployModelRequest",
    "UndeployModel": "UndeployModelRequest",
}
_PARENT_RE = re.compile(r"projects/[^/]+/locations/[a-z0-9-]+")
_MODEL_ID_RE = re.compile(r"[a-z_][a-z0-9_-]{0,62}")
_ENDPOINT_ID_RE = re.compile(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?|[1-9][0-9]{0,8}")
# Machine types Vertex AI serves predictions on ("Configure compute resources for inference"):
# the families, and for GPUs the machines that carry them (FIXED_GPU_MACHINES).
_PREDICTION_MACHINE_RE = re.compile(
    r"(?:n1-(?:standard|highmem)-(?:2|4|8|16|32|64|96)|n1-highcpu-(?:4|8|16|32|64|96)"
    r"|e2-(?:standard|highmem|highcpu)-(?:2|4|8|16|32)"
    r"|(?:n2|n2d|c2d|c3)-(?:standard|highmem|highcpu)-\d+|c2-standard-(?:4|8|16|30|60)"
    r"|a2-(?:highgpu|megagpu|ultragpu)-\d+g|a3-(?:highgpu|megagpu|ultragpu)-\d+g"
    r"|g2-standard-\d+)"
)


def prediction_image(region: str, gpu: bool) -> str:
    """The prebuilt PyTorch prediction image nearest to `region` (us, europe or asia)."""
    geo = region.split("-")[0]
    geo = {"australia": "asia", "me": "europe"}.get(geo, geo)
    geo = geo if geo in ("us", "europe", "asia") else "us"
    kind = "gpu" if gpu else "cpu"
    version = PREDICTION_TORCH.replace(".", "-")
    return f"{geo}-docker.pkg.dev/vertex-ai/prediction/pytorch-{kind}.{version}:latest"


def endpoint_name(job: str) -> str:
    """A unique ID for the endpoint and its model: lowercase letters, digits and hyphens,
    starting with a letter, at most 63 characters."""
    name = base.unique_job_name(job.lower(), r"[^a-z0-9-]+", limit=61)
    return name if name[0].isalpha() else f"m-{name}"


def _rule_violations(operation: str, message: Any) -> Iterator[str]:
    """Vertex AI's documented rules for the four requests, beyond their message types."""
    from inflame.targets.vertex import (
        BUCKET_RE,
        FIXED_GPU_MACHINES,
        machine_problem,
        name_and_label_violations,
    )

    if operation == "UploadModel":
        if not _PARENT_RE.fullmatch(message.parent):
            yield f"parent: {message.parent!r} is not projects/PROJECT/locations/REGION"
        if message.model_id and not _MODEL_ID_RE.fullmatch(message.model_id):
            yield (
                f"modelId: {message.model_id!r}: up to 63 of a-z, 0-9, _ and -, not starting "
                "with a digit or hyphen"
            )
        model = message.model
        yield from name_and_label_violations(model.display_name, model.labels, "model.")
        if not model.container_spec.image_uri:
            yield "model.containerSpec.imageUri: required"
        for env in model.container_spec.env:
            if not base.ENV_NAME.fullmatch(env.name):
                yield f"model.containerSpec.env: {env.name!r} is not a valid variable name"
        if not re.fullmatch(rf"gs://{BUCKET_RE}(/.*)?/", model.artifact_uri):
            yield f"model.artifactUri: {model.artifact_uri!r} is not a gs:// folder (ending in /)"
    elif operation == "CreateEndpoint":
        if not _PARENT_RE.fullmatch(message.parent):
            yield f"parent: {message.parent!r} is not projects/PROJECT/locations/REGION"
        if message.endpoint_id and not _ENDPOINT_ID_RE.fullmatch(message.endpoint_id):
            yield (
                f"endpointId: {message.endpoint_id!r}: a letter then up to 62 of a-z, 0-9 "
                "and - (not ending in -), or up to 9 digits"
            )
        endpoint = message.endpoint
        yield from name_and_label_violations(endpoint.display_name, endpoint.labels, "endpoint.")
    elif operation == "DeployModel":
        if not re.fullmatch(rf"{_PARENT_RE.pattern}/endpoints/[^/]+", message.endpoint):
            yield f"endpoint: {message.endpoint!r} is not an endpoint's resource name"
        deployed = message.deployed_model
        if not re.fullmatch(rf"{_PARENT_RE.pattern}/models/[^/@]+(@[^/]+)?", deployed.model):
            yield f"deployedModel.model: {deployed.model!r} is not a model's resource name"
        if deployed.display_name and len(deployed.display_name) > 128:
            yield "deployedModel.displayName: at most 128 characters"
        resources = deployed.dedicated_resources
        if "dedicated_resources" not in deployed:
            yield "deployedModel.dedicatedResources: required for a custom-trained model"
        else:
            where = "deployedModel.dedicatedResources"
            machine = resources.machine_spec
            if not _PREDICTION_MACHINE_RE.fullmatch(machine.machine_type):
                yield (
                    f"{where}.machineSpec.machineType: {machine.machine_type!r} does not serve "
                    "predictions"
                )
            accelerator = machine.accelerator_type.name if machine.accelerator_count else None
            if machine.machine_type in FIXED_GPU_MACHINES and not accelerator:
                yield f"{where}.machineSpec: {machine.machine_type} needs its GPUs named"
            problem = machine_problem(machine.machine_type, accelerator, machine.accelerator_count)
            if problem:
                yield f"{where}.machineSpec: {problem}"
            if resources.min_replica_count < 1:
                yield f"{where}.minReplicaCount: required, at least 1"
            if resources.max_replica_count and resources.max_replica_count < (
                resources.min_replica_count
            ):
                yield f"{where}.maxReplicaCount: below minReplicaCount"
        split = dict(message.traffic_split)
        if split and sum(split.values()) != 100:
            yield f"trafficSplit: {split} sums to {sum(split.values())}, not 100"
    elif operation == "UndeployModel" and not message.deployed_model_id:
        yield "deployedModelId: required"


def validate_deploy_request(operation: str, request: dict[str, Any]) -> None:
    """Check one request as strictly as Vertex AI does (offline)."""
    from google.cloud.aiplatform_v1 import types

    message_name = _MESSAGES[operation]
    try:
        message = getattr(types, message_name).from_json(json.dumps(request))
    except Exception as exc:
        raise InflameError(
            f"The Vertex AI {operation} request is not a valid {message_name}: {exc}"
        ) from None
    base.refuse_problems(
        f"Vertex AI {operation} request", list(_rule_violations(operation, message))
    )


class VertexEndpoints:
    name = "vertex"

    def __init__(self) -> None:
        from inflame.targets.vertex import TARGET

        self.provider = TARGET  # its Cloud Storage client, error translation and retries

    def plan(self, run_dir: Path, overrides: list[str]) -> DeployPlan:
        from inflame.targets.vertex import (
            FIXED_GPU_MACHINES,
            SETTINGS,
            checked_region,
            machine_problem,
        )

        manifest, spec = finished_run(run_dir, overrides)
        settings = base.TargetSettings(spec, self.name, SETTINGS)
        import_sdk(self.name, self.provider.extra, "google.cloud.aiplatform_v1")
        project, region = settings["project"], checked_region(settings)
        machine = settings["endpoint_machine_type"]
        gpus = FIXED_GPU_MACHINES.get(machine)
        if not _PREDICTION_MACHINE_RE.fullmatch(machine) or machine_problem(
            machine, gpus[0] if gpus else None, gpus[1] if gpus else 0
        ):
            raise settings.fail(
                "endpoint_machine_type",
                f"{machine!r} is not a machine type Vertex AI serves predictions on. Use e.g. "
                "n1-standard-4 (CPU) or g2-standard-4 (one L4 GPU).",
            )
        image = settings["inference_image"] or prediction_image(region, gpu=bool(gpus))
        archive = build_mar(run_dir, HANDLER)
        bucket, prefix = base.split_uri(settings["staging_bucket"].rstrip("/"))
        folder = f"gs://{bucket}/{prefix + '/' if prefix else ''}inflame/models/{archive.sha256}/"
        name = endpoint_name(spec.job.name)
        parent = f"projects/{project}/locations/{region}"
        labels = {
            "inflame-job": re.sub(r"[^a-z0-9_-]", "-", spec.job.name.lower())[:63],
            "inflame-weights": str(manifest.get("weights_sha256"))[:12],
        }
        machine_spec: dict[str, Any] = {"machineType": machine}
        if gpus:
            machine_spec.update(acceleratorType=gpus[0], acceleratorCount=gpus[1])
        replicas = settings["endpoint_replicas"]
        requests: list[tuple[str, dict[str, Any]]] = [
            (
                "UploadModel",
                {
                    "parent": parent,
                    "modelId": name,
                    "model": {
                        "displayName": name,
                        "artifactUri": folder,
                        "containerSpec": {
                            "imageUri": image,
                            "env": [{"name": TOP_K_ENV, "value": str(settings["endpoint_top_k"])}],
                        },
                        "labels": labels,
                    },
                },
            ),
            (
                "CreateEndpoint",
                {
                    "parent": parent,
                    "endpointId": name,
                    "endpoint": {"displayName": name, "labels": labels},
                },
            ),
            (
                "DeployModel",
                {
                    "endpoint": f"{parent}/endpoints/{name}",
                    "deployedModel": {
                        "model": f"{parent}/models/{name}",
                        "displayName": name,
                        "dedicatedResources": {
                            "machineSpec": machine_spec,
                            "minReplicaCount": replicas,
                            "maxReplicaCount": replicas,
                        },
                    },
                    "trafficSplit": {"0": 100},  # "0": the model being deployed
                },
            ),
        ]
        for operation, request in requests:
            validate_deploy_request(operation, request)
        return DeployPlan(
            target=self.name,
            name=name,
            run_dir=run_dir,
            weights_sha256=manifest.get("weights_sha256"),
            archive=archive,
            archive_uri=folder + MAR_FILE,
            requests=requests,
            locator={"project": project, "region": region, "name": name},
            where={
                "project / region": f"{project} / {region}",
                "machine": machine + (f" + {gpus[1]} x {gpus[0]}" if gpus else ""),
                "image": image,
            },
            checks=CHECKS,
        )

    # ---- create, follow, delete --------------------------------------------------------------

    def _clients(self, locator: dict[str, Any]) -> tuple[Any, Any]:
        """(ModelServiceClient, EndpointServiceClient) on the region's REST endpoint."""
        from google.api_core.client_options import ClientOptions
        from google.cloud.aiplatform_v1 import EndpointServiceClient, ModelServiceClient

        options = self.provider.client_options()  # tests: a loopback fake
        host = options.get("api_endpoint") or f"{locator['region']}-aiplatform.googleapis.com"
        kwargs: dict[str, Any] = {
            "client_options": ClientOptions(api_endpoint=host),
            "transport": "rest",
        }
        if options.get("credentials") is not None:
            kwargs["credentials"] = options["credentials"]
        return ModelServiceClient(**kwargs), EndpointServiceClient(**kwargs)

    def create(self, plan: DeployPlan) -> Created:
        """Upload the archive (unless the same bytes are there), upload the model, create the
        endpoint and start deploying the model to it; a failure deletes what this call made."""
        from google.cloud.aiplatform_v1 import types

        calls = self.provider.calls
        storage = calls.run(
            "Connecting to Cloud Storage", self.provider.storage_client, plan.locator
        )
        self.provider.upload_once(
            storage,
            plan.archive_uri,
            plan.archive.data,
            content_type="application/zip",
            what="model archive",
        )
        models, endpoints = calls.run("Connecting to Vertex AI", self._clients, plan.locator)
        requests = {operation: request for operation, request in plan.requests}

        def message(operation: str) -> Any:
            return getattr(types, _MESSAGES[operation]).from_json(json.dumps(requests[operation]))

        created: list[str] = []
        try:
            upload = calls.run(
                "Uploading the model to Vertex AI",
                models.upload_model,
                request=message("UploadModel"),
            )
            created.append("UploadModel")  # accepted: from here on, a failure deletes it
            what = "Waiting for the model upload"
            calls.run(what, self._wait, what, upload)
            endpoint = calls.run(
                "Creating the endpoint",
                endpoints.create_endpoint,
                request=message("CreateEndpoint"),
            )
            created.append("CreateEndpoint")
            calls.run("Waiting for the endpoint", self._wait, "Waiting for the endpoint", endpoint)
            deploying = calls.run(
                "Deploying the model to the endpoint",
                endpoints.deploy_model,
                request=message("DeployModel"),
            )
        except BaseException:
            roll_back(lambda: self._delete(plan.locator, created), plan.name)
            raise
        project, region = plan.locator["project"], plan.locator["region"]
        return Created(
            f"https://console.cloud.google.com/vertex-ai/online-prediction/locations/{region}"
            f"/endpoints/{plan.name}?project={project}",
            locator={"deploy_operation": deploying.operation.name},
        )

    @staticmethod
    def _wait(what: str, operation: Any) -> Any:
        """The result of a long-running operation, waited for at most WAIT_S (its API errors
        as they are: the caller's `calls` explains them)."""
        try:
            return operation.result(timeout=WAIT_S)
        except TimeoutError:  # concurrent.futures.TimeoutError is this one
            raise InflameError(
                f"{what}: Vertex AI had not finished after {WAIT_S // 60} minutes (it may "
                "still); `inflame endpoints` shows where it stands."
            ) from None

    def _resource(self, locator: dict[str, Any], kind: str) -> str:
        return (
            f"projects/{locator['project']}/locations/{locator['region']}/{kind}/{locator['name']}"
        )

    def _get_endpoint(self, endpoints: Any, locator: dict[str, Any]) -> Any | None:
        from google.api_core.exceptions import NotFound

        try:
            return endpoints.get_endpoint(name=self._resource(locator, "endpoints"))
        except NotFound:
            return None

    def status(self, record: Any) -> tuple[str, str]:
        calls = self.provider.calls
        _, endpoints = calls.run("Connecting to Vertex AI", self._clients, record.locator)
        found = calls.read("Reading the endpoint", self._get_endpoint, endpoints, record.locator)
        if found is None:
            return "deleted", "the endpoint no longer exists"
        if found.deployed_models:
            return "in_service", ""
        name = record.locator.get("deploy_operation")
        if not name:
            return "out_of_service", "no model is deployed to the endpoint"
        operation = calls.read(
            "Reading the deployment's progress", endpoints.get_operation, {"name": name}
        )
        if operation.HasField("error"):
            return "failed", operation.error.message
        if operation.done:
            return "out_of_service", "no model is deployed to the endpoint"
        return "creating", ""

    def delete(self, record: Any) -> None:
        name = record.locator.get("deploy_operation")
        if name:  # Vertex refuses to delete an endpoint while a model is being deployed to it
            calls = self.provider.calls
            _, endpoints = calls.run("Connecting to Vertex AI", self._clients, record.locator)
            operation = calls.read(
                "Reading the deployment's progress", endpoints.get_operation, {"name": name}
            )
            if not operation.done:
                raise InflameError(
                    f"Endpoint {record.name} is still being deployed; Vertex AI cannot delete "
                    "it until that ends. Undeploy it when `inflame endpoints` shows it "
                    "in_service or failed."
                )
        self._delete(record.locator, ["UploadModel", "CreateEndpoint"])

    def _delete(self, locator: dict[str, Any], created: list[str]) -> None:
        """Undeploy every model from the endpoint and delete it, then delete the model (what
        is gone already is fine)."""
        from google.api_core.exceptions import NotFound

        calls = self.provider.calls
        models, endpoints = calls.run("Connecting to Vertex AI", self._clients, locator)
        name = locator["name"]

        def wait(call: Any, **request: Any) -> None:
            with contextlib.suppress(NotFound):
                self._wait(f"Waiting for {name} to go", call(**request))

        if "CreateEndpoint" in created:
            found = calls.read("Reading the endpoint", self._get_endpoint, endpoints, locator)
            for deployed in found.deployed_models if found else ():
                calls.read(
                    f"Undeploying {deployed.id} from {name}",
                    wait,
                    endpoints.undeploy_model,
                    endpoint=found.name,
                    deployed_model_id=deployed.id,
                )
            calls.read(
                f"Deleting {name} (endpoint)",
                wait,
                endpoints.delete_endpoint,
                name=self._resource(locator, "endpoints"),
            )
        if "UploadModel" in created:
            calls.read(
                f"Deleting {name} (model)",
                wait,
                models.delete_model,
                name=self._resource(locator, "models"),
            )
