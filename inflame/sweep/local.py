"""Trials as `inflame train --local` processes on this machine, several at once.

Each trial is an ordinary run (`SWEEP/trials/trial-NNNN`, its log in `SWEEP/logs/`),
trained by its own process with the CPU threads split between the trials in flight. The
sweep follows a trial through the run's metrics.jsonl; to prune it, or to stop it when the
sweep itself is stopped, it writes the trial's stop file, and the run stops at its next
safe point, checkpointed and resumable. A trial whose sweep died (its processes get SIGTERM
then) is continued from its checkpoint by the next sweep (`--resume`).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from inflame.errors import RunError
from inflame.runlock import LOCK_FILE, RunLock
from inflame.runs import read_manifest, read_metrics
from inflame.stopping import STOP_FILE_ENV, write_stop_file
from inflame.sweep.trials import (
    LOGS_DIR,
    MetricMissing,
    MetricsTail,
    Outcome,
    epoch_values,
    final_value,
    run_state,
    trial_name,
    trial_run_dir,
)

PRUNED = "the sweep's pruner"  # what a pruned run records as what stopped it
STOP_GRACE_S = 120.0


def _preexec() -> None:  # pragma: no cover - runs in the child
    """In the trial's process: Ctrl-C's default action back (a sweep started in the
    background has SIGINT ignored, which children inherit), and SIGTERM when the sweep
    dies (Linux), so no trial trains on unattended."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _stopped_by(run_dir: Path) -> str:
    try:
        return str(read_manifest(run_dir).get("stopped_by", ""))
    except RunError:
        return ""


