"""`inflame label import`: merge newly labelled class folders into a training set.

A file whose content the training set (or an earlier file of the same import) already holds
is refused, by sha256, so an image never counts twice nor under two labels; nothing is
overwritten (a name taken by other content gets a suffix); files that are not readable images
are refused. Every import appends a provenance record to `TRAIN_DIR/.inflame-imports.jsonl`
(a hidden file: never a class, and part of the set's fingerprint like any file).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inflame.data.images import UnreadableImage, is_image_file, is_junk, open_image
from inflame.errors import InflameError
from inflame.hashing import sha256_file, sha256_files

PROVENANCE = ".inflame-imports.jsonl"


@dataclass
class Imported:
    added: dict[str, list[str]] = field(default_factory=dict)  # class -> names in TRAIN_DIR
    duplicates: list[dict[str, str]] = field(default_factory=list)  # {"file", "same_as"}
    refused: list[dict[str, str]] = field(default_factory=list)  # {"file", "error"}
    new_classes: list[str] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)


def _class_folders(root: Path, what: str) -> list[Path]:
    if not root.is_dir():
        raise InflameError(f"{what} {root}: no such folder.")
    return sorted(p for p in root.iterdir() if p.is_dir() and not is_junk(p.name))


def _existing(train: Path) -> dict[str, str]:
    """sha256 -> relative name of every image already in the training set."""
    files = [p for folder in _class_folders(train, "--into") for p in sorted(folder.rglob("*"))]
    files = [p for p in files if p.is_file() and is_image_file(p)]
    return {
        digest: path.relative_to(train).as_posix()
        for path, digest in zip(files, sha256_files(files), strict=True)
    }


def _free_name(folder: Path, name: str, taken: set[Path]) -> Path:
    """folder/name, or folder/stem-N.suffix when that name is taken."""
    target, n = folder / name, 1
    while target.exists() or target in taken:
        stem, suffix = os.path.splitext(name)
        target, n = folder / f"{stem}-{n}{suffix}", n + 1
    return target


def _publish(temp: Path, target: Path) -> None:
    """Give the complete copy `temp` its name, never replacing a file that took the name
    meanwhile (a hard link fails then; where links are not supported, checked first)."""
    try:
        os.link(temp, target)
    except FileExistsError:
        temp.unlink()
        raise InflameError(
            f"{target} appeared while importing; nothing was imported. Run the import again."
        ) from None
    except OSError:  # no hard links on this file system
        if target.exists():
            temp.unlink()
            raise InflameError(
                f"{target} appeared while importing; nothing was imported. Run the import again."
            ) from None
        os.replace(temp, target)
        return
    temp.unlink()


def import_labels(source: Path, train: Path, *, dry_run: bool = False) -> Imported:
    """Copy `source/<class>/**/<image>` into `train/<class>/`, refusing duplicates by
    content; returns what was added (and, unless `dry_run`, records it)."""
    source, train = Path(source), Path(train)
    classes = _class_folders(source, "SRC")
    if not classes:
        raise InflameError(
            f"SRC {source} holds no class folders: put each labelled image in a folder named "
            "by its class (SRC/turkey/img.jpg)."
        )
    a, b = source.resolve(), train.resolve()
    if a.is_relative_to(b) or b.is_relative_to(a):
        raise InflameError(
            f"SRC {source} and --into {train} overlap; keep the labelled images in a folder of "
            "their own, outside the training set."
        )
    known = _existing(train)
    existing_classes = {p.name for p in _class_folders(train, "--into")}
    result = Imported()
    plan: list[tuple[Path, Path]] = []
    taken: set[Path] = set()
    for folder in classes:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(source).as_posix()
            if not path.is_file() or any(is_junk(part) for part in path.parts[len(source.parts) :]):
                continue
            if not is_image_file(path):
                result.refused.append({"file": relative, "error": "not an image file"})
                continue
            try:
                open_image(path)
            except UnreadableImage as exc:
                result.refused.append({"file": relative, "error": str(exc)})
                continue
            digest = sha256_file(path)
            if digest in known:
                result.duplicates.append({"file": relative, "same_as": known[digest]})
                continue
            target = _free_name(train / folder.name, path.name, taken)
            taken.add(target)
            known[digest] = target.relative_to(train).as_posix()
            plan.append((path, target))
            result.added.setdefault(folder.name, []).append(target.relative_to(train).as_posix())
    result.new_classes = sorted(set(result.added) - existing_classes)
    result.record = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "source": str(source.resolve()),
        "added": {name: len(files) for name, files in sorted(result.added.items())},
        "new_classes": result.new_classes,
        "files": {name: files for name, files in sorted(result.added.items())},
        "duplicates": result.duplicates,
        "refused": result.refused,
    }
    if dry_run or not plan:
        return result
    copied: list[Path] = []
    try:
        for path, target in plan:  # copied under a temporary name, published when complete
            target.parent.mkdir(parents=True, exist_ok=True)
            temp = target.with_name(f".{target.name}.importing")
            shutil.copy2(path, temp)
            _publish(temp, target)
            copied.append(target)
    except BaseException:
        for target in copied:  # all or nothing: only what this import wrote goes
            target.unlink(missing_ok=True)
        for name in result.new_classes:  # an empty class folder would stop the next training
            with contextlib.suppress(OSError):
                (train / name).rmdir()
        raise
    with (train / PROVENANCE).open("a", encoding="utf-8") as log:
        log.write(json.dumps(result.record) + "\n")
    return result
