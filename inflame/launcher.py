"""Train locally: validate everything first, then create the run directory, hash every
input, run the app's `train(ctx)`, and hash every output into the manifest."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inflame import stopping
from inflame.apps import APP_FILE, App, find_app
from inflame.data.listing import adopt_listing
from inflame.errors import (
    InflameError,
    RunError,
    RunInterrupted,
    RunTerminated,
    environment_fault,
)
from inflame.hashing import sha256_file, tree_digest
from inflame.jobprep import PreparedJob, prepare_job
from inflame.performance import THREADS_ENV, threads_env
from inflame.redact import redact
from inflame.runlock import LOCK_FILE, RunLock
from inflame.runs import (
    MANIFEST,
    SPEC_FILE,
    default_runs_root,
    environment_info,
    hash_data_inputs,
    hash_outputs,
    new_run_dir,
    read_manifest,
    resolve_run,
    utc_now,
    write_json_atomic,
)
from inflame.runtime import (
    Context,
    DataInputs,
    distributed_ranks,
    local_context,
    metrics_log,
    parent_model,
    require_local_data,
    require_trackers,
)
from inflame.spec import JobSpec, load_spec
from inflame.stopping import STOP_FILE_ENV, Terminated, on_sigterm, write_stop_file
from inflame.targets.base import IMAGE_ENV, IMAGE_TORCH_ENV, JobPaths, same_torch
from inflame.warmstart import job_warm_start, parent_record

# how long stopping processes may take (the platforms allow about 30 s to 2 min)
STOP_GRACE_S = 60.0
STOP_FILE = ".stop"  # written by the parent of a multi-process run to stop its processes
STOPPED_FILE = ".stopped.json"  # written by rank 0 when it stopped at a safe point
EXTRA_INPUTS = ".extra_inputs.json"  # rank 0 of a multi-process run hands these to the parent
DDP_THREADS = "ddp_threads"  # the manifest's OMP_NUM_THREADS of a local CPU DDP run's processes
# Manifest keys the launcher owns; an app's `ctx.record` may not overwrite them.
_OWNED_KEYS = frozenset(
    {
        "format",
        "job",
        "created",
        "command",
        "spec",
        "app",
        "seed",
        "hyperparameters",
        "data",
        "status",
        "finished",
        "environment",
        "extra_inputs",
        "outputs",
        "weights_sha256",
        "resumed",
        "platform",
        "image",
        "pid",
        "host",
        "world_size",
        DDP_THREADS,
        "error",
        "curves",
        "evaluations",
        "exports",
        "tracking",
    }
)


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    manifest: dict[str, Any]


def _changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [
            k for key in keys for k in _changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")
        ]
    return [] if old == new else [prefix.rstrip(".")]


def _check_resumable(
    run_dir: Path, manifest: dict[str, Any], spec: JobSpec, data: dict[str, Any]
) -> None:
    if manifest.get("status") == "completed":
        raise RunError(
            f"Run {run_dir} already completed; there is nothing to resume. "
            f"Its model is in {run_dir / 'model'}."
        )
    if manifest["spec"]["resolved_sha256"] != spec.resolved_sha256:
        stored = load_spec(run_dir / SPEC_FILE).to_dict()
        changed = ", ".join(_changed_keys(stored, spec.to_dict())) or "(formatting)"
        raise RunError(
            f"Cannot resume {run_dir}: the resolved spec differs from the one the run "
            f"started with (changed: {changed}). Resume with the same spec and --set "
            f"values (or with no SPEC at all), or start a new run."
        )
    if manifest["data"]["fingerprint"] != data["fingerprint"]:
        changed = [
            name
            for name, item in data["inputs"].items()
            if manifest["data"]["inputs"].get(name, {}).get("fingerprint") != item["fingerprint"]
        ]
        raise RunError(
            f"Cannot resume {run_dir}: data input(s) {', '.join(changed)} changed "
            "since the run started, so resuming would not reproduce it. Restore the "
            "data or start a new run."
        )


def _app_files(app: App, spec: JobSpec, *, bundled: bool = False) -> dict[str, str]:
    """sha256 of the app's code: the files a code bundle would ship (ignore rules applied,
    data inputs and secrets left out), so a data folder beside app.py is not "code". In a
    cloud job (`bundled`) the app folder is the bundle's, which holds just those files."""
    if app.file.name != APP_FILE:
        return {app.file.name: sha256_file(app.file)}
    if bundled:
        files = sorted(
            p for p in app.folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts
        )
    else:
        from inflame.packaging import collect_files

        local_data = [item.path for item in spec.data.values() if item.is_local]
        files, _ = collect_files(app.folder, exclude=local_data)
    return {path.relative_to(app.folder).as_posix(): sha256_file(path) for path in files}


