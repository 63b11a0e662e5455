"""Demo data, split, and checks for unreadable images (no torch needed here)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from inflame.data.demo import make_demo_dataset
from inflame.data.images import (
    UnreadableImage,
    check_image,
    drop_bad_images,
    open_image,
    scan_image_folder,
)
from inflame.data.split import allocate, parse_ratios, split_dataset
from inflame.errors import DataError, InflameError
from inflame.hashing import tree_hashes


def test_demo_data_is_deterministic_and_seed_dependent(tmp_path: Path):
    a = make_demo_dataset(tmp_path / "a", per_class=10, image_size=24, seed=1)
    make_demo_dataset(tmp_path / "b", per_class=10, image_size=24, seed=1)
    make_demo_dataset(tmp_path / "c", per_class=10, image_size=24, seed=2)
    assert tree_hashes(tmp_path / "a") == tree_hashes(tmp_path / "b")
    assert tree_hashes(tmp_path / "a") != tree_hashes(tmp_path / "c")
    assert a.counts == {
        "train": dict.fromkeys(("circle", "square", "triangle"), 8),
        "val": dict.fromkeys(("circle", "square", "triangle"), 1),
        "test": dict.fromkeys(("circle", "square", "triangle"), 1),
    }
    image = Image.open(next((tmp_path / "a" / "train" / "circle").iterdir()))
    assert image.format == "JPEG" and image.size == (24, 24)


def test_demo_data_without_split_and_refusing_to_overwrite(tmp_path: Path):
    make_demo_dataset(tmp_path / "raw", per_class=3, image_size=16, ratios=None)
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["circle", "square", "triangle"]
    with pytest.raises(DataError, match="refusing to overwrite"):
        make_demo_dataset(tmp_path / "raw", per_class=3, image_size=16)


def test_allocate_and_ratios():
    assert allocate(10, (0.8, 0.1, 0.1)) == [8, 1, 1]
    assert allocate(7, (0.5, 0.5)) == [4, 3]
    assert sum(allocate(101, (0.7, 0.2, 0.1))) == 101
    assert parse_ratios("0.8,0.2") == (0.8, 0.2)
    # sums are compared with a 1e-6 tolerance: float rounding passes, a real excess does not
    assert parse_ratios("0.7,0.2,0.1") == (0.7, 0.2, 0.1)  # 0.9999999999999999 in floats
    assert parse_ratios("0.5,0.5000009") == (0.5, 0.5000009)
    for near in ("0.5,0.500002", "0.5,0.499998"):
        with pytest.raises(InflameError, match="--ratios"):
            parse_ratios(near)
    for bad in ("0.8,0.3", "a,b", "1", "0.5,0.5,0,0", "1.5,-0.5", "1.2,-0.1,-0.1"):
        with pytest.raises(InflameError, match="--ratios"):
            parse_ratios(bad)


def test_split_is_stratified_deterministic_and_refuses_to_overwrite(tmp_path: Path):
    make_demo_dataset(tmp_path / "raw", per_class=20, image_size=16, ratios=None)
    first = split_dataset(tmp_path / "raw", tmp_path / "s1", (0.6, 0.2, 0.2), seed=4)
    split_dataset(tmp_path / "raw", tmp_path / "s2", (0.6, 0.2, 0.2), seed=4)
    split_dataset(tmp_path / "raw", tmp_path / "s3", (0.6, 0.2, 0.2), seed=5)
    assert first.counts["train"] == dict.fromkeys(("circle", "square", "triangle"), 12)
    assert (
        first.counts["val"]
        == first.counts["test"]
        == dict.fromkeys(("circle", "square", "triangle"), 4)
    )
    assert tree_hashes(tmp_path / "s1") == tree_hashes(tmp_path / "s2")
    assert sorted(tree_hashes(tmp_path / "s1")) != sorted(tree_hashes(tmp_path / "s3"))
    every = sorted(p.name for p in (tmp_path / "s1").rglob("*.jpg"))
    assert every == sorted(p.name for p in (tmp_path / "raw").rglob("*.jpg"))  # no loss, no dup
    before = tree_hashes(tmp_path / "s1")
    with pytest.raises(DataError, match="refusing to overwrite"):
        split_dataset(tmp_path / "raw", tmp_path / "s1", (0.5, 0.5))
    assert tree_hashes(tmp_path / "s1") == before
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def _bad_files(folder: Path) -> tuple[Path, Path]:
    truncated = folder / "truncated.jpg"
    good = next(p for p in folder.parent.rglob("*.jpg") if p.parent != folder)
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    text = folder / "notes.png"
    text.write_text("not an image")
    return truncated, text


def test_unreadable_images_are_named_or_skipped(tmp_path: Path):
    make_demo_dataset(tmp_path / "set", per_class=4, image_size=32, ratios=None)
    truncated, text = _bad_files(tmp_path / "set" / "square")
    classes, samples = scan_image_folder(tmp_path / "set")
    assert classes == ["circle", "square", "triangle"] and len(samples) == 14
    with pytest.raises(DataError) as info:
        drop_bad_images(tmp_path / "set", samples, "error")
    message = str(info.value)
    assert "2 unreadable image(s)" in message and str(truncated) in message
    assert str(text) in message and 'bad_images = "skip"' in message
    kept, skipped = drop_bad_images(tmp_path / "set", samples, "skip")
    assert len(kept) == 12 and {p for p, _ in skipped} == {truncated, text}


def test_decompression_bombs_are_refused(tmp_path: Path):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (9000, 9000)).save(bomb)  # 81 Mpx in a few kB
    assert bomb.stat().st_size < 100_000
    assert "above the limit" in check_image(bomb)
    with pytest.raises(UnreadableImage, match="decompression-bomb guard"):
        open_image(bomb)
    small = tmp_path / "ok.png"
    Image.new("RGB", (10, 10)).save(small)
    assert check_image(small) is None and open_image(small).mode == "RGB"


def test_scan_errors_are_clear(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        scan_image_folder(tmp_path / "empty")
    (tmp_path / "empty" / "cat").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        scan_image_folder(tmp_path / "empty")
    make_demo_dataset(tmp_path / "v", per_class=2, image_size=16, ratios=None)
    with pytest.raises(DataError, match="classes that the training set lacks: triangle"):
        scan_image_folder(tmp_path / "v", classes=["circle", "square"])


def test_split_keeps_sub_folders_inside_a_class(tmp_path: Path):
    make_demo_dataset(tmp_path / "raw", per_class=4, image_size=16, ratios=None)
    nested = tmp_path / "raw" / "circle" / "batch-2" / "more"
    nested.mkdir(parents=True)
    moved = sorted((tmp_path / "raw" / "circle").glob("*.jpg"))[:2]
    for image in moved:
        image.rename(nested / image.name)
    report = split_dataset(tmp_path / "raw", tmp_path / "out", (0.5, 0.5), seed=1)
    found = (tmp_path / "out").glob("*/circle/batch-2/more/*.jpg")
    assert sorted(p.name for p in found) == [p.name for p in moved]
    assert sum(report.counts[s]["circle"] for s in report.counts) == 4


def test_split_into_a_new_nested_folder_or_onto_a_file(tmp_path: Path):
    """The destination's parents are made; a destination that is a file is refused."""
    make_demo_dataset(tmp_path / "raw", per_class=5, image_size=16, ratios=None)
    nested = tmp_path / "not" / "yet" / "there"
    split_dataset(tmp_path / "raw", nested, (0.6, 0.2, 0.2), seed=1)
    assert sorted(p.name for p in nested.iterdir()) == ["test", "train", "val"]
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(DataError, match="already exists and is not empty"):
        split_dataset(tmp_path / "raw", tmp_path / "a-file", (0.6, 0.2, 0.2), seed=1)
    assert (tmp_path / "a-file").read_text() == "x"


def test_split_without_a_seed_is_the_clis_default_seed_0(tmp_path: Path):
    """A library call without `seed` gives the split `inflame split` gives without --seed."""
    make_demo_dataset(tmp_path / "all", per_class=9, image_size=16, seed=2)
    split_dataset(tmp_path / "all", tmp_path / "default", [0.5, 0.5])
    split_dataset(tmp_path / "all", tmp_path / "zero", [0.5, 0.5], seed=0)
    split_dataset(tmp_path / "all", tmp_path / "one", [0.5, 0.5], seed=1)

    def members(root: Path) -> list[str]:
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))

    assert members(tmp_path / "default") == members(tmp_path / "zero")
    assert members(tmp_path / "default") != members(tmp_path / "one")
