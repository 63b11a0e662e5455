"""Active learning's learning curves: `inflame loop` with entropy selection vs random
selection at equal labelling budgets, on a real small image set, over several seeds.

    python benchmarks/active_learning.py [--seeds 0,1,2] [--rounds 4] [--k 40] [--start 20]
                                         [--epochs 6] [--json PATH]

The set is scikit-learn's handwritten digits (1,797 scanned 8x8 images of 0-9, shipped with
scikit-learn: no download), written as 32 px PNGs. Per seed: `--start` labelled images (the
same number per class), 300 for validation, the rest the unlabelled pool (its oracle: the same
images in their class folders). Each strategy runs the same loop from the same start (resnet18
from scratch, `--epochs` per round, warm starts between rounds). Reported: validation accuracy
at each budget (mean and spread over seeds) and the area under each curve; the ratio entropy
/ random is the figure of merit (above 1: querying pays).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import describe, machine, print_table, settings, write_fowl_spec, write_json

STRATEGIES = ("entropy", "random")


def write_digits(root: Path, seed: int, start: int, val: int = 300) -> dict[str, Path]:
    """train (`start` images), val, pool (flat) and oracle (class folders) under root."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    per_class = start // 10
    taken: dict[int, int] = {}
    parts: dict[str, list[int]] = {"train": [], "val": [], "pool": []}
    for index in order:
        label = int(digits.target[index])
        if taken.get(label, 0) < per_class:
            taken[label] = taken.get(label, 0) + 1
            parts["train"].append(index)
        elif len(parts["val"]) < val:
            parts["val"].append(index)
        else:
            parts["pool"].append(index)
    folders = {name: root / name for name in ("train", "val", "pool", "oracle")}
    for part, indices in parts.items():
        for index in indices:
            pixels = (digits.images[index] * (255 / 16)).astype("uint8")
            image = Image.fromarray(pixels).resize((32, 32), Image.BICUBIC).convert("RGB")
            label = str(digits.target[index])
            names = [f"{part}/{label}"] if part != "pool" else ["pool", f"oracle/{label}"]
            for name in names:
                target = root / name / f"d{index:04d}.png"
                target.parent.mkdir(parents=True, exist_ok=True)
                image.save(target)
    return folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--k", type=int, default=40)
    parser.add_argument("--start", type=int, default=20, help="a multiple of 10, at least 10")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.start < 10 or args.start % 10:
        parser.error("--start must be a multiple of 10 (the same number of each digit)")
    from inflame.active.loop import run_loop

    info = machine()
    print(describe(info), file=sys.stderr)
    curves: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="inflame-al-") as tmp:
        for seed in (int(s) for s in args.seeds.split(",")):
            folders = write_digits(Path(tmp) / f"seed{seed}", seed, args.start)
            hparams = {
                "architecture": "resnet18",
                "pretrained": False,
                "epochs": args.epochs,
                "optimizer": "adamw",
                "learning_rate": 0.002,
                "batch_size": 16,
                "image_size": 32,
                "num_workers": 0,
                "early_stopping_patience": 0,
            }
            spec = write_fowl_spec(
                Path(tmp) / f"seed{seed}" / "job.toml",
                {"train": folders["train"], "val": folders["val"]},
                hparams,
                name="digits",
                seed=seed,
            )
            for strategy in STRATEGIES:
                _, rows = run_loop(
                    spec,
                    pool=folders["pool"],
                    oracle=folders["oracle"],
                    rounds=args.rounds,
                    k=args.k,
                    strategy=strategy,
                    out=Path(tmp) / f"seed{seed}" / strategy,
                    seed=seed,
                )
                curves += [{**row, "seed": seed} for row in rows]
    table = []  # per round: every strategy has labelled the same budget by then
    for index in sorted({row["round"] for row in curves}):
        line: dict[str, Any] = {"round": index}
        for strategy in STRATEGIES:
            rows = [r for r in curves if r["round"] == index and r["strategy"] == strategy]
            values = [r["val_accuracy"] for r in rows if r["val_accuracy"] is not None]
            line["labelled"] = statistics.mean(r["labelled"] for r in rows) if rows else None
            line[strategy] = statistics.mean(values) if values else None
            line[f"{strategy}_sd"] = statistics.pstdev(values) if values else None
        table.append(line)
    areas = {  # the mean accuracy over the rounds: the area under the curve, per round
        strategy: statistics.mean(line[strategy] for line in table if line[strategy] is not None)
        for strategy in STRATEGIES
    }
    print_table(
        table,
        [
            ("round", "round", ""),
            ("labelled", "labelled images", ".0f"),
            ("entropy", "entropy acc", ".3f"),
            ("entropy_sd", "sd", ".3f"),
            ("random", "random acc", ".3f"),
            ("random_sd", "sd", ".3f"),
        ],
    )
    ratio = areas["entropy"] / areas["random"]
    print(
        f"mean accuracy over the curve: entropy {areas['entropy']:.3f}, random "
        f"{areas['random']:.3f}; entropy / random = {ratio:.3f}"
    )
    write_json(
        args.json, "active_learning", info, settings=settings(args), curves=curves, ratio=ratio
    )


if __name__ == "__main__":
    main()
