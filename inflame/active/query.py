"""`inflame query`: score an unlabelled pool of images with a run's model and rank them by how
unsure the model is (active learning's query step).

Strategies (each a score, higher = more worth labelling; ties go by image path):
- `entropy`: the entropy of the class probabilities, -sum(p log p), in nats;
- `margin`: 1 - (p_top1 - p_top2), so the closest calls come first;
- `least_confidence`: 1 - p_top1;
- `random`: uniform draws seeded by `seed` and the pool's fingerprint (the baseline).
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inflame.data.images import UnreadableImage
from inflame.errors import InflameError
from inflame.hashing import sha256_file, sha256_files

STRATEGIES = ("entropy", "margin", "least_confidence", "random")
QUERY_CSV, QUERY_JSON = "query.csv", "query.json"
COLUMNS = ("rank", "image", "score", "predicted_label", "probability")


def uncertainty(probabilities: np.ndarray, strategy: str, seed: int = 0) -> np.ndarray:
    """One score per row of `probabilities` (N, classes): higher = less sure."""
    p = np.asarray(probabilities, dtype=np.float64)
    if strategy == "entropy":
        return -(p * np.log(np.clip(p, 1e-300, 1.0))).sum(axis=1)
    if strategy == "least_confidence":
        return 1.0 - p.max(axis=1)
    if strategy == "margin":
        top2 = np.sort(p, axis=1)[:, -2:]
        return 1.0 - (top2[:, 1] - top2[:, 0])
    if strategy == "random":
        return np.random.default_rng(seed).random(len(p))
    raise InflameError(f"Unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)}.")


@dataclass
class Query:
    """A ranked pool: `rows` in rank order (all scored images), what could not be read, and
    the record of what produced it."""

    rows: list[dict[str, Any]]
    skipped: list[dict[str, str]]
    record: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)  # image (relative) -> its path

    def selected(self) -> list[dict[str, Any]]:
        return self.rows[: self.record["k"]]


def pool_images(pool: Path) -> list[tuple[str, Path]]:
    """(name relative to the pool, path) of every image below `pool`, sorted."""
    from inflame.predict import collect_images

    if not pool.is_dir():
        raise InflameError(f"--pool {pool}: no such folder. Point it at a folder of images.")
    found = [item for item in collect_images([pool]) if item.error is None]
    if not found:
        raise InflameError(f"--pool {pool} holds no images; add some, or point it elsewhere.")
    return [(item.path.relative_to(pool).as_posix(), item.path) for item in found]


def pool_fingerprint(names: Sequence[str], digests: Sequence[str]) -> str:
    """sha256 over the pool's (name, content sha256) pairs: same files, same fingerprint."""
    lines = "".join(f"{name}\0{digest}\n" for name, digest in zip(names, digests, strict=True))
    return hashlib.sha256(lines.encode()).hexdigest()


def query_pool(
    predictor: Any,
    run_dir: Path,
    pool: Path,
    *,
    strategy: str = "entropy",
    k: int = 100,
    seed: int = 0,
    batch_size: int = 32,
) -> Query:
    """Score every image of `pool` with `predictor` and rank them by `strategy`."""
    if strategy not in STRATEGIES:
        raise InflameError(f"--strategy {strategy!r}: use one of {', '.join(STRATEGIES)}.")
    if k < 1:
        raise InflameError(f"--k must be at least 1, got {k}.")
    if seed < 0:
        raise InflameError(f"--seed must be 0 or more, got {seed}.")
    images = pool_images(pool)
    digests = sha256_files([path for _, path in images])
    fingerprint = pool_fingerprint([name for name, _ in images], digests)
    names: list[str] = []
    rows: list[np.ndarray] = []
    skipped: list[dict[str, str]] = []
    for start in range(0, len(images), batch_size):
        decoded, batch_names = [], []
        for name, path in images[start : start + batch_size]:
            try:
                decoded.append(predictor.decode(path))
                batch_names.append(name)
            except UnreadableImage as exc:
                skipped.append({"image": name, "error": str(exc)})
        if decoded:
            rows.extend(predictor.probabilities(decoded))
            names.extend(batch_names)
    if not names:
        raise InflameError(f"--pool {pool}: none of its {len(images)} images could be read.")
    probabilities = np.stack(rows)
    if not np.isfinite(probabilities).all():
        raise InflameError(
            f"The model of {run_dir} answers NaN or infinity: its weights are damaged or its "
            "training diverged; query with another run."
        )
    scores = uncertainty(probabilities, strategy, seed=_random_seed(seed, fingerprint))
    order = sorted(range(len(names)), key=lambda i: (-scores[i], names[i]))
    ranked = []
    for rank, i in enumerate(order, start=1):
        best = int(np.argmax(probabilities[i]))
        ranked.append(
            {
                "rank": rank,
                "image": names[i],
                "score": float(scores[i]),
                "predicted_label": predictor.classes[best],
                "probability": float(probabilities[i][best]),
            }
        )
    manifest = _manifest(run_dir)
    record = {
        "run": str(run_dir),
        "weights_sha256": manifest.get("weights_sha256"),
        "backend": getattr(predictor, "backend", "torch"),
        "pool": str(pool),
        "pool_sha256": fingerprint,
        "pool_images": len(images),
        "scored": len(names),
        "skipped": len(skipped),
        "strategy": strategy,
        "k": min(k, len(names)),
        "seed": seed,
        "classes": list(predictor.classes),
    }
    return Query(ranked, skipped, record, files=dict(images))


def _random_seed(seed: int, fingerprint: str) -> int:
    return seed * 2**64 + int(fingerprint[:16], 16)


def _manifest(run_dir: Path) -> dict[str, Any]:
    from inflame.runs import read_manifest

    return read_manifest(run_dir)


def write_query(query: Query, out: Path, copy_to: Path | None = None) -> list[Path]:
    """query.csv (every scored image, ranked) and query.json (the record, the selection and
    what was skipped) in `out`; with `copy_to`, the selected images copied into
    `copy_to/<predicted label>/` for labelling (the model's guess as a hint), a name that is
    taken getting a suffix. Never overwrites: an existing query in `out` is an error."""
    out.mkdir(parents=True, exist_ok=True)
    for name in (QUERY_CSV, QUERY_JSON):
        if (out / name).exists():
            raise InflameError(
                f"{out / name} exists already; choose another --out (a query is never overwritten)."
            )
    copies: list[tuple[Path, Path]] = []
    planned: set[Path] = set()
    for row in query.selected() if copy_to is not None else ():
        source = query.files[row["image"]]
        name = Path(row["image"])
        target, n = copy_to / row["predicted_label"] / name.name, 1  # type: ignore[operator]
        # a name another selected image takes, or a file with other content: a new name
        while target in planned or (target.exists() and sha256_file(target) != sha256_file(source)):
            target, n = target.with_name(f"{name.stem}-{n}{name.suffix}"), n + 1
        planned.add(target)
        copies.append((source, target))
    temp = out / f".{QUERY_CSV}.tmp"
    with temp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(query.rows)
    temp.replace(out / QUERY_CSV)
    record = {
        **query.record,
        "selected": [row["image"] for row in query.selected()],
        "skipped_images": query.skipped,
        "copied_to": str(copy_to) if copy_to else None,
    }
    temp = out / f".{QUERY_JSON}.tmp"
    temp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    temp.replace(out / QUERY_JSON)
    written = []
    for source, target in copies:
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            shutil.copy2(source, target)
        written.append(target)
    return written
