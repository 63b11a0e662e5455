"""One writer per run folder: `RunLock` holds an exclusive lock on `RUN/.lock` while a
process trains in the folder.

The lock is an flock, so the kernel drops it when its holder exits in any way (a crash,
SIGKILL, a lost machine's lease on a network filesystem): a lock is never left behind. The
file's content names the holder (pid, host, since when, command) for the error a second
writer gets. A clean release empties the file; content found by the next holder therefore
means the previous one died while holding it, and the takeover says so.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from inflame.errors import RunError

LOCK_FILE = ".lock"


def _describe(holder: dict[str, Any]) -> str:
    since = holder.get("since", "?")
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} (since {since})"


def _read(fd: int) -> dict[str, Any]:
    raw = os.pread(fd, 65536, 0)  # from the start, wherever the file's offset is
    try:
        found = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {"pid": "?", "host": "?"}
    return found if isinstance(found, dict) else {}


class RunLock:
    """`with RunLock(run_dir):` — refused with a RunError while another process holds it."""

    def __init__(self, run_dir: Path, purpose: str = "training"):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.purpose = purpose
        self._fd: int | None = None
        self.took_over: dict[str, Any] | None = None  # the dead holder, when there was one

    def acquire(self) -> RunLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise RunError(
                f"Cannot lock run folder {self.run_dir}: {exc.strerror} ({self.path}). Check "
                "that the folder exists and is writable."
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunError(
                    f"Cannot lock run folder {self.run_dir} ({exc.strerror}); the filesystem "
                    "may not support locks. Use a run folder on a local disk."
                ) from None
            raise RunError(
                f"Run folder {self.run_dir} is in use by another process: {_describe(holder)} "
                f"is {holder.get('purpose', 'writing it')}. Two writers would leave a spec, "
                "manifest and metrics that disagree. Wait for it to finish or stop it (a "
                "stopped run can be resumed with `inflame train --local --resume "
                f"{self.run_dir}`)."
            ) from None
        previous = _read(fd)
        if previous.get("pid"):
            self.took_over = previous
            print(
                f"note: {self.run_dir} was locked by {_describe(previous)}, which is no longer "
                "running; taking it over",
                file=sys.stderr,
            )
        record = {
            "pid": os.getpid(),
            "host": platform.node(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "purpose": self.purpose,
            "command": " ".join(sys.argv[:6]),
        }
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(record) + "\n").encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)  # empty: released cleanly
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created if missing) for the block: waits for
    another holder, which the kernel releases however that process ends."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
