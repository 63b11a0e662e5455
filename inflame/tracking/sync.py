"""`inflame runs sync RUN`: replay a run's metrics.jsonl into its trackers, for a tracker
that failed during the run or is wanted only now."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inflame.errors import RunError

TRACKERS = ("tensorboard", "mlflow")


def wanted_trackers(run_dir: Path, manifest: dict[str, Any]) -> list[str]:
    """The trackers the run's spec asked for or its manifest names."""
    from inflame.tracking.mlflow_runs import run_tracking

    asked = run_tracking(run_dir)
    named = manifest.get("tracking") or {}
    return [t for t in TRACKERS if asked.get(t) or t in named]


def sync_run(
    run_dir: Path, trackers: list[str] | None = None, mlflow_uri: str | None = None
) -> dict[str, Any]:
    """Replay the run's records into `trackers` (default: those the run asked for); returns
    what the manifest now says about each. MLflow gets a new MLflow run each time, at the
    run's own URI or `mlflow_uri`."""
    from inflame.runlock import RunLock
    from inflame.runs import MANIFEST, read_manifest, read_metrics, utc_now, write_json_atomic
    from inflame.tracking import tensorboard

    with RunLock(run_dir, purpose="syncing its trackers"):
        manifest = read_manifest(run_dir)
        chosen = trackers or wanted_trackers(run_dir, manifest)
        if not chosen:
            raise RunError(
                f"Run {run_dir} asks for no tracker ([tracking] in its spec.toml is off). "
                "Name one to send its metrics to, e.g. `inflame runs sync RUN --tensorboard`."
            )
        records = read_metrics(run_dir)
        tracking = dict(manifest.get("tracking") or {})
        for name in chosen:
            if name == "tensorboard":
                log_dir = str(run_dir / tensorboard.TENSORBOARD_DIR)
                count = tensorboard.replay(records, log_dir)
                tracking[name] = {"log_dir": log_dir, "synced": utc_now(), "records": count}
            elif name == "mlflow":
                tracking[name] = _sync_mlflow(run_dir, manifest, mlflow_uri)
        manifest["tracking"] = tracking
        write_json_atomic(run_dir / MANIFEST, manifest)
    return {name: tracking[name] for name in chosen}


def _sync_mlflow(run_dir: Path, manifest: dict[str, Any], uri: str | None) -> dict[str, Any]:
    from inflame.tracking import mlflow_runs

    if manifest.get("status") != "completed":
        raise RunError(f"Run {run_dir} is {manifest.get('status')}: MLflow gets finished runs.")
    uri = mlflow_runs.absolute_uri(uri) if uri else mlflow_runs.tracking_uri(run_dir, manifest)
    if uri is None:
        raise RunError(
            f"Run {run_dir} names no MLflow tracking URI; give one with --mlflow-uri URI."
        )
    experiment = (mlflow_runs.wanted(run_dir) or (uri, None))[1]
    with mlflow_runs.reported(uri):
        return mlflow_runs.log_run(run_dir, uri, experiment)
