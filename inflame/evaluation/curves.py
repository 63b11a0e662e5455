"""`curves.png` in every finished run: loss and accuracy per epoch, from metrics.jsonl."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

CURVES_FILE = "curves.png"


def draw_curves(run_dir: Path, title: str, saved_epoch: int | None = None) -> dict[str, Any]:
    """Draw RUN/curves.png; returns the manifest's record of it: {"path", "sha256"}, {} when
    the run logged no epochs, or {"error"} when it could not be drawn. Never fails the run
    (an image without matplotlib, a full disk): the run's results matter more."""
    from inflame.hashing import sha256_file
    from inflame.runs import read_metrics

    target = run_dir / CURVES_FILE
    staging = target.with_name(f".{CURVES_FILE}.tmp-{os.getpid()}")
    try:
        from inflame.evaluation.plots import curves_png

        epochs = [r for r in read_metrics(run_dir) if "epoch" in r]
        if not curves_png(epochs, staging, title, saved_epoch):
            return {}
        os.replace(staging, target)
        return {"path": CURVES_FILE, "sha256": sha256_file(target)}
    except ImportError as exc:  # a cloud image without matplotlib: drawn on download
        print(
            f"note: {CURVES_FILE} not drawn here ({exc}); `inflame download` draws it",
            file=sys.stderr,
        )
        return {"error": f"not drawn in the job: {exc}"}
    except Exception as exc:  # a picture must not fail a finished run
        reason = f"{type(exc).__name__}: {exc}"
        print(f"warning: {target} not drawn ({reason})", file=sys.stderr)
        return {"error": reason}
    finally:
        staging.unlink(missing_ok=True)


def draw_missing_curves(run_dir: Path) -> None:
    """Draw curves.png of a downloaded cloud run whose job could not (and record it)."""
    from inflame.runs import MANIFEST, read_manifest, write_json_atomic

    if (run_dir / CURVES_FILE).exists() or not (run_dir / MANIFEST).is_file():
        return
    manifest = read_manifest(run_dir)
    saved = manifest.get("saved") or {}
    curves = draw_curves(run_dir, manifest.get("job", {}).get("name", ""), saved.get("epoch"))
    if curves.get("path"):
        manifest["curves"] = {**curves, "drawn": "on download"}
        write_json_atomic(run_dir / MANIFEST, manifest)
