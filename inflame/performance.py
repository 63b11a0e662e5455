"""Speed switches under [compute]: mixed precision, channels_last, TF32, torch.compile,
determinism. "auto" picks what helps on the device the job runs on (see
`inflame.training.fastpath`); every switch can be forced either way.

No torch here: the spec parser validates these without importing it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

AUTO = "auto"
THREADS_ENV = "OMP_NUM_THREADS"  # torch's intra-op threads in a process it starts
PRECISIONS = (AUTO, "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Performance:
    """[compute] speed switches as written ("auto", or a forced value)."""

    precision: str = AUTO  # auto: bf16 on GPUs that have it, else fp16 with a scaler; CPU fp32
    channels_last: bool | str = AUTO  # auto: on for models with 2-D convolutions
    tf32: bool = True  # TF32 matmuls and convolutions on Ampere and newer GPUs
    compile: bool = False  # torch.compile the model (opt-in: compile time is paid per run)
    deterministic: bool | str = AUTO  # auto: on for CPU (bit-identical reruns), off on GPU

    def changed(self) -> dict[str, Any]:
        """The switches that differ from their defaults (what a stored spec keeps)."""
        default = Performance()
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        }


KEYS = tuple(f.name for f in fields(Performance))
_HELP = {
    "precision": f"one of {', '.join(repr(p) for p in PRECISIONS)}",
    "channels_last": 'true, false or "auto"',
    "tf32": "true or false",
    "compile": "true or false",
    "deterministic": 'true, false or "auto"',
}


def parse_performance(raw: Mapping[str, Any], fail: Callable[[str, str], Exception]) -> Performance:
    """The switches in a [compute] table; `fail(key, message)` builds the spec error."""
    values: dict[str, Any] = {}
    for key in KEYS:
        if key not in raw:
            continue
        value = raw[key]
        ok = {
            "precision": isinstance(value, str) and value in PRECISIONS,
            "channels_last": isinstance(value, bool) or value == AUTO,
            "deterministic": isinstance(value, bool) or value == AUTO,
        }.get(key, isinstance(value, bool))
        if not ok:
            raise fail(key, f"`compute.{key}` must be {_HELP[key]}, got {value!r}.")
        values[key] = value
    return Performance(**values)


def available_cpus() -> int:
    """CPUs this process may run on (respects taskset and cgroup CPU sets)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def threads_env(
    processes: int, env: Mapping[str, str], *, gpu: bool, recorded: int | None = None
) -> dict[str, str]:
    """The environment for `processes` DDP processes training on this machine's CPUs: each
    gets its share of the CPUs as torch threads (torchrun otherwise sets 1 each: two
    processes on a 16-CPU machine used 2 CPUs). A resumed run keeps the count it started
    with (`recorded`): bitwise results depend on it. Nothing changes with GPUs (the CPUs
    feed them, in the data workers) or when the user set OMP_NUM_THREADS."""
    if gpu or env.get(THREADS_ENV):
        return {}
    threads = recorded or max(1, available_cpus() // max(1, processes))
    return {THREADS_ENV: str(threads)}
