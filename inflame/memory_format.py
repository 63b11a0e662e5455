"""Whether channels_last (NHWC) memory makes a model faster on a device: one rule for the
training loop's "auto" and for `predict`.

Measured on a 2-CPU Xeon (AVX-512, AMX) with torch 2.14 (benchmarks/README.md): on a CPU
channels_last slows plain conv nets on small images (resnet18 at 64 px: 6-13 % slower;
even at 96 px; 7-20 % faster from 128 px up) and speeds up nets with depthwise
convolutions at every size (mobilenet_v3_small, efficientnet_b0 at 64 px: +45-58 %). On a
GPU it is what tensor cores want for every conv net.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

# on a CPU, plain conv nets gain from channels_last from this image side up
CPU_CHANNELS_LAST_MIN_SIDE = 96


def has_conv2d(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def has_grouped_conv2d(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) and m.groups > 1 for m in model.modules())


def channels_last_pays(model: nn.Module, device: torch.device, shape: Sequence[int] | None) -> bool:
    """Every conv net on a GPU; on a CPU, nets with grouped convolutions, and other conv
    nets whose inputs (`shape`: (..., H, W); None when unknown) have sides of at least
    CPU_CHANNELS_LAST_MIN_SIDE."""
    if not has_conv2d(model):
        return False
    if device.type != "cpu" or has_grouped_conv2d(model):
        return True
    sides = tuple(shape or ())[-2:]
    return len(sides) < 2 or min(sides) >= CPU_CHANNELS_LAST_MIN_SIDE
