"""CLI start-up cost, as ratios against a bare interpreter measured in the same run.

    python benchmarks/cli_startup.py [--repeat 7] [--no-predict] [--json PATH]

`inflame --help` must stay close to `python -c pass`: torch, torchvision and the cloud SDKs
are imported lazily, inside the commands that need them. `import torch` is shown for scale.
`inflame predict IMAGE --run RUN` labels one image from a cold process: it first trains a
tiny run (1 epoch of the synthetic demo set at 32 px) in a temp dir, with INFLAME_RUNS_DIR
and INFLAME_CACHE_DIR pointing there for every case, and exports it to ONNX for the same
prediction with `--backend onnx` (onnxruntime, no torch; issue 10). The cases take turns,
one process each per round, so that load from other processes falls on all of them alike;
the median of the rounds is reported. Target (issue 7): `inflame --help` <= 0.2 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import describe, machine, print_table, settings, write_fowl_spec, write_json

BASELINE = "python -c pass (baseline)"
HELP_TARGET_S = 0.2
CASES = {
    BASELINE: [sys.executable, "-c", "pass"],
    "inflame --help": [sys.executable, "-m", "inflame", "--help"],
    "inflame runs --help": [sys.executable, "-m", "inflame", "runs", "--help"],
    "python -c 'import torch' (for scale)": [sys.executable, "-c", "import torch"],
}


def seconds(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(
        command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    return time.perf_counter() - start


def tiny_run(work: Path, env: dict[str, str]) -> Path:
    """Train 1 epoch at 32 px on a small demo set; return an image to label."""
    from inflame.data.demo import make_demo_dataset

    data = work / "data"
    make_demo_dataset(data, per_class=8, image_size=32, seed=0, ratios=(0.75, 0.25))
    hparams = {
        "architecture": "resnet18",
        "pretrained": False,
        "epochs": 1,
        "optimizer": "adamw",  # as the tests' tiny runs (SGD at 0.01 can diverge this small)
        "learning_rate": 0.001,
        "batch_size": 8,
        "image_size": 32,
        "num_workers": 0,
        "early_stopping_patience": 0,
    }
    spec = write_fowl_spec(
        work / "job.toml", {"train": data / "train", "val": data / "val"}, hparams, name="tiny"
    )
    subprocess.run(
        [sys.executable, "-m", "inflame", "train", "--local", str(spec)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    return min((data / "val").rglob("*.jpg"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--no-predict", action="store_true", help="leave out the predict case")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="inflame-bench-"))
    try:
        # as installed code runs: from cached bytecode (the untimed first run writes it;
        # PYTHONDONTWRITEBYTECODE=1 would compile inflame's modules in every timed process)
        env = {
            **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
            "INFLAME_RUNS_DIR": str(work / "runs"),
            "INFLAME_CACHE_DIR": str(work / "cache"),
        }
        cases = dict(CASES)
        if not args.no_predict:
            image = tiny_run(work, env)
            predict = [sys.executable, "-m", "inflame", "predict", str(image), "--run", "latest"]
            cases["inflame predict IMAGE --run RUN (1 image)"] = predict
            export = [sys.executable, "-m", "inflame", "export", "latest", "--format", "onnx"]
            subprocess.run(export, check=True, stdout=subprocess.DEVNULL, env=env)
            cases["inflame predict ... --backend onnx (1 image)"] = [*predict, "--backend", "onnx"]
        for command in cases.values():  # warm the page cache, untimed
            seconds(command, env)
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.repeat):
            for name, command in cases.items():
                times[name].append(seconds(command, env))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    info = machine()  # imports torch: after the timings
    baseline = statistics.median(times[BASELINE])
    rows = []
    for name, values in times.items():
        median = statistics.median(values)
        rows.append(
            {
                "case": name,
                "median_s": median,
                "x_baseline": median / baseline,
                "min_s": min(values),
                "seconds": values,
            }
        )
    print(describe(info))
    print_table(
        rows,
        [
            ("case", "case", ""),
            ("median_s", "median s", ".3f"),
            ("min_s", "min s", ".3f"),
            ("x_baseline", "x baseline", ".1f"),
        ],
    )
    help_s = statistics.median(times["inflame --help"])
    met = help_s <= HELP_TARGET_S
    print(
        f"target: inflame --help <= {HELP_TARGET_S} s: {'met' if met else 'MISSED'} "
        f"({help_s:.3f} s, median of {args.repeat})"
    )
    write_json(
        args.json,
        "cli_startup",
        info,
        settings=settings(args),
        target={"inflame_help_s": HELP_TARGET_S, "met": met},
        results=rows,
    )


if __name__ == "__main__":
    main()
