"""A small synthetic image set, drawn here so that the demo needs no download.

Three classes of drawn shapes (circle, square, triangle) with random colours, sizes,
positions, rotations, textured backgrounds, noise and JPEG artefacts. Every image depends
only on (seed, class, index), so the set is the same on every machine with the same Pillow.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from inflame.data.split import SplitReport, split_dataset
from inflame.errors import DataError

DEMO_CLASSES = ("circle", "square", "triangle")


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=3)


def _luma(rgb: np.ndarray) -> float:
    return float(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])


def draw_shape(kind: str, size: int, rng: np.random.Generator) -> Image.Image:
    """One image of `kind` (circle, square or triangle), size x size pixels."""
    scale = 2  # draw at twice the size, then downsample: anti-aliased edges
    big = size * scale
    background = _colour(rng)
    gradient = np.linspace(0, 1, big)[None, :, None] * (_colour(rng) - background)[None, None]
    canvas = np.clip(background[None, None] + gradient * 0.5, 0, 255).astype(np.uint8)
    image = Image.fromarray(np.repeat(canvas, big, axis=0)[:big])
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(0, 4))):  # distractor strokes
        points = [tuple(int(v) for v in rng.integers(0, big, size=2)) for _ in range(2)]
        draw.line(points, fill=tuple(int(c) for c in _colour(rng)), width=scale)
    fill = _colour(rng)
    while abs(_luma(fill) - _luma(background)) < 70:  # keep the shape visible
        fill = _colour(rng)
    radius = big * rng.uniform(0.2, 0.36)
    cx, cy = (big / 2 + rng.uniform(-0.12, 0.12, size=2) * big).tolist()
    angle = rng.uniform(0, 2 * math.pi)
    colour = tuple(int(c) for c in fill)
    if kind == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=colour)
    else:
        corners = 4 if kind == "square" else 3
        points = [
            (
                cx + radius * math.cos(angle + 2 * math.pi * k / corners),
                cy + radius * math.sin(angle + 2 * math.pi * k / corners),
            )
            for k in range(corners)
        ]
        draw.polygon(points, fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0, 1.2)))
    image = image.resize((size, size), Image.Resampling.BILINEAR)
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, 10, size=(size, size, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def generate_images(
    destination: Path,
    per_class: int,
    image_size: int,
    seed: int,
    classes: Sequence[str] = DEMO_CLASSES,
) -> dict[str, int]:
    """Write destination/<class>/<class>-NNNN.jpg; returns files per class."""
    for label, kind in enumerate(classes):
        folder = destination / kind
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            rng = np.random.default_rng([seed, label, index])
            image = draw_shape(kind, image_size, rng)
            quality = int(rng.integers(75, 96))
            image.save(folder / f"{kind}-{index:04d}.jpg", format="JPEG", quality=quality)
    return dict.fromkeys(classes, per_class)


def make_demo_dataset(
    destination: str | Path,
    *,
    per_class: int = 400,
    image_size: int = 64,
    seed: int = 0,
    ratios: Sequence[float] | None = (0.8, 0.1, 0.1),
) -> SplitReport:
    """Generate the demo set into destination/{train,val,test}/<class>/ (or, with
    ratios=None, straight into destination/<class>/). Refuses to overwrite."""
    destination = Path(destination)
    if per_class < 1 or image_size < 8:
        raise DataError("The demo set needs --per-class >= 1 and --image-size >= 8.")
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise DataError(
            f"Destination {destination} already exists and is not empty; "
            "refusing to overwrite. Choose a new folder or remove it first."
        )
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".demo-", dir=destination.parent) as tmp:
        raw = Path(tmp) / "all"
        generate_images(raw, per_class, image_size, seed)
        if ratios is not None:
            return split_dataset(raw, destination, ratios, seed=seed)
        os.replace(raw, destination)  # same filesystem; an empty folder is replaced
        return SplitReport(destination, {"all": dict.fromkeys(DEMO_CLASSES, per_class)})
