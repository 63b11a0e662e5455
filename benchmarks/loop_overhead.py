"""`inflame train` end to end against the plain PyTorch loop a user would write for the same
job, measured in the same run.

    python benchmarks/loop_overhead.py [--images 512] [--size 64] [--epochs 3]
                                       [--batch 32] [--rounds 8] [--threads N]
                                       [--dir DIR] [--json PATH]

inflame: `train_local` on the model zoo's fowl classifier (in this process) with its
defaults; its first run starts with an empty cache folder (fingerprints and decoded images
made on the way), the later ones with the cache warm. Plain: torchvision
`datasets.ImageFolder` with PIL transforms, a DataLoader, and the usual loop. Both: resnet18
from random weights with 3 classes, SGD (lr 0.01, momentum 0.9, weight decay 1e-4,
constant rate), batch 32, validation after every epoch, loading in the training process
(num_workers 0), no early stopping, no test set.

Each round runs the plain loop and inflame once, one right after the other (the order
alternates from round to round), and gives one ratio: inflame's images/s over the plain
loop's. Load that comes and goes on a shared machine moves both runs of a round much more
than it moves their ratio. The verdict is the median ratio over the rounds; it is resolved
when a sign test says the rounds are not split around the target by chance (p < 0.05:
7 of 8 rounds on one side, or 8 of 8).

images/s counts the training phase only (each loop's own timer around its epoch of
training steps: inflame's metrics.jsonl, the plain loop's perf_counter); wall time is the
whole call, set-up, validation, checkpoints and hashing included. Data: the synthetic demo
set (64 px JPEGs), 80 % train, 20 % validation. Target (issue 7): inflame >= 0.98x the
plain loop's images/s.
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torchvision
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
    train_images_per_second,
    work_dir,
    write_fowl_spec,
    write_json,
)
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision import transforms as T

from inflame.launcher import train_local
from inflame.vision import IMAGENET_MEAN, IMAGENET_STD

TARGET = 0.98
PLAIN = "plain PyTorch loop"
INFLAME = "inflame train"


def plain_loop(train_dir: Path, val_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The loop a user writes by hand: ImageFolder, PIL transforms, SGD, validation."""
    start = time.perf_counter()
    torch.manual_seed(0)
    size = args.size
    normalize = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_tf = T.Compose(
        [
            T.RandomResizedCrop(size, scale=(0.7, 1.0)),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            normalize,
        ]
    )
    val_tf = T.Compose([T.Resize(round(size * 8 / 7)), T.CenterCrop(size), T.ToTensor(), normalize])
    train_set = datasets.ImageFolder(str(train_dir), train_tf)
    val_set = datasets.ImageFolder(str(val_dir), val_tf)
    train_loader = DataLoader(train_set, batch_size=args.batch, shuffle=True, num_workers=0)
    val_loader = DataLoader(val_set, batch_size=args.batch, num_workers=0)
    model = torchvision.models.resnet18(weights=None, num_classes=len(train_set.classes))
    optimizer = torch.optim.SGD(
        model.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay
    )
    loss_fn = nn.CrossEntropyLoss()
    train_seconds, seen, val_accuracy = 0.0, 0, 0.0
    for _ in range(args.epochs):
        model.train()
        began = time.perf_counter()
        loss_sum, correct = 0.0, 0
        for images, labels in train_loader:
            optimizer.zero_grad()
            outputs = model(images)
            loss = loss_fn(outputs, labels)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(labels)
            correct += int((outputs.argmax(1) == labels).sum())
            seen += len(labels)
        train_seconds += time.perf_counter() - began
        model.eval()
        right = 0
        with torch.no_grad():
            for images, labels in val_loader:
                right += int((model(images).argmax(1) == labels).sum())
        val_accuracy = right / len(val_set)
    return {
        "wall_s": time.perf_counter() - start,
        "train_s": train_seconds,
        "images_per_s": seen / train_seconds,
        "val_accuracy": val_accuracy,
    }


