"""Runs the jobs of `inflame api`: each one an `inflame train` process of its own (at most
`parallel` at once), followed through its run folder and settled as ready, error or
cancelled from what the run recorded.

A job outlives the service: on shutdown its process is stopped at a safe point (SIGTERM:
it checkpoints) and the job goes back to `new`, to resume from that checkpoint when the
service starts again. A process left running by a service that died is followed until it
ends; a process that died with its run unfinished is resumed (at most `MAX_ATTEMPTS`
starts in all), and otherwise the job is an error that says why.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from inflame.jobs_api.store import CANCELLED, ERROR, IN_PROGRESS, NEW, READY, Job, JobStore
from inflame.runlock import LOCK_FILE
from inflame.runs import MANIFEST, pid_alive, read_manifest, read_metrics

MAX_ATTEMPTS = 3
CLOUD_POLL_S = 30.0  # how often a cloud job's provider is asked for its state
POLL_S = 0.5
STOP_GRACE_S = 120.0  # the platforms' preemption grace; a checkpoint is written well within


class Scheduler:
    def __init__(
        self,
        store: JobStore,
        *,
        parallel: int = 1,
        python: str = sys.executable,
        cloud_poll_s: float = CLOUD_POLL_S,
    ):
        self.store, self.parallel, self.python = store, parallel, python
        self.cloud_poll_s = cloud_poll_s
        self._polled: dict[str, float] = {}  # cloud job -> when its provider was last asked
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._signalled: set[str] = set()
        self._halt = threading.Event()
        self._lock = threading.Lock()  # one tick at a time (the loop, cancel, shutdown)
        self._thread = threading.Thread(target=self._loop, name="inflame-jobs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._halt.is_set():
            try:
                self.tick()
            except Exception as exc:  # a bad tick must not end the scheduler
                print(f"inflame api: scheduler: {type(exc).__name__}: {exc}", file=sys.stderr)
            self._halt.wait(POLL_S)

    def tick(self) -> None:
        """Follow what runs, settle what ended, start what waits."""
        with self._lock:
            for job in self.store.all(IN_PROGRESS):
                self._follow(job)
            running = self.store.all(IN_PROGRESS)
            free = self.parallel - sum(job.target == "local" for job in running)
            for job in self.store.all(NEW):
                if job.target == "local":  # cloud jobs train elsewhere: they take no slot
                    if free <= 0:
                        continue
                    free -= 1
                try:
                    self._launch(job)
                except Exception as exc:  # this job cannot start; the others still can
                    self.store.update(
                        job.id, status=ERROR, pid=None, error=f"cannot start its process: {exc}"
                    )

    def cancel(self, job_id: str) -> Job | None:
        """A waiting job is cancelled at once; a running one is stopped at a safe point (its
        run keeps the last checkpoint) and settled as cancelled by the next tick. Returns the
        job as it is now (None: no such job)."""
        with self._lock:  # the job as it is now, not as a request read it before the lock
            job = self.store.get(job_id)
            if job is not None and job.status == NEW:
                self.store.update(job.id, status=CANCELLED, error="cancelled before it started")
            elif job is not None and job.status == IN_PROGRESS:
                self.store.update(job.id, cancel_requested=1)
                self._polled.pop(job.id, None)  # a cloud job: ask its provider at once
            return self.store.get(job_id)

    def shutdown(self) -> None:
        """Stop the loop; stop the running jobs (ours and any followed after a restart) at a
        safe point and leave them `new`, to resume when the service starts again; a stop
        for a restart does not count as one of a job's attempts."""
        self._halt.set()
        if self._thread.is_alive():
            self._thread.join()
        with self._lock:
            running = [job for job in self.store.all(IN_PROGRESS) if job.target == "local"]
            for job in running:
                if job.pid and (job.id in self._children or _orphan_alive(job)):
                    _signal(job.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_S
            for job in running:
                child = self._children.pop(job.id, None)
                if child is not None:
                    try:
                        child.wait(max(deadline - time.monotonic(), 0.1))
                    except subprocess.TimeoutExpired:
                        child.kill()
                        child.wait()
                else:
                    while _orphan_alive(job) and time.monotonic() < deadline:
                        time.sleep(POLL_S)
                self._settle(job, restarting=True)

    def _launch(self, job: Job) -> None:
        if job.target != "local":
            self._submit_cloud(job)
            return
        run_dir = Path(job.run_dir)
        if (run_dir / MANIFEST).is_file():  # started before: continue from its checkpoint
            command = ["train", "--resume", str(run_dir)]
        else:
            overrides = [arg for value in job.overrides for arg in ("--set", value)]
            command = ["train", "--local", job.spec, "--run-dir", str(run_dir), *overrides]
        log = Path(job.log)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            out.write(f"$ inflame {' '.join(command)}\n".encode())
            out.flush()
            child = subprocess.Popen(
                [self.python, "-m", "inflame", *command],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # the service's Ctrl-C is not the job's
                env=job_environment(),
            )
        self._children[job.id] = child
        self.store.update(job.id, status=IN_PROGRESS, pid=child.pid, attempts=job.attempts + 1)

    def _submit_cloud(self, job: Job) -> None:
        """`inflame submit`, in process: the plan, the ledger record, the provider's job."""
        from inflame.errors import InflameError
        from inflame.ledger import Ledger
        from inflame.submit import plan_submission, submit_plan

        try:
            plan = plan_submission(job.spec, job.target, job.overrides)
            record = submit_plan(plan, Ledger())
        except InflameError as exc:
            self.store.update(job.id, status=ERROR, error=str(exc))
            return
        metrics = {
            "provider_state": "submitted",
            "provider_id": record.provider_id,
            "console_url": record.console_url,
        }
        self.store.update(
            job.id,
            status=IN_PROGRESS,
            ledger_id=record.id,
            attempts=job.attempts + 1,
            metrics=metrics,
        )
        self._polled[job.id] = time.monotonic()

    def _follow_cloud(self, job: Job) -> None:
        """Every `cloud_poll_s`: the provider's state of a cloud job; settled when it ends."""
        from inflame.errors import InflameError
        from inflame.ledger import Ledger
        from inflame.submit import cancel, refresh

        if time.monotonic() - self._polled.get(job.id, -float("inf")) < self.cloud_poll_s:
            return
        self._polled[job.id] = time.monotonic()
        ledger = Ledger()
        try:
            record = ledger.get(job.ledger_id or 0)
            if job.cancel_requested and job.id not in self._signalled:
                cancel(record, ledger)
                self._signalled.add(job.id)
            state = refresh(record, ledger)
        except InflameError as exc:  # the provider or the network: asked again next time
            self.store.update(job.id, metrics={**(job.metrics or {}), "last_error": str(exc)})
            return
        info = {
            "provider_state": state.provider_state,
            "provider_id": record.provider_id,
            "console_url": record.console_url,
        }
        if not state.terminal:
            if info != job.metrics:
                self.store.update(job.id, metrics=info)
            return
        self._polled.pop(job.id, None)
        self._signalled.discard(job.id)
        result = {**info, "target": job.target, "ledger_id": record.id, "model": state.model_uri}
        if state.state == "completed":
            self.store.update(job.id, status=READY, metrics=info, result=result)
        elif job.cancel_requested:
            error = f"cancelled; the {job.target} job was stopped"
            self.store.update(job.id, status=CANCELLED, metrics=info, result=result, error=error)
        else:
            error = state.message or f"the {job.target} job ended {state.provider_state}"
            self.store.update(job.id, status=ERROR, metrics=info, result=result, error=error)

    def _follow(self, job: Job) -> None:
        if job.target != "local":
            self._follow_cloud(job)
            return
        child = self._children.get(job.id)
        alive = child.poll() is None if child is not None else _orphan_alive(job)
        if alive:
            if job.cancel_requested and job.id not in self._signalled and job.pid:
                _signal(job.pid, signal.SIGTERM)
                self._signalled.add(job.id)
            metrics = last_epoch(Path(job.run_dir))
            if metrics is not None and metrics != job.metrics:
                self.store.update(job.id, metrics=metrics)
            return
        self._children.pop(job.id, None)
        self._signalled.discard(job.id)
        self._settle(job)

    def _settle(self, job: Job, *, restarting: bool = False) -> None:
        """An ended process: the job's outcome from what its run recorded. `restarting`:
        the service stopped it, so an unfinished run waits (`new`) without using up one of
        its attempts."""
        run_dir = Path(job.run_dir)
        manifest: dict[str, Any] = {}
        with contextlib.suppress(Exception):
            manifest = read_manifest(run_dir)
        status = manifest.get("status")
        metrics = last_epoch(run_dir) or job.metrics
        if status == "completed":
            result = {
                "run_dir": str(run_dir),
                "weights_sha256": manifest.get("weights_sha256"),
                "saved": manifest.get("saved"),
            }
            self.store.update(job.id, status=READY, pid=None, result=result, metrics=metrics)
        elif restarting and status in ("running", "interrupted") and not job.cancel_requested:
            attempts = max(job.attempts - 1, 0)
            self.store.update(job.id, status=NEW, pid=None, metrics=metrics, attempts=attempts)
        elif job.cancel_requested:
            self.store.update(
                job.id,
                status=CANCELLED,
                pid=None,
                metrics=metrics,
                error="cancelled; the run keeps its last checkpoint",
            )
        elif status in ("running", "interrupted") and job.attempts < MAX_ATTEMPTS:
            self.store.update(job.id, status=NEW, pid=None, metrics=metrics)  # resumes
        elif status in ("running", "interrupted"):
            why = (
                f"its training process stopped {job.attempts} times before the run finished "
                f"(last: {manifest.get('stopped_by') or 'killed'}); see {job.log}"
            )
            self.store.update(job.id, status=ERROR, pid=None, metrics=metrics, error=why)
        elif status == "failed":
            error = str(manifest.get("error") or "the run failed")
            self.store.update(job.id, status=ERROR, pid=None, metrics=metrics, error=error)
        else:  # refused before a run folder was written: the CLI's error paragraph
            self.store.update(job.id, status=ERROR, pid=None, error=last_error(Path(job.log)))


def last_epoch(run_dir: Path) -> dict[str, Any] | None:
    """The last completed epoch's metrics of a run, if any."""
    try:
        epochs = [record for record in read_metrics(run_dir) if "epoch" in record]
    except Exception:  # not written yet, or being written
        return None
    return epochs[-1] if epochs else None


def last_error(log: Path) -> str:
    """The `error:` paragraph the CLI printed last, from a job's log."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return f"the training process ended without a run folder; its log {log} is missing"
    starts = [i for i, line in enumerate(lines) if line.startswith("error:")]
    if not starts:
        return f"the training process ended without a run folder; see {log}"
    text = " ".join(line.strip() for line in lines[starts[-1] :])
    return text.removeprefix("error:").strip()


def job_environment() -> dict[str, str]:
    """A job's environment: the service's, without its token and settings (a job runs the
    code its spec names), and wide lines for its log."""
    from inflame.jobs_api.app import SETTINGS_ENV
    from inflame.serving.settings import SETTINGS_ENV as SERVE_SETTINGS_ENV
    from inflame.serving.settings import TOKEN_ENV

    hidden = {TOKEN_ENV, SETTINGS_ENV, SERVE_SETTINGS_ENV}
    return {**{k: v for k, v in os.environ.items() if k not in hidden}, "COLUMNS": "1000"}


def _orphan_alive(job: Job) -> bool:
    """A job's process that is not our child (started before a restart): alive while its
    pid lives and is still that job's `inflame train` (its command line names the job's run
    folder; a reused pid does not). Without /proc, alive while it holds its run's lock."""
    if not pid_alive(job.pid):
        return False
    try:
        command = Path(f"/proc/{job.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return _holds_lock(Path(job.run_dir))
    return b"inflame" in command and os.fsencode(job.run_dir) in command


def _holds_lock(run_dir: Path) -> bool:
    lock = run_dir / LOCK_FILE
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True  # held: it trains
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)
