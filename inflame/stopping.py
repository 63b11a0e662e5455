"""Stopping a run cleanly on SIGTERM: spot preemption, `docker stop`, a scheduler's `kill`.

Platforms send SIGTERM and wait a grace period (SageMaker, Vertex AI and Azure ML give about
30 s to 2 min) before SIGKILL. Python's default is to die at once, mid-write. Inside
`on_sigterm()`, SIGTERM raises `Terminated` (a KeyboardInterrupt, so every path that
handles Ctrl-C handles it too); inside `safe_points()` too, it only sets a flag that the
training loop reads between batches (`requested()`), so the run stops after a whole
optimizer step, lets the checkpoint in flight finish, and is recorded as interrupted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

EXIT_CODE = 128 + signal.SIGTERM  # 143, as a shell reports a process SIGTERM ended
# A file whose appearance asks the processes of a multi-process run to stop: the parent
# `inflame train` writes the signal's name there (torchrun runs in its own session, so
# neither a terminal's Ctrl-C nor torchrun's own shutdown kills the processes mid-step).
STOP_FILE_ENV = "INFLAME_STOP_FILE"


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived; the message says where the run stopped."""


_state = {"requested": False, "safe": 0}


def requested() -> bool:
    """Whether SIGTERM (or the parent, through the stop file) has asked the run to stop."""
    if _state["requested"]:
        return True
    stop_file = os.environ.get(STOP_FILE_ENV)
    return bool(stop_file) and os.path.exists(stop_file)


def write_stop_file(path: Path, why: str) -> None:
    """Ask the run reading `path` to stop, saying why. Written whole under a temporary name
    and renamed: the run may see the file at any moment, and must never read it empty."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(why, encoding="utf-8")
    os.replace(partial, path)


def reason() -> str:
    """What asked the run to stop: SIGTERM, or the signal the parent wrote in the stop file."""
    stop_file = os.environ.get(STOP_FILE_ENV)
    if not _state["requested"] and stop_file:
        try:
            return Path(stop_file).read_text(encoding="utf-8").strip() or "SIGTERM"
        except OSError:
            pass
    return "SIGTERM"


def _handler(signum: int, frame: Any) -> None:
    _state["requested"] = True
    if not _state["safe"]:
        raise Terminated("SIGTERM arrived")


@contextmanager
def on_sigterm() -> Iterator[None]:
    """While inside, SIGTERM stops the run (at once, or at the next safe point). A no-op
    outside the main thread, where Python cannot install signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _state["requested"] = False


@contextmanager
def safe_points() -> Iterator[None]:
    """While inside, SIGTERM only sets the flag: the code checks `requested()` where a
    stop leaves everything consistent and raises `Terminated` there."""
    _state["safe"] += 1
    try:
        if _state["requested"]:  # it came just before
            raise Terminated("SIGTERM arrived")
        yield
    finally:
        _state["safe"] -= 1


def exit_without_teardown(code: int) -> NoReturn:
    """End one process of a multi-process run with `code`, skipping the interpreter's
    teardown. At exit, torch's C++ destructors left by a (destroyed) gloo process group
    sometimes abort ("terminate called without an active exception", SIGABRT), which
    torchrun then reports as a crash with a traceback. Everything the process wrote is
    closed by then (checkpoints are waited for); stdio is flushed here."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
