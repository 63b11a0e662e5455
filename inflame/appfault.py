"""Whose fault a training failure is. An exception out of `app.train(ctx)` is one of:

- the machine ran out of memory (GPU or RAM): a message that says which and what to lower;
- `deterministic = true` met an operation with no deterministic kernel: what to change;
- the app's own code raised (walking from where it was raised outwards, a frame in the app's
  folder comes before any frame of inflame): the app's part of the traceback, so the user
  can fix their code, instead of a crash report blaming inflame;
- anything else: inflame's own fault, left to the CLI's crash report (`inflame.crashlog`).
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

from inflame.errors import InflameError

_INFLAME = Path(__file__).resolve().parent
_MAX_FRAMES = 12  # of the app's part of the traceback, innermost kept


class AppFailed(InflameError):
    """The app's code raised (or training ran out of memory): not a bug in inflame."""

    exit_code = 1  # as Python's own for an uncaught exception


def memory_advice(exc: BaseException) -> str | None:
    """One paragraph for an out-of-memory error (GPU or RAM); None for any other error."""
    torch = sys.modules.get("torch")
    text = " ".join(str(exc).split())
    if torch is not None and isinstance(exc, torch.OutOfMemoryError):
        said = text.split(" If reserved")[0].split(" Of the allocated")[0][:400]
        return (
            f"Training ran out of GPU memory ({said}). Use a smaller batch or smaller "
            "images (the app's hyperparameters, e.g. `--set hyperparameters.batch_size=16`), "
            'or mixed precision (`[compute] precision = "bf16"` or "fp16")'
        )
    if isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in text
    ):
        said = text[:300] or type(exc).__name__
        return (
            f"Training ran out of memory (RAM) ({said}). Use a smaller batch or smaller "
            "images (the app's hyperparameters, e.g. `--set hyperparameters.batch_size=16`), "
            "or fewer data-loading workers (e.g. `--set hyperparameters.num_workers=0`)"
        )
    return None


def determinism_advice(exc: BaseException) -> str | None:
    """One paragraph when `deterministic = true` met an operation with no deterministic
    kernel on this device (torch raises then); None for any other error."""
    text = " ".join(str(exc).split())
    operation, found, _ = text.partition(" does not have a deterministic implementation")
    if not isinstance(exc, RuntimeError) or not found:
        return None
    return (
        f"`[compute] deterministic = true`, but {operation[-200:]} has no deterministic "
        "implementation on this device, so the run could not be bit-identical. Set "
        '`[compute] deterministic = "auto"` or false (the manifest records which mode ran), '
        "or avoid that operation in the model"
    )


def _within(path: str, folder: Path) -> bool:
    try:
        return Path(path).resolve().is_relative_to(folder)
    except (OSError, ValueError):
        return False


def app_traceback(exc: BaseException, app_folder: Path) -> str | None:
    """The traceback from the app's outermost frame in, when the app's code is where the
    error arose (see the module's docstring); None when inflame's own code is."""
    frames = traceback.extract_tb(exc.__traceback__)
    folder = app_folder.resolve()
    for frame in reversed(frames):  # from where it was raised outwards
        if _within(frame.filename, folder):
            break
        if _within(frame.filename, _INFLAME):
            return None
    else:
        return None
    first = next(i for i, f in enumerate(frames) if _within(f.filename, folder))
    shown = frames[first:][-_MAX_FRAMES:]
    lines = "".join(traceback.format_list(shown)).rstrip("\n")
    what = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return f"{what}\n{lines}"


def training_failure(
    exc: BaseException, app_folder: Path, then: str | None = None
) -> AppFailed | None:
    """An AppFailed for an error of the app's code or of memory, its message ending with
    `then` (what to do next, when this process knows); None for inflame's own errors and
    for non-errors."""
    if not isinstance(exc, Exception) or isinstance(exc, InflameError):
        return None
    next_step = f"; then {then}." if then else "."
    advice = memory_advice(exc) or determinism_advice(exc)
    if advice is not None:
        return AppFailed(advice + next_step)
    shown = app_traceback(exc, app_folder)
    if shown is None:
        return None
    return AppFailed(f"The app's code raised {shown}\nFix the app ({app_folder}){next_step}")
