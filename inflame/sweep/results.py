"""A sweep's results: the summary table (best first), the `best` link to the best trial's
run, and the plots (optimisation history, parameter importance, parallel coordinates).

`inflame sweep show DIR` reads them back from the study; they are rewritten after every
sweep, each file replaced whole.
"""

from __future__ import annotations

import csv
import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inflame.errors import InflameError
from inflame.redact import redact_url_password
from inflame.runs import write_json_atomic
from inflame.sweep.trials import TRIALS_DIR, trial_name, trial_run_dir

SUMMARY_CSV = "summary.csv"
SUMMARY_JSON = "summary.json"
BEST_LINK = "best"
PLOTS_DIR = "plots"
PLOTS = ("optimization_history", "param_importances", "parallel_coordinate")


@dataclass(frozen=True)
class Best:
    number: int
    value: float
    run_dir: Path
    params: dict[str, Any]


def trial_rows(sweep_dir: Path, study: Any) -> list[dict[str, Any]]:
    """One row per trial: best first (completed, by the objective), then pruned, running
    and failed ones."""
    from inflame.sweep.runner import ERROR_ATTR

    maximize = study.direction.name.lower() == "maximize"
    rows = []
    for trial in study.get_trials(deepcopy=False):
        steps = trial.intermediate_values
        run_dir = trial_run_dir(sweep_dir, trial.number)
        rows.append(
            {
                "trial": trial.number,
                "state": trial.state.name.lower(),
                "value": trial.value if trial.state.name == "COMPLETE" else None,
                "epochs": max(steps) if steps else None,
                "last_reported": steps[max(steps)] if steps else None,
                "params": dict(trial.params),
                "run_dir": str(run_dir) if run_dir.is_dir() else None,
                "error": trial.user_attrs.get(ERROR_ATTR, ""),
            }
        )
    order = {"complete": 0, "pruned": 1, "running": 2, "waiting": 3, "fail": 4}

    def key(row: dict[str, Any]) -> tuple:
        value = row["value"]
        rank = 0.0 if value is None else (-value if maximize else value)
        return (order.get(row["state"], 5), rank, row["trial"])

    return sorted(rows, key=key)


def best_trial(sweep_dir: Path, study: Any) -> Best | None:
    rows = [r for r in trial_rows(sweep_dir, study) if r["state"] == "complete"]
    if not rows:
        return None
    top = rows[0]
    return Best(top["trial"], top["value"], trial_run_dir(sweep_dir, top["trial"]), top["params"])


def write_results(sweep_dir: Path, study: Any) -> Best | None:
    """summary.csv and summary.json (best first), the `best` link, and the plots."""
    rows = trial_rows(sweep_dir, study)
    names = sorted({name for row in rows for name in row["params"]})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["trial", "state", "value", "epochs", *names, "run_dir", "error"])
    for row in rows:
        writer.writerow(
            [
                row["trial"],
                row["state"],
                "" if row["value"] is None else repr(row["value"]),
                row["epochs"] or "",
                *(row["params"].get(n, "") for n in names),
                row["run_dir"] or "",
                row["error"],
            ]
        )
    _replace(sweep_dir / SUMMARY_CSV, buffer.getvalue())
    best = best_trial(sweep_dir, study)
    write_json_atomic(
        sweep_dir / SUMMARY_JSON,
        {
            "direction": study.direction.name.lower(),
            "best": None
            if best is None
            else {
                "trial": best.number,
                "value": best.value,
                "params": best.params,
                "run_dir": str(best.run_dir),
            },
            "trials": rows,
        },
    )
    _link_best(sweep_dir, best)
    draw_plots(study, sweep_dir / PLOTS_DIR)
    return best


def _replace(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def _link_best(sweep_dir: Path, best: Best | None) -> None:
    """`SWEEP/best` -> trials/trial-NNNN (replaced atomically), for `predict --run`."""
    link = sweep_dir / BEST_LINK
    if best is None or not (best.run_dir / "manifest.json").is_file():
        return
    temporary = sweep_dir / f".{BEST_LINK}.{os.getpid()}.tmp"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(Path(TRIALS_DIR) / trial_name(best.number), target_is_directory=True)
    os.replace(temporary, link)


def draw_plots(study: Any, folder: Path) -> dict[str, str]:
    """Optuna's matplotlib plots as PNGs; a plot that needs more finished trials than
    there are is left out (and an old one removed). Returns {plot: why not drawn}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.importance import PedAnovaImportanceEvaluator
    from optuna.visualization import matplotlib as optuna_plots

    folder.mkdir(parents=True, exist_ok=True)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    skipped: dict[str, str] = {}
    drawers = {
        "optimization_history": lambda: optuna_plots.plot_optimization_history(study),
        "param_importances": lambda: optuna_plots.plot_param_importances(
            study, evaluator=PedAnovaImportanceEvaluator()
        ),
        "parallel_coordinate": lambda: optuna_plots.plot_parallel_coordinate(study),
    }
    needs = {"optimization_history": 1, "param_importances": 2, "parallel_coordinate": 2}
    for name, draw in drawers.items():
        path = folder / f"{name}.png"
        if len(complete) < needs[name]:
            skipped[name] = f"needs {needs[name]} completed trials"
            path.unlink(missing_ok=True)
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = draw()
            figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
            figure.set_size_inches(8, 5)
            temporary = folder / f".{name}.{os.getpid()}.tmp.png"
            figure.savefig(temporary, dpi=100, bbox_inches="tight")
            plt.close(figure)
            os.replace(temporary, path)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            skipped[name] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            path.unlink(missing_ok=True)
    return skipped


def load_sweep(sweep_dir: Path, storage: str | None = None) -> tuple[dict[str, Any], Any]:
    """The sweep's record (sweep.json) and its study, to show."""
    from inflame.sweep.runner import SWEEP_FILE
    from inflame.sweep.study import import_optuna, rdb_storage

    record_path = sweep_dir / SWEEP_FILE
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InflameError(
            f"{sweep_dir} is not a sweep folder (no {SWEEP_FILE}). `inflame sweep SPEC` "
            "makes one (under sweeps/<job name>, or --out DIR)."
        ) from None
    except (OSError, ValueError) as exc:
        raise InflameError(f"Cannot read {record_path}: {exc}.") from None
    url = storage or record.get("storage", "")
    if "***" in url:
        raise InflameError(
            f"The sweep's storage needs a password, which is not stored: pass it with "
            f"--storage (the URL was {url})."
        )
    optuna = import_optuna()
    shown = redact_url_password(url)
    try:
        study = optuna.load_study(study_name=record["study"], storage=rdb_storage(url))
    except Exception as exc:  # Optuna's, or SQLAlchemy's (a bad URL, a missing driver…)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InflameError(f"Cannot open the study of {sweep_dir} in {shown}: {first}") from None
    return record, study
