"""MLflow: a finished run logged with its parameters, per-epoch metrics, hashes (as tags) and
files (model, metrics, manifest, curves, evaluation), and registered models.

A run is logged when it completes (from its run folder, so nothing is lost to a tracker
that was down: `inflame runs sync RUN --mlflow` logs it later), and an evaluation is added
to the same MLflow run. The MLflow run's id is kept in the manifest under
`tracking.mlflow`. MLflow is imported only here.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from inflame.errors import InflameError, RunError
from inflame.redact import redact_url_password

MLFLOW = "mlflow"
RUN_FILES = ("metrics.jsonl", "manifest.json", "spec.toml", "curves.png")
_NOT_METRICS = frozenset({"epoch", "step"})
_BATCH = {"metrics": 1000, "params": 100, "tags": 100}  # MLflow's log_batch limits
_PARAM_CHARS = 6000


def client(uri: str) -> Any:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise InflameError(
            "[tracking] mlflow needs MLflow, which is not installed here. Install it with "
            "`pip install 'inflame[mlflow]'` (or `pip install mlflow`)."
        ) from None
    return MlflowClient(tracking_uri=uri)


def run_tracking(run_dir: Path) -> dict[str, Any]:
    """The [tracking] table of the run's spec.toml ({} when it has none)."""
    from inflame import tomlfile
    from inflame.runs import SPEC_FILE

    spec_file = run_dir / SPEC_FILE
    if not spec_file.is_file():
        return {}
    return tomlfile.loads(spec_file.read_text(encoding="utf-8")).get("tracking") or {}


def wanted(run_dir: Path) -> tuple[str, str | None] | None:
    """(tracking URI, experiment) from the run's spec.toml, or None when it asks for none."""
    tracking = run_tracking(run_dir)
    uri = tracking.get("mlflow")
    return (uri, tracking.get("mlflow_experiment")) if uri else None


