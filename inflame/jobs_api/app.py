"""The jobs service: `POST /jobs` (a spec) → an id; `GET /jobs/{id}` → new, in_progress (with
the last epoch's metrics), ready (run folder, weights sha256), error (why) or cancelled;
`GET /jobs`; `DELETE /jobs/{id}` cancels; `GET /jobs/{id}/log`. Every route but health and
docs needs the API token."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field

from inflame import __version__
from inflame.errors import InflameError
from inflame.jobs_api.scheduler import Scheduler
from inflame.jobs_api.store import CANCELLED, FINAL, STATUSES, JobStore
from inflame.serving.app import add_service_basics, error_response
from inflame.serving.metrics import ServiceMetrics
from inflame.serving.settings import read_token

SETTINGS_ENV = "INFLAME_API_SETTINGS"
LOG_TAIL_BYTES = 65536


@dataclass(frozen=True)
class ApiSettings:
    root: str  # the service's folder: jobs.db, jobs/<id>/ (spec, log), runs/<id>/
    allowed_root: str  # spec files named by path must lie under it
    host: str = "127.0.0.1"
    port: int = 8001
    parallel: int = 1  # jobs training here at once (cloud jobs take no slot)
    cloud_poll_s: float = 30.0  # how often a cloud job's provider is asked
    token_file: str | None = None
    max_body_kb: int = 256

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ApiSettings:
        return cls(**json.loads(os.environ[SETTINGS_ENV]))

    def check(self) -> str:
        """Refuse what no jobs service should run with; return the token."""
        if self.parallel < 1:
            raise InflameError(f"--parallel must be at least 1, got {self.parallel}.")
        if not self.cloud_poll_s > 0:
            raise InflameError(f"--poll-seconds must be above 0, got {self.cloud_poll_s}.")
        if not Path(self.allowed_root).is_dir():
            raise InflameError(f"--allowed-root {self.allowed_root} is not a folder.")
        token = read_token(self.token_file)
        if token is None:
            raise InflameError(
                "`inflame api` runs training jobs for whoever can reach it, so it always needs "
                "an API token: set INFLAME_API_TOKEN, or pass --token-file FILE (at least 16 "
                "characters; e.g. `openssl rand -hex 32 > token`). Clients send it as "
                "`Authorization: Bearer TOKEN`."
            )
        return token


class JobRequest(BaseModel):
    spec: str | None = Field(None, description="A job spec, as TOML text.")
    spec_path: str | None = Field(
        None, description="Or a spec file, relative to (and inside) the service's allowed root."
    )
    overrides: list[str] = Field(
        default_factory=list, description="SECTION.KEY=VALUE values, as `inflame train --set`."
    )
    target: str = Field(
        "local",
        description="`local` (an `inflame train` process here) or a cloud target "
        "(sagemaker, azure, vertex: as `inflame submit`, with the spec's [targets] settings).",
    )


def create_app(settings: ApiSettings) -> FastAPI:
    root = Path(settings.root).resolve()
    allowed = Path(settings.allowed_root).resolve()
    token = settings.check()
    metrics = ServiceMetrics()
    store = JobStore(root / "jobs.db")
    scheduler = Scheduler(store, parallel=settings.parallel, cloud_poll_s=settings.cloud_poll_s)

    async def lifespan(_: FastAPI) -> Any:
        scheduler.start()
        yield
        await asyncio.to_thread(scheduler.shutdown)
        store.close()

    app = FastAPI(
        title="inflame jobs",
        version=__version__,
        description="Training jobs: submit a spec, follow it, cancel it.",
        lifespan=lifespan,
    )
    limit = settings.max_body_kb * 1024
    add_service_basics(
        app,
        token=token,
        limit=limit,
        too_large=f"The request is larger than this service's limit of {limit:,} bytes.",
        metrics=metrics,
    )

    @app.get("/readyz", summary="The service takes jobs")
    async def readyz() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/jobs", status_code=201, summary="Submit a training job")
    async def submit(request: JobRequest) -> Response:
        if (request.spec is None) == (request.spec_path is None):
            return error_response(400, "Give exactly one of `spec` (TOML text) and `spec_path`.")
        unprintable = [o for o in request.overrides if not o.isprintable()]
        if unprintable or not (request.spec_path or "").isprintable():
            return error_response(
                400, "`overrides` and `spec_path` must be printable text (no control characters)."
            )
        job_id = uuid.uuid4().hex[:16]
        folder = root / "jobs" / job_id
        if request.spec_path is not None:
            spec = (allowed / request.spec_path).resolve()  # printable: no NUL
            if not spec.is_relative_to(allowed):
                return error_response(
                    403,
                    f"spec_path {request.spec_path!r} is outside the service's allowed root "
                    f"({allowed}); name a spec file inside it.",
                )
            if not spec.is_file():
                return error_response(
                    400, f"spec_path {request.spec_path!r}: no such file in {allowed}."
                )
        else:
            try:
                text = (request.spec or "").encode("utf-8")
            except UnicodeEncodeError:
                return error_response(400, "`spec` is not valid Unicode text.")
            folder.mkdir(parents=True)
            spec = folder / "job.toml"
            spec.write_bytes(text)
        try:
            await asyncio.to_thread(_check_spec, spec, request.overrides, request.target)
        except InflameError as exc:
            if request.spec is not None:
                _remove(folder)
            return error_response(422, str(exc))
        job = store.create(spec, request.overrides, root, job_id=job_id, target=request.target)
        return JSONResponse(job.public(), status_code=201, headers={"Location": f"/jobs/{job.id}"})

    @app.get("/jobs", summary="Every job, oldest first")
    async def list_jobs(status: str | None = None) -> Response:
        if status is not None and status not in STATUSES:
            return error_response(400, f"Unknown status {status!r}: one of {', '.join(STATUSES)}.")
        return JSONResponse({"jobs": [job.public() for job in store.all(status)]})

    @app.get("/jobs/{job_id}", summary="One job's status")
    async def get_job(job_id: str) -> Response:
        job = store.get(job_id)
        if job is None:
            return error_response(404, f"No job {job_id!r}.")
        return JSONResponse(job.public())

    @app.delete("/jobs/{job_id}", status_code=202, summary="Cancel a job")
    async def cancel(job_id: str) -> Response:
        job = store.get(job_id)
        if job is None:
            return error_response(404, f"No job {job_id!r}.")
        if job.status in FINAL:
            return error_response(409, f"Job {job_id} is already {job.status}; nothing to cancel.")
        now = await asyncio.to_thread(scheduler.cancel, job_id)
        if now is None:
            return error_response(404, f"No job {job_id!r}.")
        if now.status != CANCELLED and not now.cancel_requested:  # it ended meanwhile
            return error_response(409, f"Job {job_id} is already {now.status}; nothing to cancel.")
        return JSONResponse(now.public(), status_code=202)

    @app.get("/jobs/{job_id}/log", summary="The end of a job's training log")
    async def get_log(job_id: str) -> Response:
        job = store.get(job_id)
        if job is None:
            return error_response(404, f"No job {job_id!r}.")
        try:
            with open(job.log, "rb") as log:
                log.seek(max(log.seek(0, os.SEEK_END) - LOG_TAIL_BYTES, 0))
                text = log.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            text = ""
        return PlainTextResponse(text)

    return app


def _check_spec(spec: Path, overrides: list[str], target: str) -> None:
    """The spec validates as `inflame train` checks it before anything runs (the spec, the
    app and its hyperparameters; no torch) or, for a cloud target, as `inflame submit
    --dry-run` would (offline: the exact request, checked)."""
    if target == "local":
        from inflame.jobprep import prepare_job

        prepare_job(spec, overrides)
    else:
        from inflame.submit import plan_submission

        plan_submission(spec, target, overrides)


def _remove(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def app_from_env() -> FastAPI:
    """The uvicorn factory (settings from the environment)."""
    return create_app(ApiSettings.from_env())
