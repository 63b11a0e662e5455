"""What the trackers draw once per run besides numbers: a few training inputs as the model
sees them (after augmentation) and the model's graph (TensorBoard)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from inflame.runtime import Context
from inflame.training.loading import SeededSamples

PREVIEW_SAMPLES = 16


def sample_inputs(data: Dataset, seed: int, count: int = PREVIEW_SAMPLES) -> torch.Tensor | None:
    """Up to `count` inputs spread over the set, drawn as epoch 0 draws them (each sample's
    own seed), so the training's random state is untouched. None when samples are not
    `(tensor, target)` pairs of one shape."""
    size = len(data)  # type: ignore[arg-type]
    count = min(count, size)
    if count == 0:
        return None
    samples = SeededSamples(data, seed)
    inputs = [samples[(0, index)] for index in range(0, size, size // count)][:count]
    tensors = [s[0] for s in inputs if isinstance(s, (tuple, list)) and torch.is_tensor(s[0])]
    if len(tensors) != count or len({t.shape for t in tensors}) != 1:
        return None
    return torch.stack(tensors)


def preview(ctx: Context, model: nn.Module, data: Dataset, device: torch.device) -> None:
    """Send sample inputs and the model to the trackers that draw them (main process, run
    start only). The graph is traced in eval mode without gradients: BatchNorm statistics
    and the weights stay as they were."""
    if not (ctx.is_main and ctx.metrics.draws_previews()):
        return
    inputs = sample_inputs(data, ctx.seed)
    ctx.metrics.preview(model, None if inputs is None else inputs.to(device))
