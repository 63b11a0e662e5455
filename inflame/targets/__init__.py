"""Provider adapters: each turns (spec, code bundle) into one provider job and back.

A target module is imported only when used, and imports its cloud SDK only inside its
functions, so `inflame --help` and `inflame train` never load a cloud SDK.
"""

from __future__ import annotations

import importlib

from inflame.errors import InflameError, did_you_mean
from inflame.targets.base import JobState, Plan, Target

TARGETS = {
    "sagemaker": "inflame.targets.sagemaker",
    "azure": "inflame.targets.azure",
    "vertex": "inflame.targets.vertex",
}

__all__ = ["TARGETS", "JobState", "Plan", "Target", "get_target"]


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise InflameError(
            f"Unknown target `{name}`.{did_you_mean(name, TARGETS)} Targets: {', '.join(TARGETS)}."
        )
    return importlib.import_module(TARGETS[name]).TARGET
