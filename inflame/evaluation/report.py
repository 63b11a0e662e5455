"""`inflame eval`: score a run's model on an image set and write `eval/` in the run:
report.json, results.csv, confusion_matrix.png, reliability.png and a self-contained
report.html. The evaluation is recorded in the run's manifest with the data's fingerprint."""

from __future__ import annotations

import csv
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inflame.errors import DataError

EVAL_DIR = "eval"
REPORT_FILES = (
    "report.json",
    "results.csv",
    "confusion_matrix.png",
    "reliability.png",
    "report.html",
)
WORST_MISTAKES = 12
DEFAULT_INPUTS = ("test", "val")


@dataclass(frozen=True)
class Evaluation:
    out_dir: Path
    report: dict[str, Any]


def eval_data(manifest: dict[str, Any], data: str | None) -> tuple[Path, str | None]:
    """The folder to evaluate on and the run's input name it is (None for another folder):
    `data` names one of the run's data inputs or is a folder; by default the run's test
    input, else its val input."""
    inputs: dict[str, Any] = (manifest.get("data") or {}).get("inputs") or {}
    if data is None:
        name = next((n for n in DEFAULT_INPUTS if n in inputs), None)
        if name is None:
            raise DataError(
                f"The run has no test or val data input (it has: {', '.join(inputs) or 'none'}). "
                "Give the images to evaluate on with `--data DIR` (one sub-folder per class)."
            )
        return _input_folder(name, inputs[name]["path"]), name
    if data in inputs:
        return _input_folder(data, inputs[data]["path"]), data
    folder = Path(data)
    if not folder.is_dir():
        names = ", ".join(inputs) or "none"
        raise DataError(
            f"--data {data!r} is neither one of the run's data inputs ({names}) nor a folder. "
            "Give an input name or a folder with one sub-folder per class."
        )
    return folder, None


def _input_folder(name: str, recorded: str) -> Path:
    folder = Path(recorded)
    if not folder.is_dir():
        raise DataError(
            f"The run's {name!r} input was {recorded}, which is not a folder on this machine (a "
            "cloud run's data stays in the cloud, and a local one may have moved). Give the "
            "images with `--data DIR`."
        )
    return folder


def evaluate_run(
    run_dir: Path,
    data: str | None = None,
    *,
    out_dir: Path | None = None,
    top_k: int = 5,
    batch_size: int = 64,
) -> Evaluation:
    """Score the run's model on `data` and write the report (atomically: a failure leaves
    the previous report, if any, and nothing half-written)."""
    from inflame.data.listing import content_ids
    from inflame.evaluation.metrics import compute_metrics, reliability_bins
    from inflame.evaluation.scoring import score_folder
    from inflame.hashing import sha256_file, tree_digest
    from inflame.predict import Predictor
    from inflame.runlock import RunLock
    from inflame.runs import MANIFEST, read_manifest, utc_now, write_json_atomic

    if top_k < 1:
        raise DataError(f"--top-k must be at least 1, got {top_k}.")
    if batch_size < 1:
        raise DataError(f"--batch-size must be at least 1, got {batch_size}.")
    run_dir = Path(run_dir)
    out_dir = Path(os.path.abspath(out_dir)) if out_dir is not None else run_dir / EVAL_DIR
    _check_out_dir(out_dir)
    with RunLock(run_dir, purpose="evaluating"):
        manifest = read_manifest(run_dir)
        root, input_name = eval_data(manifest, data)
        files, checksums = content_ids(root)
        fingerprint = tree_digest(files)
        predictor = Predictor.from_run(run_dir, device=None)
        scored = score_folder(predictor, root, batch_size)
        metrics = compute_metrics(scored, top_k)
        recorded = ((manifest.get("data") or {}).get("inputs") or {}).get(input_name or "", {})
        report: dict[str, Any] = {
            "run": str(run_dir),
            "created": utc_now(),
            "weights_sha256": manifest.get("weights_sha256"),
            "classes": scored.classes,
            "data": {
                "path": str(root),
                "input": input_name,
                "fingerprint": fingerprint,
                "file_count": len(files),
                "checksums": checksums,
                "changed_since_training": bool(recorded)
                and recorded.get("fingerprint") != fingerprint,
            },
            **metrics,
            "reliability": reliability_bins(scored),
        }
        _write_atomically(out_dir, lambda folder: _write_files(folder, scored, report))
        record = {
            "path": _relative(out_dir, run_dir),
            "created": report["created"],
            "data": {k: report["data"][k] for k in ("path", "input", "fingerprint", "file_count")},
            "accuracy": metrics["accuracy"],
            "loss": metrics["loss"],
            "files": {name: sha256_file(out_dir / name) for name in REPORT_FILES},
        }
        manifest.setdefault("evaluations", {})[record["path"]] = record  # ours: locked
        write_json_atomic(run_dir / MANIFEST, manifest)
    _add_to_mlflow(run_dir, manifest, out_dir, report)
    return Evaluation(out_dir=out_dir, report=report)


