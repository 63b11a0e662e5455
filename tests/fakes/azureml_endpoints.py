"""Azure ML online endpoints and deployments for the loopback fake in tests/fakes/azureml.py:
the workspace (its location), endpoints (PUT, GET, DELETE with their deployments) and
deployments (PUT, GET), answered as finished operations.

As strict as Azure ML where inflame depends on it: a body that breaks Azure ML's rules is 400
UserError; a deployment needs its endpoint, a code asset that was uploaded and registered, and
a scoring script inside it; traffic may only go to deployments that exist and have succeeded."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from inflame.deploy.azure import validate_online_request
from inflame.errors import InflameError

Reply = tuple[int, dict[str, Any]]
_ENDPOINT = r"/onlineEndpoints/([^/?]+)"


def _error(code: int, kind: str, message: str) -> Reply:
    return code, {"error": {"code": kind, "message": message}}


class FakeOnlineEndpoints:
    def __init__(self, fake: Any):
        self.fake = fake  # the FakeAzureML: its code uploads (blobs) and registered assets
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.deployments: dict[tuple[str, str], dict[str, Any]] = {}
        self.codes: dict[str, dict[str, Any]] = {}  # ARM id -> the code version's body
        self.deployment_state = "Succeeded"  # what a new deployment's provisioning ends in

    def get(self, path: str) -> Reply | None:
        if re.search(r"/workspaces/[^/]+$", path):
            return 200, {
                "id": path.split("/", 2)[2],
                "name": path.rsplit("/", 1)[-1],
                "location": "westeurope",
                "properties": {"friendlyName": "ws", "discoveryUrl": "https://fake/discovery"},
            }
        found = re.search(rf"{_ENDPOINT}/deployments/([^/?]+)$", path)
        if found:
            deployment = self.deployments.get((found.group(1), found.group(2)))
            return (200, deployment) if deployment else _error(404, "NotFound", path)
        found = re.search(rf"{_ENDPOINT}/deployments$", path)
        if found:
            if found.group(1) not in self.endpoints:
                return _error(404, "NotFound", path)
            listed = [d for (e, _), d in self.deployments.items() if e == found.group(1)]
            return 200, {"value": listed}
        found = re.search(rf"{_ENDPOINT}$", path)
        if found:
            endpoint = self.endpoints.get(found.group(1))
            return (200, endpoint) if endpoint else _error(404, "NotFound", path)
        return None

    def put(self, path: str, body: dict[str, Any]) -> Reply | None:
        arm_id = path.split("/", 2)[2]
        if re.search(r"/codes/[^/]+/versions/[^/]+$", path):
            self.codes["/" + arm_id] = body
            return None  # the generic echo answers it
        found = re.search(rf"{_ENDPOINT}/deployments/([^/?]+)$", path)
        if found:
            endpoint, name = found.group(1), found.group(2)
            try:
                validate_online_request("deployment", name, body)
            except InflameError as exc:
                return _error(400, "UserError", str(exc))
            if endpoint not in self.endpoints:
                return _error(404, "NotFound", f"endpoint {endpoint} does not exist")
            code = body["properties"]["codeConfiguration"]
            if code["codeId"] not in self.codes:
                return _error(400, "UserError", f"code asset {code['codeId']} is not registered")
            folder = urlsplit(self.codes[code["codeId"]]["properties"]["codeUri"]).path
            script = code["scoringScript"]
            if f"{folder.rstrip('/')}/{script}" not in self.fake.blobs:
                return _error(400, "UserError", f"the code holds no scoring script {script}")
            deployment = {
                **body,
                "id": "/" + arm_id,
                "name": name,
                "properties": {
                    **body["properties"],
                    "provisioningState": self.deployment_state,
                    "scaleSettings": {"scaleType": "Default"},
                },
            }
            self.deployments[(endpoint, name)] = deployment
            return 201, deployment
        found = re.search(rf"{_ENDPOINT}$", path)
        if found:
            name = found.group(1)
            try:
                validate_online_request("endpoint", name, body)
            except InflameError as exc:
                return _error(400, "UserError", str(exc))
            for deployment in body["properties"].get("traffic") or {}:
                state = self.deployments.get((name, deployment), {}).get("properties", {})
                if state.get("provisioningState") != "Succeeded":
                    return _error(
                        400, "UserError", f"traffic to {deployment}, which has not succeeded"
                    )
            existed = name in self.endpoints
            endpoint = {
                **body,
                "id": "/" + arm_id,
                "name": name,
                "properties": {
                    **body["properties"],
                    "provisioningState": "Succeeded",
                    "scoringUri": f"https://{name}.westeurope.inference.ml.azure.com/score",
                },
            }
            self.endpoints[name] = endpoint
            return (200 if existed else 201), endpoint
        return None

    def delete(self, path: str) -> Reply | None:
        found = re.search(rf"{_ENDPOINT}$", path)
        if not found:
            return None
        name = found.group(1)
        if name not in self.endpoints:
            return _error(404, "NotFound", path)
        del self.endpoints[name]
        for key in [k for k in self.deployments if k[0] == name]:
            del self.deployments[key]
        return 200, {}
