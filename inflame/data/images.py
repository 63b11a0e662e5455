"""Class-per-folder image sets: scanning, safe opening, and checks for unreadable files.

No torch here, so the CLI's data commands stay fast.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from inflame.errors import DataError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# The decoders Pillow may use: it picks one by content, not by name, so without this list a
# ".png" holding PostScript would reach the EPS plugin (and Ghostscript). (JPEG covers the
# multi-picture JPEGs cameras write: its opener returns them as MPO.)
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")
MAX_PIXELS = 50_000_000  # ~7000 x 7000; larger images are refused (decompression-bomb guard)


class UnreadableImage(DataError):
    """A file that is not a readable image, or one too large to decode safely."""


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int


JUNK_FOLDERS = frozenset({"__MACOSX", "__pycache__", ".ipynb_checkpoints"})


def is_junk(name: str) -> bool:
    """Folders that are never classes: hidden ones and what archivers and tools leave."""
    return name.startswith(".") or name in JUNK_FOLDERS


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def open_image(
    path: str | Path, max_pixels: int = MAX_PIXELS, data: bytes | None = None
) -> Image.Image:
    """Open and fully decode an image as RGB; raise UnreadableImage saying why not. With
    `data`, the image is those bytes (an upload), and `path` only names it in messages."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            source = path if data is None else io.BytesIO(data)
            image = Image.open(source, formats=IMAGE_FORMATS)
            width, height = image.size
            if width * height > max_pixels:
                raise UnreadableImage(
                    f"{path}: image is {width}x{height} = {width * height:,} pixels, above the "
                    f"limit of {max_pixels:,} (decompression-bomb guard). Resize it first."
                )
            image.load()
            return to_rgb(ImageOps.exif_transpose(image))  # as the camera held it
    except UnreadableImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnreadableImage(
            f"{path}: refused as a possible decompression bomb (decompression-bomb guard: {exc})."
        ) from None
    except FileNotFoundError:
        raise UnreadableImage(f"{path}: no such file.") from None
    except IsADirectoryError:
        raise UnreadableImage(f"{path}: is a directory, not an image.") from None
    except Image.UnidentifiedImageError:
        raise UnreadableImage(
            f"{path}: not an image in a format inflame reads ({', '.join(IMAGE_FORMATS)})."
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise UnreadableImage(f"{path}: not a readable image ({exc}).") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB. Pillow's own conversion clips 16-bit samples at 255 (a 16-bit PNG turns
    white); they are scaled to 8 bits instead, and float images from [0, 1]."""
    import numpy as np

    if not (image.mode.startswith("I;16") or image.mode in ("I", "F")):
        return image.convert("RGB")
    samples = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        scale = 255.0 if samples.max(initial=0) <= 1.0 else 1.0
    else:  # 16-bit; "I" may also hold 8-bit values
        wide = image.mode != "I" or samples.max(initial=0) > 255
        scale = 1 / 257.0 if wide else 1.0
    gray = np.clip(np.rint(samples * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, "L").convert("RGB")


def check_image(path: Path, max_pixels: int = MAX_PIXELS) -> str | None:
    """None if the image decodes, else the reason. JPEGs decode at reduced scale (fast)
    but still read the whole stream, so truncated files are caught."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=IMAGE_FORMATS) as image:
                width, height = image.size
                if width * height > max_pixels:
                    return f"{width}x{height} pixels, above the limit of {max_pixels:,}"
                if image.format == "JPEG":
                    image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
                image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return "refused as a possible decompression bomb"
    except (OSError, ValueError, SyntaxError) as exc:
        return str(exc) or type(exc).__name__
    return None


def find_bad_images(paths: Sequence[Path], max_pixels: int = MAX_PIXELS) -> list[tuple[Path, str]]:
    """Every path that does not decode, with the reason (checked on a few threads)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        reasons = list(pool.map(lambda p: check_image(p, max_pixels), paths))
    return [(p, r) for p, r in zip(paths, reasons, strict=True) if r is not None]


def scan_image_folder(
    root: Path, classes: Sequence[str] | None = None
) -> tuple[list[str], list[Sample]]:
    """Classes (sorted folder names, or the given list) and samples in a stable order."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"Image folder {root} does not exist or is not a directory.")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not is_junk(p.name))
    if not found:
        raise DataError(
            f"Image folder {root} has no class folders. Expected one sub-folder per class, "
            f"e.g. {root}/chicken/*.jpg and {root}/turkey/*.jpg."
        )
    defines_classes = classes is None
    if classes is None:
        classes = found
    else:
        extra = sorted(set(found) - set(classes))
        if extra:
            raise DataError(
                f"Image folder {root} has classes that the training set lacks: "
                f"{', '.join(extra)}. Train and validation sets need the same class folders."
            )
    samples: list[Sample] = []
    empty: list[str] = []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue
        if not os.access(folder, os.R_OK | os.X_OK):
            raise DataError(
                f"Class folder {folder} cannot be read (permission denied). Fix its "
                f"permissions (e.g. `chmod -R u+rX {folder}`)."
            )
        files = sorted(
            p
            for p in folder.rglob("*")
            if p.is_file()
            and is_image_file(p)
            and not any(is_junk(part) for part in p.relative_to(folder).parts[:-1])
        )
        if not files:
            empty.append(name)
        samples.extend(Sample(p, label) for p in files)
    if defines_classes and samples and len(classes) < 2:
        raise DataError(
            f"Image folder {root} has one class folder ({classes[0]}); a classifier needs at "
            "least two, or every answer is that class. Add a folder per class."
        )
    if empty and samples:
        raise DataError(
            f"Class folder(s) {', '.join(empty)} in {root} hold no images "
            f"({', '.join(sorted(IMAGE_EXTENSIONS))}); every class needs images. Add some, or "
            "remove the folder."
        )
    if not samples:
        raise DataError(
            f"Image folder {root} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})."
        )
    return list(classes), samples


def drop_bad_images(
    root: Path, samples: list[Sample], policy: str, max_pixels: int = MAX_PIXELS
) -> tuple[list[Sample], list[tuple[Path, str]]]:
    """Check every image. policy "error": raise naming the bad files; "skip": drop them."""
    bad = find_bad_images([s.path for s in samples], max_pixels)
    return apply_bad_image_policy(root, samples, bad, policy)


def apply_bad_image_policy(
    root: Path, samples: list[Sample], bad: list[tuple[Path, str]], policy: str
) -> tuple[list[Sample], list[tuple[Path, str]]]:
    """policy "error": raise naming the unreadable files; "skip": leave them out."""
    if not bad:
        return samples, []
    if policy != "skip":
        shown = "; ".join(f"{p} ({reason})" for p, reason in bad[:10])
        more = f"; and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise DataError(
            f"{len(bad)} unreadable image(s) in {root}: {shown}{more}. Remove or replace them, "
            'or set `bad_images = "skip"` under [job] (or `--set job.bad_images=skip`) to '
            "train without them."
        )
    bad_paths = {Path(p) for p, _ in bad}
    return [s for s in samples if s.path not in bad_paths], bad
