"""The code bundle every cloud target runs: the app, the resolved spec, inflame itself and
the requirements, as a deterministic tar.gz with a sha256.

Deterministic: sorted entries, fixed mtimes, owners and modes, and a gzip header without a
timestamp, so the same tree gives the same hash (and a provider can skip a second upload).
`.gitignore` and `.inflameignore` in the app folder are honoured (git semantics, via
pathspec); secrets are never included, even when nothing ignores them.

Self-contained: a job installs nothing (network isolation, VPCs without NAT). The bundle
carries inflame and the pure-Python packages the job imports that training images lack
(`vendor/`), and `entry.sh`, the job's first command; the image brings Python, torch,
torchvision, numpy and pillow.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import tarfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import inflame
from inflame.errors import InflameError

if TYPE_CHECKING:  # pragma: no cover
    import pathspec

SECRET_PATTERNS = (
    ".env",
    ".env.*",
    "*.pem",
    "*.key",
    "*.ppk",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    "*credentials*",
    "*service-account*.json",
    "*service_account*.json",
    "*serviceaccount*.json",
    ".aws/",
    ".azure/",
    ".config/gcloud/",
    ".kube/",
    "kubeconfig*",
    ".docker/config.json",
    ".huggingface/",
    ".cache/huggingface/",
    ".git/",
    ".git-credentials",
    ".netrc",
    ".npmrc",
    ".pypirc",
    ".pgpass",
    ".s3cfg",
    ".boto",
    ".databrickscfg",
    ".htpasswd",
    "secrets.toml",
    "secrets.yaml",
    "secrets.yml",
    "secrets.json",
    "*.tfstate",
    "*.tfstate.*",
    "*.tfvars",
    "*.p12",
    "*.pfx",
    "*.jks",
    "*.keystore",
)
# Contents that are a secret whatever the file is called: private keys (PEM, OpenSSH, PuTTY)
# and cloud service-account keys. Only the start of files up to SECRET_SCAN_BYTES is read.
SECRET_CONTENT = re.compile(
    rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----|PuTTY-User-Key-File-"
    rb'|"type"\s*:\s*"service_account"|"private_key"\s*:\s*"-----BEGIN'
)
SECRET_SCAN_BYTES = 1 << 20
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
# Pure-Python distributions the job imports that training images may lack, shipped in
# vendor/ (tomli: TOML on Python 3.10, which some images still run).
VENDORED_DISTRIBUTIONS = ("tomli",)
ENTRY_SCRIPT = Path(__file__).with_name("job_entry.sh")  # becomes the bundle's entry.sh


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
    import pathspec

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
    import pathspec

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
        if secrets.match_file(rel) or _holds_secret(path):
            secret_files.append(path)
        elif not any(
            spec.match_file(path.resolve().relative_to(base).as_posix()) for base, spec in rules
        ):
            keep.append(path)
    return keep, secret_files


def _holds_secret(path: Path) -> bool:
    """Whether the file starts with (or holds, in its first MiB) a private or service key."""
    try:
        with open(path, "rb") as handle:
            return bool(SECRET_CONTENT.search(handle.read(SECRET_SCAN_BYTES)))
    except OSError:
        return False


def _add(tar: tarfile.TarFile, name: str, data: bytes, executable: bool = False) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o755 if executable else 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def deterministic_targz(
    members: dict[str, bytes],
    *,
    executable: Callable[[str], bool] = lambda name: False,
    compresslevel: int = 9,
) -> bytes:
    """A tar.gz of `members` (name -> bytes) that depends on nothing else: sorted entries,
    fixed mtimes, owners and modes, no timestamp in the gzip header."""
    raw = io.BytesIO()
    with (
        gzip.GzipFile(
            fileobj=raw, mode="wb", mtime=0, filename="", compresslevel=compresslevel
        ) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name in sorted(members):
            _add(tar, name, members[name], executable=executable(name))
    return raw.getvalue()


def inflame_source_files() -> list[tuple[str, Path]]:
    """inflame's own package files, as (archive name under vendor/, path)."""
    package_root = Path(inflame.__file__).parent
    files, _ = collect_files(package_root)
    return [(f"vendor/inflame/{p.relative_to(package_root).as_posix()}", p) for p in files]


def vendored_files() -> list[tuple[str, Path]]:
    """The Python sources of VENDORED_DISTRIBUTIONS, as (name under vendor/, path). Only
    `.py` files travel: some wheels (tomli's) add compiled copies of the same modules, which
    would not load on another Python or platform."""
    out = []
    for name in VENDORED_DISTRIBUTIONS:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise InflameError(
                f"The code bundle vendors {name}, which is not installed here; "
                f"`pip install {name}` (it is one of inflame's own requirements)."
            ) from None
        for file in dist.files or ():
            relative = PurePosixPath(str(file))
            if relative.suffix == ".py" and relative.parts[0] != "..":
                out.append((f"vendor/{relative.as_posix()}", Path(dist.locate_file(file))))
    return sorted(out)