def _new_manifest(
    spec: JobSpec,
    app: App,
    data: dict[str, Any],
    overrides: Sequence[str],
    argv: Sequence[str] | None,
    *,
    bundled: bool = False,
) -> dict[str, Any]:
    app_files = _app_files(app, spec, bundled=bundled)
    hidden = spec.secret_values  # what the command line and the job text may not show
    stored_job = spec.to_dict()["job"]
    return {
        "format": "inflame.run/1",
        "job": {"name": stored_job["name"], "description": stored_job.get("description", "")},
        "created": utc_now(),
        "command": redact(list(argv) if argv is not None else sys.argv, hidden),
        "spec": {
            "path": str(spec.path),
            "folder": str(spec.folder),
            "sha256": spec.source_sha256,
            "resolved_sha256": spec.resolved_sha256,
            "overrides": redact(list(overrides), hidden),
        },
        "app": {
            "name": app.name,
            "ref": spec.job.app,
            "file": str(app.file),
            "sha256": tree_digest(app_files),
            "files": app_files,
        },
        "seed": spec.job.seed,
        "hyperparameters": spec.stored_hyperparameters,
        "data": data,
    }


@contextmanager
def _recorded(
    run_dir: Path, manifest: dict[str, Any], resume_hint: str, *, write: bool = True, **running: Any
) -> Iterator[None]:
    """Mark the run running; on Ctrl-C mark it interrupted, on any error failed. With
    write=False (processes other than rank 0) nothing is recorded."""
    if not write:
        yield
        return
    manifest.update(
        status="running",
        pid=os.getpid(),
        host=platform.node(),
        environment=environment_info(),
        **running,
    )
    write_json_atomic(run_dir / MANIFEST, manifest)
    try:
        yield
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        stopped_by = stopping.reason() if terminated else "SIGINT"  # or a stop file's word
        manifest.update(
            status="interrupted",
            finished=utc_now(),
            stopped_by=stopped_by,
            resume_command=resume_hint.partition("`")[2].rstrip("`") or None,
        )
        write_json_atomic(run_dir / MANIFEST, manifest)
        if terminated:
            why = "SIGTERM (preemption, `docker stop` or `kill`)"
            raise RunTerminated(
                f"Stopped by {why if stopped_by == 'SIGTERM' else stopped_by}: {exc}. Every "
                f"completed epoch's checkpoint is on disk; {resume_hint}."
            ) from None
        where = f" ({exc})" if str(exc) else ""
        raise RunInterrupted(
            f"Interrupted{where}. The run keeps its last checkpoint; {resume_hint}."
        ) from None
    except BaseException as exc:
        manifest.update(status="failed", finished=utc_now(), error=f"{type(exc).__name__}: {exc}")
        fault = environment_fault(exc)
        try:
            write_json_atomic(run_dir / MANIFEST, manifest)
        except OSError:
            if fault is None:
                raise
        if fault is not None:  # the machine's fault, not the run's: it can continue
            raise RunError(
                f"{fault}; then {resume_hint}. Every completed checkpoint is intact."
            ) from None
        raise


