"""inflame: one TOML job spec, one PyTorch training app, every place it can run.

The public API for apps is small and importing it stays cheap (no torch):

- :class:`Context` — what an app sees inside any job (`inflame.runtime`)
- :class:`HParam` — how an app declares its hyperparameters (`inflame.hparams`)
- :func:`run_app` — lets ``python app.py`` run the same launcher as ``inflame train``
- :class:`InflameError` — a user-facing error: one clear paragraph, no traceback
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Context", "HParam", "InflameError", "__version__", "run_app"]

_LAZY = {
    "Context": "inflame.runtime",
    "HParam": "inflame.hparams",
    "InflameError": "inflame.errors",
    "run_app": "inflame.launcher",
}

if TYPE_CHECKING:  # pragma: no cover
    from inflame.errors import InflameError
    from inflame.hparams import HParam
    from inflame.launcher import run_app
    from inflame.runtime import Context


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'inflame' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module_name), name)
