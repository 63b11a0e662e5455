"""The code bundle every cloud target runs: the app, the resolved spec, inflame itself and
the requirements, as a deterministic tar.gz with a sha256.

Deterministic: sorted entries, fixed mtimes, owners and modes, and a gzip header without a
timestamp, so the same tree gives the same hash (and a provider can skip a second upload).
`.gitignore` and `.inflameignore` in the app folder are honoured (git semantics, via
pathspec); secrets are never included, even when nothing ignores them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

import inflame
from inflame.errors import InflameError

SECRET_PATTERNS = (
    ".env",
    ".env.*",
    "*.pem",
    "*.key",
    "id_rsa*",
    "id_ed25519*",
    "*credentials*",
    ".aws/",
    ".azure/",
    ".config/gcloud/",
    ".git/",
    ".netrc",
    ".pypirc",
    "*.p12",
    "*.pfx",
)
ALWAYS_IGNORED = (
    "__pycache__/",
    "*.pyc",
    ".pytest_cache/",
    ".ipynb_checkpoints/",
    ".DS_Store",
    "runs/",
    "*.safetensors.tmp*",
)
IGNORE_FILES = (".gitignore", ".inflameignore")
SIZE_WARNING_BYTES = 100 * 1024 * 1024
# What the job needs on top of the training image (which brings torch and torchvision).
RUNTIME_REQUIREMENTS = (
    "typer>=0.12",
    "rich>=13",
    "safetensors>=0.4",
    "tomli>=2; python_version < '3.11'",
)


@dataclass(frozen=True)
class Bundle:
    data: bytes
    sha256: str
    files: tuple[str, ...]
    excluded_secrets: tuple[str, ...] = field(default=())
    warnings: tuple[str, ...] = field(default=())

    @property
    def size(self) -> int:
        return len(self.data)


def _ignore_specs(root: Path) -> list[tuple[Path, pathspec.PathSpec]]:
    """(base folder, rules) for root's ignore files and, as git does, those of its parent
    folders up to the repository root (the folder holding .git)."""
    specs = [(root.resolve(), pathspec.GitIgnoreSpec.from_lines(ALWAYS_IGNORED))]
    folder = root.resolve()
    while True:
        lines: list[str] = []
        for name in IGNORE_FILES:
            if (folder / name).is_file():
                lines.extend((folder / name).read_text(encoding="utf-8").splitlines())
        if lines:
            specs.append((folder, pathspec.GitIgnoreSpec.from_lines(lines)))
        if (folder / ".git").exists() or folder.parent == folder:
            return specs
        folder = folder.parent


def collect_files(root: Path, exclude: Sequence[Path] = ()) -> tuple[list[Path], list[Path]]:
    """(files to ship, secret files left out) below root, sorted, ignore rules applied.
    Folders in `exclude` (e.g. local data inputs) are left out too."""
    rules = _ignore_specs(root)
    secrets = pathspec.GitIgnoreSpec.from_lines(SECRET_PATTERNS)
    excluded = [p.resolve() for p in exclude]
    keep: list[Path] = []
    secret_files: list[Path] = []
    for path in sorted(root.rglob("*")):
        if path.is_dir() or path.is_symlink():
            continue
        rel = path.relative_to(root).as_posix()
        if any(path.resolve().is_relative_to(folder) for folder in excluded):
            continue
        if secrets.match_file(rel):
            secret_files.append(path)
        elif not any(
            spec.match_file(path.resolve().relative_to(base).as_posix()) for base, spec in rules
        ):
            keep.append(path)
    return keep, secret_files


def _add(tar: tarfile.TarFile, name: str, data: bytes, executable: bool = False) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o755 if executable else 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def inflame_source_files() -> list[tuple[str, Path]]:
    """inflame's own package files, as (archive name under vendor/, path)."""
    package_root = Path(inflame.__file__).parent
    files, _ = collect_files(package_root)
    return [(f"vendor/inflame/{p.relative_to(package_root).as_posix()}", p) for p in files]


def build_bundle(
    app_folder: Path,
    spec_toml: str,
    *,
    exclude: Sequence[Path] = (),
    entries: dict[str, bytes] | None = None,
) -> Bundle:
    """The code bundle: app/…, spec.toml, vendor/inflame/…, requirements.txt (+ entries)."""
    app_files, secret_files = collect_files(app_folder, exclude)
    if not (app_folder / "app.py").is_file():
        raise InflameError(f"{app_folder} has no app.py to package.")
    members: dict[str, bytes] = {}
    for path in app_files:
        members[f"app/{path.relative_to(app_folder).as_posix()}"] = path.read_bytes()
    for name, path in inflame_source_files():
        members[name] = path.read_bytes()
    requirements = list(RUNTIME_REQUIREMENTS)
    app_requirements = app_folder / "requirements.txt"
    if app_requirements.is_file():
        requirements += [
            line
            for line in app_requirements.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
    members["requirements.txt"] = ("\n".join(requirements) + "\n").encode()
    members["spec.toml"] = spec_toml.encode()
    members.update(entries or {})

    raw = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="", compresslevel=9) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name in sorted(members):
            _add(tar, name, members[name], executable=name.endswith(".sh"))
    data = raw.getvalue()
    warnings = []
    if len(data) > SIZE_WARNING_BYTES:
        warnings.append(
            f"the code bundle is {len(data) / 2**20:.0f} MiB; keep data and weights "
            "out of the app folder (.inflameignore) and pass data as [data] inputs"
        )
    return Bundle(
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        files=tuple(sorted(members)),
        excluded_secrets=tuple(str(p) for p in secret_files),
        warnings=tuple(warnings),
    )


def safe_extract(archive: Path | bytes, destination: Path) -> list[Path]:
    """Extract a tar(.gz) refusing absolute paths, `..`, links and devices."""
    destination = destination.resolve()
    source = io.BytesIO(archive) if isinstance(archive, bytes) else open(archive, "rb")  # noqa: SIM115
    written = []
    with source, tarfile.open(fileobj=source, mode="r:*") as tar:
        for member in tar.getmembers():
            target = (destination / member.name).resolve()
            if not target.is_relative_to(destination) or not (member.isfile() or member.isdir()):
                raise InflameError(
                    f"Refusing to extract {member.name!r}: it escapes "
                    f"{destination} or is not a plain file."
                )
        if hasattr(tarfile, "data_filter"):  # Python 3.10.12+, 3.11.4+
            tar.extractall(destination, filter="data")
        else:  # members were checked above
            tar.extractall(destination)
        written = [destination / m.name for m in tar.getmembers() if m.isfile()]
    return written
