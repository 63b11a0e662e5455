"""The feature cache for frozen backbones: the backbone's features of every image computed
once (per run, and across runs while the cache holds them); the head then trains on them,
so an epoch costs a pass of one Linear layer instead of a pass of the whole network.

A frozen backbone has fixed weights, and run in eval mode (fixed BatchNorm statistics) it
maps each input to fixed features. Random augmentation changes the input every epoch, so
the cache holds `views` inputs per image: one view is the centre crop (no augmentation);
N views are N random augmentations, seeded by (seed, view, index), and epoch e trains on
view e mod N.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from inflame.cache import cache_dir, cache_enabled
from inflame.runlock import locked
from inflame.tensorfile import load_tensors, save_tensors
from inflame.training.loading import EpochOrder, SeededSamples
from inflame.vision import head_name, set_head

FORMAT = 1


@contextlib.contextmanager
def headless(model: nn.Module) -> Iterator[nn.Module]:
    """The model with its head replaced by the identity: it outputs the head's inputs."""
    name = head_name(model)
    head = model.get_submodule(name)
    set_head(model, nn.Identity(), name)
    try:
        yield model
    finally:
        set_head(model, head, name)


def backbone_digest(model: nn.Module) -> str:
    """sha256 of every weight except the head's: which backbone made the features."""
    prefix = head_name(model) + "."
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if name.startswith(prefix):
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


class FeatureViews(Dataset):
    """(features, label) pairs; epoch e serves view e mod views. Keys are (epoch, index),
    as `inflame.training.loading.EpochOrder` yields them."""

    takes_epoch = True

    def __init__(self, features: torch.Tensor, labels: torch.Tensor):
        self.features, self.labels = features, labels  # (views, N, D), (N,)

    def __len__(self) -> int:
        return self.features.shape[1]

    def __getitem__(self, key: tuple[int, int] | int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        return self.features[epoch % self.features.shape[0], index], self.labels[index]


@torch.no_grad()
def compute_features(
    model: nn.Module,
    dataset: Dataset,
    *,
    views: int,
    seed: int,
    device: torch.device,
    batch_size: int = 64,
    num_workers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (views, N, D) and labels (N,) of `dataset` under `model`'s frozen backbone."""
    was_training = model.training
    model.eval().to(device)
    order = EpochOrder(len(dataset), seed, shuffle=False)  # type: ignore[arg-type]
    loader = DataLoader(
        SeededSamples(dataset, seed),
        batch_size=batch_size,
        sampler=order,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
    )
    per_view: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    try:
        with headless(model) as backbone:
            for view in range(views):
                order.set_epoch(view)
                chunks = []
                for inputs, targets in loader:
                    chunks.append(backbone(inputs.to(device)).float().cpu())
                    if view == 0:
                        labels.append(torch.as_tensor(targets))
                per_view.append(torch.cat(chunks))
    finally:
        model.train(was_training)
    return torch.stack(per_view), torch.cat(labels)


def cached_features(
    model: nn.Module,
    dataset: Dataset,
    key_parts: dict[str, object] | None,
    *,
    views: int,
    seed: int,
    device: torch.device,
    batch_size: int = 64,
    num_workers: int = 0,
) -> FeatureViews:
    """`compute_features`, read from the cache when the same backbone, data and views made
    them before. `key_parts` names the data and its preprocessing (e.g. the decode cache
    key and the transform); None computes them without the cache."""
    model.to(device)  # on a cache hit too: the head trains there, the backbone serves there
    parts = {**(key_parts or {}), "format": FORMAT, "views": views, "seed": seed}
    parts.update(
        backbone=backbone_digest(model),
        transform=repr(getattr(dataset, "transform", None)),
        device=device.type,  # kernels differ in their last bits between devices
        torch=torch.__version__,
        batch_size=batch_size,
    )
    key = hashlib.sha256(repr(sorted(parts.items())).encode()).hexdigest()

    def compute() -> tuple[torch.Tensor, torch.Tensor]:
        return compute_features(
            model,
            dataset,
            views=views,
            seed=seed,
            device=device,
            batch_size=batch_size,
            num_workers=num_workers,
        )

    if key_parts is None or not cache_enabled():
        return FeatureViews(*compute())
    folder = cache_dir("features")
    path = folder / f"{key}.safetensors"
    try:
        with locked(folder / f"{key}.lock"):
            found = _read(path)
            if found is not None:
                os.utime(path)
                return FeatureViews(*found)
            features, labels = compute()
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            try:
                save_tensors({"features": features, "labels": labels}, tmp)
                os.replace(tmp, path)
            except OSError as exc:  # a full disk costs the cache, not the run
                tmp.unlink(missing_ok=True)
                _warn(folder, exc)
            return FeatureViews(features, labels)
    except OSError as exc:  # no lock file: an unwritable cache folder
        _warn(folder, exc)
        return FeatureViews(*compute())


def _warn(folder: Path, exc: OSError) -> None:
    print(
        f"warning: the feature cache in {folder} cannot be used ({exc}); the features are "
        "computed for this run only",
        file=sys.stderr,
    )


def _read(path: Path) -> tuple[torch.Tensor, torch.Tensor] | None:
    if not path.is_file():
        return None
    try:
        tensors = load_tensors(path)
        return tensors["features"], tensors["labels"]
    except Exception:  # damaged: computed again
        return None
