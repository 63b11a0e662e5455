"""Start the jobs service: check the settings, bind the port, run uvicorn (one process: the
jobs and their scheduler live in it)."""

from __future__ import annotations

import os
from pathlib import Path

from inflame.jobs_api.app import SETTINGS_ENV, ApiSettings
from inflame.serving.server import announce, bind, require_service_packages, run_uvicorn

FACTORY = "inflame.jobs_api.app:app_from_env"


def serve_api(settings: ApiSettings, *, log_level: str = "info") -> None:
    require_service_packages()
    settings.check()
    Path(settings.root).mkdir(parents=True, exist_ok=True)
    os.environ[SETTINGS_ENV] = settings.to_env()
    sock = bind(settings.host, settings.port)
    announce("api", sock, f"training jobs in {settings.root} ({settings.parallel} at a time)")
    run_uvicorn(FACTORY, sock, workers=1, log_level=log_level)
