"""The model archive a managed endpoint loads: the run's model files (checked against the
sha256s the run recorded), the platform's handler and inflame itself, deterministic (same
run, same bytes, same hash): a tar.gz for SageMaker, a TorchServe model archive (`.mar`, a
zip) for Vertex AI's PyTorch prediction image."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

from inflame.model_files import META_FILE, WEIGHTS_FILE
from inflame.packaging import deterministic_targz, inflame_source_files, vendored_files
from inflame.predict import verify_model_files


@dataclass(frozen=True)
class Archive:
    data: bytes
    sha256: str
    files: tuple[str, ...]


def _members(run_dir: Path, handler: Path, handler_name: str, code: str) -> dict[str, bytes]:
    """model/{model.json, weights} + `handler` as `handler_name` + inflame and its pure-Python
    dependencies under `code` ("" for the archive's root)."""
    verify_model_files(run_dir)
    members: dict[str, bytes] = {
        f"model/{name}": (run_dir / "model" / name).read_bytes()
        for name in (META_FILE, WEIGHTS_FILE)
    }
    members[handler_name] = handler.read_bytes()
    prefix = f"{code}/" if code else ""
    for name, path in [*inflame_source_files(), *vendored_files()]:
        members[prefix + name.removeprefix("vendor/")] = path.read_bytes()
    return members


def _archive(data: bytes, members: dict[str, bytes]) -> Archive:
    return Archive(data=data, sha256=hashlib.sha256(data).hexdigest(), files=tuple(sorted(members)))


def build_archive(run_dir: Path, handler: Path, handler_name: str, code: str) -> Archive:
    """A tar.gz of the model, `handler` as `handler_name`, and inflame under `code`/."""
    members = _members(run_dir, handler, handler_name, code)
    return _archive(deterministic_targz(members, compresslevel=6), members)


MAR_MODEL_NAME = "model"  # Vertex's prebuilt PyTorch images load `model.mar` as model "model"


def mar_manifest(handler_name: str) -> dict[str, object]:
    """MAR-INF/MANIFEST.json as torch-model-archiver writes it (no creation time: the archive
    stays deterministic)."""
    return {
        "runtime": "python",
        "model": {
            "modelName": MAR_MODEL_NAME,
            "handler": handler_name,
            "modelVersion": "1.0",
        },
        "modelServerVersion": "1.0",
        "implementationVersion": "1.0",
        "specificationVersion": "1.0",
    }


def build_mar(run_dir: Path, handler: Path) -> Archive:
    """A TorchServe model archive: the handler as `handler.py` and inflame at the root (the
    unpacked archive is on the handler's import path), the model under `model/`."""
    members = _members(run_dir, handler, "handler.py", "")
    members["MAR-INF/MANIFEST.json"] = json.dumps(mar_manifest("handler.py"), indent=2).encode()
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w") as archive:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, members[name], compresslevel=6)
    return _archive(raw.getvalue(), members)
