"""Start the jobs service: check the settings, bind the port, run uvicorn (one process: the
jobs and their scheduler live in it)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from inflame.errors import InflameError, make_folder
from inflame.jobs_api.app import SETTINGS_ENV, ApiSettings
from inflame.serving.server import announce, bind, require_service_packages, run_uvicorn

FACTORY = "inflame.jobs_api.app:app_from_env"
_held: list[int] = []  # the root's lock, held until the process ends


def hold_root(root: Path) -> None:
    """One service per root: two would both start the same jobs."""
    fd = os.open(root / "api.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise InflameError(
            f"Another `inflame api` serves {root} (it holds {root / 'api.lock'}). Stop it, or "
            "give this one another --root."
        ) from None
    _held.append(fd)


def serve_api(settings: ApiSettings, *, log_level: str = "info") -> None:
    require_service_packages()
    settings.check()
    make_folder(Path(settings.root), "--root")
    hold_root(Path(settings.root))
    os.environ[SETTINGS_ENV] = settings.to_env()
    sock = bind(settings.host, settings.port)
    announce("api", sock, f"training jobs in {settings.root} ({settings.parallel} at a time)")
    run_uvicorn(FACTORY, sock, workers=1, log_level=log_level)
