"""Seeding for reproducible runs."""

from __future__ import annotations

import random


def seed_rngs(seed: int, *, cpu_only: bool = False) -> None:
    """Seed Python's, NumPy's and torch's global generators (`cpu_only`: not the GPUs')."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    if cpu_only:
        torch.random.default_generator.manual_seed(seed)
    else:
        torch.manual_seed(seed)


def seed_everything(seed: int, *, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch; ask torch for deterministic kernels."""
    import torch

    seed_rngs(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed for one epoch: every epoch's shuffling and augmentation depend only on
    (seed, epoch), so a run resumed at any epoch boundary replays the same batches."""
    return (seed * 1_000_003 + epoch * 7919) % (2**63)
