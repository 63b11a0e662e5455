"""`inflame runs compare`: several runs' hyperparameters and results side by side, and their
training curves in one picture."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inflame.errors import InflameError

# what `compare` shows of each run's results, in order
RESULT_ROWS = (
    "status",
    "epochs",
    "saved epoch",
    "val_accuracy",
    "val_loss",
    "test_accuracy",
    "eval accuracy",
    "weights",
)


@dataclass(frozen=True)
class Comparison:
    runs: list[Path]
    hyperparameters: dict[str, list[Any]]  # name -> value per run (None: not set)
    differing: list[str]  # hyperparameter names whose values differ, in order
    results: dict[str, list[Any]]  # RESULT_ROWS -> value per run


def _results(run_dir: Path) -> dict[str, Any]:
    from inflame.runs import read_manifest, read_metrics, summarize

    summary = summarize(run_dir)
    if summary.problem:
        raise InflameError(f"Run {run_dir} cannot be compared: {summary.problem}.")
    manifest = read_manifest(run_dir)
    records = read_metrics(run_dir)
    at_saved = next((r for r in records if "epoch" in r and r["epoch"] == summary.saved_epoch), {})
    tests = [r["test_accuracy"] for r in records if "test_accuracy" in r]
    evaluations = manifest.get("evaluations") or {}
    latest = max(evaluations.values(), key=lambda e: e["created"], default=None)
    return {
        "status": summary.status,
        "epochs": summary.epochs,
        "saved epoch": summary.saved_epoch,
        "val_accuracy": at_saved.get("val_accuracy"),
        "val_loss": at_saved.get("val_loss"),
        "test_accuracy": tests[-1] if tests else None,
        "eval accuracy": latest["accuracy"] if latest else None,
        "weights": (summary.weights_sha256 or "")[:12] or None,
    }


def compare_runs(run_dirs: Sequence[Path]) -> Comparison:
    """The runs' hyperparameters (union of names, those that differ first) and results."""
    from inflame.runs import read_manifest

    if len(run_dirs) < 2:
        raise InflameError("Give at least two runs to compare.")
    params = [read_manifest(r).get("hyperparameters") or {} for r in run_dirs]
    names = list(dict.fromkeys(name for p in params for name in p))
    table = {name: [p.get(name) for p in params] for name in names}
    differing = [n for n in names if len({json.dumps(v, sort_keys=True) for v in table[n]}) > 1]
    ordered = {n: table[n] for n in [*differing, *(n for n in names if n not in differing)]}
    results = [_results(r) for r in run_dirs]
    return Comparison(
        runs=list(run_dirs),
        hyperparameters=ordered,
        differing=differing,
        results={row: [r[row] for r in results] for row in RESULT_ROWS},
    )


def plot_comparison(run_dirs: Sequence[Path], path: Path) -> Path:
    """Every run's loss and accuracy curves in one picture (labelled by run folder name)."""
    from inflame.evaluation.plots import curves_png
    from inflame.runs import read_metrics

    records = [
        {**record, "run": run.name}
        for run in run_dirs
        for record in read_metrics(run)
        if "epoch" in record
    ]
    if not curves_png(records, path, "Comparison"):
        raise InflameError("None of the runs logged per-epoch losses or accuracies to plot.")
    return path
