"""Overhead of `inflame.training.fit` (seeding, metrics, atomic checkpoints, progress)
against a bare PyTorch loop over the same model and data, measured in the same run.

    python benchmarks/fit_overhead.py [--epochs 3] [--images 512] [--size 32]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader, TensorDataset

from inflame.runtime import Context, DataInputs, MetricsLog
from inflame.training import fit, seed_everything
from inflame.training.progress import SilentReporter


def make(args: argparse.Namespace):
    seed_everything(0)
    data = TensorDataset(
        torch.randn(args.images, 3, args.size, args.size), torch.randint(0, 3, (args.images,))
    )
    model = torchvision.models.resnet18(num_classes=3)
    return data, model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


def bare(args: argparse.Namespace) -> float:
    data, model, optimizer = make(args)
    start = time.perf_counter()
    for _ in range(args.epochs):
        model.train()
        for x, y in DataLoader(data, batch_size=32, shuffle=True):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    return time.perf_counter() - start


def with_fit(args: argparse.Namespace) -> float:
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
            batch_size=32,
            optimizer=optimizer,
            reporter=SilentReporter(),
        )
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args()
    bare(args)  # warm-up
    base, ours = bare(args), with_fit(args)
    print(f"bare loop     {base:7.2f} s")
    print(f"inflame fit   {ours:7.2f} s   x{ours / base:.2f} of the bare loop")


if __name__ == "__main__":
    main()
