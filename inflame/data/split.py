"""Deterministic, stratified train/val/test split of a class-per-folder image set."""

from __future__ import annotations

import math
import os
import random
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from inflame.data.images import is_image_file
from inflame.errors import DataError, InflameError

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class SplitReport:
    destination: Path
    counts: dict[str, dict[str, int]]  # split -> class -> files


def parse_ratios(text: str) -> tuple[float, ...]:
    """`0.8,0.1,0.1` -> (0.8, 0.1, 0.1); two or three non-negative numbers summing to 1."""
    try:
        ratios = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise InflameError(
            f"Invalid --ratios {text!r}: expected numbers like 0.8,0.1,0.1."
        ) from None
    valid = all(math.isfinite(r) and r >= 0 for r in ratios)  # `nan < 0` is False
    if len(ratios) not in (2, 3) or not valid or abs(sum(ratios) - 1) > 1e-6:
        raise InflameError(
            f"Invalid --ratios {text!r}: give 2 or 3 non-negative numbers (train,val[,test]) "
            "that add up to 1, e.g. 0.8,0.1,0.1."
        )
    return ratios


def allocate(n: int, ratios: Sequence[float]) -> list[int]:
    """Split n items by ratios with the largest-remainder method (sums to n exactly)."""
    exact = [n * r for r in ratios]
    counts = [int(x) for x in exact]
    order = sorted(range(len(ratios)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def plan_split(
    source: Path, ratios: Sequence[float], seed: int
) -> dict[str, dict[str, list[Path]]]:
    """split -> class -> files. Each class is shuffled on its own, seeded by (seed, class),
    so adding a class never changes where another class's files go."""
    classes = sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{source} has no class folders (expected {source}/<class>/<images>).")
    plan: dict[str, dict[str, list[Path]]] = {name: {} for name in SPLIT_NAMES[: len(ratios)]}
    for folder in classes:
        files = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p))
        random.Random(f"{seed}/{folder.name}").shuffle(files)
        start = 0
        for name, count in zip(plan, allocate(len(files), ratios), strict=True):
            plan[name][folder.name] = files[start : start + count]
            start += count
    return plan


def split_dataset(
    source: str | Path, destination: str | Path, ratios: Sequence[float], seed: int = 0
) -> SplitReport:
    """Copy SRC/<class>/* into DST/{train,val,test}/<class>/. Refuses to overwrite; builds
    the result in a temporary folder beside DST and renames it, so nothing is half-written."""
    source, destination = Path(source), Path(destination)
    if not source.is_dir():
        raise DataError(f"Source folder {source} does not exist or is not a directory.")
    inside = destination.resolve()
    if inside == source.resolve() or inside.is_relative_to(source.resolve()):
        raise DataError(
            f"Destination {destination} is inside the source {source}: the split would copy "
            "its own output (as a class folder) on the next run. Choose a folder outside it."
        )
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise DataError(
            f"Destination {destination} already exists and is not empty; "
            "refusing to overwrite. Choose a new folder or remove it first."
        )
    plan = plan_split(source, ratios, seed)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-", dir=destination.parent))
    try:
        counts: dict[str, dict[str, int]] = {}
        for split, classes in plan.items():
            counts[split] = {}
            for cls, files in classes.items():
                target = staging / split / cls
                target.mkdir(parents=True, exist_ok=True)
                for file in files:
                    rel = file.relative_to(source / cls)
                    (target / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(file, target / rel)
                counts[split][cls] = len(files)
        os.replace(staging, destination)  # an empty destination folder is replaced too
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return SplitReport(destination=destination, counts=counts)
