"""Cloud SDK plumbing every provider shares: lazy imports with the install hint, one
translation of SDK exceptions into one-paragraph `InflameError`s (each provider gives its
table), and retries with backoff for idempotent calls.

Providers call SDK functions only through `Calls.run` (calls that change something: sent
once) or `Calls.read` (reads: retried on transient errors).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from inflame.errors import InflameError

RETRY_ATTEMPTS = 4


def import_sdk(target: str, extra: str, module: str) -> ModuleType:
    """Import a provider's SDK module, or say which extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise InflameError(
            f"The {target} target needs its SDK ({exc.name or module} is not installed). "
            f'Install it with `pip install "inflame[{extra}]"`.'
        ) from None


@dataclass(frozen=True)
class ErrorTable:
    """How one SDK's exceptions read to a user.

    `explain(exc)` returns the sentence for an exception the SDK raised (None: not an SDK
    error, let it propagate); `transient(exc)` says whether retrying could help (throttling,
    5xx, a dropped connection)."""

    explain: Callable[[BaseException], str | None]
    transient: Callable[[BaseException], bool]


class Calls:
    """Runs SDK calls for one provider, turning its errors into InflameErrors."""

    def __init__(self, errors: Callable[[], ErrorTable], wait: float = 1.0):
        self._errors = errors  # built lazily: the table imports the SDK's exception classes
        self.wait = wait  # first backoff, in seconds (doubled each try, at most 20 s)

    def run(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call `fn` once (for calls that create, upload or cancel)."""
        try:
            return fn(*args, **kwargs)
        except InflameError:
            raise
        except Exception as exc:
            raise self._translate(what, exc) from None

    def read(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call an idempotent `fn`, retrying transient errors with exponential backoff."""
        from tenacity import (
            Retrying,
            retry_if_exception,
            stop_after_attempt,
            wait_exponential,
        )

        table = self._errors()
        retrying = Retrying(
            stop=stop_after_attempt(RETRY_ATTEMPTS),
            wait=wait_exponential(multiplier=self.wait, max=20),
            retry=retry_if_exception(table.transient),
            reraise=True,
        )
        try:
            return retrying(fn, *args, **kwargs)
        except InflameError:
            raise
        except Exception as exc:
            raise self._translate(what, exc) from None

    def _translate(self, what: str, exc: Exception) -> Exception:
        message = self._errors().explain(exc)
        if message is None:
            return exc
        return InflameError(f"{what}: {message}")