def _execute(
    app: App,
    ctx: Context,
    run_dir: Path,
    manifest: dict[str, Any],
    resume_hint: str,
    again: str = "run the same command again",
) -> TrainResult:
    """Run app.train(ctx) in this process (joining the process group when the job has
    several) and, on rank 0, record the outcome. An error of the app's code or of memory
    becomes an AppFailed that says what to do next: `resume_hint` once the run has a
    checkpoint, else `again`."""
    from inflame.appfault import training_failure
    from inflame.training.distributed import close_distributed, init_distributed
    from inflame.training.seeding import seed_everything

    extra = {"world_size": ctx.world_size} if ctx.world_size > 1 else {}
    with on_sigterm(), _recorded(run_dir, manifest, resume_hint, write=ctx.is_main, **extra):
        from inflame.training.fastpath import deterministic_env

        deterministic_env(ctx.performance)
        distributed = init_distributed(ctx)
        try:
            seed_everything(ctx.seed)
            app.train(ctx)
        except Exception as exc:
            then = resume_hint if _has_checkpoint(run_dir) else again
            failure = training_failure(exc, app.folder, then)
            if failure is None:
                raise
            raise failure from exc
        finally:
            if distributed:
                close_distributed()
    if not ctx.is_main:
        return TrainResult(run_dir=run_dir, manifest=manifest)
    return _finish(run_dir, manifest, handoff(ctx))


def handoff(ctx: Context) -> dict[str, Any]:
    """What the app's process adds to the manifest: extra inputs, `ctx.record` values and
    where its metrics were tracked (its trackers are closed here)."""
    ctx.metrics.close()
    return {
        "extra_inputs": ctx.recorded_inputs,
        "records": ctx.records,
        "tracking": ctx.metrics.tracking(),
    }


def _finish(run_dir: Path, manifest: dict[str, Any], recorded: dict[str, Any]) -> TrainResult:
    """Hash every output into the manifest and mark the run completed."""
    from inflame.evaluation.curves import draw_curves

    outputs = hash_outputs(run_dir)
    saved = recorded.get("records", {}).get("saved") or {}
    curves = draw_curves(run_dir, manifest["job"]["name"], saved.get("epoch"))
    for key, value in recorded.get("records", {}).items():
        if key in _OWNED_KEYS:
            print(f"warning: ctx.record({key!r}) ignored: the launcher owns it", file=sys.stderr)
        else:
            manifest[key] = value
    manifest.update(
        status="completed",
        finished=utc_now(),
        environment=environment_info(),
        extra_inputs=recorded.get("extra_inputs", {}),
        outputs=outputs,
        weights_sha256=outputs.get("weights.safetensors"),
        curves=curves,
    )
    if recorded.get("tracking"):
        manifest["tracking"] = recorded["tracking"]
    manifest.pop("error", None)
    try:
        write_json_atomic(run_dir / MANIFEST, manifest)
    except OSError as exc:
        fault = environment_fault(exc)
        if fault is None:
            raise
        raise RunError(
            f"{fault}; then finish the run with `inflame train --local --resume {run_dir}` "
            "(its training is done: it only records the outputs again)."
        ) from None
    _log_to_mlflow(run_dir, manifest)
    return TrainResult(run_dir=run_dir, manifest=manifest)


def _log_to_mlflow(run_dir: Path, manifest: dict[str, Any]) -> None:
    """A completed run goes to MLflow when its spec asks (never failing the run). Inside a
    cloud job it is left to `inflame download`, which logs it from where the URI points."""
    from inflame.tracking import mlflow_runs

    if mlflow_runs.wanted(run_dir) is None:
        return
    if manifest.get("platform", "local") == "local":
        mlflow_runs.log_and_record(run_dir, manifest)
        return
    note = {"pending": "logged by `inflame download`, from the submitting machine"}
    manifest.setdefault("tracking", {})[mlflow_runs.MLFLOW] = note
    write_json_atomic(run_dir / MANIFEST, manifest)