def _add_to_mlflow(
    run_dir: Path, manifest: dict[str, Any], out_dir: Path, report: dict[str, Any]
) -> None:
    """The evaluation joins the run's MLflow run, if it has one (a failure only warns)."""
    import sys

    from inflame.tracking import mlflow_runs

    try:
        mlflow_runs.log_evaluation(run_dir, manifest, out_dir, report)
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"warning: the evaluation was not added to MLflow: {reason}", file=sys.stderr)


def _relative(path: Path, run_dir: Path) -> str:
    try:
        return path.absolute().relative_to(run_dir.absolute()).as_posix()
    except ValueError:
        return str(path.absolute())


def _check_out_dir(out_dir: Path) -> None:
    """The report replaces `out_dir` as a whole: it must be new, empty, or a report."""
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(
            f"--out {out_dir} is a file, and the report is a folder. Give a new folder "
            "(or a previous report's, which the new report replaces)."
        )
    found = sorted(p.name for p in out_dir.iterdir()) if out_dir.is_dir() else []
    others = [name for name in found if name not in REPORT_FILES]
    if others:
        shown = ", ".join(others[:3]) + (", …" if len(others) > 3 else "")
        raise DataError(
            f"--out {out_dir} holds files that are not an evaluation report ({shown}), and "
            "the report replaces the whole folder. Give a new folder (or a previous report's)."
        )


def _write_atomically(out_dir: Path, write: Any) -> None:
    """Write into a temporary sibling folder, then swap it in for `out_dir`."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    retired = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        write(staging)
        if out_dir.exists():
            os.replace(out_dir, retired)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if retired.exists() and not out_dir.exists():
            os.replace(retired, out_dir)  # put the previous report back
        raise
    shutil.rmtree(retired, ignore_errors=True)


def _write_files(folder: Path, scored: Any, report: dict[str, Any]) -> None:
    import json

    from inflame.evaluation.html import write_html
    from inflame.evaluation.plots import confusion_matrix_png, reliability_png

    (folder / "report.json").write_text(
        json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )
    probs = scored.probabilities
    predicted = probs.argmax(axis=1)
    with open(folder / "results.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "true_label", "predicted_label", "probability", "correct"])
        for i, image in enumerate(scored.images):
            writer.writerow(
                [
                    image.relative_to(scored.root).as_posix(),
                    scored.classes[scored.labels[i]],
                    scored.classes[predicted[i]],
                    f"{probs[i, predicted[i]]:.6f}",
                    str(bool(predicted[i] == scored.labels[i])).lower(),
                ]
            )
    confusion_matrix_png(
        report["confusion_matrix"], scored.classes, folder / "confusion_matrix.png"
    )
    reliability_png(
        report["reliability"], report["expected_calibration_error"], folder / "reliability.png"
    )
    mistakes = [i for i in range(len(scored.images)) if predicted[i] != scored.labels[i]]
    mistakes.sort(key=lambda i: -probs[i, predicted[i]])  # the most confident first
    worst = [
        {
            "image": scored.images[i],
            "true": scored.classes[scored.labels[i]],
            "predicted": scored.classes[predicted[i]],
            "probability": float(probs[i, predicted[i]]),
        }
        for i in mistakes[:WORST_MISTAKES]
    ]
    curves = Path(report["run"]) / "curves.png"
    write_html(folder, report, worst, curves if curves.is_file() else None)
