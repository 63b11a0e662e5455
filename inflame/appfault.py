"""Whose fault a training failure is. An exception out of `app.train(ctx)` is one of:

- the machine's (a full disk, a denied permission: `errors.environment_fault`), left to the
  launcher's own message;
- the machine ran out of memory (GPU or RAM): a message that says which and what to lower;
- `deterministic = true` met an operation with no deterministic kernel: what to change;
- the app's own code raised: walking from where it was raised outwards (inside a DataLoader
  worker's traceback, when torch re-raised one), the first frame that is the app's or
  inflame's decides; frames of installed packages (torch, a virtualenv inside the app's
  folder) are neither. The app's part of the traceback is shown, so that the user can fix
  their code, instead of a crash report blaming inflame;
- anything else: inflame's own fault, left to the CLI's crash report (`inflame.crashlog`).
"""

from __future__ import annotations

import re
import sys
import sysconfig
import traceback
from pathlib import Path

from inflame.errors import InflameError, environment_fault

_INFLAME = Path(__file__).resolve().parent
_LIBRARIES = tuple(
    {
        Path(p).resolve()
        for p in (
            sysconfig.get_paths()["purelib"],
            sysconfig.get_paths()["platlib"],
            sysconfig.get_paths()["stdlib"],
            sys.prefix,
            sys.base_prefix,
        )
    }
)
_EDGE_FRAMES = 6  # of a long traceback: the app's outermost and the innermost frames
_WORKER_FRAME = re.compile(r'File "([^"]+)", line \d+')
NEW_RUN = "start a new run with that change (a run resumes only with the spec it started with)"


class AppFailed(InflameError):
    """The app's code raised (or training ran out of memory): not a bug in inflame."""

    exit_code = 1  # as Python's own for an uncaught exception


def memory_advice(exc: BaseException) -> str | None:
    """One paragraph for an out-of-memory error (GPU or RAM); None for any other error."""
    torch = sys.modules.get("torch")
    gpu_oom = getattr(torch, "OutOfMemoryError", None) or getattr(
        getattr(torch, "cuda", None), "OutOfMemoryError", None
    )  # torch.OutOfMemoryError came in torch 2.4/2.5; torch.cuda's is older
    text = " ".join(str(exc).split())
    if gpu_oom is not None and isinstance(exc, gpu_oom):
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


def _owner(filename: str, app_folder: Path) -> str | None:
    """ "inflame", "app" or None (an installed package, the standard library, `<string>`)."""
    if filename.startswith("<"):
        return None
    try:
        path = Path(filename).resolve()
    except (OSError, ValueError):
        return None
    if path.is_relative_to(_INFLAME):
        return "inflame"
    if any(path.is_relative_to(library) for library in _LIBRARIES):
        return None
    return "app" if path.is_relative_to(app_folder) else None


def _first_owner(filenames: list[str], app_folder: Path) -> str | None:
    """Whose frame comes first, walking from the innermost outwards."""
    for filename in reversed(filenames):
        owner = _owner(filename, app_folder)
        if owner is not None:
            return owner
    return None


def app_traceback(exc: BaseException, app_folder: Path) -> str | None:
    """The traceback from the app's outermost frame in, when the app's code is where the
    error arose (see the module's docstring); None when inflame's own code is."""
    folder = app_folder.resolve()
    frames = traceback.extract_tb(exc.__traceback__)
    worker = "Original Traceback (most recent call last)" in str(exc)
    # a DataLoader worker's error, re-raised by torch: its own traceback is in the message
    names = _WORKER_FRAME.findall(str(exc)) if worker else [f.filename for f in frames]
    if _first_owner(names, folder) != "app":
        return None
    mine = [i for i, f in enumerate(frames) if _owner(f.filename, folder) == "app"]
    shown = frames[mine[0] :] if mine else frames[-_EDGE_FRAMES:]
    lines = traceback.format_list(shown)
    if len(lines) > 2 * _EDGE_FRAMES:  # deep modules: both ends, not a screenful of torch
        hidden = len(lines) - 2 * _EDGE_FRAMES
        lines = [*lines[:_EDGE_FRAMES], f"  … {hidden} frames …\n", *lines[-_EDGE_FRAMES:]]
    what = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return f"{what}\n{''.join(lines).rstrip()}"


def training_failure(
    exc: BaseException, app_folder: Path, then: str | None = None
) -> AppFailed | None:
    """An AppFailed for an error of the app's code, of memory or of strict determinism, its
    message ending with what to do next (`then` for the app's code, when this process
    knows it); None for inflame's own errors, the machine's faults and non-errors."""
    if not isinstance(exc, Exception) or isinstance(exc, InflameError):
        return None
    if environment_fault(exc) is not None:
        return None  # a full disk, a denied permission: the launcher says so
    advice = memory_advice(exc) or determinism_advice(exc)
    if advice is not None:
        return AppFailed(f"{advice}; then {NEW_RUN}.")
    shown = app_traceback(exc, app_folder)
    if shown is None:
        return None
    next_step = f"; then {then}." if then else "."
    return AppFailed(f"The app's code raised {shown}\nFix the app ({app_folder}){next_step}")
