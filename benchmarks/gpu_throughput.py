"""GPU training throughput: ResNet-50 at 224 px fed end to end from the decode cache against
the same model on synthetic data already on the GPU, in fp32, bf16 and bf16 + channels_last,
measured in the same run; and, with 2+ GPUs, the same on 2 GPUs with DDP through torchrun.

    python benchmarks/gpu_throughput.py [--images 2048] [--batch 128] [--steps 50]
                                        [--warmup 10] [--workers N] [--ddp auto|yes|no]
                                        [--device cuda|cpu] [--tiny] [--dir DIR] [--json PATH]

Without a GPU it prints "no GPU: skipped", writes the JSON with null figures and exits 0.
`--device cpu --tiny` runs every case on the CPU at toy size (resnet18, 32 px, a few
steps; DDP over gloo with `--ddp yes`): a check of the script, not a measurement.

Data: `--images` JPEGs of about 500x375 (as benchmarks/data_path.py makes them), decoded
once into the decode cache at `decode_side(224)` = 256 px before timing. Cases:
- synthetic: one batch of random images, already on the GPU (compute only);
- decode cache: `ImageFolderDataset(..., decode_size=256)` with `train_transform(224)`
  through `make_loader` (the loader `fit` builds: `auto_workers` worker processes,
  persistent, prefetching, pinned memory), batches copied with `FastPath.to_device`.
each in fp32 (TF32 matmuls and convolutions, inflame's default), bf16 autocast, and bf16
autocast + channels_last (what `precision = "auto"` picks on a GPU with bf16). The step is
`fit`'s: `fastpath.resolve/apply/prepare_model`, autocast forward, backward, SGD, no
read-back per step. Each case: `--warmup` untimed steps (cuDNN autotuning, worker start),
then `--steps` timed ones between two synchronisations. Batches are all full (the loader
drops the last partial batch of an epoch) and the loader runs epoch after epoch.

GPU busy: the mean of `torch.cuda.utilization()` (needs pynvml), else of `nvidia-smi
--query-gpu=utilization.gpu` sampled in the background, during the timed steps: the share
of time a kernel was running, as NVML reports it; null when neither is available.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torchvision
from _common import describe, environment, machine, print_table, ratio, settings, write_json

from inflame.data.dataset import ImageFolderDataset
from inflame.performance import Performance
from inflame.training import fastpath
from inflame.training.loading import EpochOrder, auto_workers, make_loader
from inflame.vision import decode_side, train_transform

# (data, precision, channels_last)
CASES = [
    (data, precision, channels_last)
    for data in ("synthetic", "decode cache")
    for precision, channels_last in (("fp32", False), ("bf16", False), ("bf16", True))
]
DDP_CASES = [("synthetic", "bf16", True), ("decode cache", "bf16", True)]
SAMPLE_SECONDS = 0.2


class BusySampler:
    """Samples the GPU's utilisation in a background thread while the block runs."""

    def __init__(self, device: torch.device):
        self.device = device
        self.samples: list[float] = []
        self.method = busy_method(device)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> BusySampler:
        if self.method == "pynvml":
            self._thread = threading.Thread(target=self._nvml, daemon=True)
        elif self.method == "nvidia-smi":
            self._process = subprocess.Popen(
                [
                    "nvidia-smi",
                    "--query-gpu=utilization.gpu",
                    "--format=csv,noheader,nounits",
                    f"--id={nvidia_smi_id(self.device)}",
                    f"--loop-ms={int(SAMPLE_SECONDS * 1000)}",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            self._thread = threading.Thread(target=self._smi, daemon=True)
        if self._thread is not None:
            self._thread.start()
        return self

    def _nvml(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.samples.append(float(torch.cuda.utilization(self.device)))

    def _smi(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            if self._stop.is_set():
                break
            try:
                self.samples.append(float(line.strip()))
            except ValueError:
                continue

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._process is not None:
            self._process.terminate()
            self._process.wait()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def mean(self) -> float | None:
        """Mean utilisation, as a fraction (0-1); None without samples."""
        return statistics.mean(self.samples) / 100 if self.samples else None


def busy_method(device: torch.device) -> str | None:
    if device.type != "cuda":
        return None
    try:
        import pynvml  # noqa: F401  (torch.cuda.utilization reads NVML through it)

        torch.cuda.utilization(device)
        return "pynvml"
    except Exception:
        pass
    return "nvidia-smi" if shutil.which("nvidia-smi") else None


def nvidia_smi_id(device: torch.device) -> str:
    """The GPU as nvidia-smi names it (its UUID: CUDA_VISIBLE_DEVICES may renumber)."""
    try:
        uuid = str(torch.cuda.get_device_properties(device).uuid)
        return uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"
    except Exception:
        return str(device.index or 0)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_batches(
    args: argparse.Namespace, device: torch.device, classes: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=generator).to(device)
    y = torch.randint(0, classes, (args.batch,), generator=generator).to(device)
    while True:
        yield x, y


def loader_batches(
    dataset: ImageFolderDataset,
    args: argparse.Namespace,
    device: torch.device,
    workers: int,
    rank: int = 0,
    world: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """`fit`'s loader, epoch after epoch."""
    order = EpochOrder(len(dataset), 0, shuffle=True, rank=rank, world=world)
    loader = make_loader(
        dataset,
        order,
        batch_size=args.batch,
        workers=workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
    )
    epoch = 0
    while True:
        order.set_epoch(epoch)
        yield from loader
        epoch += 1


def run_case(
    args: argparse.Namespace,
    device: torch.device,
    case: tuple[str, str, bool],
    dataset: ImageFolderDataset,
    workers: int,
    rank: int = 0,
    world: int = 1,
) -> dict[str, Any]:
    """Images/s (all processes together) and GPU busy fraction of one case."""
    data, precision, channels_last = case
    classes = len(dataset.classes)
    torch.manual_seed(0)
    model = getattr(torchvision.models, args.model)(num_classes=classes)
    settings_ = Performance(precision=precision, channels_last=channels_last)
    fast = fastpath.resolve(settings_, device, model)
    fastpath.apply(fast)
    fastpath.prepare_model(model, fast)
    net: torch.nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    scaler = fast.scaler()
    loss_fn = torch.nn.CrossEntropyLoss()
    if data == "synthetic":
        batches = synthetic_batches(args, device, classes)
    else:
        batches = loader_batches(dataset, args, device, workers, rank, world)

    def step() -> torch.Tensor:
        inputs, targets = next(batches)
        inputs = fast.to_device(inputs)
        targets = targets.to(device, non_blocking=True)
        with fast.autocast():
            loss = loss_fn(net(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        if scaler.is_enabled():
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        return loss.detach()

    try:
        for _ in range(args.warmup):
            step()
        synchronize(device)
        with BusySampler(device) as busy:
            total = torch.zeros((), device=device)
            start = time.perf_counter()
            for _ in range(args.steps):
                total += step()
            synchronize(device)
            seconds = time.perf_counter() - start
        if not torch.isfinite(total):
            print(f"warning: {case}: the loss is not finite", file=sys.stderr)
        busy_mean = busy.mean
        if world > 1:  # the slowest process sets the pace; GPU busy: the mean over GPUs
            import torch.distributed as dist

            figures = torch.tensor(
                [seconds, -1.0 if busy_mean is None else busy_mean], device=device
            )
            slowest = figures.clone()
            dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
            dist.all_reduce(figures, op=dist.ReduceOp.SUM)
            seconds = float(slowest[0])
            busy_mean = None if busy_mean is None else float(figures[1]) / world
    finally:
        batches.close()  # stops the loader's workers
    result = {
        "data": data,
        "precision": fast.precision,
        "channels_last": fast.channels_last,
        "tf32": fast.tf32,
        "workers": workers if data != "synthetic" else None,
        "processes": world,
        "images_per_s": args.steps * args.batch * world / seconds,
        "gpu_busy": busy_mean,
        "busy_method": busy.method,
        "seconds": seconds,
    }
    return result


def label(data: str, precision: str, channels_last: bool, processes: int) -> str:
    name = f"{data}, {precision}" + (" + channels_last" if channels_last else "")
    return name + (f", DDP x{processes}" if processes > 1 else "")


def null_row(case: tuple[str, str, bool], processes: int = 1) -> dict[str, Any]:
    data, precision, channels_last = case
    return {
        "case": label(*case, processes),
        "data": data,
        "precision": precision,
        "channels_last": channels_last,
        "processes": processes,
        "images_per_s": None,
        "gpu_busy": None,
    }


def ddp_worker(spec: str) -> None:
    """One process of the DDP cases (launched by torchrun); rank 0 writes the results."""
    import torch.distributed as dist

    options = json.loads(spec)
    args = argparse.Namespace(**options["args"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if args.device == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    workers = args.workers if args.workers is not None else auto_workers(device, world)
    dataset = ImageFolderDataset(
        options["data"], train_transform(args.size), decode_size=decode_side(args.size)
    )
    try:
        rows = [run_case(args, device, case, dataset, workers, rank, world) for case in DDP_CASES]
        if rank == 0:
            Path(options["out"]).write_text(json.dumps(rows), encoding="utf-8")
    finally:
        dist.destroy_process_group()


def run_ddp(args: argparse.Namespace, data: Path, work: Path, processes: int) -> list[dict]:
    out = work / "ddp.json"
    spec = {"args": settings(args) | {"dir": None}, "data": str(data), "out": str(out)}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={processes}",
        str(Path(__file__).resolve()),
        "--ddp-worker",
        json.dumps(spec),
    ]
    code = subprocess.call(command)
    if code != 0 or not out.is_file():
        print(f"warning: the DDP run failed (exit code {code}); its rows are null")
        return [null_row(case, processes) for case in DDP_CASES]
    return json.loads(out.read_text(encoding="utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, help="JPEGs to make (default 2048; tiny 64)")
    parser.add_argument("--batch", type=int, help="per GPU (default 128; tiny 8)")
    parser.add_argument("--steps", type=int, help="timed steps per case (default 50; tiny 3)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default 10; tiny 1)")
    parser.add_argument("--workers", type=int, help="loader workers (default: auto_workers)")
    parser.add_argument(
        "--ddp", choices=("auto", "yes", "no"), default="auto", help="auto: with 2+ GPUs"
    )
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--tiny", action="store_true", help="toy sizes: a check, not a figure")
    parser.add_argument("--dir", type=Path, help="where to work (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--ddp-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    tiny = {"images": 64, "batch": 8, "steps": 3, "warmup": 1, "model": "resnet18", "size": 32}
    full = {"images": 2048, "batch": 128, "steps": 50, "warmup": 10, "model": "resnet50"}
    full["size"] = 224
    for key, value in (tiny if args.tiny else full).items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.ddp_worker:
        ddp_worker(args.ddp_worker)
        return

    info = machine()
    print(describe(info))
    cases = [(case, 1) for case in CASES]
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if args.device == "cpu":
        ddp = args.ddp == "yes"
    else:
        ddp = args.ddp == "yes" or (args.ddp == "auto" and gpus >= 2)
    if ddp:
        cases += [(case, 2) for case in DDP_CASES]
    if args.device == "cuda" and gpus == 0:
        print("no GPU: skipped")
        rows = [null_row(case, n) for case, n in cases]
        write_json(args.json, "gpu_throughput", info, settings=settings(args), results=rows)
        return
    if ddp and args.device == "cuda" and gpus < 2:
        raise SystemExit(f"--ddp yes needs 2 GPUs; this machine has {gpus}")

    device = torch.device(args.device, 0) if args.device == "cuda" else torch.device("cpu")
    workers = args.workers if args.workers is not None else auto_workers(device)
    side = decode_side(args.size)
    work = Path(tempfile.mkdtemp(prefix="inflame-bench-", dir=args.dir))
    try:
        from data_path import make_photos

        root = work / "photos"
        began = time.perf_counter()
        size_bytes = make_photos(root, args.images)
        print(f"made {args.images} JPEGs ({size_bytes / 1e6:.0f} MB) in ", end="")
        print(f"{time.perf_counter() - began:.0f} s")
        with environment(INFLAME_CACHE_DIR=str(work / "cache"), INFLAME_NO_CACHE=None):
            began = time.perf_counter()
            dataset = ImageFolderDataset(root, train_transform(args.size), decode_size=side)
            fill = time.perf_counter() - began
            print(f"decode cache filled at {side} px in {fill:.1f} s (once per data set)")
            print(
                f"{args.model} at {args.size} px, batch {args.batch} per process, {workers} "
                f"loader workers, {args.warmup} + {args.steps} steps per case"
            )
            rows = []
            for case in CASES:
                rows.append(run_case(args, device, case, dataset, workers))
                if device.type == "cuda":
                    torch.cuda.empty_cache()  # the case's model and optimizer are gone
                print(f"  {case}: {rows[-1]['images_per_s']:.1f} img/s", flush=True)
            if ddp:
                rows += run_ddp(args, root, work, 2)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def same(row: dict, **changes: Any) -> dict | None:
        keys = ("data", "precision", "channels_last", "processes")
        want = {key: changes.get(key, row[key]) for key in keys}
        return next((r for r in rows if all(r[k] == v for k, v in want.items())), None)

    for row in rows:
        synthetic = same(row, data="synthetic")
        row["x_synthetic"] = ratio(row["images_per_s"], synthetic and synthetic["images_per_s"])
        fp32 = same(row, precision="fp32", channels_last=False)
        row["x_fp32"] = ratio(row["images_per_s"], fp32 and fp32["images_per_s"])
        one = same(row, processes=1)
        row["ddp_scaling"] = (
            ratio(row["images_per_s"], one["images_per_s"] * row["processes"])
            if row["processes"] > 1 and one
            else None
        )
        row["case"] = label(row["data"], row["precision"], row["channels_last"], row["processes"])
        if row["gpu_busy"] is not None:
            row["gpu_busy_percent"] = 100 * row["gpu_busy"]
    print()
    print_table(
        rows,
        [
            ("case", "case", ""),
            ("images_per_s", "img/s", ".1f"),
            ("x_synthetic", "x synthetic", ".3f"),
            ("x_fp32", "x fp32", ".2f"),
            ("ddp_scaling", "DDP scaling", ".2f"),
            ("gpu_busy_percent", "GPU busy %", ".0f"),
        ],
    )
    if args.tiny:
        print("(--tiny: a check of the script, not a measurement)")
    write_json(
        args.json,
        "gpu_throughput",
        info,
        settings={**settings(args), "workers": workers, "decode_side": side},
        cache_fill_seconds=fill,
        results=rows,
    )


if __name__ == "__main__":
    main()
