"""Overhead of `inflame.training.fit` (seeding, metrics, per-epoch checkpoints written on a
background thread, progress) against a bare PyTorch loop over the same model and in-memory
tensors, measured in the same run.

    python benchmarks/fit_overhead.py [--epochs 3] [--images 512] [--size 32] [--batch 32]
                                      [--rounds 3] [--threads N] [--json PATH]

Cases: the bare loop as a user writes it (contiguous tensors); the bare loop in
channels_last; and `fit` with its defaults and a checkpoint every epoch. `fit` is compared
with the bare loop in the memory format it chose ("auto": by model and image size), the
same arithmetic. Each round runs every case once, in turns (the order rotates from round to
round, so load that comes and goes falls on each); a case's figure is its median over the
rounds, and the spread of its rounds is printed as the noise. The model is resnet18 from
the same seeded weights each time; no validation.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchvision
from _common import describe, machine, print_table, settings, write_json
from torch.utils.data import DataLoader, TensorDataset

from inflame.runtime import Context, DataInputs, MetricsLog
from inflame.training import fit, seed_everything
from inflame.training.progress import SilentReporter

BARE = "bare loop"
BARE_CL = "bare loop, channels_last"
FIT = "inflame fit"


def make(args: argparse.Namespace) -> tuple[TensorDataset, torch.nn.Module, torch.optim.Optimizer]:
    seed_everything(0)
    data = TensorDataset(
        torch.randn(args.images, 3, args.size, args.size), torch.randint(0, 3, (args.images,))
    )
    model = torchvision.models.resnet18(num_classes=3)
    return data, model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


def bare(args: argparse.Namespace, channels_last: bool = False) -> float:
    """Seconds for `args.epochs` epochs of the hand-written loop."""
    data, model, optimizer = make(args)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=memory_format)
    start = time.perf_counter()
    for _ in range(args.epochs):
        model.train()
        for x, y in DataLoader(data, batch_size=args.batch, shuffle=True):
            optimizer.zero_grad()
            out = model(x.contiguous(memory_format=memory_format))
            torch.nn.functional.cross_entropy(out, y).backward()
            optimizer.step()
    return time.perf_counter() - start


def with_fit(args: argparse.Namespace, formats: list[bool]) -> float:
    """Seconds for the same epochs through `fit` (a checkpoint after each); appends
    whether `fit` chose channels_last to `formats`."""
    data, model, optimizer = make(args)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Context(
            job_name="bench",
            data=DataInputs({}),
            output_dir=Path(tmp) / "model",
            checkpoint_dir=Path(tmp) / "checkpoints",
            hparams={},
            seed=0,
            metrics=MetricsLog(Path(tmp) / "metrics.jsonl"),
        )
        start = time.perf_counter()
        fit(
            ctx,
            model,
            data,
            None,
            epochs=args.epochs,
            batch_size=args.batch,
            optimizer=optimizer,
            reporter=SilentReporter(),
        )
        seconds = time.perf_counter() - start
        formats.append(ctx.records["performance"]["channels_last"])
        return seconds


def measure(args: argparse.Namespace) -> tuple[dict[str, list[float]], bool]:
    """Seconds per case per round, the cases taking turns in a rotating order; and whether
    `fit` ran in channels_last (its "auto" choice for this model and image size)."""
    formats: list[bool] = []
    cases: list[tuple[str, Callable[[], float]]] = [
        (BARE, lambda: bare(args)),
        (BARE_CL, lambda: bare(args, channels_last=True)),
        (FIT, lambda: with_fit(args, formats)),
    ]
    bare(args)  # warm-up: first-call allocations and lazy imports fall on nobody
    seconds: dict[str, list[float]] = {name: [] for name, _ in cases}
    for round_ in range(args.rounds):
        shift = round_ % len(cases)
        for name, run in cases[shift:] + cases[:shift]:
            seconds[name].append(run())
            print(f"round {round_ + 1}: {name} {seconds[name][-1]:.2f} s", flush=True)
    return seconds, all(formats)


def summarize(
    seconds: dict[str, list[float]], images: int, fit_channels_last: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows of the table (median, spread, ratios) and the verdict: `fit` against the bare
    loop in the memory format `fit` chose (the same arithmetic)."""
    median = {name: statistics.median(values) for name, values in seconds.items()}
    same = BARE_CL if fit_channels_last else BARE
    rows = [
        {
            "case": name,
            "median_s": median[name],
            "images_per_s": images / median[name],
            "spread": (max(values) - min(values)) / median[name],
            "x_bare_time": median[name] / median[BARE],
            "rounds_s": values,
        }
        for name, values in seconds.items()
    ]
    overhead = median[FIT] / median[same] - 1
    noise = max(row["spread"] for row in rows)
    summary = {
        "fit_channels_last": fit_channels_last,
        "fit_x_bare_time": median[FIT] / median[BARE],
        "fit_overhead_same_format": overhead,
        "noise": noise,
        "resolved": abs(overhead) > noise,
    }
    return rows, summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine()
    print(describe(info))
    print(
        f"{args.images} images at {args.size} px in memory, {args.epochs} epochs, batch "
        f"{args.batch}, {args.rounds} rounds"
    )
    seconds, fit_channels_last = measure(args)
    rows, summary = summarize(seconds, args.images * args.epochs, fit_channels_last)
    print()
    print_table(
        rows,
        [
            ("case", "case", ""),
            ("median_s", "median s", ".2f"),
            ("images_per_s", "img/s", ".1f"),
            ("spread", "spread", ".1%"),
            ("x_bare_time", "x bare time", ".3f"),
        ],
    )
    chosen = "channels_last" if fit_channels_last else "contiguous"
    print(
        f"fit ({chosen}, its choice here) costs {summary['fit_overhead_same_format']:+.1%} "
        f"against the bare loop in that format ({summary['fit_x_bare_time']:.3f}x the "
        f"contiguous bare loop's time); "
        f"rounds of one case differed by up to {summary['noise']:.1%}"
        + ("" if summary["resolved"] else ", more than the difference: not resolved")
    )
    write_json(
        args.json, "fit_overhead", info, settings=settings(args), summary=summary, results=rows
    )


if __name__ == "__main__":
    main()
