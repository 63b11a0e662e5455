"""The decode cache: every image of a data set decoded once, resized to the training
resolution and stored as uint8 in one memory-mapped file, reused by later epochs and
later runs.

An entry is keyed by the content (sha256) of every image, its label, and the decode
settings, so changing a file or a setting makes a new entry. The stored step is the
deterministic part of preprocessing (`decode_image`): the same function runs when the
cache is off, so a cached run and an uncached one see the same pixels. Entries are
written under a lock (one process decodes, the others wait and reuse), renamed into
place when complete, and evicted oldest-first above `INFLAME_CACHE_MAX_GB`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inflame.cache import cache_dir, cache_enabled
from inflame.data.images import Sample, UnreadableImage, open_image
from inflame.errors import InflameError
from inflame.hashing import sha256_file
from inflame.runlock import locked

FORMAT = 3  # 3: EXIF orientation applied, 16-bit images scaled (not clipped)
MAX_GB_ENV = "INFLAME_CACHE_MAX_GB"
DEFAULT_MAX_GB = 50.0
IN_USE_S = 3600  # entries used this recently are never evicted (a run may be reading them)
STALE_TMP_S = 86400  # a temporary file this old belongs to a builder that was killed


def decode_image(path: Path, side: int, max_pixels: int, data: bytes | None = None) -> np.ndarray:
    """Open an image (the file, or `data` named `path`), resize its shorter side to `side`
    (PIL, antialiased bilinear) and crop the centre square: uint8, shape (3, side, side)."""
    return decode_pil(open_image(path, max_pixels, data), side)


def decode_pil(image: Any, side: int) -> np.ndarray:
    """`decode_image` for an RGB PIL image already open."""
    from PIL import Image

    width, height = image.size
    scale = side / min(width, height)
    size = (max(side, round(width * scale)), max(side, round(height * scale)))
    image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=None)
    left, top = (size[0] - side) // 2, (size[1] - side) // 2
    image = image.crop((left, top, left + side, top + side))
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy()


def max_cache_bytes(env: dict[str, str] | None = None) -> int:
    """The decode cache's size limit: $INFLAME_CACHE_MAX_GB gigabytes (default 50)."""
    env = dict(os.environ) if env is None else env
    given = env.get(MAX_GB_ENV) or str(DEFAULT_MAX_GB)
    try:
        gigabytes = float(given)
    except ValueError:
        gigabytes = math.nan
    if not math.isfinite(gigabytes) or gigabytes < 0:
        raise InflameError(
            f"{MAX_GB_ENV}={given!r} is not a size in gigabytes. Give one (e.g. "
            f"{MAX_GB_ENV}=20; 0 turns the decode cache off), or unset it for {DEFAULT_MAX_GB:g}."
        )
    return int(gigabytes * 1024**3)


@dataclass(frozen=True)
class Entry:
    """One complete cache entry: the array file and its metadata."""

    array: Path
    meta: dict[str, Any]

    @property
    def kept(self) -> list[int]:
        """Indices (into the samples it was built from) of the images stored, in order."""
        return self.meta["kept"]

    @property
    def bad(self) -> list[tuple[str, str]]:
        """(path relative to the data root, reason) of each unreadable image."""
        return [tuple(item) for item in self.meta["bad"]]  # type: ignore[misc]

    def open(self) -> np.memmap:
        side = self.meta["side"]
        return np.memmap(self.array, np.uint8, "r", shape=(len(self.kept), 3, side, side))


def entry_key(
    root: Path, samples: Sequence[Sample], digests: dict[str, str], side: int, max_pixels: int
) -> str:
    """sha256 over the decode settings and every sample's content and label."""
    from PIL import __version__ as pillow

    settings = f"inflame.decoded/{FORMAT} side={side} max={max_pixels} pillow={pillow}\n"
    digest = hashlib.sha256(settings.encode())
    for sample in samples:
        name = sample.path.relative_to(root).as_posix()
        content = digests.get(name) or sha256_file(sample.path)
        digest.update(f"{content}\t{sample.label}\n".encode())
    return digest.hexdigest()


def find_entry(key: str) -> Entry | None:
    folder = cache_dir("decoded")
    meta_path = folder / f"{key}.json"
    array = folder / f"{key}.u8"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    side = meta.get("side", 0)
    if meta.get("format") != FORMAT or not array.is_file():
        return None
    if array.stat().st_size != len(meta["kept"]) * 3 * side * side:
        return None  # damaged: rebuilt
    with contextlib.suppress(OSError):
        os.utime(meta_path)  # last use, for eviction
    return Entry(array, meta)


