"""User-facing errors: each one is a single clear paragraph that says what went wrong,
where (file and key path), and how to fix it. The CLI prints them without a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


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
