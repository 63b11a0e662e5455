"""The model archive a managed endpoint loads: the run's model files (checked against the
sha256s the run recorded), the platform's handler and inflame itself, as a deterministic
tar.gz (same run, same bytes, same hash)."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

from inflame.model_files import META_FILE, WEIGHTS_FILE
from inflame.packaging import _add, inflame_source_files, vendored_files
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
    raw = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="", compresslevel=6) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name in sorted(members):
            _add(tar, name, members[name])
    data = raw.getvalue()
    return Archive(data=data, sha256=hashlib.sha256(data).hexdigest(), files=tuple(sorted(members)))
