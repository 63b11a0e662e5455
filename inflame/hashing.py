"""sha256 of files and folders: the basis of every manifest and dataset fingerprint."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path

_CHUNK = 1 << 20
IGNORED_NAMES = frozenset({"__pycache__", ".DS_Store", ".ipynb_checkpoints", ".git"})


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def iter_files(root: Path, ignored: Iterable[str] = IGNORED_NAMES) -> list[Path]:
    """Every regular file below root, sorted, skipping ignored names at any depth."""
    ignored = frozenset(ignored)
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and not ignored.intersection(p.relative_to(root).parts)
        and p.suffix != ".pyc"
    )


def tree_hashes(root: str | Path) -> dict[str, str]:
    """{relative posix path: sha256} for every file below root."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in iter_files(root)}


def tree_digest(hashes: Mapping[str, str]) -> str:
    """One sha256 for a set of files: order-independent, covers names and contents."""
    lines = "".join(f"{name}\t{digest}\n" for name, digest in sorted(hashes.items()))
    return sha256_bytes(lines.encode())
