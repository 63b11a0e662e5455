"""Submitting to cloud targets: plan (pure), record in the ledger, submit; then follow.

Every submission is written to the ledger before the provider call and updated after it, so a
crash or a retry never submits the same spec and code twice without saying so.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from inflame import tomlfile
from inflame.errors import InflameError
from inflame.jobprep import PreparedJob, prepare_job
from inflame.ledger import ACTIVE, JobRecord, Ledger
from inflame.packaging import build_bundle
from inflame.redact import redact
from inflame.spec import JobSpec
from inflame.targets import get_target
from inflame.targets.base import JobState, Plan, check_capabilities

BUNDLE_APP = "./app"
BUNDLED_FILES = "files"  # local files named by hyperparameters: files/NAME/FILE


def bundle_spec_toml(spec: JobSpec, moved: Mapping[str, str] | None = None) -> str:
    """The resolved spec as the job sees it: the app is the bundle's app/ folder, and each
    local-file hyperparameter (`moved`) names its copy in the bundle."""
    resolved = spec.to_dict()
    resolved["job"]["app"] = BUNDLE_APP
    resolved.setdefault("hyperparameters", {}).update(moved or {})
    return tomlfile.dumps(resolved)


def bundled_files(job: PreparedJob) -> tuple[dict[str, str], dict[str, bytes]]:
    """The local files the app's `file=True` hyperparameters name, for a cloud job's code
    bundle: ({hyperparameter: its path in the bundle}, {bundle member: bytes}). A relative
    path that is not there is refused here, before anything is sent; an absolute one that
    is not on this machine is left to the job (e.g. /gcs/BUCKET/… on Vertex AI)."""
    moved: dict[str, str] = {}
    members: dict[str, bytes] = {}
    for param in job.app.hparams or ():
        value = job.spec.hyperparameters.get(param.name)
        if not param.file or not isinstance(value, str):
            continue
        path = Path(value).expanduser()
        if path.is_absolute() and not path.exists():
            continue  # a path inside the job (a bucket mount, the image's own file): kept
        path = path if path.is_absolute() else job.spec.folder / path
        if not path.is_file():
            raise InflameError(
                f"Invalid job spec, {job.spec.locate(('hyperparameters', param.name))}: "
                f"{path} does not exist (a relative path is relative to the spec's folder). "
                "A cloud job gets a copy of that file in its code bundle: give an existing "
                "file, or an absolute path the job itself can read (a bucket mount)."
            )
        member = f"{BUNDLED_FILES}/{param.name}/{path.name}"
        moved[param.name] = member
        members[member] = path.read_bytes()
    return moved, members


def plan_submission(
    spec_path: str | Path,
    target: str,
    overrides: Sequence[str] = (),
    init_from: str | Path | None = None,
    exclude: Sequence[Path] = (),
) -> Plan:
    """Validate the spec, the app's hyperparameters and the target settings, build the code
    bundle, and return the exact provider request. No credentials, no network. With
    `init_from` (a finished run), the bundle carries that run's model for a warm start;
    `exclude`: more folders to keep out of the bundle (besides the spec's local data)."""
    adapter = get_target(target)
    job = prepare_job(spec_path, overrides)
    check_capabilities(job.spec, adapter)
    local_data = [item.path for item in job.spec.data.values() if item.is_local]
    local_data += exclude
    moved, extra = bundled_files(job)
    if init_from is not None:
        from inflame.warmstart import bundle_members

        extra.update(bundle_members(init_from))
    bundle = build_bundle(
        job.app.folder, bundle_spec_toml(job.spec, moved), exclude=local_data, extra=extra
    )
    return adapter.plan(job.spec, bundle)


def still_active(record: JobRecord, ledger: Ledger) -> bool:
    if record.provider_id is None:
        return True  # a crash between 'submitting' and the reply: fate unknown
    try:
        return refresh(record, ledger).state in ACTIVE
    except InflameError:
        return True


def submit_plan(plan: Plan, ledger: Ledger, *, again: bool = False) -> JobRecord:
    """Record, then submit. Refuses a duplicate of an in-flight job unless `again`."""
    if not again:
        duplicates = [
            r
            for r in ledger.duplicates(plan.target, plan.spec_sha256, plan.bundle.sha256)
            if still_active(r, ledger)
        ]
        if duplicates:
            last = duplicates[-1]
            raise InflameError(
                f"The same spec and code were already submitted to {plan.target} as "
                f"{last.provider_id or last.name} (ledger id {last.id}, status {last.status}, "
                f"{last.submitted_at}). Follow it with `inflame status {last.id}`, or pass "
                "--again to submit another job anyway."
            )
    job_id = ledger.begin(
        target=plan.target,
        name=plan.job_name,
        spec_sha256=plan.spec_sha256,
        bundle_sha256=plan.bundle.sha256,
        request={
            "request": plan.stored_request,
            "locator": plan.locator,
            "summary": redact(plan.summary, plan.secret_values),
        },
    )
    try:
        submitted = get_target(plan.target).submit(plan)
    except InflameError as exc:
        ledger.update(job_id, status="submit-failed", error=str(exc))
        raise
    ledger.update(
        job_id,
        provider_id=submitted.provider_id,
        status="submitted",
        console_url=submitted.console_url,
    )
    return ledger.get(job_id)


def _require_provider_id(record: JobRecord) -> str:
    if not record.provider_id:
        raise InflameError(
            f"Job {record.id} ({record.name}) has no provider id: its submission "
            f"{'failed' if record.status == 'submit-failed' else 'never finished'}"
            f"{': ' + record.error if record.error else ''}."
        )
    return record.provider_id


def refresh(record: JobRecord, ledger: Ledger) -> JobState:
    """Ask the provider for the job's state and store it in the ledger."""
    state = get_target(record.target).status(
        _require_provider_id(record), record.request["locator"]
    )
    ledger.update(record.id, status=state.state)
    return state


def job_logs(record: JobRecord) -> Iterator[str]:
    return get_target(record.target).logs(_require_provider_id(record), record.request["locator"])


def follow(
    record: JobRecord,
    ledger: Ledger,
    *,
    logs: bool,
    interval: float = 15.0,
    emit: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
) -> JobState:
    """Poll until the job ends; with `logs`, print new log lines as they arrive."""
    printed = 0
    last = ""
    while True:
        state = refresh(record, ledger)
        if logs:
            try:
                lines = list(job_logs(record))
            except InflameError as exc:  # this target cannot stream logs: follow the status
                emit(f"note: {exc}")
                logs = False
                continue
            for line in lines[printed:]:
                emit(line)
            printed = len(lines)
        elif state.provider_state != last:
            emit(f"{record.provider_id}: {state.provider_state}")
            last = state.provider_state
        if state.terminal:
            return state
        sleep(interval)


def cancel(record: JobRecord, ledger: Ledger) -> None:
    get_target(record.target).cancel(_require_provider_id(record), record.request["locator"])
    ledger.update(record.id, status="stopping")


def download(record: JobRecord, destination: Path) -> Path:
    """Fetch the job's run directory (manifest, metrics, model) into `destination`. It is
    fetched into a folder beside it and renamed at the end, so a failure leaves nothing."""
    if destination.exists() and any(destination.iterdir()):
        raise InflameError(f"{destination} exists and is not empty; choose a new folder.")
    target, provider_id = get_target(record.target), _require_provider_id(record)
    locator = record.request["locator"]
    state = target.status(provider_id, locator)
    if state.state != "completed":
        raise InflameError(
            f"Job {provider_id} is {state.provider_state}; its model can be "
            "downloaded once it has completed."
        )
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        target.download(provider_id, locator, staging, state)
        if not (staging / "model" / "model.json").is_file():
            raise InflameError(
                f"The output of job {provider_id} holds no model/model.json; did the app "
                "save its model to ctx.output_dir?"
            )
        from inflame.evaluation.curves import draw_missing_curves

        draw_missing_curves(staging)
        if destination.exists():
            destination.rmdir()  # empty, checked above
        staging.rename(destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _log_to_mlflow(destination)
    return destination


def _log_to_mlflow(run_dir: Path) -> None:
    """A downloaded run whose spec asks for MLflow is logged from here (a job cannot reach
    a tracking URI on this machine; a failure only warns: `inflame runs sync` retries)."""
    from inflame.runs import read_manifest
    from inflame.tracking import mlflow_runs

    if mlflow_runs.wanted(run_dir) is not None:
        mlflow_runs.log_and_record(run_dir, read_manifest(run_dir))
