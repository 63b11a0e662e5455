"""The REST service: `POST /predict`, health, readiness, metadata and metrics, for one run.

The model loads on a background thread (`/healthz` answers at once, `/readyz` once it is
loaded); uploads are decoded on worker threads and classified in shared batches on the
batcher's thread, so the event loop stays free for health checks under load.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inflame import __version__
from inflame.errors import InflameError
from inflame.serving.batcher import Batcher
from inflame.serving.metrics import ServiceMetrics
from inflame.serving.settings import ServeSettings

log = logging.getLogger("uvicorn.error")  # the log uvicorn prints
OPEN_ROUTES = frozenset({"/healthz", "/readyz", "/docs", "/openapi.json", "/docs/oauth2-redirect"})


class Ranked(BaseModel):
    label: str
    probability: float


class Prediction(BaseModel):
    image: str
    label: str
    probability: float
    top_k: list[Ranked] | None = None


class Predictions(BaseModel):
    predictions: list[Prediction]


class ImageError(BaseModel):
    image: str
    error: str


class ErrorBody(BaseModel):
    error: str
    images: list[ImageError] | None = None


class Gatekeeper:
    """ASGI middleware in front of every route: the API token (all but the open routes),
    the body limit (413, at once when Content-Length says so; a body without one is read
    up to the limit first, and refused as soon as it passes it), JSON for every error
    Starlette itself answers, and each request's count and latency."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        limit: int,
        metrics: ServiceMetrics,
        too_large: str,
    ):
        self.app, self.token, self.limit, self.metrics = app, token, limit, metrics
        self.too_large = too_large

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            refusal = self._refusal(scope)
            if refusal is None and b"content-length" not in dict(scope["headers"]):
                receive, refusal = await self._buffered(receive)
            if refusal is not None:
                await refusal(scope, receive, send_and_note)
            else:
                await self.app(scope, receive, send_and_note)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)

    def _refusal(self, scope: Scope) -> Response | None:
        headers = dict(scope["headers"])
        if self.token is not None and scope["path"] not in OPEN_ROUTES:
            scheme, _, value = headers.get(b"authorization", b"").partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(
                value.strip(), self.token.encode("ascii")
            ):
                self.metrics.errors.labels("unauthorized").inc()
                response = error_response(
                    401, "A valid API token is required: send `Authorization: Bearer TOKEN`."
                )
                response.headers["WWW-Authenticate"] = "Bearer"
                return response
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            return self._too_large()
        return None

    async def _buffered(self, receive: Receive) -> tuple[Receive, Response | None]:
        """Read a body of unknown length, at most `limit` bytes of it; the app then gets it
        whole, as one message."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return _replay([message], receive), None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return receive, self._too_large()
            if not message.get("more_body", False):
                break
        whole = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        return _replay([whole], receive), None

    def _too_large(self) -> Response:
        self.metrics.errors.labels("upload_too_large").inc()
        return error_response(413, self.too_large)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive that gives `messages` first, then what `receive` gives."""
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed


def upload_too_large(limit: int) -> str:
    return (
        f"The upload is larger than this service's limit of {limit:,} bytes "
        "(`inflame serve --max-upload-mb`). Send fewer or smaller images per request."
    )


