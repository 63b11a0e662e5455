"""CLI start-up cost, as ratios against a bare interpreter measured in the same run.

    python benchmarks/cli_startup.py [--repeat 7]

`inflame --help` must stay close to `python -c pass`: torch, torchvision and the cloud SDKs
are imported lazily, inside the commands that need them. `import torch` is shown for scale.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CASES = {
    "python -c pass (baseline)": [sys.executable, "-c", "pass"],
    "inflame --help": [sys.executable, "-m", "inflame", "--help"],
    "inflame runs --help": [sys.executable, "-m", "inflame", "runs", "--help"],
    "python -c 'import torch' (for scale)": [sys.executable, "-c", "import torch"],
}


def median_seconds(command: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    results = {name: median_seconds(cmd, args.repeat) for name, cmd in CASES.items()}
    baseline = results["python -c pass (baseline)"]
    print(f"{'case':<40} {'median s':>9} {'x baseline':>11}")
    for name, seconds in results.items():
        print(f"{name:<40} {seconds:>9.3f} {seconds / baseline:>11.1f}")


if __name__ == "__main__":
    main()
