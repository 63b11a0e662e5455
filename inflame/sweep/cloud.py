"""Trials as cloud jobs: each submitted through the normal path (plan, ledger, duplicate
guard), followed by polling, and its run downloaded into `SWEEP/trials/trial-NNNN` when it
completes. A cloud trial's metrics arrive with its run, so cloud trials are not pruned;
their epochs still inform the pruner of local trials sharing the study.

The ledger id of each trial's job is kept in the study, so a sweep stopped while jobs run
follows the same jobs when started again, and never submits a trial twice.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inflame.errors import InflameError
from inflame.ledger import JobRecord, Ledger
from inflame.runs import read_metrics
from inflame.submit import download, plan_submission, refresh, still_active, submit_plan
from inflame.sweep.trials import (
    MetricMissing,
    Outcome,
    epoch_values,
    final_value,
    trial_run_dir,
)

DOWNLOAD_TRIES = 3


@dataclass
class _InFlight:
    number: int
    record: JobRecord
    next_poll: float = 0.0
    download_failures: int = 0


class CloudTrials:
    """Submits trial jobs to one target and follows them."""

    def __init__(
        self,
        sweep_dir: Path,
        spec_path: Path,
        overrides: Sequence[str],
        metric: str,
        target: str,
        poll_s: float,
        ledger: Ledger | None = None,
    ):
        self.sweep_dir, self.spec_path = sweep_dir, spec_path
        self.overrides, self.metric, self.target = list(overrides), metric, target
        self.poll_s = poll_s
        self.ledger = ledger or Ledger()
        self.running: dict[int, _InFlight] = {}
        self.ended: list[Outcome] = []  # (none here: every outcome comes from polling)

    def plan(self, params_overrides: Sequence[str]) -> Any:
        return plan_submission(self.spec_path, self.target, [*self.overrides, *params_overrides])

    def submit(self, number: int, params_overrides: Sequence[str]) -> JobRecord:
        """Submit the trial's job (or, when the same job is already in flight, for
        instance submitted by a sweep that died before it could record the id, follow it)."""
        plan = self.plan(params_overrides)
        earlier = self.ledger.duplicates(plan.target, plan.spec_sha256, plan.bundle.sha256)
        live = [r for r in earlier if r.provider_id and still_active(r, self.ledger)]
        record = live[-1] if live else submit_plan(plan, self.ledger)
        self.follow(number, record)
        return record

    def follow(self, number: int, record: JobRecord) -> None:
        self.running[number] = _InFlight(number, record)

    def record(self, ledger_id: int) -> JobRecord:
        return self.ledger.get(ledger_id)

    def progress(self) -> dict[int, dict[int, float]]:
        return {}  # a cloud trial's epochs arrive with its run, in `finished`

    def prune(self, number: int) -> None:  # pragma: no cover - never asked: no progress
        raise InflameError("cloud trials are not pruned")

    def finished(self) -> list[Outcome]:
        done = []
        now = time.monotonic()
        for number, job in list(self.running.items()):
            if job.next_poll > now:
                continue
            job.next_poll = now + self.poll_s
            try:
                state = refresh(job.record, self.ledger)
            except InflameError as exc:  # a transient read error: try again next time
                print(f"warning: trial {number}: {exc}", file=sys.stderr)
                continue
            if not state.terminal:
                continue
            outcome = self._outcome(number, job, state)
            if outcome is not None:
                del self.running[number]
                done.append(outcome)
        return done

    def _outcome(self, number: int, job: _InFlight, state: Any) -> Outcome | None:
        """How the finished job went; None when its run could not be fetched this time
        (tried again at the next polls, DOWNLOAD_TRIES in all)."""
        record, name = job.record, job.record.provider_id
        if state.state != "completed":
            message = f"job {name} ended {state.provider_state}: {state.message}".rstrip(": ")
            return Outcome(number, "failed", error=message)
        run_dir = trial_run_dir(self.sweep_dir, number)
        try:
            if not (run_dir / "manifest.json").is_file():
                download(record, run_dir)
            value = final_value(run_dir, self.metric)
        except MetricMissing as exc:
            return Outcome(number, "failed", error=str(exc), fatal=True)
        except (InflameError, OSError) as exc:
            job.download_failures += 1
            if job.download_failures < DOWNLOAD_TRIES:
                print(f"warning: trial {number}: {exc}; trying again", file=sys.stderr)
                return None
            return Outcome(number, "failed", error=f"job {name} completed, but: {exc}")
        epochs = epoch_values(read_metrics(run_dir), self.metric)
        return Outcome(number, "completed", value=value, epochs=epochs)

    def stop_all(self, why: str, grace_s: float = 0.0) -> list[Outcome]:
        """The jobs keep running in the cloud; the next sweep follows them."""
        self.running.clear()
        return []

    def describe(self, number: int, params_overrides: Sequence[str]) -> dict[str, Any]:
        """What `--dry-run` shows for one cloud trial: the exact request."""
        plan = self.plan(params_overrides)
        return {
            "run_dir": str(trial_run_dir(self.sweep_dir, number)),
            "job_name": plan.job_name,
            "summary": plan.summary,
            "request": plan.rendered,
        }
