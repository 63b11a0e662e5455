"""What every deploy target shares: the plan (the exact requests, validated offline), and
create / status / delete with the deployment recorded in the ledger."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inflame.deploy.archive import Archive
from inflame.errors import InflameError
from inflame.ledger import DeploymentRecord, Ledger

TARGETS = {
    "azure": "inflame.deploy.azure:AzureEndpoints",
    "sagemaker": "inflame.deploy.sagemaker:SageMakerEndpoints",
    "vertex": "inflame.deploy.vertex:VertexEndpoints",
}
# the labels each answer lists (`endpoint_top_k`), read by every endpoint's handler
TOP_K_ENV = "INFLAME_TOP_K"


@dataclass(frozen=True)
class DeployPlan:
    target: str
    name: str  # the endpoint's (and its model's) name
    run_dir: Path
    weights_sha256: str | None
    archive: Archive
    archive_uri: str
    requests: list[tuple[str, dict[str, Any]]]  # (operation, request), in the order sent
    locator: dict[str, Any]  # what status and delete need (region, ...)
    where: dict[str, str]
    checks: tuple[str, ...]
    warnings: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "endpoint": self.name,
            "run": str(self.run_dir),
            "weights_sha256": self.weights_sha256,
            "where": self.where,
            "archive": {
                "uri": self.archive_uri,
                "sha256": self.archive.sha256,
                "bytes": len(self.archive.data),
                "files": len(self.archive.files),
            },
            "requests": [{"operation": op, "request": body} for op, body in self.requests],
            "validated_against": list(self.checks),
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class Created:
    """What creating an endpoint returns: where to see it, and what status and delete need
    beyond the plan's locator (an operation still running, ...)."""

    console_url: str
    locator: dict[str, Any] = field(default_factory=dict)


def roll_back(undo: Any, name: str) -> None:
    """Delete what a failed deploy created (`undo()`); when that fails too, say so and what
    may remain, and let the deploy's own error be the one raised."""
    try:
        undo()
    except Exception as exc:
        print(
            f"warning: deleting what the failed deploy of {name} created failed too ({exc}); "
            f"remove what remains with `inflame undeploy {name}` or in the provider's console.",
            file=sys.stderr,
        )


def finished_run(run_dir: Path, overrides: Sequence[str]) -> tuple[dict[str, Any], Any]:
    """(manifest, spec) of a completed run: only a finished run has a model to deploy."""
    from inflame.runs import SPEC_FILE, read_manifest
    from inflame.spec import load_spec

    manifest = read_manifest(run_dir)
    if manifest.get("status") != "completed":
        raise InflameError(
            f"{run_dir} is {manifest.get('status')}, not completed: only a finished run "
            "has a model to deploy."
        )
    return manifest, load_spec(run_dir / SPEC_FILE, list(overrides))


def endpoints(target: str) -> Any:
    """The deploy adapter of `target`."""
    if target not in TARGETS:
        raise InflameError(
            f"`inflame deploy` cannot deploy to {target!r}; it deploys to {', '.join(TARGETS)}."
        )
    module, _, name = TARGETS[target].partition(":")
    return getattr(importlib.import_module(module), name)()


def plan_deployment(run_dir: Path, target: str, overrides: Sequence[str] = ()) -> DeployPlan:
    return endpoints(target).plan(Path(run_dir), list(overrides))


def deploy(plan: DeployPlan, ledger: Ledger) -> DeploymentRecord:
    """Create the endpoint; the ledger records it before the first call and its fate after."""
    record_id = ledger.add_deployment(
        target=plan.target,
        name=plan.name,
        run=str(plan.run_dir),
        weights_sha256=plan.weights_sha256,
        archive_sha256=plan.archive.sha256,
        locator=plan.locator,
        requests=[[op, body] for op, body in plan.requests],
    )
    try:
        created: Created = endpoints(plan.target).create(plan)
    except BaseException as exc:
        ledger.update_deployment(record_id, status="failed", error=str(exc))
        raise
    ledger.update_deployment(
        record_id,
        status="creating",
        console_url=created.console_url,
        locator={**plan.locator, **created.locator},
    )
    return ledger.find_deployment(str(record_id))


def refresh(record: DeploymentRecord, ledger: Ledger) -> DeploymentRecord:
    """The deployment with the status its provider reports now."""
    if record.status in ("deleted", "failed") and record.console_url is None:
        return record
    status, error = endpoints(record.target).status(record)
    ledger.update_deployment(record.id, status=status, error=error or None)
    return ledger.find_deployment(str(record.id))


def undeploy(record: DeploymentRecord, ledger: Ledger) -> None:
    """Delete the endpoint, its configuration and its model (what is gone already is fine)."""
    if record.status == "deleted":
        raise InflameError(
            f"Endpoint {record.name} was deleted already ({record.updated_at}); `inflame "
            "endpoints` lists the live ones."
        )
    endpoints(record.target).delete(record)
    ledger.update_deployment(record.id, status="deleted")
