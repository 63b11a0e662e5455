"""The [compute] speed switches, resolved for the device a process trains on.

On a GPU "auto" means: bf16 autocast where the GPU has it (else fp16 with a gradient
scaler), TF32 matmuls and convolutions, channels_last for conv nets, cuDNN autotuning.
On a CPU it means fp32, deterministic kernels (so that a rerun, or a resumed run, at the
same thread count ends with bit-identical weights), and channels_last where it is faster
there: nets with grouped (depthwise) convolutions, and other conv nets from 96 px up.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from inflame import memory_format
from inflame.allocator import loaded_allocator
from inflame.errors import InflameError
from inflame.performance import AUTO, Performance
from inflame.training.preview import sample_inputs
from inflame.training.seeding import deterministic_kernels

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_CUBLAS_DETERMINISTIC = ":4096:8"


@dataclass(frozen=True)
class FastPath:
    """What actually runs: the switches resolved for one device and model."""

    device: torch.device
    precision: str  # fp32, bf16 or fp16
    channels_last: bool
    tf32: bool
    compile: bool
    deterministic: bool
    # `deterministic = true` asked for: an operation with no deterministic kernel is an
    # error then, not a warning ("auto" warns and goes on)
    strict: bool = False

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return _DTYPES.get(self.precision)

    @property
    def needs_scaler(self) -> bool:
        return self.precision == "fp16"

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Mixed-precision autocast for the forward pass (a no-op in fp32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler, active only for fp16."""
        return torch.amp.GradScaler(self.device.type, enabled=self.needs_scaler)

    def to_device(self, batch: torch.Tensor) -> torch.Tensor:
        """Move a batch to the device (asynchronously from pinned memory)."""
        batch = batch.to(self.device, non_blocking=True)
        if self.channels_last and batch.ndim == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    def record(self) -> dict[str, Any]:
        """For the run's manifest: which modes ran, on what."""
        record: dict[str, Any] = {
            "device": str(self.device),
            "precision": self.precision,
            "channels_last": self.channels_last,
            "tf32": self.tf32,
            "compile": self.compile,
            "deterministic": self.deterministic,
            "torch_threads": torch.get_num_threads(),
            "allocator": loaded_allocator(),
        }
        if self.device.type == "cuda":
            record["device_name"] = torch.cuda.get_device_name(self.device)
            record["cudnn_benchmark"] = torch.backends.cudnn.benchmark
        return record


def input_shape(data: Dataset, seed: int) -> tuple[int, ...] | None:
    """The shape of the first training input, drawn as epoch 0 draws it (the global random
    state is untouched); None when the samples are not `(tensor, target)` pairs."""
    inputs = sample_inputs(data, seed, count=1)
    return None if inputs is None else tuple(inputs.shape[1:])


def _bf16_supported(device: torch.device) -> bool:
    """bf16 in hardware: Ampere (compute capability 8.0) and newer GPUs. (torch's own
    is_bf16_supported() also counts emulated bf16, slower on a T4 or V100 than fp16.)"""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    return True


def resolve(
    settings: Performance,
    device: torch.device,
    model: nn.Module,
    data: Dataset | None = None,
    seed: int = 0,
) -> FastPath:
    """The switches for this device, model and (for channels_last on a CPU) the size of
    `data`'s images ("auto" decided, forced values checked)."""
    gpu = device.type == "cuda"
    precision = settings.precision
    if precision == AUTO:
        precision = ("bf16" if _bf16_supported(device) else "fp16") if gpu else "fp32"
    elif precision == "bf16" and not _bf16_supported(device):
        raise InflameError(
            f'`compute.precision = "bf16"` but {torch.cuda.get_device_name(device)} has no '
            'bfloat16 support. Use "fp16" (with a gradient scaler) or "auto".'
        )
    channels_last = settings.channels_last
    if channels_last == AUTO:
        shape = None  # the images' size matters only on a CPU
        if data is not None and device.type == "cpu" and memory_format.has_conv2d(model):
            shape = input_shape(data, seed)
        channels_last = memory_format.channels_last_pays(model, device, shape)
    deterministic = settings.deterministic
    if deterministic == AUTO:
        deterministic = not gpu
    return FastPath(
        device=device,
        precision=precision,
        channels_last=bool(channels_last),
        tf32=settings.tf32 and gpu,
        compile=settings.compile,
        deterministic=bool(deterministic),
        strict=settings.deterministic is True,
    )


def apply(path: FastPath) -> None:
    """Set the process-wide switches (call before the first CUDA kernel)."""
    if path.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = path.tf32
        torch.backends.cudnn.allow_tf32 = path.tf32
        torch.backends.cudnn.benchmark = not path.deterministic
        torch.backends.cudnn.deterministic = path.deterministic
        if path.deterministic:  # effective only before cuBLAS starts: see deterministic_env
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", _CUBLAS_DETERMINISTIC)
    # seed_everything turned deterministic kernels on; a GPU run in "auto" turns them off
    deterministic_kernels(path.deterministic, warn_only=not path.strict)


def deterministic_env(settings: Performance) -> None:
    """Before CUDA starts: cuBLAS needs a fixed workspace for deterministic results."""
    if settings.deterministic is True:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", _CUBLAS_DETERMINISTIC)


def prepare_model(model: nn.Module, path: FastPath) -> nn.Module:
    """Move the model to the device in the memory format that runs fastest there."""
    model.to(path.device)
    if path.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def maybe_compile(net: nn.Module, path: FastPath) -> nn.Module:
    if not path.compile:
        return net
    try:
        return torch.compile(net)  # type: ignore[return-value]
    except Exception as exc:  # e.g. no compiler toolchain
        raise InflameError(
            f"torch.compile failed ({exc}). Set `compute.compile = false` to train without it."
        ) from None
