"""The common interface of provider adapters."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from inflame.errors import InflameError, did_you_mean
from inflame.packaging import Bundle
from inflame.spec import JobSpec

TERMINAL = ("completed", "failed", "stopped")


@dataclass(frozen=True)
class Plan:
    """The exact request a provider would receive, built without credentials or network."""

    target: str
    job_name: str
    request: dict[str, Any]
    rendered: str  # the request as shown by --dry-run (JSON, or YAML for Azure)
    summary: dict[str, str]
    bundle: Bundle
    spec_sha256: str
    locator: dict[str, Any]  # what finds the job again (region, workspace, project…)
    uploads: dict[str, str] = field(default_factory=dict)  # destination URI -> what


@dataclass(frozen=True)
class JobState:
    state: str  # pending, running, stopping, completed, failed, stopped
    provider_state: str
    message: str = ""
    model_uri: str | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


@dataclass(frozen=True)
class Submitted:
    provider_id: str
    console_url: str


class Target(Protocol):
    name: str
    extra: str

    def plan(self, spec: JobSpec, bundle: Bundle) -> Plan: ...
    def submit(self, plan: Plan) -> Submitted: ...
    def status(self, provider_id: str, locator: dict[str, Any]) -> JobState: ...
    def logs(self, provider_id: str, locator: dict[str, Any]) -> Iterator[str]: ...
    def cancel(self, provider_id: str, locator: dict[str, Any]) -> None: ...
    def download(
        self, provider_id: str, locator: dict[str, Any], destination: Path, state: JobState
    ) -> Path: ...


def unique_job_name(job: str, disallowed: str = r"[^a-zA-Z0-9-]+") -> str:
    """`<job>-<YYYYmmdd-HHMMSS>-<6 random hex>`: readable, sortable, and unique even for two
    submissions in the same second (providers refuse a name twice)."""
    base = re.sub(disallowed, "-", job).strip("-")[:40] or "job"
    return f"{base}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def plan_summary(
    target: str,
    name: str,
    spec: JobSpec,
    bundle: Bundle,
    *,
    where: dict[str, str],
    image: str,
    spot: str,
    outputs: str,
) -> dict[str, str]:
    """The --dry-run summary every target prints: where, what machine, what goes in and out."""
    return {
        "target": target,
        "job name": name,
        **where,
        "GPUs x nodes": f"{spec.compute.gpus_per_node} x {spec.compute.nodes}",
        "spot": f"yes ({spot})" if spec.compute.spot else "no",
        "image": image,
        "inputs": ", ".join(f"{n}={item.value}" for n, item in spec.data.items()) or "-",
        "outputs": outputs,
        "code bundle": f"{bundle.size / 1024:.1f} KiB, sha256 {bundle.sha256}",
    }


def processes_per_node(spec: JobSpec) -> int:
    """One training process per GPU (one on a CPU-only node)."""
    return max(1, spec.compute.gpus_per_node)


def launch_args(spec: JobSpec) -> str:
    """`inflame.job` arguments for a job of several processes (empty for one)."""
    nodes, per_node = spec.compute.nodes, processes_per_node(spec)
    return f" --nnodes {nodes} --nproc-per-node {per_node}" if nodes * per_node > 1 else ""


def missing_sdk(target: str, extra: str, exc: ImportError) -> InflameError:
    return InflameError(
        f"The {target} target needs its SDK ({exc.name} is not installed). "
        f'Install it with `pip install "inflame[{extra}]"`.'
    )


class TargetSettings:
    """Reads `[targets.<name>]` with errors that name the spec file, key path and fix."""

    def __init__(self, spec: JobSpec, target: str):
        self.spec, self.target = spec, target
        self.table = spec.targets.get(target)
        if self.table is None:
            raise InflameError(
                f"Invalid job spec {spec.path}: no [targets.{target}] table. Add "
                f"one with the settings the {target} target needs (see README, "
                f"'Run it on your cloud')."
            )

    def fail(self, key: str, message: str) -> InflameError:
        return InflameError(
            f"Invalid job spec, {self.spec.locate(('targets', self.target, key))}: {message}"
        )

    def check_known(self, known: tuple[str, ...]) -> None:
        for key in self.table:
            if key not in known:
                raise self.fail(
                    key,
                    f"unknown key `targets.{self.target}.{key}`."
                    f"{did_you_mean(key, known)} Known keys: {', '.join(known)}.",
                )

    def get(
        self,
        key: str,
        default: Any = None,
        *,
        required: bool = False,
        kind: type = str,
        example: str = "",
    ) -> Any:
        if key not in self.table:
            if required:
                raise self.fail(
                    key,
                    f"missing required key `targets.{self.target}.{key}`. "
                    f"Add `{key} = {example}` under [targets.{self.target}].",
                )
            return default
        value = self.table[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(
                key, f"`targets.{self.target}.{key}` must be {kind.__name__}, got {value!r}."
            )
        return value
