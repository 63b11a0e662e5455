"""Run directories and their manifests.

A run directory holds the resolved spec (`spec.toml`), `manifest.json` (sha256 of the spec,
the app code, every data file, the environment and every output), `metrics.jsonl`,
`checkpoints/` and the final `model/`.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from inflame import __version__
from inflame.errors import RunError
from inflame.hashing import tree_digest, tree_hashes
from inflame.runtime import MetricsLog

RUNS_ENV = "INFLAME_RUNS_DIR"
MANIFEST = "manifest.json"
SPEC_FILE = "spec.toml"
METRICS_FILE = "metrics.jsonl"
WEIGHTS_PATH = "model/weights.safetensors"
_PACKAGES = ("torch", "torchvision", "numpy", "pillow", "safetensors")


def default_runs_root() -> Path:
    return Path(os.environ.get(RUNS_ENV) or "runs")


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_run_dir(root: Path, job_name: str, spec_sha256: str) -> Path:
    """Create `root/<name>-<YYYYmmdd-HHMMSS>-<spec hash[:6]>` (suffixed if it exists)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = f"{job_name}-{stamp}-{spec_sha256[:6]}"
    root.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 1000):
        candidate = root / (base if attempt == 1 else f"{base}-{attempt}")
        try:
            candidate.mkdir(mode=0o700)  # private: specs and manifests may name secrets
            return candidate
        except FileExistsError:
            continue
    raise RunError(f"Cannot create a run directory under {root}.")


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON to a temporary name and rename it over `path`: a failure (a full disk)
    leaves the previous file, and no temporary one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_manifest(run_dir: Path) -> dict[str, Any]:
    path = run_dir / MANIFEST
    if not path.is_file():
        raise RunError(
            f"{run_dir} is not a run directory (no {MANIFEST}). `inflame runs` lists the runs."
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RunError(f"Cannot read {path}: {exc}.") from None


def environment_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "inflame": __version__,
        "inflame_path": str(Path(__file__).parent),
        "inflame_sha256": tree_digest(tree_hashes(Path(__file__).parent)),
    }
    for package in _PACKAGES:
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = None
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        info["cuda"] = torch.version.cuda
        info["cuda_available"] = torch.cuda.is_available()
        info["torch_threads"] = torch.get_num_threads()
    return info


def hash_data_inputs(
    paths: Mapping[str, Path], listing_notes: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Per input: the identity of every file and one fingerprint; plus one for all inputs.
    Identities are the sha256 of each file (unchanged files come from this machine's
    fingerprint cache), or inside cloud jobs the object store's checksums where a listing
    was adopted (`inflame.data.listing`); `listing_notes` says why an input has none."""
    from inflame.data.listing import content_ids

    inputs: dict[str, Any] = {}
    for name, path in paths.items():
        files, source = content_ids(path)
        inputs[name] = {
            "path": str(path),
            "file_count": len(files),
            "fingerprint": tree_digest(files),
            "checksums": source,
            "files": files,
        }
        if listing_notes and listing_notes.get(name):
            inputs[name]["listing_unused"] = listing_notes[name]
    combined = tree_digest({name: item["fingerprint"] for name, item in inputs.items()})
    return {"inputs": inputs, "fingerprint": combined}


def hash_outputs(run_dir: Path) -> dict[str, str]:
    model_dir = run_dir / "model"
    return tree_hashes(model_dir) if model_dir.is_dir() else {}


@dataclass(frozen=True)
class RunSummary:
    path: Path
    job: str
    created: str
    status: str
    epochs: int
    saved_epoch: int | None  # the epoch whose weights the model holds
    val_accuracy: float | None  # at that epoch
    weights_sha256: str | None
    monitor: str | None = None  # what chose the saved epoch
    problem: str | None = None  # why the run's records cannot be read


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    return MetricsLog(run_dir / METRICS_FILE).read()


def pid_alive(pid: int | None) -> bool:
    """Whether a process with this pid runs on this machine."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_status(manifest: Mapping[str, Any]) -> str:
    """completed, failed, interrupted, running — or stopped (a running run whose process died)."""
    status = manifest.get("status", "unknown")
    if status == "running" and not (
        manifest.get("host") == platform.node() and pid_alive(manifest.get("pid"))
    ):
        return "stopped"
    return status


def summarize(run_dir: Path) -> RunSummary:
    """One run's row; a run whose records cannot be read is listed as `unreadable`."""
    try:
        return _summarize(run_dir)
    except (RunError, OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return RunSummary(
            path=run_dir,
            job="?",
            created="",  # sorts first: never `latest`
            status="unreadable",
            epochs=0,
            saved_epoch=None,
            val_accuracy=None,
            weights_sha256=None,
            problem=reason,
        )


def _summarize(run_dir: Path) -> RunSummary:
    manifest = read_manifest(run_dir)
    epochs = [r for r in read_metrics(run_dir) if "epoch" in r]
    saved = manifest.get("saved") or {}
    at_saved = next((r for r in epochs if r["epoch"] == saved.get("epoch")), {})
    accuracy = at_saved.get("val_accuracy")
    return RunSummary(
        path=run_dir,
        job=manifest.get("job", {}).get("name", "?"),
        created=manifest.get("created", "?"),
        status=run_status(manifest),
        epochs=max((r["epoch"] for r in epochs), default=0),
        saved_epoch=saved.get("epoch"),
        val_accuracy=accuracy if isinstance(accuracy, float) else None,
        weights_sha256=manifest.get("weights_sha256"),
        monitor=saved.get("monitor"),
    )


def list_runs(root: Path) -> list[RunSummary]:
    """Every run under root, oldest first."""
    if not root.is_dir():
        return []
    runs = [summarize(p) for p in root.iterdir() if (p / MANIFEST).is_file()]
    return sorted(runs, key=lambda r: (r.created, r.path.name))


def resolve_run(ref: str | Path, root: Path | None = None) -> Path:
    """A run directory from a path, a run name under the runs root, or `latest`."""
    root = root or default_runs_root()
    if str(ref) == "latest":
        runs = [run for run in list_runs(root) if run.problem is None]
        if not runs:
            raise RunError(f"No runs under {root}. Train one with `inflame train --local SPEC`.")
        return runs[-1].path
    path = Path(ref)
    for candidate in (path, root / path):
        if (candidate / MANIFEST).is_file():
            return candidate
    raise RunError(
        f"Run {ref} not found: no {MANIFEST} in {path} or {root / path}. "
        "`inflame runs` lists the runs."
    )


def lineage(run_dir: Path, limit: int = 100) -> list[dict[str, Any]]:
    """The runs `run_dir` was warm-started from (`inflame train --init-from`), parent first:
    {"run", "job", "weights_sha256", "state"} each, followed through their manifests until a
    run without a parent. state: "ok"; "missing" (the folder is gone: the chain ends there);
    "changed" (its weights are not those its child started from)."""
    chain: list[dict[str, Any]] = []
    seen = {str(Path(run_dir).resolve())}
    parent = read_manifest(run_dir).get("parent") or {}
    while parent and len(chain) < limit and parent.get("run") not in seen:
        seen.add(parent["run"])
        try:
            found = read_manifest(Path(parent["run"]))
        except RunError:
            chain.append({**parent, "state": "missing"})
            break
        same = found.get("weights_sha256") == parent.get("weights_sha256")
        chain.append(
            {
                "run": parent["run"],
                "job": found.get("job", {}).get("name"),
                "weights_sha256": parent.get("weights_sha256"),
                "state": "ok" if same else "changed",
            }
        )
        parent = found.get("parent") or {}
    return chain
