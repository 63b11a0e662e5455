"""Warm starts (`--init-from RUN`): the parent record a new run's manifest keeps, and how the
parent's model travels into a cloud job (inside the code bundle, under parent/, checked
against the parent's manifest again in the job before the app sees it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from inflame.errors import RunError
from inflame.runs import MANIFEST, read_manifest, resolve_run

PARENT_DIR = "parent"  # in a code bundle: parent/parent.json, parent/manifest.json, parent/model/…
PARENT_RECORD = "parent.json"


def parent_record(init_from: str | Path, runs_root: Path | None = None) -> dict[str, Any]:
    """The manifest's `parent` for a warm start from a finished run (its model verified)."""
    from inflame.predict import verify_model_files

    parent = resolve_run(init_from, runs_root)
    found = read_manifest(parent)
    if found.get("status") != "completed":
        raise RunError(
            f"--init-from {parent} is {found.get('status')}, not completed: a warm start "
            "begins from a finished run's model."
        )
    verify_model_files(parent)
    return {
        "run": str(parent.resolve()),
        "job": found.get("job", {}).get("name"),
        "weights_sha256": found.get("weights_sha256"),
        "parent": (found.get("parent") or {}).get("run"),  # the lineage, one step further
    }


def bundle_members(init_from: str | Path, runs_root: Path | None = None) -> dict[str, bytes]:
    """The files that carry a parent run into a code bundle: its record, its manifest and
    the model files that manifest recorded (nothing else from the run)."""
    record = parent_record(init_from, runs_root)
    run = Path(record["run"])
    outputs = read_manifest(run).get("outputs") or {}
    if not outputs:
        raise RunError(
            f"--init-from {run}: its {MANIFEST} records no model files (outputs), so there is "
            "nothing to start from. Use a run trained by this version of inflame."
        )
    members = {
        f"{PARENT_DIR}/{PARENT_RECORD}": (json.dumps(record, indent=2) + "\n").encode(),
        f"{PARENT_DIR}/{MANIFEST}": (run / MANIFEST).read_bytes(),
    }
    for name in sorted(outputs):
        members[f"{PARENT_DIR}/model/{name}"] = (run / "model" / name).read_bytes()
    return members


def bundled_parent(bundle_dir: Path) -> tuple[dict[str, Any], Path] | None:
    """Inside a job: the parent record and model folder the bundle carries, verified against
    the parent's manifest; None when the job is not a warm start."""
    from inflame.predict import verify_model_files

    folder = bundle_dir / PARENT_DIR
    if not (folder / PARENT_RECORD).is_file():
        return None
    verify_model_files(folder)
    record = json.loads((folder / PARENT_RECORD).read_text(encoding="utf-8"))
    return record, folder / "model"


def job_warm_start(bundle_dir: Path, restarted: bool) -> tuple[dict[str, Any] | None, Path | None]:
    """Inside a job: (the manifest's `parent`, the model folder the app starts from). A job
    the platform `restarted` resumes from its own checkpoint, so it keeps its parent but
    starts from no model; a job without a bundled parent has neither."""
    found = bundled_parent(bundle_dir)
    if found is None:
        return None, None
    return found[0], None if restarted else found[1]