def _execute_torchrun(
    run_dir: Path, spec_dir: Path, manifest: dict[str, Any], nproc_per_node: int, resume_hint: str
) -> TrainResult:
    """Run the app in `nproc_per_node` processes (DDP) through torchrun on this machine.
    torchrun's own log folder (its processes' error files) is removed afterwards: left to
    itself, torchrun leaves one `torchelastic_*` folder in the temp dir per run."""
    _check_gpus(nproc_per_node)
    log_dir = tempfile.mkdtemp(prefix="inflame-torchrun-")
    command = [
        sys.executable,
        "-m",
        "inflame.ddp_agent",  # torchrun, without its summary of the processes' failures
        "--standalone",
        f"--nproc-per-node={nproc_per_node}",
        f"--log-dir={log_dir}",
        "-m",
        "inflame.worker",
        str(run_dir),
        str(spec_dir),
    ]
    threads = _threads(manifest, nproc_per_node)
    running: dict[str, Any] = {"world_size": nproc_per_node}
    if THREADS_ENV in threads:  # recorded as it starts: a resume keeps it
        running[DDP_THREADS] = int(threads[THREADS_ENV])
    with on_sigterm(), _recorded(run_dir, manifest, resume_hint, **running):
        try:
            code = _run_torchrun(command, run_dir, threads)
        finally:
            shutil.rmtree(log_dir, ignore_errors=True)
        if code != 0:
            raise RunError(
                f"A training process of {run_dir} failed (exit code {code}); its "
                f"error is printed above. Fix it, then "
                f"{resume_hint if _has_checkpoint(run_dir) else 'run the same command again'}."
            )
    recorded = run_dir / EXTRA_INPUTS
    inputs = json.loads(recorded.read_text()) if recorded.is_file() else {}
    recorded.unlink(missing_ok=True)
    return _finish(run_dir, manifest, inputs)