class ModelHolder:
    """The run's model, loaded on a background thread, and the batcher that feeds it."""

    def __init__(self, settings: ServeSettings, metrics: ServiceMetrics):
        self.settings, self.metrics = settings, metrics
        self.status, self.error = "loading", ""
        self.predictor: Any = None
        self.batcher: Batcher[Any, Any] | None = None
        self._thread = threading.Thread(target=self._load, name="inflame-model-load", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _load(self) -> None:
        from inflame.predict import load_predictor

        try:
            predictor = load_predictor(self.settings.run_dir, self.settings.backend)
        except InflameError as exc:
            self.status, self.error = "failed", str(exc)
            log.error("inflame serve: the model cannot be loaded: %s", exc)
            return
        except Exception as exc:  # reported by /readyz and /predict
            self.status, self.error = "failed", f"{type(exc).__name__}: {exc}"
            log.exception("inflame serve: the model cannot be loaded")
            return
        self.predictor = predictor
        self.batcher = Batcher(
            predictor.probabilities,
            max_batch=self.settings.max_batch,
            max_wait=self.settings.max_wait_ms / 1000,
            on_batch=self.metrics.batch_size.observe,
        )
        self.status = "ready"
        log.info("inflame serve: model loaded, ready")

    def close(self) -> None:
        self._thread.join()
        if self.batcher is not None:
            self.batcher.close()


def run_metadata(run_dir: Path) -> dict[str, Any]:
    """What `/metadata` answers: read once, from the run's files, before the model loads."""
    from inflame.model_files import META_FILE
    from inflame.runs import MANIFEST, read_manifest

    meta = json.loads((run_dir / "model" / META_FILE).read_text(encoding="utf-8"))
    manifest = read_manifest(run_dir) if (run_dir / MANIFEST).is_file() else {}
    return {
        "run": {
            "name": run_dir.name,
            "path": str(run_dir),
            "job": (manifest.get("job") or {}).get("name"),
            "finished": manifest.get("finished"),
            "saved": manifest.get("saved"),
        },
        "architecture": meta["architecture"],
        "classes": meta["classes"],
        "preprocessing": meta["preprocessing"],
        "weights_sha256": manifest.get("weights_sha256"),
        "inflame_version": __version__,
    }


def add_service_basics(
    app: FastAPI, *, token: str | None, limit: int, too_large: str, metrics: ServiceMetrics
) -> None:
    """What every inflame service has: the `Gatekeeper` (token, body limit, request metrics),
    JSON for Starlette's own errors and for invalid requests, `/healthz` and `/metrics`."""
    app.add_middleware(Gatekeeper, token=token, limit=limit, metrics=metrics, too_large=too_large)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> Response:
        return error_response(exc.status_code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> Response:
        metrics.errors.labels("bad_request").inc()
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'][1:]) or 'body'}: {error['msg']}"
            for error in exc.errors()
        )
        return error_response(422, f"Invalid request: {problems}.")

    @app.get("/healthz", summary="The service is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", summary="Prometheus metrics of this (worker) process")
    async def get_metrics() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def create_app(settings: ServeSettings) -> FastAPI:
    """The service for `settings.run_dir`; the token (if any) is read here, in the worker."""
    run_dir = Path(settings.run_dir)
    metrics = ServiceMetrics()
    holder = ModelHolder(settings, metrics)
    metadata = run_metadata(run_dir)
    metadata["limits"] = {
        "max_upload_bytes": settings.max_upload_bytes,
        "max_files": settings.max_files,
        "max_batch": settings.max_batch,
        "max_pixels": settings.max_pixels,
    }
    metadata["backend"] = settings.backend
    token = settings.token()
    decode_slots = asyncio.Semaphore(max(2, os.cpu_count() or 2))  # bounds decoding's memory

    async def _decode_bounded(predictor: Any, name: str, data: bytes) -> Any:
        async with decode_slots:
            return await asyncio.to_thread(_decode, predictor, name, data, settings.max_pixels)

    async def lifespan(_: FastAPI) -> Any:
        holder.start()
        yield
        await asyncio.to_thread(holder.close)

    app = FastAPI(
        title="inflame",
        version=__version__,
        description=f"Image classification with the trained run `{run_dir.name}`.",
        lifespan=lifespan,
    )

    add_service_basics(
        app,
        token=token,
        limit=settings.max_upload_bytes,
        too_large=upload_too_large(settings.max_upload_bytes),
        metrics=metrics,
    )

    @app.get("/readyz", summary="The model is loaded and predictions can be made")
    async def readyz() -> Response:
        if holder.status == "ready":
            return JSONResponse({"status": "ready"})
        body = {"status": holder.status, **({"error": holder.error} if holder.error else {})}
        return JSONResponse(body, status_code=503)

    @app.get("/metadata", summary="The run, its classes, preprocessing and weights digest")
    async def get_metadata() -> dict[str, Any]:
        return metadata

    @app.post(
        "/predict",
        summary="Label one or more uploaded images",
        response_model=Predictions,
        responses={
            400: {"model": ErrorBody, "description": "No images, or a malformed upload"},
            401: {"model": ErrorBody, "description": "A token is required"},
            413: {"model": ErrorBody, "description": "Upload or file count over the limit"},
            422: {"model": ErrorBody, "description": "A file is not a readable image"},
            503: {"model": ErrorBody, "description": "The model is not loaded (yet)"},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "files": {
                                    "type": "array",
                                    "items": {"type": "string", "format": "binary"},
                                }
                            },
                            "required": ["files"],
                        }
                    }
                },
            }
        },
    )
    async def predict(
        request: Request,
        top_k: int | None = Query(None, ge=1, description="Also list the K most likely labels."),
    ) -> Response:
        if holder.status != "ready":
            metrics.errors.labels("not_ready").inc()
            message = holder.error or "The model is still loading; retry shortly (see /readyz)."
            return error_response(503, message)
        uploads, refusal = await _read_uploads(request, settings)
        if refusal is not None:
            metrics.errors.labels("bad_request").inc()
            return refusal
        decoded = await asyncio.gather(
            *(_decode_bounded(holder.predictor, name, data) for name, data in uploads)
        )
        bad = [
            ImageError(image=name, error=result)
            for (name, _), result in zip(uploads, decoded, strict=True)
            if isinstance(result, str)
        ]
        if bad:
            metrics.errors.labels("unreadable_image").inc()
            return error_response(
                422,
                f"{len(bad)} of {len(uploads)} uploaded file(s) cannot be read as images, so "
                f"nothing was labelled: {'; '.join(b.error for b in bad)}",
                images=[b.model_dump() for b in bad],
            )
        futures = holder.batcher.submit(decoded)  # type: ignore[union-attr]
        try:
            rows = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        except Exception as exc:  # the model failed on this batch (out of memory, ...)
            log.exception("inflame serve: inference failed")
            metrics.errors.labels("inference").inc()
            return error_response(500, f"Inference failed: {type(exc).__name__}: {exc}")
        answers = [
            holder.predictor.answer(name, row, top_k)
            for (name, _), row in zip(uploads, rows, strict=True)
        ]
        failed = [a for a in answers if "error" in a]
        if failed:
            metrics.errors.labels("model_output").inc()
            return error_response(500, failed[0]["error"], images=failed)
        metrics.images.inc(len(answers))
        return JSONResponse({"predictions": answers})

    return app


