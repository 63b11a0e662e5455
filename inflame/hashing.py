"""sha256 of files and folders: the basis of every manifest and dataset fingerprint."""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from inflame.fingerprint import FingerprintCache

_CHUNK = 1 << 20
# Threads overlap the reads of files that are not in the page cache: twice as fast on 2 cores
# for 100k files of 2-4 KB from disk, about even from memory (benchmarks/fingerprint.py).
HASH_WORKERS = 8
_VANISHED = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP})  # as pathlib
IGNORED_NAMES = frozenset({"__pycache__", ".DS_Store", ".ipynb_checkpoints", ".git"})


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def walk_files(root: Path, ignored: Iterable[str] = IGNORED_NAMES) -> list[tuple[str, str]]:
    """(relative posix name, path) of every regular file below root, sorted as paths sort.
    The files `root.rglob("*")` finds (symlinked folders not entered, unreadable ones
    skipped), less ignored names at any depth and .pyc files; one os.scandir per folder."""
    ignored = frozenset(ignored)
    found: list[tuple[tuple[str, ...], str]] = []
    pending: list[tuple[tuple[str, ...], str]] = [((), str(root))] if root.is_dir() else []
    while pending:
        parts, folder = pending.pop()
        try:
            with os.scandir(folder) as scan:
                entries = list(scan)
        except PermissionError:
            continue
        for entry in entries:
            if entry.name in ignored:
                continue
            if _is(entry.is_dir, follow_symlinks=False):
                pending.append(((*parts, entry.name), entry.path))
            elif _is(entry.is_file) and not _is_pyc(entry.name):
                found.append(((*parts, entry.name), entry.path))
    found.sort()
    return [("/".join(parts), path) for parts, path in found]


def _is(test: Callable[..., bool], **kwargs: bool) -> bool:
    try:
        return test(**kwargs)
    except OSError as exc:
        if exc.errno in _VANISHED:
            return False
        raise


def _is_pyc(name: str) -> bool:
    return name.endswith(".pyc") and len(name) > len(".pyc")  # Path(".pyc").suffix is ""


def iter_files(root: Path, ignored: Iterable[str] = IGNORED_NAMES) -> list[Path]:
    """Every regular file below root, sorted, skipping ignored names at any depth."""
    return [Path(path) for _, path in walk_files(root, ignored)]


def sha256_files(paths: Sequence[str | Path], workers: int | None = None) -> list[str]:
    """sha256 of each file, in order; many files are read by a few threads (HASH_WORKERS),
    in batches."""
    workers = HASH_WORKERS if workers is None else workers
    if workers <= 1 or len(paths) < 2 * workers:
        return [sha256_file(p) for p in paths]
    size = max(1, min(64, len(paths) // (4 * workers)))  # few tasks, still spread over workers
    batches = [paths[i : i + size] for i in range(0, len(paths), size)]
    with ThreadPoolExecutor(workers, thread_name_prefix="inflame-hash") as pool:
        return [digest for batch in pool.map(_sha256_batch, batches) for digest in batch]


def _sha256_batch(paths: Sequence[str | Path]) -> list[str]:
    return [sha256_file(p) for p in paths]


def tree_hashes(root: str | Path, cache: FingerprintCache | None = None) -> dict[str, str]:
    """{relative posix path: sha256} for every file below root. With a cache, files whose
    stat is unchanged since they were last hashed are not read again."""
    root = Path(root)
    if cache is None:
        return {p.relative_to(root).as_posix(): sha256_file(p) for p in iter_files(root)}
    root = root.absolute()  # the cache is keyed by absolute path
    files = walk_files(root)
    digests = cache.sha256s(root, [path for _, path in files], sha256_files)
    return {name: digest for (name, _), digest in zip(files, digests, strict=True)}


def tree_digest(hashes: Mapping[str, str]) -> str:
    """One sha256 for a set of files: order-independent, covers names and contents."""
    lines = "".join(f"{name}\t{digest}\n" for name, digest in sorted(hashes.items()))
    return sha256_bytes(
        lines.encode("utf-8", "surrogateescape")
    )  # names that are not UTF-8: by their bytes
