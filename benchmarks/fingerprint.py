"""Hashing a data input at the start of a run, with the fingerprint cache, against the full
hash every start and resume did before it, measured in the same run on a synthetic set.

    python benchmarks/fingerprint.py [--files 100000] [--min-kb 2] [--max-kb 4]
                                     [--warm-page-cache] [--repeat 1] [--json PATH]

Cases: the full hash (`tree_hashes(root)`, no cache); a first start, which hashes every file
into an empty cache, with the hashing threads and with one; a second start, which finds every
file in the cache; and, for scale, listing the files alone. Before each case the set's pages
are dropped from the OS page cache (posix_fadvise, no root needed), so that files come from
disk as after a reboot; --warm-page-cache leaves them in memory.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from inflame import fingerprint, hashing
from inflame.fingerprint import FingerprintCache
from inflame.hashing import tree_digest, tree_hashes, walk_files

BASELINE = "full hash, no cache (before)"


def make_set(root: Path, files: int, classes: int, min_kb: int, max_kb: int) -> int:
    """`files` random files in `classes` folders; returns their total size in bytes."""
    rng = random.Random(0)
    total = 0
    for i in range(files):
        folder = root / f"class_{i % classes:04d}"
        if i < classes:
            folder.mkdir(parents=True)
        data = rng.randbytes(rng.randint(min_kb * 1024, max_kb * 1024))
        (folder / f"img_{i:07d}.jpg").write_bytes(data)
        total += len(data)
    return total


def drop_page_cache(root: Path) -> None:
    os.sync()  # dirty pages cannot be dropped
    for _, path in walk_files(root):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def measure(run: Callable[[], tuple[str, int]], root: Path, cold: bool) -> tuple[float, str, int]:
    """(seconds, fingerprint, files read) of one case."""
    if cold:
        drop_page_cache(root)
    start = time.perf_counter()
    digest, read = run()
    return time.perf_counter() - start, digest, read


def full_hash(root: Path) -> tuple[str, int]:
    files = tree_hashes(root)
    return tree_digest(files), len(files)


def cached(root: Path, cache: FingerprintCache, workers: int) -> tuple[str, int]:
    hashing.HASH_WORKERS, before = workers, hashing.HASH_WORKERS
    misses = cache.misses
    try:
        return tree_digest(tree_hashes(root, cache=cache)), cache.misses - misses
    finally:
        hashing.HASH_WORKERS = before


def listing(root: Path) -> tuple[str, int]:
    return "", len(walk_files(root))


def run_cases(root: Path, work: Path, args: argparse.Namespace) -> dict[str, list[tuple]]:
    cold = not args.warm_page_cache
    threads = hashing.HASH_WORKERS
    results: dict[str, list[tuple]] = {}
    for attempt in range(args.repeat):
        warm, serial = (FingerprintCache(work / f"cache-{attempt}-{n}") for n in ("a", "b"))
        cases = {
            BASELINE: partial(full_hash, root),
            f"first start, empty cache ({threads} threads)": partial(cached, root, warm, threads),
            "first start, empty cache (1 thread)": partial(cached, root, serial, 1),
            "second start, warm cache": partial(cached, root, warm, threads),
            "listing the files only (for scale)": partial(listing, root),
        }
        for name, case in cases.items():
            results.setdefault(name, []).append(measure(case, root, cold))
    return results


def report(results: dict[str, list[tuple]], facts: dict, json_path: Path | None) -> None:
    seconds = {name: statistics.median(r[0] for r in runs) for name, runs in results.items()}
    fingerprints = {r[1] for runs in results.values() for r in runs if r[1]}
    assert len(fingerprints) == 1, "the cases disagree on the fingerprint"
    baseline = seconds[BASELINE]
    print(
        f"{facts['files']:,} files, {facts['bytes'] / 1e6:,.0f} MB, page cache "
        f"{facts['page_cache']}, {facts['cpus']} CPUs; cache database "
        f"{facts['cache_db_bytes'] / 1e6:.1f} MB"
    )
    print(f"{'case':<42} {'median s':>9} {'x full hash':>12} {'files read':>11}")
    rows = []
    for name, runs in results.items():
        read = runs[-1][2] if "listing" not in name else 0
        ratio = seconds[name] / baseline
        print(f"{name:<42} {seconds[name]:>9.2f} {ratio:>12.2f} {read:>11,}")
        rows.append({"case": name, "seconds": seconds[name], "x_full_hash": ratio, "read": read})
    if json_path:
        json_path.write_text(json.dumps({**facts, "cases": rows}, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--min-kb", type=int, default=2)
    parser.add_argument("--max-kb", type=int, default=4)
    parser.add_argument("--warm-page-cache", action="store_true")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--dir", type=Path, help="where to make the set (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="inflame-bench-", dir=args.dir))
    try:
        root = work / "data"
        size = make_set(root, args.files, args.classes, args.min_kb, args.max_kb)
        time.sleep(fingerprint.RACY_NS / 1e9)  # files this fresh are hashed on every start
        results = run_cases(root, work, args)
        facts = {
            "files": args.files,
            "bytes": size,
            "page_cache": "warm" if args.warm_page_cache else "dropped before each case",
            "cpus": os.cpu_count(),
            "hash_workers": hashing.HASH_WORKERS,
            "cache_db_bytes": (work / "cache-0-a" / fingerprint.DB_NAME).stat().st_size,
        }
        report(results, facts, args.json)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
