"""Seeding for reproducible runs."""

from __future__ import annotations

import os
import random
import sys

INDUCTOR_DETERMINISTIC_ENV = "TORCHINDUCTOR_DETERMINISTIC"  # read when torch._inductor loads


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
        deterministic_kernels(True)
        torch.backends.cudnn.benchmark = False


def deterministic_kernels(mode: bool, *, warn_only: bool = True) -> None:
    """`torch.use_deterministic_algorithms(mode, warn_only=warn_only)`, without importing
    torch._inductor just to set its `deterministic` flag (a second or more of start-up
    where nothing else imports it): until something loads inductor (torch.compile does),
    the flag is passed through the variable inductor reads when it loads.

    Uninitialized memory is not filled with NaN (torch's default in this mode): filling
    every new tensor cost ~4 % of a CPU training step here, and changes no result of a
    program that never reads memory it did not write (torch's docs say as much)."""
    import torch

    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    if "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
        return
    os.environ[INDUCTOR_DETERMINISTIC_ENV] = "1" if mode else "0"
    torch._C._set_deterministic_algorithms(mode, warn_only=warn_only)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed for one epoch: every epoch's shuffling and augmentation depend only on
    (seed, epoch), so a run resumed at any epoch boundary replays the same batches."""
    return (seed * 1_000_003 + epoch * 7919) % (2**63)
