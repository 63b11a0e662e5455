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
POLL_S = 0.5
STOP_GRACE_S = 120.0  # the platforms' preemption grace; a checkpoint is written well within


class Scheduler:
    def __init__(self, store: JobStore, *, parallel: int = 1, python: str = sys.executable):
        self.store, self.parallel, self.python = store, parallel, python
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
            free = self.parallel - len(self.store.all(IN_PROGRESS))
            for job in self.store.all(NEW)[: max(free, 0)]:
                self._launch(job)

    def cancel(self, job: Job) -> None:
        """A waiting job is cancelled at once; a running one is stopped at a safe point (its
        run keeps the last checkpoint) and settled as cancelled by the next tick."""
        with self._lock:
            if job.status == NEW:
                self.store.update(job.id, status=CANCELLED, error="cancelled before it started")
            else:
                self.store.update(job.id, cancel_requested=1)

    def shutdown(self) -> None:
        """Stop the loop; stop the running jobs at a safe point and leave them `new`, to
        resume when the service starts again."""
        self._halt.set()
        if self._thread.is_alive():
            self._thread.join()
        with self._lock:
            for child in self._children.values():
                _signal(child.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_S
            for job_id, child in list(self._children.items()):
                try:
                    child.wait(max(deadline - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
                job = self.store.get(job_id)
                if job is not None and job.status == IN_PROGRESS and not job.cancel_requested:
                    self.store.update(job_id, status=NEW, pid=None)
                elif job is not None:
                    self._settle(job)
            self._children.clear()

    def _launch(self, job: Job) -> None:
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
                env={**os.environ, "COLUMNS": "1000"},
            )
        self._children[job.id] = child
        self.store.update(job.id, status=IN_PROGRESS, pid=child.pid, attempts=job.attempts + 1)

    def _follow(self, job: Job) -> None:
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

    def _settle(self, job: Job) -> None:
        """An ended process: the job's outcome from what its run recorded."""
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


def _orphan_alive(job: Job) -> bool:
    """A process from before a restart (not our child): alive while its pid lives and, once
    it trains, while it holds its run folder's lock."""
    if not pid_alive(job.pid):
        return False
    lock = Path(job.run_dir) / LOCK_FILE
    if not lock.exists():
        return True  # still starting
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True  # held: it trains
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False  # the pid lives but holds no lock: it ended and the pid was reused
    finally:
        os.close(fd)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)