def _experiment(mlflow: Any, uri: str, name: str) -> str:
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:///"):  # artifacts beside the database, not in the cwd
        location = (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").absolute().as_uri()
    return mlflow.create_experiment(name, artifact_location=location)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _params(manifest: Mapping[str, Any]) -> dict[str, str]:
    params = {f"{k}": v for k, v in (manifest.get("hyperparameters") or {}).items()}
    params.update({"inflame.seed": manifest.get("seed"), "inflame.app": manifest["app"]["name"]})
    out = {}
    for key, value in params.items():
        text = value if isinstance(value, str) else json.dumps(value)
        out[key] = text[:_PARAM_CHARS]
    return out


def _tags(run_dir: Path, manifest: Mapping[str, Any]) -> dict[str, str]:
    tags = {
        "inflame.run_dir": str(run_dir.absolute()),
        "inflame.job": manifest["job"]["name"],
        "inflame.status": str(manifest.get("status")),
        "inflame.spec_sha256": manifest["spec"].get("resolved_sha256", ""),
        "inflame.app_sha256": manifest["app"].get("sha256", ""),
        "inflame.data_fingerprint": (manifest.get("data") or {}).get("fingerprint", ""),
        "inflame.weights_sha256": manifest.get("weights_sha256") or "",
        "inflame.platform": manifest.get("platform", "local"),
    }
    for name, info in ((manifest.get("data") or {}).get("inputs") or {}).items():
        if isinstance(info, dict) and info.get("fingerprint"):
            tags[f"inflame.data.{name}"] = str(info["fingerprint"])
    saved = manifest.get("saved") or {}
    if saved.get("epoch") is not None:
        tags["inflame.saved_epoch"] = str(saved["epoch"])
    return {k: v for k, v in tags.items() if v}


def _metrics(records: Iterable[Mapping[str, Any]], now_ms: int) -> list[Any]:
    """One MLflow metric per number logged, at its epoch (a test score: the last epoch)."""
    from mlflow.entities import Metric

    metrics, step = [], 0
    for record in records:
        epoch = record.get("epoch")
        step = epoch if isinstance(epoch, int) else step
        for key, value in record.items():
            if key in _NOT_METRICS or isinstance(value, bool):
                continue
            if isinstance(value, (int, float)):
                metrics.append(Metric(key, float(value), now_ms, step))
    return metrics


def log_run(run_dir: Path, uri: str, experiment: str | None = None) -> dict[str, Any]:
    """Log the finished run as a new MLflow run; returns what the manifest records."""
    from mlflow.entities import Param, RunTag

    from inflame.runs import read_manifest, read_metrics, utc_now

    manifest = read_manifest(run_dir)
    mlflow = client(uri)
    experiment_id = _experiment(mlflow, uri, experiment or manifest["job"]["name"])
    run = mlflow.create_run(experiment_id, run_name=run_dir.name)
    run_id = run.info.run_id
    try:
        now_ms = int(time.time() * 1000)
        metrics = _metrics(read_metrics(run_dir), now_ms)
        params = [Param(k, v) for k, v in _params(manifest).items()]
        tags = [RunTag(k, v) for k, v in _tags(run_dir, manifest).items()]
        for batch in _chunks(metrics, _BATCH["metrics"]):
            mlflow.log_batch(run_id, metrics=batch)
        for batch in _chunks(params, _BATCH["params"]):
            mlflow.log_batch(run_id, params=batch)
        for batch in _chunks(tags, _BATCH["tags"]):
            mlflow.log_batch(run_id, tags=batch)
        if (run_dir / "model").is_dir():
            mlflow.log_artifacts(run_id, str(run_dir / "model"), "model")
        for name in RUN_FILES:
            if (run_dir / name).is_file():
                mlflow.log_artifact(run_id, str(run_dir / name))
        if (run_dir / "eval").is_dir():
            mlflow.log_artifacts(run_id, str(run_dir / "eval"), "eval")
        mlflow.set_terminated(run_id, "FINISHED")
    except BaseException:
        mlflow.set_terminated(run_id, "FAILED")
        raise
    return {
        "tracking_uri": redact_url_password(uri),
        "experiment_id": experiment_id,
        "run_id": run_id,
        "artifact_uri": run.info.artifact_uri,
        "metrics": len(metrics),
        "logged": utc_now(),
    }


def log_if_asked(run_dir: Path) -> dict[str, Any] | None:
    """At the end of a run: log it when its spec asks; a failure is a warning and an
    `error` record (the run is complete either way; `inflame runs sync` retries)."""
    asked = wanted(run_dir)
    if asked is None:
        return None
    try:
        return log_run(run_dir, *asked)
    except Exception as exc:  # a tracker never fails the run
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(
            f"warning: MLflow ({redact_url_password(asked[0])}) failed: {reason}. The run is "
            f"complete; log it later with `inflame runs sync {run_dir} --mlflow`.",
            file=sys.stderr,
        )
        return {"tracking_uri": redact_url_password(asked[0]), "error": reason}


def tracking_uri(run_dir: Path, manifest: Mapping[str, Any]) -> str | None:
    """The run's MLflow URI: the store that holds its MLflow run (the last it was logged
    or synced to), else its spec's."""
    record = (manifest.get("tracking") or {}).get(MLFLOW) or {}
    recorded = record.get("tracking_uri")
    if record.get("run_id") and recorded and "***" not in recorded:
        return recorded
    asked = wanted(run_dir)
    return asked[0] if asked is not None else None


def absolute_uri(uri: str, base: Path | None = None) -> str:
    """A relative `sqlite:///file` made absolute (from `base`, else the current folder)."""
    prefix, _, path = uri.partition(":///")
    if prefix == "sqlite" and path and not path.startswith("/"):
        return f"sqlite:///{((base or Path()) / path).resolve()}"
    return uri


@contextmanager
def reported(uri: str) -> Iterator[None]:
    """MLflow's own errors (a store it cannot open, a server that refuses) as one
    clear InflameError."""
    try:
        yield
    except InflameError:
        raise
    except Exception as exc:
        if not type(exc).__module__.startswith(("mlflow", "sqlalchemy", "requests", "urllib3")):
            raise
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InflameError(f"MLflow at {redact_url_password(uri)} failed: {reason}") from None


def log_evaluation(
    run_dir: Path, manifest: Mapping[str, Any], out_dir: Path, report: Mapping[str, Any]
) -> bool:
    """Add an evaluation (its numbers and files) to the run's MLflow run, if it has one."""
    record = (manifest.get("tracking") or {}).get(MLFLOW) or {}
    uri = tracking_uri(run_dir, manifest)
    if uri is None or not record.get("run_id"):
        return False
    from mlflow.entities import Metric

    mlflow = client(uri)
    now_ms = int(time.time() * 1000)
    prefix = f"eval_{report['data']['input'] or 'data'}"
    numbers = {
        "accuracy": report["accuracy"],
        "loss": report["loss"],
        "macro_f1": report["macro"]["f1"],
        "expected_calibration_error": report["expected_calibration_error"],
    }
    mlflow.log_batch(
        record["run_id"],
        metrics=[Metric(f"{prefix}_{k}", float(v), now_ms, 0) for k, v in numbers.items()],
    )
    default = out_dir.absolute() == (run_dir / "eval").absolute()
    folder = "eval" if default else f"eval-{out_dir.name}"  # another --out: kept apart
    mlflow.log_artifacts(record["run_id"], str(out_dir), folder)
    return True


def register(run_dir: Path, name: str) -> dict[str, Any]:
    """Register the run's model (logged to MLflow first if it was not) under `name`; the
    new version is recorded in the manifest under `registered`."""
    from inflame.runlock import RunLock
    from inflame.runs import MANIFEST, read_manifest, utc_now, write_json_atomic

    with RunLock(run_dir, purpose="registering its model"):
        manifest = read_manifest(run_dir)
        uri = tracking_uri(run_dir, manifest)
        if uri is None:
            raise RunError(
                f"Run {run_dir} has no MLflow tracking URI ([tracking] mlflow in its "
                "spec.toml), so there is no registry to register it in. Log it first with "
                f"`inflame runs sync {run_dir} --mlflow-uri URI`."
            )
        if manifest.get("status") != "completed" or not (run_dir / "model").is_dir():
            raise RunError(f"Run {run_dir} has no finished model to register.")
        tracking = dict(manifest.get("tracking") or {})
        record = tracking.get(MLFLOW) or {}
        with reported(uri):
            if not record.get("run_id"):
                record = log_run(run_dir, uri, (wanted(run_dir) or (uri, None))[1])
                tracking[MLFLOW] = record
            mlflow = client(uri)
            try:
                mlflow.create_registered_model(name)
            except Exception as exc:  # it exists already: add a version
                if "RESOURCE_ALREADY_EXISTS" not in str(getattr(exc, "error_code", exc)):
                    raise
            version = mlflow.create_model_version(
                name,
                source=f"{record['artifact_uri']}/model",
                run_id=record["run_id"],
                tags={"inflame.weights_sha256": manifest.get("weights_sha256") or ""},
                description=f"inflame run {run_dir.name}",
            )
        entry = {
            "name": name,
            "version": int(version.version),
            "tracking_uri": redact_url_password(uri),
            "at": utc_now(),
        }
        manifest["tracking"] = tracking
        manifest.setdefault("registered", []).append(entry)
        write_json_atomic(run_dir / MANIFEST, manifest)
    return entry


def log_and_record(run_dir: Path, manifest: dict[str, Any]) -> None:
    """Log a completed run when its spec asks, and write the outcome into its manifest
    (`tracking.mlflow`): the MLflow run, or the error `inflame runs sync` can retry."""
    from inflame.runs import MANIFEST, write_json_atomic

    record = log_if_asked(run_dir)
    if record is not None:
        manifest.setdefault("tracking", {})[MLFLOW] = record
        write_json_atomic(run_dir / MANIFEST, manifest)