def build_bundle(
    app_folder: Path,
    spec_toml: str,
    *,
    exclude: Sequence[Path] = (),
    extra: Mapping[str, bytes] | None = None,
) -> Bundle:
    """The code bundle: app/…, spec.toml, entry.sh, vendor/inflame/…, vendor/<deps>, and
    `extra` members (a warm start's parent/…)."""
    app_files, secret_files = collect_files(app_folder, exclude)
    if not (app_folder / "app.py").is_file():
        raise InflameError(f"{app_folder} has no app.py to package.")
    members: dict[str, bytes] = {}
    for path in app_files:
        members[f"app/{path.relative_to(app_folder).as_posix()}"] = path.read_bytes()
    for name, path in [*inflame_source_files(), *vendored_files()]:
        members[name] = path.read_bytes()
    members["entry.sh"] = ENTRY_SCRIPT.read_bytes()
    members["spec.toml"] = spec_toml.encode()
    for name, content in (extra or {}).items():
        if name in members:
            raise InflameError(f"The code bundle already holds {name}; it cannot be replaced.")
        members[name] = content

    data = deterministic_targz(members, executable=lambda name: name.endswith(".sh"))
    warnings = []
    if (app_folder / "requirements.txt").is_file():
        warnings.append(
            f"{app_folder / 'requirements.txt'} is not installed in cloud jobs: they install "
            "nothing, so that they run without network access. The image brings torch, "
            "torchvision, numpy and pillow; put pure-Python modules beside app.py, or set "
            "the target's `image` to one that has what the app needs"
        )
    unpacked = sum(len(member) for member in members.values())
    if max(len(data), unpacked) > SIZE_WARNING_BYTES:  # compression hides what a job unpacks
        warnings.append(
            f"the code bundle holds {unpacked / 2**20:.0f} MiB of files "
            f"({len(data) / 2**20:.0f} MiB compressed); keep data and weights out of the app "
            "folder (.inflameignore) and pass data as [data] inputs"
        )
    return Bundle(
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        files=tuple(sorted(members)),
        excluded_secrets=tuple(str(p) for p in secret_files),
        warnings=tuple(warnings),
    )


_DRIVE = re.compile(r"^[A-Za-z]:")


def safe_join(root: Path, name: str) -> Path:
    """`root/name` for a name that came from elsewhere (an archive member, an object in a
    bucket). Refuses absolute names, drive letters, backslashes, NUL and `..`, and anything
    that would resolve outside `root` (through a link, say)."""
    parts = PurePosixPath(name).parts
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or "\0" in name
        or _DRIVE.match(name)
        or ".." in parts
    ):
        raise InflameError(
            f"Refusing to write {name!r}: the name would place a file outside {root}."
        )
    root = root.resolve()
    target = (root / name).resolve()
    if not target.is_relative_to(root):
        raise InflameError(f"Refusing to write {name!r}: it resolves outside {root}.")
    return target


MAX_MEMBERS = 100_000
MAX_EXTRACTED_BYTES = 64 * 2**30
MAX_EXPANSION = 200  # extracted bytes per archive byte, above EXPANSION_FLOOR
EXPANSION_FLOOR = 2**30


def safe_extract(archive: Path | bytes, destination: Path) -> list[Path]:
    """Extract a tar(.gz) refusing absolute paths, `..`, links and devices, more than
    MAX_MEMBERS members, and more than MAX_EXTRACTED_BYTES (or, above EXPANSION_FLOOR,
    MAX_EXPANSION times the archive's size): sizes come from the members' headers, read
    before anything is written."""
    destination = destination.resolve()
    packed = len(archive) if isinstance(archive, bytes) else Path(archive).stat().st_size
    source = io.BytesIO(archive) if isinstance(archive, bytes) else open(archive, "rb")  # noqa: SIM115
    with source, tarfile.open(fileobj=source, mode="r:*") as tar:
        members = []
        total = 0
        for member in tar:  # headers only: stops at the first limit, not at the end
            members.append(member)
            total += max(member.size, 0)
            if len(members) > MAX_MEMBERS:
                raise InflameError(
                    f"Refusing to extract: the archive has more than {MAX_MEMBERS:,} members."
                )
            if total > MAX_EXTRACTED_BYTES or (
                total > EXPANSION_FLOOR and total > MAX_EXPANSION * max(packed, 1)
            ):
                raise InflameError(
                    f"Refusing to extract: its members add up to more than {total / 2**30:.1f} "
                    f"GiB from a {packed / 2**20:.1f} MiB archive (an archive bomb, or a model "
                    "far larger than any inflame writes)."
                )
        for member in members:
            if not (member.isfile() or member.isdir()):
                raise InflameError(
                    f"Refusing to extract {member.name!r}: it is not a plain file or folder."
                )
            if member.name not in (".", "./"):
                safe_join(destination, member.name)
        if hasattr(tarfile, "data_filter"):  # Python 3.10.12+, 3.11.4+
            tar.extractall(destination, filter="data")
        else:  # members were checked above
            tar.extractall(destination)
        return [destination / m.name for m in members if m.isfile()]
