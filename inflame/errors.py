"""User-facing errors: each one is a single clear paragraph that says what went wrong,
where (file and key path), and how to fix it. The CLI prints them without a traceback."""

from __future__ import annotations

import difflib
import errno
from collections.abc import Iterable
from pathlib import Path


class InflameError(Exception):
    """An error caused by the user's input or environment, not by a bug in inflame."""

    exit_code = 2


class SpecError(InflameError):
    """The job spec (or an override, or an app's hyperparameters) is invalid."""


class DataError(InflameError):
    """A data input is missing, empty or holds unreadable files."""


class RunError(InflameError):
    """A run directory is missing, incomplete or cannot be resumed."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean `x`?' for the closest choice, or '' when nothing is close."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" Did you mean `{match[0]}`?" if match else ""


class RunInterrupted(InflameError):
    """The user stopped a run (Ctrl-C); it can be resumed."""

    exit_code = 130


class RunTerminated(RunInterrupted):
    """SIGTERM stopped a run (spot preemption, `docker stop`, `kill`); it can be resumed."""

    exit_code = 143  # 128 + SIGTERM, as a shell reports it


_ENVIRONMENT_ADVICE = {
    errno.ENOSPC: "Free some space on that filesystem",
    errno.EDQUOT: "Free some space (the disk quota is full)",
    errno.EACCES: "Fix the permissions of that path (or use another folder)",
    errno.EPERM: "Fix the permissions of that path (or use another folder)",
    errno.EROFS: "That filesystem is read-only: use a writable folder",
    errno.EMFILE: "Too many files are open: raise the limit (`ulimit -n`)",
    # a path of the wrong shape: a file given where a folder goes, or the other way round
    errno.ENOTDIR: "A file is in the way where a folder is needed: give a folder (or a new name)",
    errno.EISDIR: "That is a folder where a file is needed: give a file's name",
}


def environment_fault(exc: BaseException) -> str | None:
    """A one-paragraph message for an OSError the machine caused (a full disk, a denied
    permission, a read-only filesystem), naming the path; None for any other error."""
    if not isinstance(exc, OSError) or exc.errno not in _ENVIRONMENT_ADVICE:
        return None
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or exc}{where}. {_ENVIRONMENT_ADVICE[exc.errno]}"


def make_folder(path: Path, option: str) -> None:
    """mkdir -p for a folder the user named with `option`; a file in its place is refused."""
    if path.exists() and not path.is_dir():
        raise InflameError(
            f"{option} {path} is a file, not a folder: give a folder (or a new name)."
        )
    path.mkdir(parents=True, exist_ok=True)
