"""Vertex AI models and endpoints for the loopback fake in tests/fakes/gcp.py: models:upload,
endpoints (create, get, :deployModel, :undeployModel, delete), model get/delete, and their
long-running operations, answered under /v1/ and /ui/ as the API does.

As strict as Vertex AI where inflame depends on it: each request is rebuilt from its path,
query and body into the API's request message and refused (400 INVALID_ARGUMENT) when it
breaks the message or a documented rule; a model's artifact folder must hold a TorchServe
`model.mar` whose manifest names a handler inside it (what the prebuilt PyTorch image loads);
a model or endpoint that does not exist is 404, an ID taken is 409."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

from inflame.deploy.vertex import validate_deploy_request
from inflame.errors import InflameError

_TYPE = "type.googleapis.com/google.cloud.aiplatform.v1."
_PARENT = r"projects/[^/]+/locations/[^/]+"
Reply = tuple[int, dict[str, Any]]


def _error(code: int, message: str, status: str) -> Reply:
    return code, {"error": {"code": code, "message": message, "status": status}}


class FakeVertexEndpoints:
    def __init__(self, gcs_root: Path):
        self.gcs_root = gcs_root
        self.models: dict[str, dict[str, Any]] = {}
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.deploy_done = True  # False: a deployment stays in progress (as it does for minutes)
        self.deploy_error: str | None = None  # a deployment that fails with this message
        self.deploying: dict[str, tuple[str, dict[str, Any]]] = {}  # operation -> (endpoint, model)

    def finish_deploys(self) -> None:
        """The deployments in progress succeed."""
        for operation, (endpoint, deployed) in self.deploying.items():
            self.endpoints[endpoint]["deployedModels"].append(deployed)
            self.endpoints[endpoint]["trafficSplit"] = {deployed["id"]: 100}
            self.operations[operation]["done"] = True
            self.operations[operation]["response"] = {
                "@type": _TYPE + "DeployModelResponse",
                "deployedModel": deployed,
            }
        self.deploying.clear()

    # ---- helpers ------------------------------------------------------------------------------

    def _operation(
        self, resource: str, metadata: str, response: dict[str, Any] | None, done: bool = True
    ) -> Reply:
        name = f"{resource}/operations/{len(self.operations) + 1}"
        operation: dict[str, Any] = {
            "name": name,
            "done": done,
            "metadata": {"@type": _TYPE + metadata, "genericMetadata": {}},
        }
        if done and response is not None:
            operation["response"] = response
        self.operations[name] = operation
        return 200, operation

    def _validated(self, operation: str, request: dict[str, Any]) -> Reply | None:
        try:
            validate_deploy_request(operation, request)
        except InflameError as exc:
            return _error(400, str(exc), "INVALID_ARGUMENT")
        return None

    def _mar_problem(self, artifact_uri: str) -> str | None:
        bucket, _, folder = artifact_uri.removeprefix("gs://").partition("/")
        path = self.gcs_root / bucket / folder / "model.mar"
        if not path.is_file():
            return f"{artifact_uri} holds no model.mar"
        try:
            with zipfile.ZipFile(io.BytesIO(path.read_bytes())) as archive:
                manifest = json.loads(archive.read("MAR-INF/MANIFEST.json"))
                handler = manifest["model"]["handler"]
                if handler not in archive.namelist():
                    return f"model.mar names the handler {handler}, which it does not hold"
        except (zipfile.BadZipFile, KeyError, ValueError) as exc:
            return f"model.mar is not a TorchServe model archive: {exc}"
        return None

    # ---- routes -------------------------------------------------------------------------------

    def get(self, path: str) -> Reply | None:
        found = re.match(rf"^/(?:v1|ui)/({_PARENT}/.+/operations/\d+)$", path)
        if found:
            operation = self.operations.get(found.group(1))
            return (200, operation) if operation else _error(404, path, "NOT_FOUND")
        found = re.match(rf"^/v1/({_PARENT}/(models|endpoints)/[^/:@]+)(?:@1)?$", path)
        if found:
            table = self.models if found.group(2) == "models" else self.endpoints
            resource = table.get(found.group(1))
            return (200, resource) if resource else _error(404, path, "NOT_FOUND")
        return None

    def post(self, path: str, query: dict[str, list[str]], body: bytes) -> Reply | None:
        payload = json.loads(body or b"{}")
        found = re.match(rf"^/v1/({_PARENT})/models:upload$", path)
        if found:
            request = {"parent": found.group(1), **payload}
            refused = self._validated("UploadModel", request)
            if refused:
                return refused
            problem = self._mar_problem(request["model"]["artifactUri"])
            if problem:
                return _error(400, problem, "INVALID_ARGUMENT")
            name = f"{found.group(1)}/models/{request.get('modelId') or len(self.models) + 7}"
            if name in self.models:
                return _error(409, f"{name} already exists", "ALREADY_EXISTS")
            self.models[name] = {
                **request["model"],
                "name": name,
                "versionId": "1",
                "createTime": "2026-12-02T00:00:00Z",
                "supportedDeploymentResourcesTypes": ["DEDICATED_RESOURCES"],
            }
            return self._operation(
                name,
                "UploadModelOperationMetadata",
                {"@type": _TYPE + "UploadModelResponse", "model": name, "modelVersionId": "1"},
            )
        found = re.match(rf"^/v1/({_PARENT})/endpoints$", path)
        if found:
            endpoint_id = (query.get("endpointId") or query.get("endpoint_id") or [""])[0]
            request = {"parent": found.group(1), "endpoint": payload}
            if endpoint_id:
                request["endpointId"] = endpoint_id
            refused = self._validated("CreateEndpoint", request)
            if refused:
                return refused
            name = f"{found.group(1)}/endpoints/{endpoint_id or len(self.endpoints) + 9000}"
            if name in self.endpoints:
                return _error(409, f"{name} already exists", "ALREADY_EXISTS")
            self.endpoints[name] = {
                **payload,
                "name": name,
                "createTime": "2026-12-02T00:00:00Z",
                "deployedModels": [],
                "trafficSplit": {},
            }
            return self._operation(
                name,
                "CreateEndpointOperationMetadata",
                {"@type": _TYPE + "Endpoint", **self.endpoints[name]},
            )
        found = re.match(rf"^/v1/({_PARENT}/endpoints/[^/:]+):(deployModel|undeployModel)$", path)
        if found:
            name, verb = found.group(1), found.group(2)
            request = {"endpoint": name, **payload}
            refused = self._validated(
                "DeployModel" if verb == "deployModel" else "UndeployModel", request
            )
            if refused:
                return refused
            endpoint = self.endpoints.get(name)
            if endpoint is None:
                return _error(404, f"{name} not found", "NOT_FOUND")
            if verb == "undeployModel":
                kept = [
                    m for m in endpoint["deployedModels"] if m["id"] != request["deployedModelId"]
                ]
                if len(kept) == len(endpoint["deployedModels"]):
                    return _error(
                        404, f"no deployed model {request['deployedModelId']}", "NOT_FOUND"
                    )
                endpoint["deployedModels"] = kept
                endpoint["trafficSplit"] = {m["id"]: 100 for m in kept[:1]}
                return self._operation(
                    name,
                    "UndeployModelOperationMetadata",
                    {"@type": _TYPE + "UndeployModelResponse"},
                )
            deployed = dict(request["deployedModel"])
            if deployed["model"].split("@")[0] not in self.models:
                return _error(404, f"{deployed['model']} not found", "NOT_FOUND")
            deployed["id"] = str(1000 + len(self.operations))
            if self.deploy_error:
                reply = self._operation(name, "DeployModelOperationMetadata", None)
                reply[1]["error"] = {"code": 9, "message": self.deploy_error}
                return reply
            if self.deploy_done:
                endpoint["deployedModels"].append(deployed)
                endpoint["trafficSplit"] = {deployed["id"]: 100}
            reply = self._operation(
                name,
                "DeployModelOperationMetadata",
                {"@type": _TYPE + "DeployModelResponse", "deployedModel": deployed},
                done=self.deploy_done,
            )
            if not self.deploy_done:
                self.deploying[reply[1]["name"]] = (name, deployed)
            return reply
        return None

    def delete(self, path: str) -> Reply | None:
        found = re.match(rf"^/v1/({_PARENT}/(models|endpoints)/[^/:@]+)$", path)
        if not found:
            return None
        name, kind = found.group(1), found.group(2)
        table = self.models if kind == "models" else self.endpoints
        if name not in table:
            return _error(404, f"{name} not found", "NOT_FOUND")
        if kind == "endpoints" and any(e == name for e, _ in self.deploying.values()):
            return _error(400, "a model is being deployed to the endpoint", "FAILED_PRECONDITION")
        if kind == "endpoints" and table[name]["deployedModels"]:
            return _error(400, "undeploy the endpoint's models first", "FAILED_PRECONDITION")
        if kind == "models" and any(
            m["model"].split("@")[0] == name
            for e in self.endpoints.values()
            for m in e["deployedModels"]
        ):
            return _error(400, "the model is deployed to an endpoint", "FAILED_PRECONDITION")
        del table[name]
        return self._operation(
            name, "DeleteOperationMetadata", {"@type": "type.googleapis.com/google.protobuf.Empty"}
        )
