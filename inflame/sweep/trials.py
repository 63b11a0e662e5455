"""What the sweep runner and its executors (local processes, cloud jobs) share: where a
trial's run lives, what a trial's run reports, and how a trial ended."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inflame.errors import InflameError, RunError, did_you_mean
from inflame.runs import read_manifest, read_metrics

TRIALS_DIR = "trials"
LOGS_DIR = "logs"


def trial_name(number: int) -> str:
    return f"trial-{number:04d}"


def trial_run_dir(sweep_dir: Path, number: int) -> Path:
    return sweep_dir / TRIALS_DIR / trial_name(number)


@dataclass
class Outcome:
    """How a trial ended: `completed` (with its value), `pruned`, `failed` (with the error)
    or `stopped` (interrupted with the sweep: continued by the next `inflame sweep`)."""

    number: int
    kind: str
    value: float | None = None
    error: str = ""
    epochs: dict[int, float] = field(default_factory=dict)
    fatal: bool = False  # every trial would end so (the metric is not reported): stop


class MetricMissing(InflameError):
    """The sweep's metric is not among what the trial's run reported."""


class MetricsTail:
    """Reads a run's metrics.jsonl as it grows: each call returns the complete new lines."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0

    def new_records(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        records = []
        for line in complete.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records


def epoch_values(records: list[Mapping[str, Any]], metric: str) -> dict[int, float]:
    """{epoch: the metric's value} over the records that report both."""
    found: dict[int, float] = {}
    for record in records:
        value, epoch = record.get(metric), record.get("epoch")
        if isinstance(epoch, int) and _usable(value):
            found[epoch] = float(value)
    return found


def _usable(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def final_value(run_dir: Path, metric: str) -> float:
    """The metric of the model the run kept: its value at the saved epoch, else (a test
    score, say) its last value in the run's records."""
    manifest = read_manifest(run_dir)
    records = read_metrics(run_dir)
    saved = (manifest.get("saved") or {}).get("epoch")
    at_saved = [r for r in records if r.get("epoch") == saved and _usable(r.get(metric))]
    if at_saved:
        return float(at_saved[-1][metric])
    anywhere = [r for r in records if _usable(r.get(metric))]
    if anywhere:
        return float(anywhere[-1][metric])
    reported = sorted({k for r in records for k, v in r.items() if _usable(v) and k != "epoch"})
    raise MetricMissing(
        f"The sweep optimises `{metric}` (sweep.metric), but the trial's run {run_dir} "
        f"reports {', '.join(reported) or 'no numbers'}.{did_you_mean(metric, reported)} "
        "Set sweep.metric to one of them."
    )


def run_state(run_dir: Path) -> tuple[str, str]:
    """(status, error) from a trial's manifest; ("missing", …) when it never started."""
    try:
        manifest = read_manifest(run_dir)
    except RunError as exc:
        return "missing", str(exc)
    return str(manifest.get("status", "unknown")), str(manifest.get("error", ""))
