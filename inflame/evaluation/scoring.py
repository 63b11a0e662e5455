"""Run a trained model over a class-per-folder image set: every image's class probabilities."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from inflame.data.images import MAX_PIXELS, apply_bad_image_policy, scan_image_folder
from inflame.errors import DataError

if TYPE_CHECKING:
    from inflame.data.images import Sample
    from inflame.predict import Predictor


@dataclass(frozen=True)
class Scored:
    """The model's answers on one image set, in the set's stable order."""

    root: Path
    classes: list[str]  # the model's classes; labels index into them
    images: list[Path]
    labels: np.ndarray  # (n,) int64: the true class of each image
    logits: np.ndarray  # (n, classes) float64

    @property
    def probabilities(self) -> np.ndarray:
        shifted = self.logits - self.logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=1, keepdims=True)


def score_folder(predictor: Predictor, root: Path, batch_size: int = 64) -> Scored:
    """Every image of `root` (one folder per class, the model's classes) through the model,
    decoded and transformed exactly as `inflame predict` does. Unreadable images are an error
    naming them: metrics over a silently smaller set would not describe the set."""
    import torch

    from inflame.data.decoded import decode_image
    from inflame.data.images import UnreadableImage

    classes = list(predictor.classes)
    _, samples = _scan(root, classes)
    logits: list[np.ndarray] = []
    bad: list[tuple[Path, str]] = []
    for start in range(0, len(samples), batch_size):
        tensors = []
        for sample in samples[start : start + batch_size]:
            try:
                pixels = decode_image(sample.path, predictor.side, MAX_PIXELS)
            except UnreadableImage as exc:
                bad.append((sample.path, str(exc).removeprefix(f"{sample.path}: ")))
                continue
            tensors.append(predictor.transform(torch.from_numpy(pixels)))
        if bad or not tensors:
            continue  # keep checking, to name every unreadable image at once
        with torch.inference_mode():
            out = predictor.model(torch.stack(tensors).to(predictor.device)).float().cpu().numpy()
        logits.append(out.astype(np.float64))
    apply_bad_image_policy(root, samples, bad, "error")
    scores = np.concatenate(logits)
    if not np.isfinite(scores).all():
        raise DataError(
            f"The model's output on {root} is not a number (NaN or infinity) for "
            f"{int((~np.isfinite(scores).all(axis=1)).sum())} image(s): its weights are damaged "
            "or training diverged. Train the run again."
        )
    return Scored(
        root=root,
        classes=classes,
        images=[s.path for s in samples],
        labels=np.array([s.label for s in samples], dtype=np.int64),
        logits=scores,
    )


def _scan(root: Path, classes: list[str]) -> tuple[list[str], list[Sample]]:
    """The set's samples labelled by the model's classes; a class the model does not know is
    an error (the set may lack some of the model's classes)."""
    if not root.is_dir():
        raise DataError(
            f"Evaluation data {root} does not exist or is not a folder. Give a folder with one "
            "sub-folder per class, or the name of one of the run's data inputs (e.g. test)."
        )
    return scan_image_folder(root, classes)