def _decode(predictor: Any, name: str, data: bytes, max_pixels: int) -> Any:
    """The decoded image, or the reason it cannot be read (a str)."""
    from inflame.data.images import UnreadableImage

    try:
        return predictor.decode(name, data, max_pixels=max_pixels)
    except UnreadableImage as exc:
        return str(exc)
    except MemoryError:
        return f"{name}: too large to decode in the memory this service has"
    except Exception as exc:  # a decoder's own failure on a malformed file
        return f"{name}: not a readable image ({type(exc).__name__}: {exc})."


async def _read_uploads(
    request: Request, settings: ServeSettings
) -> tuple[list[tuple[str, bytes]], Response | None]:
    """The uploaded files as (name, bytes), or the 4xx that refuses the request."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        return [], error_response(
            400,
            "Send the images as multipart/form-data file fields (e.g. `curl -F "
            f"files=@bird.jpg ...`); got Content-Type {content_type or 'none'!r}.",
        )
    try:
        form = await request.form(max_files=settings.max_files, max_fields=settings.max_files)
    except (MultiPartException, HTTPException) as exc:  # starlette turns the one into the other
        reason = str(getattr(exc, "detail", None) or exc)
        status = 413 if "Too many files" in reason else 400
        message = (
            f"More than {settings.max_files} files in one request (`inflame serve "
            "--max-files`); send them in several requests."
            if status == 413
            else f"The multipart upload cannot be read: {reason}"
        )
        return [], error_response(status, message)
    uploads: list[tuple[str, bytes]] = []
    try:
        for _, value in form.multi_items():
            if isinstance(value, UploadFile):
                name = value.filename or f"upload-{len(uploads) + 1}"
                uploads.append((name, await value.read()))
    finally:
        await form.close()
    if not uploads:
        return [], error_response(400, "The request holds no files: upload one or more images.")
    return uploads, None


def app_from_env() -> FastAPI:
    """The uvicorn factory every worker process calls (settings from the environment)."""
    return create_app(ServeSettings.from_env())