def _decode_all(
    samples: Sequence[Sample], side: int, max_pixels: int
) -> Iterator[tuple[int, np.ndarray | str]]:
    """(index, pixels or the reason the image is unreadable), in order, on a few threads
    (PIL releases the GIL while decoding and resizing)."""

    def one(sample: Sample) -> np.ndarray | str:
        try:
            return decode_image(sample.path, side, max_pixels)
        except UnreadableImage as exc:
            return str(exc).removeprefix(f"{sample.path}: ")

    workers = min(8, max(1, (os.cpu_count() or 1)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        yield from enumerate(pool.map(one, samples, chunksize=16))


def build_entry(
    key: str, root: Path, samples: Sequence[Sample], side: int, max_pixels: int
) -> Entry | None:
    """Decode every sample into a new entry (or return the one another process just
    finished). None when the entry would not fit the cache's size limit or the disk."""
    with locked(cache_dir("decoded") / f"{key}.lock"):
        found = find_entry(key)
        if found is not None:
            return found
        folder = cache_dir("decoded")
        need = len(samples) * 3 * side * side
        free = shutil.disk_usage(folder).free
        if need > max_cache_bytes() or need > free - (1 << 30):
            print(
                f"note: not caching the decoded images of {root} ({need / 1024**3:.1f} GB: "
                f"above {MAX_GB_ENV} or the free disk space); they are decoded every epoch",
                file=sys.stderr,
            )
            return None
        print(f"decoding {len(samples):,} images of {root} once, into the cache", file=sys.stderr)
        tmp = folder / f".{key}.u8.tmp-{os.getpid()}"
        kept: list[int] = []
        bad: list[tuple[str, str]] = []
        try:
            with open(tmp, "wb") as out:
                for index, result in _decode_all(samples, side, max_pixels):
                    if isinstance(result, str):
                        name = samples[index].path.relative_to(root).as_posix()
                        bad.append((name, result))
                        continue
                    out.write(result.tobytes())
                    kept.append(index)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, folder / f"{key}.u8")
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        meta = {"format": FORMAT, "root": str(root), "side": side, "kept": kept, "bad": bad}
        meta_tmp = folder / f".{key}.json.tmp-{os.getpid()}"
        meta_tmp.write_text(json.dumps(meta), encoding="utf-8")
        os.replace(meta_tmp, folder / f"{key}.json")
    evict(keep=key)
    return Entry(folder / f"{key}.u8", meta)


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:  # removed by another process meanwhile
        return None


def evict(keep: str | None = None, limit: int | None = None) -> int:
    """Delete the least recently used entries until the cache fits its limit, sparing
    entries used in the last hour (a run may be reading them); also delete temporary
    files of builders killed long ago. Returns the bytes freed."""
    folder = cache_dir("decoded")
    limit = max_cache_bytes() if limit is None else limit
    now = time.time()
    freed = 0
    for tmp in folder.glob(".*.tmp-*"):
        info = _stat(tmp)
        if info is not None and now - info.st_mtime > STALE_TMP_S:
            tmp.unlink(missing_ok=True)
            freed += info.st_size
    entries = []
    for meta in folder.glob("*.json"):
        meta_info, array_info = _stat(meta), _stat(meta.with_suffix(".u8"))
        if meta_info is not None:
            size = array_info.st_size if array_info is not None else 0
            entries.append((meta_info.st_mtime, meta.stem, size))
    total = sum(size for _, _, size in entries)
    for last_used, key, size in sorted(entries):
        if total <= limit:
            break
        if key == keep or now - last_used < IN_USE_S:
            continue
        for suffix in (".json", ".u8"):  # lock files stay: a holder may be waiting on one
            (folder / f"{key}{suffix}").unlink(missing_ok=True)
        total -= size
        freed += size
    return freed


def cached_images(
    root: Path, samples: Sequence[Sample], side: int, max_pixels: int
) -> tuple[str | None, Entry | None]:
    """The key of these samples at this side, and their cache entry (built if missing);
    (None, None) when the cache is off (`INFLAME_NO_CACHE=1`), (key, None) when the
    entry would not fit."""
    if not cache_enabled():
        return None, None
    from inflame.data.listing import content_ids

    digests, _ = content_ids(root)
    key = entry_key(root, samples, digests, side, max_pixels)
    try:
        return key, find_entry(key) or build_entry(key, root, samples, side, max_pixels)
    except OSError as exc:  # an unwritable cache folder or a full disk costs the cache only
        print(
            f"warning: the decode cache in {cache_dir('decoded')} cannot be used ({exc}); "
            "decoding the images every epoch",
            file=sys.stderr,
        )
        return key, None
