"""What every deploy target shares: the plan (the exact requests, validated offline), and
create / status / delete with the deployment recorded in the ledger."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inflame.deploy.archive import Archive
from inflame.errors import InflameError
from inflame.ledger import DeploymentRecord, Ledger

TARGETS = {"sagemaker": "inflame.deploy.sagemaker:SageMakerEndpoints"}
PLANNED = ("azure", "vertex")  # issue 10: not built yet


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


def endpoints(target: str) -> Any:
    """The deploy adapter of `target`."""
    if target not in TARGETS:
        planned = " (planned, not built yet)" if target in PLANNED else ""
        raise InflameError(
            f"`inflame deploy` cannot deploy to {target!r}{planned}; it deploys to "
            f"{', '.join(TARGETS)}."
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
        console_url = endpoints(plan.target).create(plan)
    except BaseException as exc:
        ledger.update_deployment(record_id, status="failed", error=str(exc))
        raise
    ledger.update_deployment(record_id, status="creating", console_url=console_url)
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
