"""The model archive a managed endpoint loads: the run's model files (checked against the
sha256s the run recorded), the platform's handler and inflame itself, as a deterministic
tar.gz (same run, same bytes, same hash)."""

from __future__ import annotations

import hashlib
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


def build_archive(run_dir: Path, handler: Path, handler_name: str, code: str) -> Archive:
    """model/{model.json, weights} + `handler` as `handler_name` + inflame and its pure-Python
    dependencies under `code`/."""
    verify_model_files(run_dir)
    members: dict[str, bytes] = {
        f"model/{name}": (run_dir / "model" / name).read_bytes()
        for name in (META_FILE, WEIGHTS_FILE)
    }
    members[handler_name] = handler.read_bytes()
    for name, path in [*inflame_source_files(), *vendored_files()]:
        members[f"{code}/{name.removeprefix('vendor/')}"] = path.read_bytes()
    data = deterministic_targz(members, compresslevel=6)
    return Archive(data=data, sha256=hashlib.sha256(data).hexdigest(), files=tuple(sorted(members)))
