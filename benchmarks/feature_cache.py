"""A frozen-backbone run of the fowl classifier with the feature cache against the same run
recomputing the backbone every epoch (`feature_cache = false`), measured in the same run.

    python benchmarks/feature_cache.py [--images 300] [--size 64] [--epochs 20]
                                       [--threads N] [--dir DIR] [--json PATH]

`train_local` in this process, resnet18 from random weights at 64 px, `freeze_backbone =
true`, 20 epochs, no early stopping, loading in the training process; the synthetic demo set
(`--images` training images, a quarter as many for validation, no test set). The decode
cache is filled before timing, so no case pays for decoding. Cases, in this order:
- `feature_cache = false`: the whole network runs forward on every batch of every epoch;
- `feature_cache = true`, first run: the backbone's features are computed once (the cost
  of the first run with this data), then the head trains on them;
- `feature_cache = true` again: the features come from the cache the run before filled.
Times are the whole `train_local` call (wall) and the epochs alone (metrics.jsonl). Target
(issue 7): the first feature-cache run >= 10x faster than `feature_cache = false`.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

from _common import (
    add_run_arguments,
    demo_set,
    describe,
    environment,
    machine,
    print_table,
    ratio,
    read_metrics,
    settings,
    work_dir,
    write_fowl_spec,
    write_json,
)

from inflame.data.dataset import ImageFolderDataset
from inflame.launcher import train_local
from inflame.vision import decode_side

TARGET = 10.0


def run(spec: Path, runs: Path, feature_cache: bool) -> dict[str, Any]:
    start = time.perf_counter()
    result = train_local(
        spec, [f"hyperparameters.feature_cache={str(feature_cache).lower()}"], runs_root=runs
    )
    wall = time.perf_counter() - start
    epochs = read_metrics(result.run_dir)
    return {
        "wall_s": wall,
        "epochs_s": sum(e["seconds"] for e in epochs),
        "epochs": len(epochs),
        "val_accuracy": epochs[-1].get("val_accuracy"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=300, help="training images (about)")
    parser.add_argument("--size", type=int, default=64, help="image side, pixels")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    add_run_arguments(parser)
    args = parser.parse_args()
    work = work_dir(args)
    try:
        data = work / "data"
        n_train, n_val = demo_set(data, args.images, args.size)
        hparams = {
            "architecture": "resnet18",
            "pretrained": False,
            "freeze_backbone": True,
            "epochs": args.epochs,
            "batch_size": args.batch,
            "image_size": args.size,
            "early_stopping_patience": 0,
            "num_workers": 0,
        }
        spec = write_fowl_spec(
            work / "job.toml", {"train": data / "train", "val": data / "val"}, hparams
        )
        info = machine()
        print(describe(info))
        print(
            f"{n_train} training and {n_val} validation images at {args.size} px, frozen "
            f"resnet18, {args.epochs} epochs, batch {args.batch}"
        )
        with environment(INFLAME_CACHE_DIR=str(work / "cache"), INFLAME_NO_CACHE=None):
            for split in ("train", "val"):  # the decode cache, filled before any timing
                ImageFolderDataset(data / split, decode_size=decode_side(args.size))
            runs = work / "runs"
            results = [
                ("feature_cache = false", run(spec, runs, feature_cache=False)),
                ("feature_cache = true, first run", run(spec, runs, feature_cache=True)),
                ("feature_cache = true, cached features", run(spec, runs, feature_cache=True)),
            ]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    base = results[0][1]
    rows = [
        {
            "case": name,
            **result,
            "speedup_wall": ratio(base["wall_s"], result["wall_s"]),
            "speedup_epochs": ratio(base["epochs_s"], result["epochs_s"]),
        }
        for name, result in results
    ]
    print()
    print_table(
        rows,
        [
            ("case", "case", ""),
            ("wall_s", "wall s", ".1f"),
            ("epochs_s", "epochs s", ".2f"),
            ("speedup_wall", "speed-up (wall)", ".1f"),
            ("speedup_epochs", "speed-up (epochs)", ".1f"),
            ("val_accuracy", "val acc", ".3f"),
        ],
    )
    first = rows[1]["speedup_wall"]
    met = first is not None and first >= TARGET
    print(
        f"target: first feature-cache run >= {TARGET:g}x faster (wall) than feature_cache = "
        f"false: {'met' if met else 'MISSED'} ({first:.1f}x)"
    )
    write_json(
        args.json,
        "feature_cache",
        info,
        settings={**settings(args), "train_images": n_train, "val_images": n_val},
        target={"speedup_wall": TARGET, "met": met},
        results=rows,
    )


if __name__ == "__main__":
    main()
