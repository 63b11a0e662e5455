"""Helpers the benchmarks share: the machine they ran on, a plain-text table, the JSON file
(`--json PATH`), job specs for the fowl classifier, and temporary environment variables.

Imported as `_common` by scripts run as `python benchmarks/NAME.py` (their folder is on
sys.path then). No torch at import time: cli_startup.py times cold processes.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """What the figures were measured on (torch is imported here if it is not yet)."""
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return {
        "date": datetime.date.today().isoformat(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "cpus_usable": usable,
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if gpus else "none",
        "gpus": gpus,
    }


def describe(info: Mapping[str, Any]) -> str:
    """One line for the top of a table."""
    load = ", ".join(f"{v:.1f}" for v in info["load_average"])
    return (
        f"{info['date']}  {info['cpu']}, {info['cpus_usable']} CPUs ({info['torch_threads']} "
        f"torch threads), GPU: {info['gpu']}, torch {info['torch']}, load average {load}"
    )


def _cell(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and spec:
        return format(value, spec)
    return str(value)


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str, str]]) -> None:
    """Columns are (key, header, format spec for floats); text left-, numbers right-aligned."""
    cells = [[_cell(row.get(key), spec) for key, _, spec in columns] for row in rows]
    widths = [
        max([len(header)] + [len(line[i]) for line in cells])
        for i, (_, header, _) in enumerate(columns)
    ]
    numeric = [
        all(isinstance(row.get(key), int | float) or row.get(key) is None for row in rows)
        for key, _, _ in columns
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            value.rjust(width) if right else value.ljust(width)
            for value, width, right in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    print(line([header for _, header, _ in columns]))
    for values in cells:
        print(line(values))


def write_json(path: Path | None, benchmark: str, info: Mapping[str, Any], **data: Any) -> None:
    """{"benchmark", "machine", "command", **data} to `path` (if given)."""
    if path is None:
        return
    record = {
        "benchmark": benchmark,
        "machine": dict(info),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        **data,
    }
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")


def ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or not baseline:
        return None
    return value / baseline


@contextlib.contextmanager
def environment(**values: str | None) -> Iterator[None]:
    """Set (or, with None, unset) environment variables for the block."""
    saved = {name: os.environ.get(name) for name in values}

    def put(name: str, value: str | None) -> None:
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value

    for name, value in values.items():
        put(name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            put(name, value)


def write_fowl_spec(
    path: Path,
    data: Mapping[str, Path],
    hyperparameters: Mapping[str, Any],
    *,
    name: str = "bench",
    seed: int = 0,
    compute: Mapping[str, Any] | None = None,
) -> Path:
    """A job spec for the model zoo's fowl classifier (as tests/conftest.py writes them)."""
    from inflame import tomlfile

    spec: dict[str, Any] = {
        "job": {"name": name, "app": "fowl_classifier", "seed": seed},
        "data": {key: str(value) for key, value in data.items()},
        "hyperparameters": dict(hyperparameters),
    }
    if compute:
        spec["compute"] = dict(compute)
    path.write_text(tomlfile.dumps(spec), encoding="utf-8")
    return path


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The per-epoch lines of a run's metrics.jsonl."""
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [record for record in map(json.loads, lines) if "epoch" in record]


def train_images_per_second(epochs: Sequence[Mapping[str, Any]]) -> float:
    """Training images over training seconds, all epochs together (from metrics lines)."""
    images = sum(e["images_per_second"] * e["seconds"] for e in epochs)
    return images / sum(e["seconds"] for e in epochs)


def settings(args: Any) -> dict[str, Any]:
    """The parsed options for the JSON file: paths as text, --json itself left out."""
    return {
        key: str(value) if isinstance(value, Path) else value
        for key, value in vars(args).items()
        if key != "json"
    }


def add_run_arguments(parser: Any) -> None:
    """--threads, --dir and --json, as every training benchmark takes them."""
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--dir", type=Path, help="where to work (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="also write the results here")


def work_dir(args: Any) -> Path:
    """Apply --threads to torch and make a fresh work folder (under --dir if given)."""
    import tempfile

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    return Path(tempfile.mkdtemp(prefix="inflame-bench-", dir=args.dir))


def demo_set(root: Path, images: int, size: int) -> tuple[int, int]:
    """The demo set with about `images` training images, split 80/20 into root/train and
    root/val; returns (training images, validation images)."""
    import math

    from inflame.data.demo import make_demo_dataset

    per_class = math.ceil(images / 3 / 0.8)
    make_demo_dataset(root, per_class=per_class, image_size=size, seed=0, ratios=(0.8, 0.2))
    return tuple(sum(1 for _ in (root / s).rglob("*.jpg")) for s in ("train", "val"))  # type: ignore[return-value]
