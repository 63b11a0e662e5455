"""Image-classifier helpers for apps and for `predict`: torchvision backbones with a new
head, transforms, and the self-describing model folder (safetensors + model.json)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from inflame.errors import InflameError, RunError, did_you_mean
from inflame.model_files import META_FILE, MODEL_FORMAT, WEIGHTS_FILE
from inflame.tensorfile import load_tensors, save_tensors

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def classification_models() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


# torch.load(weights_only=True) had remote-code-execution bypasses, fixed in torch 2.6
# (CVE-2025-32434) and again in 2.10; an older torch reads only safetensors files.
SAFE_PICKLE_TORCH = (2, 10)


def _torch_version(version: str) -> tuple[int, int]:
    """(major, minor) of a version string such as "2.14.1+cu128"."""
    parts = [*version.split("+")[0].split("."), "0"]
    return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)


def _load_state_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return load_tensors(path)
    if _torch_version(torch.__version__) < SAFE_PICKLE_TORCH:
        raise InflameError(
            f"Weights file {path} is a pickle (.pth/.pt); torch {torch.__version__} cannot "
            "load pickles safely (torch.load's weights_only mode had remote-code-execution "
            "bypasses before torch 2.10). Convert it to .safetensors where you trust it "
            "(safetensors.torch.save_file(torch.load(path), 'weights.safetensors')), or "
            "upgrade torch."
        )
    state = torch.load(str(path), map_location="cpu", weights_only=True)  # no arbitrary pickle
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InflameError(f"Weights file {path} does not hold a state dict.")
    return state


def build_backbone(architecture: str, pretrained: bool | str | Path = False) -> nn.Module:
    """A torchvision classification model with its original head.

    pretrained: False (random init), True (torchvision's default ImageNet weights, downloaded
    once into the torch hub cache), or a local weights file (.safetensors, or a .pth/.pt
    state dict loaded with weights_only=True).
    """
    import torchvision

    names = classification_models()
    if architecture not in names:
        hint = did_you_mean(architecture, names)
        raise InflameError(
            f"Unknown architecture `{architecture}`.{hint}"
            f" Any torchvision classification model works, e.g. resnet18, "
            "resnet50, mobilenet_v3_small, efficientnet_b0."
        )
    if pretrained is True:
        weights = torchvision.models.get_model_weights(architecture).DEFAULT
        try:
            return torchvision.models.get_model(architecture, weights=weights)
        except Exception as exc:  # typically no network
            raise InflameError(
                f"Could not load pretrained ImageNet weights for {architecture} ({exc}). "
                "They are downloaded once into the torch hub cache, which needs network access; "
                "offline, set `pretrained` to a local weights file or to false."
            ) from None
    model = torchvision.models.get_model(architecture, weights=None)
    if pretrained:
        path = Path(pretrained)
        if not path.is_file():
            raise InflameError(
                f"Pretrained weights file {path} does not exist. Set "
                "`pretrained` to true, false or an existing weights file."
            )
        try:
            state = _load_state_file(path)
        except InflameError:
            raise
        except Exception as exc:  # a pickle loader's or safetensors' own error
            said = exc.strerror if isinstance(exc, OSError) and exc.strerror else ""
            raise InflameError(
                f"Weights file {path} could not be read ({type(exc).__name__}"
                f"{': ' + said if said else ''}): `pretrained` takes a .safetensors file, or a "
                ".pth/.pt state dict saved with torch.save(model.state_dict(), path)."
            ) from None
        try:
            model.load_state_dict(state)
        except (RuntimeError, KeyError) as exc:
            raise InflameError(
                f"Weights file {path} does not fit {architecture}: {str(exc).splitlines()[0]}"
            ) from None
    return model


def head_name(model: nn.Module) -> str:
    """The name of the model's last Linear layer: its classification head."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise InflameError(f"{type(model).__name__} has no Linear classification head.")
    return names[-1]


def get_head(model: nn.Module) -> nn.Linear:
    return model.get_submodule(head_name(model))  # type: ignore[return-value]


def set_head(model: nn.Module, head: nn.Module, name: str | None = None) -> None:
    """Put `head` in place of the last Linear layer (or of the module called `name`)."""
    parent_name, _, attr = (name or head_name(model)).rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, head)


def replace_head(model: nn.Module, num_classes: int) -> nn.Linear:
    """Swap the last Linear layer for one with `num_classes` outputs; return the new layer."""
    head = nn.Linear(get_head(model).in_features, num_classes)
    set_head(model, head)
    return head


def build_classifier(
    architecture: str,
    num_classes: int,
    *,
    pretrained: bool | str | Path = False,
    freeze_backbone: bool = False,
) -> nn.Module:
    """A backbone (optionally pretrained and frozen) with a fresh `num_classes` head."""
    model = build_backbone(architecture, pretrained)
    head = replace_head(model, num_classes)
    if freeze_backbone:
        for param in model.parameters():
            param.requires_grad_(False)
        for param in head.parameters():
            param.requires_grad_(True)
    return model


def decode_side(image_size: int) -> int:
    """The side at which images are decoded and cached: room around the final crop."""
    return round(image_size * 8 / 7)


