"""`ImageFolderDataset`: a checked, deterministic class-per-folder dataset for torch."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from inflame.data.images import MAX_PIXELS, drop_bad_images, open_image, scan_image_folder


class ImageFolderDataset(Dataset):
    """Images under `root/<class>/…`, labelled by folder, in sorted order.

    Every image is checked when the dataset is built, so a corrupt file is reported up
    front (naming the files) instead of crashing an epoch; with `bad_images="skip"` such
    files are left out and counted in `skipped`.
    """

    def __init__(
        self,
        root: str | Path,
        transform: Callable[[Any], Any] | None = None,
        *,
        classes: Sequence[str] | None = None,
        bad_images: str = "error",
        max_pixels: int = MAX_PIXELS,
    ):
        self.root = Path(root)
        self.transform = transform
        self.max_pixels = max_pixels
        self.classes, samples = scan_image_folder(self.root, classes)
        self.samples, self.skipped = drop_bad_images(self.root, samples, bad_images, max_pixels)
        if self.skipped:
            print(
                f"warning: skipped {len(self.skipped)} unreadable image(s) in {self.root}",
                file=sys.stderr,
            )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        sample = self.samples[index]
        image = open_image(sample.path, self.max_pixels)
        return (self.transform(image) if self.transform else image), sample.label

    def class_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(self.classes, 0)
        for sample in self.samples:
            counts[self.classes[sample.label]] += 1
        return counts
