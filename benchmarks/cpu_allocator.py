"""CPU throughput with a faster malloc preloaded (tcmalloc or jemalloc, as inflame finds it)
and with channels_last, as ratios against glibc's malloc measured in the same run.

    python benchmarks/cpu_allocator.py [--rounds 4] [--burst 1.5] [--threads N]
                                       [--allocator PATH] [--json PATH]

Workloads: ResNet-18 train steps (forward, backward, SGD step; batch 32 of synthetic images)
at 64 and 224 px, and MobileNet-V3-Small prediction at 224 px. Each is run with glibc's
malloc, with the allocator, and both again with model and input in channels_last, each case
in its own interpreter (a malloc is chosen when a process starts). The cases of a workload
take turns, a burst of steps each for several rounds, so that other load on the machine
falls on all of them alike; images/s come from the best step (as timeit does: other
processes only ever slow a step down), the median step is in the JSON. "per CPU-s" divides by
the process's CPU time instead (all threads, kernel time included): with `--threads 1` it is
the figure least moved by other processes on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from inflame.allocator import ACTIVE_VAR, find_allocator, preload_env

# name: (torchvision model, image size, mode)
WORKLOADS = {
    "resnet18 train 64px": ("resnet18", 64, "train"),
    "resnet18 train 224px": ("resnet18", 224, "train"),
    "mobilenet_v3_small predict 224px": ("mobilenet_v3_small", 224, "predict"),
}


def worker(model_name: str, size: int, mode: str, channels_last: bool, args: dict) -> None:
    """In the case's own process: build and warm up, print what runs, then answer each line
    of stdin (a burst length in seconds) with the times of the steps of one burst."""
    import torch
    import torchvision

    from inflame.allocator import loaded_allocator

    torch.manual_seed(0)
    if args["threads"]:
        torch.set_num_threads(args["threads"])
    batch = args["batch"]
    model = getattr(torchvision.models, model_name)(num_classes=1000)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 1000, (batch,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train(mode == "train")

    def step() -> None:
        if mode == "train":
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        else:
            with torch.inference_mode():
                model(x)

    for _ in range(args["warmup"]):
        step()
    print(json.dumps({"allocator": loaded_allocator(), "threads": torch.get_num_threads()}))
    sys.stdout.flush()
    for line in sys.stdin:
        times: list[tuple[float, float]] = []  # (wall, CPU) seconds per step
        began = time.perf_counter()
        while not times or time.perf_counter() - began < float(line):
            start, cpu = time.perf_counter(), time.process_time()
            step()
            times.append((time.perf_counter() - start, time.process_time() - cpu))
        print(json.dumps(times), flush=True)


class Case:
    """One variant of one workload, running in a worker process until closed."""

    def __init__(self, workload: str, library: Path | None, channels_last: bool, args) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", ACTIVE_VAR)}
        if library is not None:
            env = preload_env(env, library)
        model_name, size, mode = WORKLOADS[workload]
        options = {k: getattr(args, k) for k in ("batch", "warmup", "threads")}
        spec = json.dumps([model_name, size, mode, channels_last, options])
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker", spec],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.times: list[float] = []
        self.cpu_times: list[float] = []
        self.info = json.loads(self._answer(f"{workload} did not start"))
        if (library is None) != self.info["allocator"].startswith("glibc"):
            raise SystemExit(f"{workload}: expected {library or 'glibc'}, ran {self.info}")

    def _answer(self, failure: str) -> str:
        line = self.process.stdout.readline() if self.process.stdout else ""
        if not line:
            raise SystemExit(f"{failure} (exit code {self.process.wait()})")
        return line

    def burst(self, seconds: float) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{seconds}\n")
        self.process.stdin.flush()
        for wall, cpu in json.loads(self._answer("a worker stopped")):
            self.times.append(wall)
            self.cpu_times.append(cpu)

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        self.process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=4, help="turns each case takes")
    parser.add_argument("--burst", type=float, default=1.5, help="seconds of steps per turn")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--allocator", type=Path, help="library to preload (default: found)")
    parser.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*json.loads(args.worker))
        return

    library = args.allocator or find_allocator()
    variants: list[tuple[str, Path | None, bool]] = [
        ("glibc (baseline)", None, False),
        ("glibc + channels_last", None, True),
    ]
    if library is None:
        print("note: no tcmalloc or jemalloc found, allocator rows skipped (see inflame.allocator)")
    else:
        name = "tcmalloc" if "tcmalloc" in library.name else library.name.split(".so")[0][3:]
        variants += [(name, library, False), (f"{name} + channels_last", library, True)]
        print(f"allocator: {library}")

    rows = []
    print(
        f"{'workload':<34} {'variant':<26} {'images/s':>9} {'x baseline':>11}"
        f" {'per CPU-s':>10} {'x baseline':>11} {'steps':>6}"
    )
    for workload in args.workloads:
        cases = [Case(workload, lib, channels_last, args) for _, lib, channels_last in variants]
        try:
            for turn in range(args.rounds):  # a different case goes first each round
                for case in cases[turn % len(cases) :] + cases[: turn % len(cases)]:
                    case.burst(args.burst)
        finally:
            for case in cases:
                case.close()
        baseline = args.batch / min(cases[0].times)
        cpu_baseline = args.batch / min(cases[0].cpu_times)
        for (variant, _, _), case in zip(variants, cases, strict=True):
            speed = args.batch / min(case.times)
            per_cpu = args.batch / min(case.cpu_times)
            rows.append(
                {
                    "workload": workload,
                    "variant": variant,
                    "images_per_s": speed,
                    "ratio": speed / baseline,
                    "median_images_per_s": args.batch / statistics.median(case.times),
                    "images_per_cpu_s": per_cpu,
                    "cpu_ratio": per_cpu / cpu_baseline,
                    "steps": len(case.times),
                    **case.info,
                }
            )
            print(
                f"{workload:<34} {variant:<26} {speed:>9.1f} {speed / baseline:>11.2f}"
                f" {per_cpu:>10.1f} {per_cpu / cpu_baseline:>11.2f} {len(case.times):>6}"
            )
    threads = rows[0]["threads"] if rows else None
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"(batch {args.batch}, {threads} torch threads on {os.cpu_count()} CPUs, best step of"
        f" {args.rounds} turns of {args.burst:g} s; load average now {load})"
    )
    if args.json:
        summary = {
            "allocator": str(library) if library else None,
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
        }
        args.json.write_text(json.dumps({**summary, "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
