"""Data loaders that are fast and still replay exactly.

One DataLoader per fit, with persistent workers and prefetching. The sample order of an
epoch depends only on (seed, epoch), and each sample's random augmentation only on
(seed, epoch, index): the same batches whatever the number of workers, whether a run
resumed, and (up to the padding of the last shard) how many processes share the data.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from inflame.performance import available_cpus
from inflame.training.seeding import epoch_seed, seed_rngs

MAX_AUTO_WORKERS = 8


def auto_workers(device: torch.device, local_processes: int = 1) -> int:
    """DataLoader workers per training process, from the CPUs each process has.

    With a GPU, the CPUs feed it: all but one per process (up to 8). On a CPU the
    model needs the cores itself: one worker up to 4 CPUs (measured on 2 cores: loading
    in the training process stalls its threads, one worker keeps up), a quarter of the
    cores beyond.
    """
    cpus = max(1, available_cpus() // max(1, local_processes))
    if device.type == "cuda":
        return max(1, min(MAX_AUTO_WORKERS, cpus - 1))
    if cpus == 1:
        return 0
    return 1 if cpus <= 4 else min(MAX_AUTO_WORKERS, cpus // 4)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return (epoch_seed(seed, epoch) * 1_000_033 + index * 2_654_435_761) % (2**63)


class EpochOrder(Sampler):
    """Yields (epoch, index) keys: a shuffle seeded by (seed, epoch), sharded over processes
    the way DistributedSampler does (padded to equal shards). Call `set_epoch` first."""

    def __init__(self, size: int, seed: int, *, shuffle: bool, rank: int = 0, world: int = 1):
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.rank, self.world = rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.size / self.world) if self.world > 1 else self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        if self.world > 1:
            total = len(self) * self.world
            while len(order) < total:
                order += order[: total - len(order)]
            order = order[self.rank : total : self.world]
        return iter([(self.epoch, index) for index in order])


class SeededSamples(Dataset):
    """Wraps a dataset so that sample `index` of `epoch` draws its augmentation from
    its own seed. In the training process the global random state is restored after
    each sample, so loading does not change what dropout (say) draws."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed
        # a dataset with `takes_epoch = True` is given (epoch, index) keys itself
        self.takes_epoch = bool(getattr(dataset, "takes_epoch", False))

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list[tuple[int, int]]) -> list[Any]:
        """A batch (the DataLoader asks for one at a time): the global random state is
        saved and restored once per batch, not per sample (~0.2 ms each)."""
        if get_worker_info() is not None:  # a worker process: its state is its own
            return [self._seeded(key) for key in keys]
        saved = (random.getstate(), np.random.get_state(), torch.random.get_rng_state())
        try:
            return [self._seeded(key) for key in keys]
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.random.set_rng_state(saved[2])

    def _seeded(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        seed_rngs(sample_seed(self.seed, epoch, index), cpu_only=True)
        return self.dataset[key if self.takes_epoch else index]


def make_loader(
    dataset: Dataset,
    order: EpochOrder,
    *,
    batch_size: int,
    workers: int,
    pin_memory: bool,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader over `SeededSamples(dataset)` in `order`, workers kept across epochs."""
    extra: dict[str, Any] = {}
    if workers > 0:
        extra = {"persistent_workers": True, "prefetch_factor": 2}
    return DataLoader(
        SeededSamples(dataset, order.seed),
        batch_size=batch_size,
        sampler=order,
        num_workers=workers,
        pin_memory=pin_memory,
        drop_last=drop_last,
        # the loader draws its workers' base seed from this, not from the global stream
        # (which dropout uses); samples are seeded by SeededSamples anyway
        generator=torch.Generator().manual_seed(order.seed),
        **extra,
    )