class Decoded:
    """A transform step: a PIL image becomes the uint8 tensor (3, side, side) that the
    decode cache stores (`inflame.data.decoded.decode_pil`); a tensor passes unchanged."""

    def __init__(self, side: int):
        self.side = side

    def __call__(self, image: Any) -> Any:
        if isinstance(image, torch.Tensor):
            return image
        from inflame.data.decoded import decode_pil

        return torch.from_numpy(decode_pil(image.convert("RGB"), self.side))

    def __repr__(self) -> str:
        return f"Decoded(side={self.side})"


def train_transform(
    image_size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> Any:
    """Random crop and flip of a decoded uint8 image (3, S, S), then float and normalise.
    Use with `ImageFolderDataset(..., decode_size=decode_side(image_size))`; a PIL image
    is decoded the same way first."""
    from torchvision.transforms import v2

    return v2.Compose(
        [
            Decoded(decode_side(image_size)),
            v2.RandomResizedCrop(image_size, scale=(0.7, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )


def eval_transform(
    image_size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> Any:
    """Centre crop of a decoded uint8 image (3, S, S), then float and normalise; a PIL
    image is decoded the same way first."""
    from torchvision.transforms import v2

    return v2.Compose(
        [
            Decoded(decode_side(image_size)),
            v2.CenterCrop(image_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )


def save_classifier(
    model: nn.Module,
    folder: str | Path,
    *,
    architecture: str,
    classes: Sequence[str],
    image_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Path:
    """Write folder/weights.safetensors and folder/model.json: all `predict` needs."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    weights = folder / WEIGHTS_FILE
    tmp = weights.with_name(f".{WEIGHTS_FILE}.tmp")
    save_tensors(tensors, tmp, digest=True)
    os.replace(tmp, weights)
    meta = {
        "format": MODEL_FORMAT,
        "architecture": architecture,
        "classes": list(classes),
        "preprocessing": {
            "image_size": image_size,
            "resize": decode_side(image_size),
            "decode": "shorter-side-then-centre-square",
            "mean": list(mean),
            "std": list(std),
        },
    }
    (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return weights


def load_classifier(folder: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a saved classifier (eval mode, CPU) and return it with its metadata."""
    folder = Path(folder)
    meta_path, weights = folder / META_FILE, folder / WEIGHTS_FILE
    if not meta_path.is_file() or not weights.is_file():
        raise RunError(
            f"{folder} holds no trained model ({META_FILE} and {WEIGHTS_FILE}). "
            "Is the run finished? `inflame runs` lists runs and their status."
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        message = f"{meta_path} cannot be read ({exc}); the model folder is damaged."
        raise RunError(message) from None
    if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise RunError(f"{meta_path} is not an inflame image classifier (format {found!r}).")
    try:
        model = build_classifier(meta["architecture"], len(meta["classes"]))
        model.load_state_dict(load_tensors(weights))  # checks the weights' own digest
    except InflameError:
        raise
    except Exception as exc:  # damaged weights, or a model.json that does not match them
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RunError(
            f"The model in {folder} cannot be loaded: {reason}. The folder is damaged or was "
            "changed after training; restore it, or train the run again."
        ) from None
    model.eval()
    return model, meta


def warm_start(model: nn.Module, parent: str | Path, classes: Sequence[str]) -> dict[str, Any]:
    """Load a parent run's weights (its model folder) into `model`, a classifier for
    `classes` of the same architecture: every layer but the head as it is, the head row by
    row, by class name; a class the parent did not know keeps its fresh row. A class the
    parent knew but `classes` lacks is an error (its images would vanish from the lineage).
    Returns what was done: {"parent_classes", "new_classes"}."""
    parent_model, meta = load_classifier(parent)
    missing = [name for name in meta["classes"] if name not in classes]
    if missing:
        raise InflameError(
            f"--init-from {Path(parent).parent}: its classes {missing} are not in this run's "
            "training data. A warm start keeps every class of its parent; put them back, or "
            "train from scratch (leave out --init-from)."
        )
    head = head_name(model)
    state = model.state_dict()
    inherited = parent_model.state_dict()
    body = {key for key in state if not key.startswith(head + ".")}
    misfit = sorted(
        body ^ {key for key in inherited if not key.startswith(head + ".")}
        | {key for key in body & set(inherited) if state[key].shape != inherited[key].shape}
    )
    if misfit:
        raise InflameError(
            f"--init-from {Path(parent).parent}: its {meta['architecture']} weights do not fit "
            f"this run's model ({misfit[0]}, ...). Use the parent's `architecture` "
            f"({meta['architecture']}), or leave out --init-from."
        )
    for key in body:
        state[key] = inherited[key].to(state[key].dtype)
    for index, name in enumerate(meta["classes"]):
        row = list(classes).index(name)
        state[f"{head}.weight"][row] = inherited[f"{head}.weight"][index]
        state[f"{head}.bias"][row] = inherited[f"{head}.bias"][index]
    model.load_state_dict(state)
    return {
        "parent_classes": list(meta["classes"]),
        "new_classes": [name for name in classes if name not in meta["classes"]],
    }
