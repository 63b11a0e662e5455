"""`ImageFolderDataset`: a checked, deterministic class-per-folder dataset for torch."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from inflame.data.images import (
    MAX_PIXELS,
    apply_bad_image_policy,
    drop_bad_images,
    open_image,
    scan_image_folder,
)
from inflame.errors import DataError


class ImageFolderDataset(Dataset):
    """Images under `root/<class>/…`, labelled by folder, in sorted order.

    Every image is checked when the dataset is built, so a corrupt file is reported up
    front (naming the files) instead of crashing an epoch; with `bad_images="skip"` such
    files are left out and counted in `skipped`.

    With `decode_size`, items are uint8 tensors (3, decode_size, decode_size): the image's
    shorter side resized to `decode_size` and its centre square cropped
    (`inflame.data.decoded.decode_image`), read from the decode cache, so every image is
    decoded once across epochs and runs; `transform` then works on that tensor (see
    `inflame.vision.train_transform`). Without it, items are PIL images.
    """

    def __init__(
        self,
        root: str | Path,
        transform: Callable[[Any], Any] | None = None,
        *,
        classes: Sequence[str] | None = None,
        bad_images: str = "error",
        max_pixels: int = MAX_PIXELS,
        decode_size: int | None = None,
    ):
        self.root = Path(root)
        self.transform = transform
        self.max_pixels = max_pixels
        self.decode_size = decode_size
        self.classes, samples = scan_image_folder(self.root, classes)
        self._entry = None
        self._pixels: Any = None  # the memory map (reopened by path after pickling)
        self.content_key: str | None = None  # the images' contents and labels, when cached
        if decode_size is not None:
            from inflame.data.decoded import cached_images

            self.content_key, self._entry = cached_images(
                self.root, samples, decode_size, max_pixels
            )
        if self._entry is not None:  # decoded before: the cache knows which files are bad
            bad = [(self.root / name, reason) for name, reason in self._entry.bad]
            apply_bad_image_policy(self.root, samples, bad, bad_images)  # raises for "error"
            self.samples = [samples[i] for i in self._entry.kept]  # row i of the array
            self.skipped = bad
            # mapped now: the data stays readable if the entry is evicted or cleared later
            # (worker processes started by fork inherit the mapping)
            self._pixels = self._entry.open()
        else:
            self.samples, self.skipped = drop_bad_images(self.root, samples, bad_images, max_pixels)
        if self.skipped:
            print(
                f"warning: skipped {len(self.skipped)} unreadable image(s) in {self.root}",
                file=sys.stderr,
            )
            kept = {sample.label for sample in self.samples}
            lost = [name for i, name in enumerate(self.classes) if i not in kept]
            if classes is None and lost:  # this set defines the classes: each needs images
                raise DataError(
                    f"Every image of class(es) {', '.join(lost)} in {self.root} is unreadable, "
                    "so the class would have nothing to learn from. Replace the images."
                )

    @property
    def cached(self) -> bool:
        """True when items come from the decode cache."""
        return self._entry is not None

    def __len__(self) -> int:
        return len(self.samples)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_pixels"] = None  # each worker maps the file itself
        return state

    def decoded(self, index: int) -> Any:
        """The uint8 tensor of one image (needs `decode_size`)."""
        import torch

        if self._entry is not None:
            if self._pixels is None:
                self._pixels = self._entry.open()
            return torch.from_numpy(self._pixels[index].copy())
        from inflame.data.decoded import decode_image

        assert self.decode_size is not None
        pixels = decode_image(self.samples[index].path, self.decode_size, self.max_pixels)
        return torch.from_numpy(pixels)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        sample = self.samples[index]
        if self.decode_size is not None:
            item = self.decoded(index)
        else:
            item = open_image(sample.path, self.max_pixels)
        return (self.transform(item) if self.transform else item), sample.label

    def class_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(self.classes, 0)
        for sample in self.samples:
            counts[self.classes[sample.label]] += 1
        return counts
