"""The CLI's last line of defence: an exception that is not an `InflameError` is a bug in
inflame (or a fault nobody has given a message yet). The user gets one paragraph naming what
failed and a file holding the traceback to report; `--debug` (or INFLAME_DEBUG=1) shows the
traceback instead. Every fault found this way deserves its own message: this is the net,
not the fix."""

from __future__ import annotations

import os
import tempfile
import time
import traceback
from pathlib import Path

from inflame.redact import redact_url_password

DEBUG_ENV = "INFLAME_DEBUG"
EXIT_CODE = 70  # EX_SOFTWARE (sysexits.h): an internal error
ISSUES_URL = "https://github.com/inflame-ml/inflame/issues"


def debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "").lower() not in ("", "0", "false", "no")


def _log_folder() -> Path:
    from inflame.ledger import inflame_home

    folder = inflame_home() / "logs"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


def write_crash_log(exc: BaseException, argv: list[str]) -> Path:
    """The traceback, the command and the versions, in a private file; returns its path."""
    from inflame import __version__

    text = (
        f"inflame {__version__}\ncommand: {' '.join(map(redact_url_password, argv))}\n"
        f"time: {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n\n"
        + "".join(traceback.format_exception(exc))
    )
    name = f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    try:
        path = _log_folder() / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:  # no writable home: the temp folder still holds it
        fd, raw = tempfile.mkstemp(prefix="inflame-crash-", suffix=".log")
        path = Path(raw)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def unexpected_message(exc: BaseException, log: Path) -> str:
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    what = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return (
        f"inflame failed unexpectedly ({what}). This is a bug in inflame, not in your input. "
        f"The traceback is in {log}; please report it at {ISSUES_URL} with that file. Run "
        "the command again with --debug to see the traceback here."
    )
