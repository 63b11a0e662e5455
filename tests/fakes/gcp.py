"""A loopback fake of the Vertex AI REST API (custom jobs; models and endpoints in
tests/fakes/gcp_endpoints.py) and of the Cloud Storage JSON API.
Objects live as files under `root/<bucket>/<name>`, the same layout as Vertex's /gcs mount.

It is as strict as the services where inflame depends on it: a CustomJob that breaks the API
message or Vertex AI's documented rules gets 400 INVALID_ARGUMENT, objects carry the MD5 that
Cloud Storage computes, and an upload whose bytes do not match its declared MD5 is refused.
`fail_next` makes the next requests to a path answer 503, as an overloaded service does."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from email.parser import BytesParser
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import google_crc32c

from inflame.errors import InflameError
from inflame.targets.vertex import validate_request
from tests.fakes.gcp_endpoints import FakeVertexEndpoints


class FakeGCP:
    def __init__(self, root: Path):
        self.root = root
        self.jobs: dict[str, dict[str, Any]] = {}
        self.log_entries: list[dict[str, Any]] = []  # Cloud Logging entries, with job_id
        self.requests: list[tuple[str, str, bytes]] = []
        self.fail_next: dict[str, int] = {}  # path regex -> how many 503 answers
        self.composite: set[str] = set()  # object names stored by compose (no md5Hash)
        self.page_size = 1000  # objects per listing page at most
        self.vertex = FakeVertexEndpoints(root)  # models, endpoints, their operations
        self.sessions: dict[str, tuple[str, dict[str, Any], bytearray]] = {}  # resumable uploads
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, code: int, payload: Any = None, raw: bytes | None = None) -> None:
                data = raw if raw is not None else json.dumps(payload or {}).encode()
                self.send_response(code)
                self.send_header(
                    "Content-Type",
                    "application/octet-stream" if raw is not None else "application/json",
                )
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _object(self, bucket: str, name: str) -> dict[str, Any]:
                path = fake.root / bucket / name
                data = path.read_bytes()
                found = {
                    "kind": "storage#object",
                    "bucket": bucket,
                    "name": name,
                    "size": str(len(data)),
                    "generation": "1",
                    "crc32c": base64.b64encode(google_crc32c.Checksum(data).digest()).decode(),
                }
                if name not in fake.composite:  # composed objects have no md5Hash
                    found["md5Hash"] = base64.b64encode(hashlib.md5(data).digest()).decode()
                return found

            def _overloaded(self) -> bool:
                for pattern, count in fake.fail_next.items():
                    if count > 0 and re.search(pattern, self.path):
                        fake.fail_next[pattern] -= 1
                        self._reply(503, {"error": {"code": 503, "message": "overloaded"}})
                        return True
                return False

            def do_GET(self) -> None:
                fake.requests.append(("GET", self.path, b""))
                if self._overloaded():
                    return
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                listing = re.match(r"^/storage/v1/b/([^/]+)/o$", parts.path)
                if listing:
                    bucket, prefix = listing.group(1), query.get("prefix", [""])[0]
                    base = fake.root / bucket
                    names = (
                        sorted(
                            p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file()
                        )
                        if base.is_dir()
                        else []
                    )
                    names = [n for n in names if n.startswith(prefix)]
                    # pages of at most maxResults (GCS: 1,000), continued by pageToken
                    size = min(int(query.get("maxResults", ["1000"])[0]), fake.page_size)
                    start = int(query.get("pageToken", ["0"])[0])
                    page = {
                        "kind": "storage#objects",
                        "items": [self._object(bucket, n) for n in names[start : start + size]],
                    }
                    if start + size < len(names):
                        page["nextPageToken"] = str(start + size)
                    return self._reply(200, page)
                obj = re.match(r"^/(?:download/)?storage/v1/b/([^/]+)/o/(.+)$", parts.path)
                if obj:
                    bucket, name = obj.group(1), unquote(obj.group(2))
                    path = fake.root / bucket / name
                    if not path.is_file():
                        return self._reply(
                            404, {"error": {"code": 404, "message": "No such object"}}
                        )
                    if query.get("alt") == ["media"]:
                        return self._reply(200, raw=path.read_bytes())
                    return self._reply(200, self._object(bucket, name))
                served = fake.vertex.get(unquote(parts.path))
                if served:
                    return self._reply(*served)
                job = re.match(
                    r"^/v1/(projects/[^/]+/locations/[^/]+/customJobs/[^/:]+)$", parts.path
                )
                if job and job.group(1) in fake.jobs:
                    return self._reply(200, fake.jobs[job.group(1)])
                return self._reply(404, {"error": {"code": 404, "message": parts.path}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                fake.requests.append(("POST", self.path, body))
                if self._overloaded():
                    return
                parts = urlsplit(self.path)
                upload = re.match(r"^/upload/storage/v1/b/([^/]+)/o$", parts.path)
                if upload and parse_qs(parts.query).get("uploadType") == ["resumable"]:
                    # a resumable upload (objects over 8 MiB): a session, then PUTs of its bytes
                    session = str(len(fake.sessions))
                    fake.sessions[session] = (upload.group(1), json.loads(body), bytearray())
                    self.send_response(200)
                    self.send_header(
                        "Location",
                        f"{fake.endpoint}{parts.path}?uploadType=resumable&upload_id={session}",
                    )
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                if upload:
                    message = BytesParser(policy=default_policy).parsebytes(
                        f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + body
                    )
                    metadata, media = [p.get_payload(decode=True) for p in message.iter_parts()]
                    declared = json.loads(metadata)
                    name = declared["name"]
                    md5 = base64.b64encode(hashlib.md5(media).digest()).decode()
                    if declared.get("md5Hash", md5) != md5:
                        return self._reply(
                            400, {"error": {"code": 400, "message": "MD5 does not match"}}
                        )
                    target = fake.root / upload.group(1) / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(media)
                    return self._reply(200, self._object(upload.group(1), name))
                create = re.match(
                    r"^/v1/(projects/([^/]+)/locations/([^/]+))/customJobs$", parts.path
                )
                if create:
                    job = json.loads(body)
                    try:
                        validate_request(job)  # as strict as Vertex AI
                    except InflameError as exc:
                        return self._reply(
                            400,
                            {
                                "error": {
                                    "code": 400,
                                    "message": str(exc),
                                    "status": "INVALID_ARGUMENT",
                                }
                            },
                        )
                    name = (
                        f"projects/123/locations/{create.group(3)}/customJobs/{len(fake.jobs) + 42}"
                    )
                    job.update(name=name, state="JOB_STATE_PENDING")
                    fake.jobs[name] = job
                    return self._reply(200, job)
                served = fake.vertex.post(unquote(parts.path), parse_qs(parts.query), body)
                if served:
                    return self._reply(*served)
                if parts.path == "/v2/entries:list":
                    query_body = json.loads(body)
                    job_id = re.search(r'job_id="([^"]+)"', query_body["filter"]).group(1)
                    entries = [
                        e for e in fake.log_entries if e["resource"]["labels"]["job_id"] == job_id
                    ]
                    start = int(query_body.get("pageToken") or 0)
                    page = entries[start : start + 2]  # small pages: exercise paging
                    reply: dict[str, Any] = {"entries": page}
                    if start + 2 < len(entries):
                        reply["nextPageToken"] = str(start + 2)
                    return self._reply(200, reply)
                cancel = re.match(r"^/v1/(projects/[^:]+):cancel$", parts.path)
                if cancel and cancel.group(1) in fake.jobs:
                    fake.jobs[cancel.group(1)]["state"] = "JOB_STATE_CANCELLING"
                    return self._reply(200, {})
                return self._reply(404, {"error": {"code": 404, "message": parts.path}})

            def do_PUT(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                fake.requests.append(("PUT", self.path, b""))
                if self._overloaded():
                    return
                session = parse_qs(urlsplit(self.path).query).get("upload_id", [""])[0]
                if session not in fake.sessions:
                    return self._reply(404, {"error": {"code": 404, "message": "no session"}})
                bucket, declared, received = fake.sessions[session]
                span = re.fullmatch(
                    r"bytes (?:(\d+)-(\d+)|\*)/(\d+|\*)", self.headers.get("Content-Range", "")
                )
                if span is None or (span.group(1) and int(span.group(1)) != len(received)):
                    return self._reply(400, {"error": {"code": 400, "message": "bad range"}})
                received += body
                if span.group(3) == "*" or len(received) < int(span.group(3)):
                    self.send_response(308)  # more to come
                    self.send_header("Range", f"bytes=0-{len(received) - 1}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                md5 = base64.b64encode(hashlib.md5(received).digest()).decode()
                if declared.get("md5Hash", md5) != md5:
                    return self._reply(400, {"error": {"code": 400, "message": "MD5 mismatch"}})
                target = fake.root / bucket / declared["name"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(bytes(received))
                del fake.sessions[session]
                return self._reply(200, self._object(bucket, declared["name"]))

            def do_DELETE(self) -> None:
                fake.requests.append(("DELETE", self.path, b""))
                if self._overloaded():
                    return
                served = fake.vertex.delete(unquote(urlsplit(self.path).path))
                if served:
                    return self._reply(*served)
                return self._reply(404, {"error": {"code": 404, "message": self.path}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeGCP:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def install(self, monkeypatch: Any) -> None:
        """Point inflame's Vertex AI target (SDK, Cloud Storage, Logging) at this fake."""
        from inflame.targets.vertex import TARGET

        monkeypatch.setattr(TARGET, "client_options", self.client_options)
        monkeypatch.setattr(TARGET, "storage_client", self.storage_client)
        monkeypatch.setattr(TARGET, "logging_session", self.logging_session)
        monkeypatch.setattr(TARGET.calls, "wait", 0.01)

    def client_options(self) -> dict[str, Any]:
        from google.auth.credentials import AnonymousCredentials

        return {
            "api_endpoint": self.endpoint,
            "api_transport": "rest",
            "credentials": AnonymousCredentials(),
        }

    def logging_session(self, locator: dict[str, Any]) -> tuple[Any, str]:
        from google.auth.credentials import AnonymousCredentials
        from google.auth.transport.requests import AuthorizedSession

        return AuthorizedSession(AnonymousCredentials()), self.endpoint

    def add_log(self, job_id: str, text: str | None = None, message: str | None = None) -> None:
        entry: dict[str, Any] = {"resource": {"type": "ml_job", "labels": {"job_id": job_id}}}
        if text is not None:
            entry["textPayload"] = text
        else:
            entry["jsonPayload"] = {"message": message}
        self.log_entries.append(entry)

    def storage_client(self, locator: dict[str, Any]) -> Any:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project=locator["project"],
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.endpoint},
        )