def inflame_run(spec: Path, runs: Path) -> dict[str, Any]:
    start = time.perf_counter()
    result = train_local(spec, runs_root=runs)
    wall = time.perf_counter() - start
    epochs = read_metrics(result.run_dir)
    return {
        "wall_s": wall,
        "train_s": sum(e["seconds"] for e in epochs),
        "images_per_s": train_images_per_second(epochs),
        "val_accuracy": epochs[-1].get("val_accuracy"),
        "performance": result.manifest.get("performance"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=512, help="training images (about)")
    parser.add_argument("--size", type=int, default=64, help="image side, pixels")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--rounds", type=int, default=8, help="pairs of runs, one ratio each")
    add_run_arguments(parser)
    args = parser.parse_args()
    work = work_dir(args)
    try:
        n_train, _ = demo_set(work / "data", args.images, args.size)
        train_dir, val_dir = work / "data" / "train", work / "data" / "val"
        hparams = {
            "architecture": "resnet18",
            "pretrained": False,
            "epochs": args.epochs,
            "batch_size": args.batch,
            "optimizer": "sgd",
            "learning_rate": args.lr,
            "momentum": args.momentum,
            "weight_decay": args.weight_decay,
            "lr_schedule": "constant",
            "image_size": args.size,
            "early_stopping_patience": 0,
            "num_workers": 0,
        }
        spec = write_fowl_spec(work / "job.toml", {"train": train_dir, "val": val_dir}, hparams)
        info = machine()
        print(describe(info))
        print(
            f"{n_train} training images at {args.size} px, {args.epochs} epochs, batch "
            f"{args.batch}; {args.rounds} rounds of the plain loop and inflame"
        )
        rows = []
        with environment(INFLAME_CACHE_DIR=str(work / "cache"), INFLAME_NO_CACHE=None):
            for round_ in range(1, args.rounds + 1):
                cases = [
                    (PLAIN, lambda: plain_loop(train_dir, val_dir, args)),
                    (INFLAME, lambda: inflame_run(spec, work / "runs")),
                ]
                for name, run in cases if round_ % 2 else cases[::-1]:
                    result = run()
                    cache = " (cold cache)" if name == INFLAME and round_ == 1 else ""
                    rows.append({"round": round_, "case": name + cache, "loop": name, **result})
                    rows[-1]["other_s"] = result["wall_s"] - result["train_s"]
                    print(f"round {round_}: {name}{cache} {result['images_per_s']:.1f} img/s")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    summary = summarize(rows)
    write_json(
        args.json,
        "loop_overhead",
        info,
        settings={**settings(args), "train_images": n_train},
        target={"x_plain_images_per_s": TARGET, "met": summary["met"]},
        summary=summary,
        results=rows,
    )


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Add each round's ratio to its rows, print the table and the verdict; return the
    summary (median ratio over the rounds, their range, met, resolved)."""
    ratios = []
    for round_ in sorted({r["round"] for r in rows}):
        pair = {r["loop"]: r for r in rows if r["round"] == round_}
        base = pair[PLAIN]
        for row in pair.values():
            row["x_plain_images_per_s"] = ratio(row["images_per_s"], base["images_per_s"])
            row["x_plain_wall"] = ratio(row["wall_s"], base["wall_s"])
        ratios.append(pair[INFLAME]["x_plain_images_per_s"])
    print()
    print_table(
        rows,
        [
            ("round", "round", ""),
            ("case", "case", ""),
            ("wall_s", "wall s", ".1f"),
            ("train_s", "train s", ".1f"),
            ("other_s", "other s", ".1f"),
            ("images_per_s", "train img/s", ".1f"),
            ("x_plain_images_per_s", "x plain img/s", ".3f"),
            ("x_plain_wall", "x plain wall", ".3f"),
            ("val_accuracy", "val acc", ".3f"),
        ],
    )
    x_plain = statistics.median(ratios)
    met = x_plain >= TARGET
    p_value = sign_test(ratios, TARGET)
    resolved = p_value < 0.05
    side = sum((r >= TARGET) == met for r in ratios)
    print(
        f"target: inflame >= {TARGET}x the plain loop's training images/s: "
        f"{'met' if met else 'MISSED'} ({x_plain:.3f}x, the median of the rounds' ratios: "
        f"{', '.join(f'{r:.3f}' for r in ratios)}); {side} of {len(ratios)} rounds on that "
        f"side of the target (sign test p = {p_value:.3f})"
        + ("" if resolved else ": not resolved at this noise (more --rounds)")
    )
    return {
        "x_plain_images_per_s": x_plain,
        "round_ratios": ratios,
        "met": met,
        "sign_test_p": p_value,
        "resolved": resolved,
    }


def sign_test(values: list[float], target: float) -> float:
    """One-sided sign test: the chance that as many of `values` as there are on their
    majority's side of `target` (or more) would fall there if each round were a coin toss.
    (8 rounds: 7 on one side gives 0.035; 4 rounds never go below 0.0625.)"""
    n = len(values)
    above = sum(v >= target for v in values)
    k = max(above, n - above)
    return sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n


if __name__ == "__main__":
    main()