def _check_gpus(nproc_per_node: int) -> None:
    """On a GPU machine each process takes a GPU of its own (NCCL refuses two processes on
    one GPU, in the first collective): more processes than GPUs is refused before any
    starts."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if 0 < count < nproc_per_node:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        shown = f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""
        raise RunError(
            f"This run trains in {nproc_per_node} processes (--nproc-per-node), one per GPU, "
            f"but this machine has {count} GPU(s) visible{shown}, and NCCL cannot share a GPU "
            f"between processes. Start it with --nproc-per-node {count} or fewer, or make "
            f"more GPUs visible; a resumed run keeps the count it started with."
        )


def _threads(manifest: Mapping[str, Any], nproc_per_node: int) -> dict[str, str]:
    """OMP_NUM_THREADS for the DDP processes (see `threads_env`). A resumed run's manifest
    holds the count its CPU processes started with (DDP_THREADS; none for a GPU run, whose
    processes kept torchrun's 1)."""
    import torch

    gpu = torch.cuda.is_available()
    recorded = manifest.get(DDP_THREADS)
    return threads_env(nproc_per_node, os.environ, gpu=gpu, recorded=recorded)


def _run_torchrun(command: list[str], run_dir: Path, extra_env: dict[str, str]) -> int:
    """Run torchrun in its own session and wait. On Ctrl-C or SIGTERM here, the stop file
    asks every process to stop at its next safe point (all at the same batch); they get
    STOP_GRACE_S, then the session is killed. A stop, asked here or by a signal the
    processes got themselves, is re-raised here with where they stopped."""
    stop_file, stopped_file = run_dir / STOP_FILE, run_dir / STOPPED_FILE
    stop_file.unlink(missing_ok=True)
    stopped_file.unlink(missing_ok=True)
    env = {**os.environ, **extra_env, STOP_FILE_ENV: str(stop_file.absolute())}
    proc = subprocess.Popen(command, env=env, start_new_session=True)
    interrupt: KeyboardInterrupt | None = None
    try:
        try:
            code = proc.wait()
        except KeyboardInterrupt as exc:
            interrupt = exc
            write_stop_file(stop_file, "SIGTERM" if isinstance(exc, Terminated) else "SIGINT")
            try:
                code = proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                print(f"The processes did not stop within {STOP_GRACE_S:.0f} s", file=sys.stderr)
                code = -1
    finally:  # also on a second Ctrl-C: no process outlives this one
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        stop_file.unlink(missing_ok=True)
    if stopped_file.is_file():
        stopped = json.loads(stopped_file.read_text(encoding="utf-8"))
        stopped_file.unlink()
        if stopped.get("signal") == "SIGINT":
            raise KeyboardInterrupt(stopped.get("message", ""))
        raise Terminated(stopped.get("message", ""))
    if interrupt is not None:
        raise interrupt
    return code


def train_local(
    spec_path: str | Path | None,
    overrides: Sequence[str] = (),
    *,
    run_dir: str | Path | None = None,
    resume: str | Path | None = None,
    runs_root: Path | None = None,
    argv: Sequence[str] | None = None,
    nproc_per_node: int | None = None,
    init_from: str | Path | None = None,
) -> TrainResult:
    """Run the spec's app here (in `nproc_per_node` DDP processes when > 1); return the run
    directory and its final manifest. With `init_from` (a finished run), the app starts from
    that run's weights, and the manifest names it as the parent. The run folder is locked
    (`RunLock`) from before its first write until the run ends."""
    with ExitStack() as held:
        return _train_local(
            held, spec_path, overrides, run_dir, resume, runs_root, argv, nproc_per_node, init_from
        )


def _train_local(
    held: ExitStack,
    spec_path: str | Path | None,
    overrides: Sequence[str],
    run_dir: str | Path | None,
    resume: str | Path | None,
    runs_root: Path | None,
    argv: Sequence[str] | None,
    nproc_per_node: int | None,
    init_from: str | Path | None,
) -> TrainResult:
    runs_root = runs_root or default_runs_root()
    if init_from is not None and resume is not None:
        raise InflameError(
            "--init-from starts a new run from another run's weights; --resume continues a "
            "run (which keeps the parent it started from). Give one of them."
        )
    parent = parent_record(init_from, runs_root) if init_from is not None else None
    previous: dict[str, Any] | None = None
    resume_dir: Path | None = None
    if resume is not None:
        resume_dir = resolve_run(resume, runs_root)
        held.enter_context(RunLock(resume_dir))  # before reading what another may be writing
        previous = read_manifest(resume_dir)
        spec_path = spec_path or resume_dir / SPEC_FILE
    if spec_path is None:
        raise InflameError(
            "Give a job spec (inflame train --local SPEC) or a run to resume (--resume RUN_DIR)."
        )
    job = prepare_job(spec_path, overrides)
    spec, app = job.spec, job.app
    require_local_data(spec)
    require_trackers(spec)
    data = hash_data_inputs({name: item.path for name, item in spec.data.items()})

    if resume_dir is not None and previous is not None:
        _check_resumable(resume_dir, previous, spec, data)
        target, manifest = resume_dir, previous
        spec_dir = Path(previous["spec"]["folder"])
        app_sha256 = tree_digest(_app_files(app, spec))
        if previous["app"]["sha256"] != app_sha256:
            print(
                f"warning: the app's code changed since {target.name} started; the resumed "
                "run may not match one that never stopped",
                file=sys.stderr,
            )
        manifest.setdefault("resumed", []).append({"at": utc_now(), "app_sha256": app_sha256})
        started_with = int(previous.get("world_size", 1))
        if nproc_per_node not in (None, started_with):
            raise RunError(
                f"Cannot resume {target} with --nproc-per-node {nproc_per_node}: it "
                f"started with {started_with} process(es), and a different number "
                "would not reproduce it. Leave the option out to use the same."
            )
        nproc_per_node = started_with
    else:
        if run_dir is not None:
            target = Path(run_dir)
            if target.exists() and not _reusable(target):
                raise RunError(
                    f"--run-dir {target} exists and is not empty; choose a new "
                    "folder (or --resume it if it is a run)."
                )
            target.mkdir(parents=True, exist_ok=True, mode=0o700)
            held.enter_context(RunLock(target))
            _clear_unstarted(target)
            if any(p.name != LOCK_FILE for p in target.iterdir()):  # filled while we looked
                raise RunError(
                    f"--run-dir {target} was filled by another process while this one "
                    "started; choose a new folder."
                )
        else:
            target = new_run_dir(runs_root, spec.job.name, spec.resolved_sha256)
            held.enter_context(RunLock(target))
        spec_dir = spec.folder
        manifest = _new_manifest(spec, app, data, overrides, argv)
        if parent is not None:
            manifest["parent"] = parent
        (target / SPEC_FILE).write_text(spec.to_toml(), encoding="utf-8")

    hint = f"continue it with `inflame train --local --resume {target}`"
    try:
        if nproc_per_node and nproc_per_node > 1:
            return _execute_torchrun(target, spec_dir, manifest, nproc_per_node, hint)
        ctx = local_context(spec, spec.hyperparameters, target)
        ctx.spec_dir = spec_dir
        ctx.init_from = parent_model(target, manifest)  # not on disk yet for a new run
        return _execute(app, ctx, target, manifest, hint)
    except InflameError as exc:
        if resume_dir is None and not isinstance(exc, RunInterrupted):
            _discard_if_untrained(target, run_dir is None, exc)
        raise


def _unstarted_leftovers(target: Path) -> list[Path] | None:
    """What a run killed before its first record left in `target` (its spec, an empty
    checkpoint folder, temp files), or None when the folder holds anything else. Only a
    folder inflame has locked before (it holds `.lock`) can hold such leftovers: a user's
    folder holding a spec.toml of their own is never touched."""
    found = []
    for child in target.iterdir():
        if child.name == LOCK_FILE:
            continue
        checkpoints = child.name == "checkpoints" and child.is_dir()
        if checkpoints and any(not p.name.startswith(".") for p in child.iterdir()):
            return None
        if not (checkpoints or child.name == SPEC_FILE or ".tmp-" in child.name):
            return None
        found.append(child)
    if found and not (target / LOCK_FILE).is_file():
        return None
    return found


def _reusable(target: Path) -> bool:
    return _unstarted_leftovers(target) is not None


def _clear_unstarted(target: Path) -> None:
    """Remove what a run killed before its first record left (only inflame's own files)."""
    leftovers = _unstarted_leftovers(target) or []
    _remove(leftovers)
    if leftovers:
        print(f"note: {target} held a run that never started; starting it afresh", file=sys.stderr)


def _remove(paths: Sequence[Path]) -> None:
    """Delete files and folders (a link is removed, never followed)."""
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _has_checkpoint(run_dir: Path) -> bool:
    """Whether the run has saved an epoch (so `--resume` continues it)."""
    return any((run_dir / "checkpoints").glob("epoch-*.safetensors"))


def _discard_if_untrained(target: Path, named_by_us: bool, exc: InflameError) -> None:
    """A new run that failed before its first checkpoint (the app found bad data, say)
    holds nothing worth keeping: remove what it wrote, so the same command (or the same
    --run-dir) can simply be run again, and say so in the error."""
    if _has_checkpoint(target):
        return
    if named_by_us:
        shutil.rmtree(target, ignore_errors=True)
    else:  # the user's folder stays, empty
        _remove([child for child in target.iterdir() if child.name != LOCK_FILE])
    exc.args = (f"{exc} (Nothing was trained, so the run folder {target} was cleared.)",)


def run_in_job(
    job: PreparedJob,
    paths: JobPaths,
    env: Mapping[str, str] | None = None,
    argv: Sequence[str] | None = None,
) -> TrainResult:
    """Inside a cloud job, with the platform's paths: run the app exactly as `train_local`
    does. The run directory is the folder the platform collects; a restarted job (spot
    preemption) resumes from the platform's checkpoint folder."""
    env = os.environ if env is None else env
    spec, app = job.spec, job.app
    missing = [f"{name} ({path})" for name, path in paths.data.items() if not path.is_dir()]
    if missing:
        raise InflameError(
            f"Inside the {paths.platform} job, data input(s) {', '.join(missing)} are "
            "not mounted. Check that the job's inputs match [data]."
        )
    rank, local_rank, world_size = distributed_ranks(env)
    # every process: the object store's checksums stand for the files (manifest, decode cache)
    unlisted = {
        name: note
        for name, path in paths.data.items()
        if name in spec.data and (note := adopt_listing(spec.data[name].value, path))
    }
    run_dir = paths.run_dir
    restarted = any(paths.checkpoint_dir.glob("epoch-*.safetensors"))
    parent, init_from = job_warm_start(spec.folder, restarted)  # submit --init-from
    manifest: dict[str, Any] = {}
    if rank == 0:  # only the first process hashes the inputs and writes the records
        for name, note in unlisted.items():
            print(f"note: hashing data input {name!r}'s files: {note}", file=sys.stderr)
        run_dir.mkdir(parents=True, exist_ok=True)
        if (run_dir / MANIFEST).is_file():
            manifest = read_manifest(run_dir)
        else:
            data = hash_data_inputs(paths.data, unlisted)
            manifest = _new_manifest(spec, app, data, (), argv, bundled=True)
            manifest["platform"] = paths.platform
            manifest["image"] = image_record(env)
            if parent is not None:
                manifest["parent"] = parent
            (run_dir / SPEC_FILE).write_text(spec.to_toml(), encoding="utf-8")
        if restarted:
            manifest.setdefault("resumed", []).append(
                {"at": utc_now(), "from": str(paths.checkpoint_dir)}
            )
        if manifest.get("image", {}).get("warning"):
            print(f"warning: {manifest['image']['warning']}", file=sys.stderr, flush=True)
    ctx = Context(
        job_name=spec.job.name,
        data=DataInputs(paths.data, where=str(spec.path)),
        output_dir=run_dir / "model",
        checkpoint_dir=paths.checkpoint_dir,
        hparams=dict(spec.hyperparameters),
        seed=spec.job.seed,
        rank=rank,
        local_rank=local_rank,
        world_size=world_size,
        platform=paths.platform,
        spec_dir=spec.folder,
        run_dir=run_dir,
        bad_images=spec.job.bad_images,
        metrics=metrics_log(spec, run_dir, rank, env, paths.tensorboard_dir),
        performance=spec.compute.performance,
        init_from=init_from,
    )
    return _execute(
        app, ctx, run_dir, manifest, "the platform restarts it from there", "submit the job again"
    )


def image_record(env: Mapping[str, str]) -> dict[str, Any]:
    """The image the job asked for and the torch it expected, with a warning when the
    torch that runs is another version."""
    from importlib import metadata

    expected = env.get(IMAGE_TORCH_ENV, "")
    try:
        running = metadata.version("torch")
    except metadata.PackageNotFoundError:
        running = None
    record: dict[str, Any] = {
        "name": env.get(IMAGE_ENV, ""),
        "torch_expected": expected or None,
        "torch": running,
    }
    if expected and running and not same_torch(running, expected):
        record["warning"] = (
            f"the image was expected to have torch {expected}, but torch {running} runs; "
            "weights may differ from runs on other images"
        )
    return record


def run_app(app_file: str | Path, argv: Sequence[str] | None = None) -> None:
    """`python app.py [SPEC] [--set k=v …] [--run-dir D] [--resume D]`: the same launcher as
    `inflame train --local`, with this file as the app and `job.toml` beside it by default."""
    app_file = Path(app_file).resolve()
    parser = argparse.ArgumentParser(
        prog=f"python {app_file.name}", description=f"Train {app_file.parent.name} locally."
    )
    parser.add_argument(
        "spec",
        nargs="?",
        default=str(app_file.parent / "job.toml"),
        help="job spec (default: job.toml beside the app)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a spec value (repeatable)",
    )
    parser.add_argument("--run-dir", help="write the run here instead of runs/<name>-…")
    parser.add_argument("--resume", help="continue a run directory from its last checkpoint")
    args = parser.parse_args(argv)
    try:
        if argv is None:  # the process's own command line: it can be run again with tcmalloc
            from inflame.allocator import reexec_with_allocator

            reexec_with_allocator()
        overrides = list(args.overrides)
        spec_app = load_spec(args.spec, overrides).job.app
        try:
            same = find_app(spec_app) == app_file
        except InflameError:
            same = False
        if not same:  # run this file, and say so in the resolved spec
            print(f"note: running {app_file} (the spec names app `{spec_app}`)", file=sys.stderr)
            overrides.append(f"job.app={json.dumps(str(app_file.parent))}")
        result = train_local(
            args.spec,
            overrides,
            run_dir=args.run_dir,
            resume=args.resume,
            argv=[sys.executable, *(sys.argv if argv is None else argv)],
        )
    except InflameError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    print(result.run_dir)
