"""The provider registry: the one list of places a job can run besides this machine.

Each provider is one module holding everything about it (plan, submit, status, logs, cancel,
download, its in-job path resolver and cluster reader, its capability and machine tables, its
SDK error table). Spec validation, the CLI and `inflame.job` read this registry; adding a
provider is one new module plus one line here. A provider module imports neither torch nor
its cloud SDK at import time, so it serves inside a job and in `inflame --help` alike.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING

from inflame.errors import InflameError, did_you_mean

if TYPE_CHECKING:  # pragma: no cover
    from inflame.targets.base import Provider

PROVIDERS = {
    "sagemaker": "inflame.targets.sagemaker",
    "azure": "inflame.targets.azure",
    "vertex": "inflame.targets.vertex",
}


def get_target(name: str) -> Provider:
    """The provider called `name`; an unknown name is an error with a suggestion."""
    if name not in PROVIDERS:
        raise InflameError(
            f"Unknown target `{name}`.{did_you_mean(name, PROVIDERS)} "
            f"Targets: {', '.join(PROVIDERS)}."
        )
    return importlib.import_module(PROVIDERS[name]).TARGET


@cache
def data_schemes() -> tuple[str, ...]:
    """Every URI scheme some provider reads data from (`s3://`, `gs://`, …)."""
    schemes: list[str] = []
    for name in PROVIDERS:
        for scheme in get_target(name).capabilities.data_schemes:
            if scheme not in schemes:
                schemes.append(scheme)
    return tuple(schemes)


def detect_platform(env: dict[str, str] | None = None) -> str | None:
    """The provider whose job this process runs in, from the environment (None: local)."""
    import os

    env = dict(os.environ) if env is None else env
    if env.get("INFLAME_PLATFORM"):
        return env["INFLAME_PLATFORM"]
    for name in PROVIDERS:
        if get_target(name).detect(env):
            return name
    return None