def split_threads(parallel: int, cpus: int | None = None) -> int:
    """CPU threads per trial when `parallel` trials share the machine."""
    return max(1, (cpus or os.cpu_count() or 1) // max(1, parallel))


@dataclass
class _Running:
    number: int
    run_dir: Path
    process: subprocess.Popen[bytes]
    log: IO[bytes]
    stop_file: Path
    tail: MetricsTail
    pruned: bool = False
    reported: dict[int, float] = field(default_factory=dict)


class LocalTrials:
    """Starts trial processes and follows them (`poll`)."""

    def __init__(
        self,
        sweep_dir: Path,
        spec_path: Path,
        overrides: Sequence[str],
        metric: str,
        parallel: int,
    ):
        self.sweep_dir, self.spec_path = sweep_dir.absolute(), spec_path.absolute()
        self.overrides, self.metric = list(overrides), metric
        self.threads = split_threads(parallel)
        self.running: dict[int, _Running] = {}
        self.ended: list[Outcome] = []  # outcomes found without running anything

    def command(self, number: int, params_overrides: Sequence[str], resume: bool) -> list[str]:
        run_dir = trial_run_dir(self.sweep_dir, number)
        base = [sys.executable, "-m", "inflame", "train", "--local"]
        if resume:
            return [*base, "--resume", str(run_dir)]
        sets = [arg for o in (*self.overrides, *params_overrides) for arg in ("--set", o)]
        return [*base, str(self.spec_path), *sets, "--run-dir", str(run_dir)]

    def busy(self, number: int) -> bool:
        """Whether some process (a trial the dead sweep left, still stopping) holds the
        trial's run folder."""
        run_dir = trial_run_dir(self.sweep_dir, number)
        if not (run_dir / LOCK_FILE).exists():
            return False
        try:
            with RunLock(run_dir, purpose="sweep check"):
                return False
        except RunError:
            return True

    def start(self, number: int, params_overrides: Sequence[str]) -> str:
        """Start the trial, or continue it from its checkpoint when its run has begun;
        returns "started" or "resumed"."""
        run_dir = trial_run_dir(self.sweep_dir, number)
        status, _ = run_state(run_dir)
        if status == "completed" or (status == "interrupted" and _stopped_by(run_dir) == PRUNED):
            # its sweep died before recording how it ended: record it now
            self.ended.append(self._outcome_of(number, run_dir, pruned=True, code=0))
            return "ended earlier"
        resume = status != "missing"
        if not resume and run_dir.exists():  # killed before its first record: start afresh
            shutil.rmtree(run_dir)
        log_path = self.log_path(number)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        stop_file = log_path.with_suffix(".stop")
        stop_file.unlink(missing_ok=True)
        log = log_path.open("ab")
        env = {
            **os.environ,
            STOP_FILE_ENV: str(stop_file.absolute()),
            "OMP_NUM_THREADS": str(self.threads),
            "MKL_NUM_THREADS": str(self.threads),
            "PYTHONUNBUFFERED": "1",
        }
        process = subprocess.Popen(
            self.command(number, params_overrides, resume),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # the terminal's Ctrl-C reaches the sweep, which stops it
            preexec_fn=_preexec,
        )
        self.running[number] = _Running(
            number, run_dir, process, log, stop_file, MetricsTail(run_dir / "metrics.jsonl")
        )
        return "resumed" if resume else "started"

    def progress(self) -> dict[int, dict[int, float]]:
        """{trial: {epoch: metric}} for the epochs each running trial finished since the
        last call."""
        found: dict[int, dict[int, float]] = {}
        for trial in self.running.values():
            new = epoch_values(trial.tail.new_records(), self.metric)
            new = {e: v for e, v in new.items() if e not in trial.reported}
            if new:
                trial.reported.update(new)
                found[trial.number] = new
        return found

    def prune(self, number: int) -> None:
        trial = self.running[number]
        trial.pruned = True
        write_stop_file(trial.stop_file, PRUNED)

    def finished(self) -> list[Outcome]:
        """The trials whose process has ended since the last call, with how they ended."""
        done, self.ended = self.ended, []
        for number, trial in list(self.running.items()):
            code = trial.process.poll()
            if code is None:
                continue
            del self.running[number]
            trial.log.close()
            trial.stop_file.unlink(missing_ok=True)
            done.append(self._outcome(trial, code))
        return done

    def _outcome(self, trial: _Running, code: int) -> Outcome:
        outcome = self._outcome_of(trial.number, trial.run_dir, trial.pruned, code)
        outcome.epochs = {e: v for e, v in outcome.epochs.items() if e not in trial.reported}
        return outcome

    def _outcome_of(self, number: int, run_dir: Path, pruned: bool, code: int) -> Outcome:
        status, error = run_state(run_dir)
        epochs = epoch_values(read_metrics(run_dir), self.metric)
        if status == "completed":
            try:
                value = final_value(run_dir, self.metric)
            except MetricMissing as exc:
                return Outcome(number, "failed", error=str(exc), epochs=epochs, fatal=True)
            return Outcome(number, "completed", value=value, epochs=epochs)
        if status == "interrupted" and pruned:
            return Outcome(number, "pruned", epochs=epochs)
        if status == "interrupted":
            return Outcome(number, "stopped", epochs=epochs)
        reason = error or self._log_tail(number) or f"exit code {code}"
        return Outcome(number, "failed", error=reason, epochs=epochs)

    def _log_tail(self, number: int) -> str:
        try:
            text = self.log_path(number).read_text(encoding="utf-8", errors="replace")
            lines = text.strip().splitlines()
        except OSError:
            return ""
        errors = [line for line in lines if line.lower().startswith("error")]
        return (errors or lines or [""])[-1][:500]

    def stop_all(self, why: str, grace_s: float = STOP_GRACE_S) -> list[Outcome]:
        """Ask every running trial to stop at its next safe point (checkpointed), wait up
        to `grace_s`, kill what is left; return how they ended."""
        for trial in self.running.values():
            with contextlib.suppress(OSError):
                write_stop_file(trial.stop_file, why)
        deadline = time.monotonic() + grace_s
        while self.running and time.monotonic() < deadline:
            if all(t.process.poll() is not None for t in self.running.values()):
                break
            time.sleep(0.2)
        for trial in self.running.values():
            if trial.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(trial.process.pid, signal.SIGKILL)
                trial.process.wait()
        return self.finished()

    def log_path(self, number: int) -> Path:
        return self.sweep_dir / LOGS_DIR / f"{trial_name(number)}.log"

    def describe(self, number: int, params_overrides: Sequence[str]) -> dict[str, Any]:
        """What `--dry-run` shows for one local trial."""
        return {
            "run_dir": str(trial_run_dir(self.sweep_dir, number)),
            "command": shlex.join(["inflame", *self.command(number, params_overrides, False)[3:]]),
            "threads": self.threads,
        }
