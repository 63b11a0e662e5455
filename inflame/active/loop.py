"""`inflame loop`: rounds of active learning on this machine. Train; query the unlabelled pool
with the model; label the selection from an oracle (a folder of the same images sorted into
class folders: the people who label, simulated); import the labels; retrain from the last
model (a warm start). Writes the learning curve: labelled images against validation accuracy.

The spec's training set and the pool are copied into the loop's folder first: the loop adds
to and takes from its copies, never the originals.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inflame.active.labels import import_labels
from inflame.active.query import STRATEGIES, pool_images, query_pool, write_query
from inflame.data.images import is_image_file, is_junk
from inflame.errors import InflameError
from inflame.hashing import sha256_file

CURVE_CSV, CURVE_PNG, LOOP_JSON = "curve.csv", "curve.png", "loop.json"
CURVE_COLUMNS = ("round", "labelled", "added", "val_accuracy", "run", "strategy")


def oracle_labels(oracle: Path) -> dict[str, str]:
    """sha256 of each image under oracle/<class>/ -> its class."""
    if not oracle.is_dir():
        raise InflameError(f"--oracle {oracle}: no such folder.")
    labels: dict[str, str] = {}
    for folder in sorted(p for p in oracle.iterdir() if p.is_dir() and not is_junk(p.name)):
        for path in sorted(folder.rglob("*")):
            if path.is_file() and is_image_file(path):
                digest = sha256_file(path)
                if labels.get(digest, folder.name) != folder.name:
                    raise InflameError(
                        f"--oracle {oracle}: {path} is also labelled {labels[digest]}; an "
                        "image has one true class."
                    )
                labels[digest] = folder.name
    if not labels:
        raise InflameError(f"--oracle {oracle} holds no class folders of images.")
    return labels


def _count_images(folder: Path) -> int:
    return sum(
        1
        for p in folder.rglob("*")
        if p.is_file()
        and is_image_file(p)
        and not any(is_junk(part) for part in p.relative_to(folder).parts)
    )


def run_loop(
    spec_path: Path,
    *,
    pool: Path,
    oracle: Path,
    rounds: int,
    k: int,
    strategy: str = "entropy",
    out: Path | None = None,
    overrides: Sequence[str] = (),
    seed: int = 0,
    target: str | None = None,
    data_uri: str | None = None,
    poll_s: float = 15.0,
) -> tuple[Path, list[dict[str, Any]]]:
    """Run the loop; returns its folder and the learning curve's rows (one per training).
    With `target`, every training runs as a cloud job there, reading its data from under
    `data_uri` (`CloudRounds`); the querying and labelling stay here."""
    from inflame.launcher import train_local
    from inflame.predict import Predictor
    from inflame.spec import load_spec

    if rounds < 1 or k < 1:
        raise InflameError(f"--rounds and --k must be at least 1 (got {rounds} and {k}).")
    if strategy not in STRATEGIES:
        raise InflameError(f"--strategy {strategy!r}: use one of {', '.join(STRATEGIES)}.")
    if (target is None) != (data_uri is None):
        raise InflameError(
            "--target and --data-uri go together: the rounds' jobs read the training set "
            "the loop uploads to --data-uri. Give both, or neither to train here."
        )
    spec = load_spec(spec_path, list(overrides))
    if "train" not in spec.data or not spec.data["train"].is_local:
        raise InflameError(
            f"{spec.path}: the loop needs a local `train` folder under [data]: it adds the "
            "labelled images to a copy of it (with --target, uploaded every round)."
        )
    source = spec.data["train"].path
    out = out or Path("loops") / f"{spec.job.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    for name, folder in (("the spec's train folder", source), ("--pool", pool)):
        if not folder.is_dir():
            raise InflameError(f"{name} {folder}: no such folder.")
    for name, folder in (("train", source), ("--pool", pool), ("--oracle", oracle)):
        if out.resolve().is_relative_to(folder.resolve()):
            raise InflameError(f"--out {out} is inside {name} {folder}; put it elsewhere.")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InflameError(f"--out {out} exists and is not an empty folder; choose a new one.")
    cloud = None
    if target is not None and data_uri is not None:
        from inflame.active.cloud import CloudRounds

        cloud = CloudRounds(
            spec_path, target, data_uri, out, overrides, exclude=(pool, oracle), poll_s=poll_s
        )
    labels = oracle_labels(oracle)
    unlabelled = [name for name, path in pool_images(pool) if sha256_file(path) not in labels]
    if unlabelled:
        raise InflameError(
            f"--oracle {oracle} has no label for {len(unlabelled)} pool image(s) (first: "
            f"{unlabelled[0]}): the oracle must hold every pool image in its class folder."
        )
    train, work_pool = out / "train", out / "pool"
    shutil.copytree(source, train)
    shutil.copytree(pool, work_pool)
    record = {
        "spec": str(spec.path),
        "pool": str(pool),
        "oracle": str(oracle),
        "rounds": rounds,
        "k": k,
        "strategy": strategy,
        "seed": seed,
        **(cloud.describe() if cloud is not None else {}),
    }
    (out / LOOP_JSON).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    rows: list[dict[str, Any]] = []
    parent: Path | None = None
    added = 0
    for index in range(rounds + 1):
        run_dir = out / "runs" / f"round-{index}"
        if cloud is not None:
            manifest = cloud(index, train, parent, run_dir)
        else:
            manifest = train_local(
                spec_path,
                [*overrides, f"data.train={train.resolve()}"],
                run_dir=run_dir,
                init_from=parent,
            ).manifest
        saved = manifest.get("saved", {}).get("metrics", {})
        rows.append(
            {
                "round": index,
                "labelled": _count_images(train),
                "added": added,
                "val_accuracy": saved.get("val_accuracy"),
                "run": str(run_dir),
                "strategy": strategy,
            }
        )
        _write_curve(out, rows, spec.job.name)
        parent = run_dir
        if index == rounds or not _count_images(work_pool):
            break
        query = query_pool(
            Predictor.from_run(run_dir), run_dir, work_pool, strategy=strategy, k=k, seed=seed
        )
        write_query(query, out / "queries" / f"round-{index + 1}")
        labelled = out / "labelled" / f"round-{index + 1}"
        for row in query.selected():
            source = work_pool / row["image"]
            label = labels[sha256_file(source)]  # every pool image has one (checked first)
            target = labelled / label / source.name
            if target.exists():
                target = target.with_name(f"{row['rank']}-{source.name}")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        imported = import_labels(labelled, train)
        added = sum(len(files) for files in imported.added.values())
        for image in [row["image"] for row in query.selected()] + [
            item["image"]
            for item in query.skipped  # unreadable: never labelled, never asked
        ]:
            (work_pool / image).unlink()
    return out, rows


def _write_curve(out: Path, rows: list[dict[str, Any]], title: str) -> None:
    """curve.csv now (a crash later keeps every finished round), curve.png when it can."""
    temp = out / f".{CURVE_CSV}.tmp"
    with temp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CURVE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    temp.replace(out / CURVE_CSV)
    try:
        from inflame.evaluation.plots import learning_curve_png

        learning_curve_png(rows, out / CURVE_PNG, f"{title}: learning curve")
    except ImportError as exc:
        print(f"note: {CURVE_PNG} not drawn ({exc})", file=sys.stderr)
