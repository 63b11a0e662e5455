"""The local cache folder: work inflame can redo but should not (file fingerprints, decoded
images, frozen-backbone features). Everything here can be deleted at any time.

Location: `$INFLAME_CACHE_DIR`, else `$XDG_CACHE_HOME/inflame`, else `~/.cache/inflame`.
Each kind of cache lives in its own sub-folder (`KINDS`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

CACHE_ENV = "INFLAME_CACHE_DIR"
DISABLE_ENV = "INFLAME_NO_CACHE"  # "1": compute everything again, write nothing
KINDS = {
    "fingerprints": "sha256 of data files, keyed by path, size, mtime and inode",
    "decoded": "images decoded and resized once to the training resolution",
    "features": "a frozen backbone's features per image",
}


def cache_root(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get(CACHE_ENV):
        return Path(env[CACHE_ENV]).expanduser()
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]).expanduser() / "inflame"
    return Path.home() / ".cache" / "inflame"


def cache_enabled(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return env.get(DISABLE_ENV, "") in ("", "0")


def cache_dir(kind: str, env: Mapping[str, str] | None = None) -> Path:
    """The folder of one kind of cache (not created here)."""
    if kind not in KINDS:
        raise ValueError(f"unknown cache kind {kind!r}")
    return cache_root(env) / kind


@dataclass(frozen=True)
class CacheUsage:
    kind: str
    path: Path
    entries: int
    bytes: int


_ENTRY_FILES = {"decoded": "*.u8", "features": "*.safetensors"}


def _bytes(path: Path) -> int:
    if not path.is_dir():
        return 0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _entries(kind: str, path: Path) -> int:
    if not path.is_dir():
        return 0
    if kind == "fingerprints":  # files known, in its SQLite database
        from inflame.fingerprint import FingerprintCache

        return FingerprintCache(path).count()
    return sum(1 for _ in path.glob(_ENTRY_FILES[kind]))


def usage(env: Mapping[str, str] | None = None) -> list[CacheUsage]:
    """Entries (files fingerprinted, data sets decoded, feature sets) and bytes per kind."""
    rows = []
    for kind in KINDS:
        path = cache_dir(kind, env)
        rows.append(CacheUsage(kind, path, _entries(kind, path), _bytes(path)))
    return rows


def clear(kinds: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Delete the given kinds of cache (all by default); return the bytes freed."""
    freed = 0
    for kind in kinds or list(KINDS):
        path = cache_dir(kind, env)
        freed += _bytes(path)
        shutil.rmtree(path, ignore_errors=True)
    return freed
