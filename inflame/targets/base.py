"""The common interface of provider adapters."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from inflame.errors import InflameError
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
    def download(self, provider_id: str, locator: dict[str, Any], destination: Path) -> Path: ...


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
        from inflame.errors import did_you_mean

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
