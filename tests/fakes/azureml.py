"""A loopback fake of the Azure ML REST API (and of the blob store its code upload uses),
enough for MLClient.jobs.create_or_update / get / begin_cancel, compute.get, and online
endpoints and deployments (tests/fakes/azureml_endpoints.py) with the real SDK.

It is as strict as Azure ML where inflame depends on it: a job whose REST body breaks Azure
ML's documented rules gets 400 UserError, and compute clusters have a VM size and a tier
(`clusters`). `fail_next` makes the next requests to a path answer 503."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from base64 import b64encode
from hashlib import md5
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import RequestsTransport

from inflame.errors import InflameError
from inflame.targets.azure import validate_request
from tests.fakes.azureml_endpoints import FakeOnlineEndpoints


class FakeCredential:
    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("fake-token", 4_102_444_800)

    def get_token_info(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessTokenInfo

        return AccessTokenInfo("fake-token", 4_102_444_800)


class RedirectTransport(RequestsTransport):
    """Sends https://HOST/PATH to http://127.0.0.1:PORT/HOST/PATH (the auth policy still sees
    https); anything already on loopback goes as it is."""

    def __init__(self, port: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.port = port

    def send(self, request: Any, **kwargs: Any) -> Any:
        parts = urlsplit(request.url)
        if parts.hostname in ("127.0.0.1", "localhost"):
            return super().send(request, **kwargs)
        query = f"?{parts.query}" if parts.query else ""
        original, request.url = (
            request.url,
            f"http://127.0.0.1:{self.port}/{parts.netloc}{parts.path}{query}",
        )
        try:
            return super().send(request, **kwargs)
        finally:  # the pipeline (and a long-running operation's final GET) sees https
            request.url = original


class FakeAzureML:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, bytes]] = []
        self.jobs: dict[str, dict[str, Any]] = {}
        self.blobs: dict[str, bytes] = {}  # code uploads, by path
        # blobs behind the workspace datastores, by (container, name)
        self.store: dict[tuple[str, str], bytes] = {}
        self.without_md5: set[str] = set()  # blobs stored without Content-MD5 (block uploads)
        # compute clusters: name -> (VM size, "Dedicated" or "LowPriority")
        self.clusters: dict[str, tuple[str, str]] = {
            "gpu-cluster": ("Standard_NC24ads_A100_v4", "Dedicated")
        }
        self.fail_next: dict[str, int] = {}  # path regex -> how many 503 answers
        self.online = FakeOnlineEndpoints(self)  # online endpoints and deployments
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _reply(self, code: int, payload: Any = None, headers: dict | None = None):
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(code)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                if payload is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if data:
                    self.wfile.write(data)

            def do_HEAD(self) -> None:
                fake.requests.append(("HEAD", self.path, b""))
                parts = urlsplit(self.path)
                if ".blob.core.windows.net/" in parts.path:  # Get Blob Properties
                    _, container, *rest = unquote(parts.path).lstrip("/").split("/")
                    name = "/".join(rest)
                    data = fake.store.get((container, name))
                    if data is None:
                        return self._raw(404, b"", {"x-ms-error-code": "BlobNotFound"})
                    headers = {"ETag": '"1"', "x-ms-blob-type": "BlockBlob"}
                    if name not in fake.without_md5:
                        headers["Content-MD5"] = b64encode(md5(data).digest()).decode()
                    self.send_response(200)
                    for key, value in {**headers, "Content-Length": str(len(data))}.items():
                        self.send_header(key, value)
                    return self.end_headers()
                self._reply(404)

            def _blob_put(self, parts: Any, body: bytes) -> None:
                """Put Blob into a datastore's container: the whole blob in one request (the
                service refuses a body whose Content-MD5 does not match, and stores it)."""
                _, container, *rest = unquote(parts.path).lstrip("/").split("/")
                if self.headers.get("x-ms-blob-type") != "BlockBlob" or parts.query:
                    return self._raw(400, b"", {"x-ms-error-code": "UnsupportedHeader"})
                digest = b64encode(md5(body).digest()).decode()
                declared = self.headers.get("Content-MD5")
                if declared is not None and declared != digest:
                    return self._raw(400, b"", {"x-ms-error-code": "Md5Mismatch"})
                fake.store[(container, "/".join(rest))] = body
                fake.without_md5.discard("/".join(rest))
                headers = {
                    "ETag": '"1"',
                    "Content-MD5": digest,
                    "x-ms-request-server-encrypted": "true",
                }
                return self._raw(201, b"", headers)

            def _blob_get(self, parts: Any) -> None:
                _, container, *rest = unquote(parts.path).lstrip("/").split("/")
                query = parse_qs(parts.query)
                if not rest and query.get("comp") == ["list"]:
                    prefix = query.get("prefix", [""])[0]
                    items = "".join(
                        f"<Blob><Name>{escape(name)}</Name><Properties><Content-Length>"
                        f"{len(data)}</Content-Length><BlobType>BlockBlob</BlobType>"
                        f"<Etag>0x{hashlib.sha1(data).hexdigest()[:15].upper()}</Etag>"
                        + (  # Put Blob stores one; uploads in blocks have none
                            ""
                            if name in fake.without_md5
                            else f"<Content-MD5>{b64encode(md5(data).digest()).decode()}"
                            "</Content-MD5>"
                        )
                        + "</Properties></Blob>"
                        for (c, name), data in sorted(fake.store.items())
                        if c == container and name.startswith(prefix)
                    )
                    body = (
                        f'<?xml version="1.0" encoding="utf-8"?><EnumerationResults '
                        f'ContainerName="{container}"><Blobs>{items}</Blobs><NextMarker />'
                        "</EnumerationResults>"
                    ).encode()
                    return self._raw(200, body, {"Content-Type": "application/xml"})
                data = fake.store.get((container, "/".join(rest)))
                if data is None:
                    return self._raw(404, b"", {"x-ms-error-code": "BlobNotFound"})
                headers = {
                    "Content-Type": "application/octet-stream",
                    "ETag": '"1"',
                    "Last-Modified": "Sun, 22 Nov 2026 12:00:00 GMT",
                    "x-ms-blob-type": "BlockBlob",
                    "Content-Range": f"bytes 0-{len(data) - 1}/{len(data)}",
                }
                return self._raw(206 if self.headers.get("x-ms-range") else 200, data, headers)

            def _raw(self, code: int, data: bytes, headers: dict[str, str]) -> None:
                self.send_response(code)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _overloaded(self) -> bool:
                for pattern, count in fake.fail_next.items():
                    if count > 0 and re.search(pattern, self.path):
                        fake.fail_next[pattern] -= 1
                        self._reply(
                            503, {"error": {"code": "ServiceUnavailable", "message": "busy"}}
                        )
                        return True
                return False

            def do_GET(self) -> None:
                fake.requests.append(("GET", self.path, b""))
                if self._overloaded():
                    return
                parts = urlsplit(self.path)
                if ".blob.core.windows.net/" in parts.path:
                    return self._blob_get(parts)
                path = parts.path
                store = re.search(r"/datastores/([^/?]+)$", path)
                if store:
                    container = {"workspaceartifactstore": "azureml"}.get(
                        store.group(1), "azureml-blobstore"
                    )
                    return self._reply(
                        200,
                        {
                            "id": path.split("/", 2)[2],
                            "name": store.group(1),
                            "properties": {
                                "datastoreType": "AzureBlob",
                                "accountName": "fakeacct",
                                "containerName": container,
                                "endpoint": "core.windows.net",
                                "protocol": "https",
                                "credentials": {"credentialsType": "None"},
                            },
                        },
                    )
                if "/codes/" in path and path.endswith("/versions"):
                    return self._reply(200, {"value": []})
                compute = re.search(r"/computes/([^/?]+)$", path)
                if compute and compute.group(1) in fake.clusters:
                    size, priority = fake.clusters[compute.group(1)]
                    return self._reply(
                        200,
                        {
                            "id": path.split("/", 2)[2],
                            "name": compute.group(1),
                            "location": "westeurope",
                            "properties": {
                                "computeType": "AmlCompute",
                                "provisioningState": "Succeeded",
                                "properties": {
                                    "vmSize": size,
                                    "vmPriority": priority,
                                    "scaleSettings": {"minNodeCount": 0, "maxNodeCount": 4},
                                },
                            },
                        },
                    )
                served = fake.online.get(unquote(path))
                if served:
                    return self._reply(*served)
                job = re.search(r"/jobs/([^/?]+)$", path)
                if job and job.group(1) in fake.jobs:
                    return self._reply(200, fake.jobs[job.group(1)])
                return self._reply(404, {"error": {"code": "NotFound", "message": path}})

            def do_POST(self) -> None:
                body = self._body()
                fake.requests.append(("POST", self.path, body))
                path = urlsplit(self.path).path
                if path.endswith("/startPendingUpload"):
                    port = self.server.server_address[1]
                    blob = f"http://127.0.0.1:{port}/devstoreaccount1/azureml-blobstore/LocalUpload/code"
                    return self._reply(
                        200,
                        {
                            "blobReferenceForConsumption": {
                                "blobUri": blob,
                                "credential": {
                                    "credentialType": "SAS",
                                    "sasUri": f"{blob}?sv=2021-08-06&sig=fake",
                                },
                            },
                            "pendingUploadId": "upload-1",
                            "pendingUploadType": "TemporaryBlobReference",
                        },
                    )
                job = re.search(r"/jobs/([^/?]+)/cancel$", path)
                if job and job.group(1) in fake.jobs:
                    fake.jobs[job.group(1)]["properties"]["status"] = "CancelRequested"
                    return self._reply(200, {})
                return self._reply(404, {"error": {"code": "NotFound", "message": path}})

            def do_PUT(self) -> None:
                body = self._body()
                fake.requests.append(("PUT", self.path, body))
                if self._overloaded():
                    return None
                parts = urlsplit(self.path)
                if ".blob.core.windows.net/" in parts.path:
                    return self._blob_put(parts, body)
                if parts.path.startswith("/devstoreaccount1/"):
                    if "comp=metadata" in parts.query:
                        return self._reply(200, headers={"ETag": '"1"'})
                    fake.blobs[parts.path] = body
                    return self._reply(201, headers={"ETag": '"1"', "Content-MD5": ""})
                served = fake.online.put(unquote(parts.path), json.loads(body or b"{}"))
                if served:
                    return self._reply(*served)
                payload = json.loads(body or b"{}")
                arm_id = parts.path.split("/", 2)[2] if parts.path.count("/") > 1 else ""
                payload.update(id="/" + arm_id, name=parts.path.rsplit("/", 1)[-1])
                job = re.search(r"/jobs/([^/?]+)$", parts.path)
                if job:
                    try:
                        validate_request(unquote(job.group(1)), json.loads(body))
                    except InflameError as exc:  # as strict as Azure ML
                        return self._reply(
                            400, {"error": {"code": "UserError", "message": str(exc)}}
                        )
                    payload["properties"]["status"] = "NotStarted"
                    payload["properties"]["services"] = {
                        "Studio": {"endpoint": f"https://ml.azure.com/runs/{job.group(1)}"}
                    }
                    fake.jobs[job.group(1)] = payload
                    return self._reply(201, payload)
                return self._reply(200, payload)

            def do_DELETE(self) -> None:
                fake.requests.append(("DELETE", self.path, b""))
                if self._overloaded():
                    return None
                served = fake.online.delete(unquote(urlsplit(self.path).path))
                if served:
                    return self._reply(*served)
                return self._reply(404, {"error": {"code": "NotFound", "message": self.path}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeAzureML:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def client(self, locator: dict[str, Any]) -> Any:
        from azure.ai.ml import MLClient

        return MLClient(
            FakeCredential(),
            locator["subscription_id"],
            locator["resource_group"],
            locator["workspace"],
            transport=RedirectTransport(self.port),
            enable_telemetry=False,
            show_progress=False,
            retry_backoff_factor=0.01,  # azure-core's own retries of a 503, without the wait
        )

    def credential(self) -> FakeCredential:
        return FakeCredential()

    def blob_options(self) -> dict[str, Any]:
        return {"transport": RedirectTransport(self.port)}

    def put_folder(self, container: str, prefix: str, folder: Path) -> None:
        """Place a local folder's files in the fake datastore under `prefix`."""
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                self.store[(container, prefix + path.relative_to(folder).as_posix())] = (
                    path.read_bytes()
                )
