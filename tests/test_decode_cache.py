"""The decode cache: images decoded once, reused by later datasets and runs, the same pixels
as decoding each time, invalidated by a changed file, bounded in size."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inflame.data import decoded
from inflame.data.dataset import ImageFolderDataset
from inflame.data.demo import make_demo_dataset
from inflame.errors import DataError, InflameError
from inflame.vision import decode_side, eval_transform, train_transform


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("INFLAME_CACHE_DIR", str(folder))
    monkeypatch.delenv("INFLAME_NO_CACHE", raising=False)
    return folder


@pytest.fixture
def images(tmp_path: Path) -> Path:
    root = tmp_path / "set"
    make_demo_dataset(root, per_class=4, image_size=40, seed=1, ratios=(1.0, 0.0, 0.0))
    return root / "train"


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every image decoded, in order."""
    seen: list[Path] = []
    real = decoded.decode_image

    def counting(path: Path, side: int, max_pixels: int) -> np.ndarray:
        seen.append(path)
        return real(path, side, max_pixels)

    monkeypatch.setattr(decoded, "decode_image", counting)
    return seen


def test_second_dataset_decodes_nothing_and_checks_nothing(cache, images, decodes, monkeypatch):
    first = ImageFolderDataset(images, decode_size=36)
    assert first.cached and len(decodes) == len(first) == 12
    checks: list[int] = []
    monkeypatch.setattr(
        "inflame.data.dataset.drop_bad_images", lambda *a, **k: checks.append(1) or (a[1], [])
    )
    second = ImageFolderDataset(images, decode_size=36)
    items = [second.decoded(i) for i in range(len(second))]
    assert len(decodes) == 12 and not checks  # nothing decoded or checked again
    assert all(item.dtype == torch.uint8 and item.shape == (3, 36, 36) for item in items)


def test_cached_pixels_equal_decoding_every_time(cache, images, monkeypatch):
    cached = ImageFolderDataset(images, eval_transform(32), decode_size=decode_side(32))
    monkeypatch.setenv("INFLAME_NO_CACHE", "1")
    fresh = ImageFolderDataset(images, eval_transform(32), decode_size=decode_side(32))
    assert cached.cached and not fresh.cached
    for i in range(len(cached)):
        assert torch.equal(cached[i][0], fresh[i][0])
        assert cached[i][1] == fresh[i][1]
    torch.manual_seed(5)
    a = train_transform(32)(cached.decoded(3))
    torch.manual_seed(5)
    b = train_transform(32)(fresh.decoded(3))
    assert torch.equal(a, b) and a.shape == (3, 32, 32) and a.dtype == torch.float32


def test_decoding_keeps_the_centre_square_of_the_shorter_side(tmp_path: Path):
    wide = np.zeros((20, 60, 3), np.uint8)
    wide[:, 20:40] = 255  # a white centre third
    Image.fromarray(wide).save(tmp_path / "wide.png")
    pixels = decoded.decode_image(tmp_path / "wide.png", 10, 10**6)
    assert pixels.shape == (3, 10, 10)
    assert pixels[:, :, 2:8].min() > 200  # the centre is what is kept


def test_a_changed_file_makes_a_new_entry(cache, images, decodes):
    ImageFolderDataset(images, decode_size=36)
    victim = sorted(images.rglob("*.jpg"))[0]
    Image.new("RGB", (40, 40), (255, 0, 0)).save(victim, "JPEG")
    again = ImageFolderDataset(images, decode_size=36)
    assert len(decodes) == 24
    index = [s.path for s in again.samples].index(victim)
    assert again.decoded(index)[0].float().mean() > 240  # the new, red image
    assert len(list((cache / "decoded").glob("*.u8"))) == 2


def test_bad_images_are_remembered_with_the_entry(cache, images, decodes):
    bad = images / sorted(p.name for p in images.iterdir())[0] / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    for _ in range(2):  # built, then from the cache: the same clear error
        with pytest.raises(DataError, match=r"broken\.jpg"):
            ImageFolderDataset(images, decode_size=36)
    skipping = ImageFolderDataset(images, decode_size=36, bad_images="skip")
    assert len(skipping) == 12 and [p.name for p, _ in skipping.skipped] == ["broken.jpg"]
    assert len(decodes) == 13  # decoded once, whatever the policy


def _age(cache: Path, seconds: float) -> None:
    """Make every entry look last used `seconds` ago."""
    for meta in (cache / "decoded").glob("*.json"):
        stamp = meta.stat().st_mtime - seconds
        os.utime(meta, (stamp, stamp))


def test_the_cache_stays_under_its_limit(cache, images, tmp_path, monkeypatch):
    other = tmp_path / "other"
    make_demo_dataset(other, per_class=4, image_size=40, seed=2, ratios=(1.0, 0.0, 0.0))
    ImageFolderDataset(images, decode_size=36)
    one_entry = next((cache / "decoded").glob("*.u8")).stat().st_size
    monkeypatch.setenv("INFLAME_CACHE_MAX_GB", str(1.5 * one_entry / 1024**3))
    _age(cache, 2 * decoded.IN_USE_S)
    ImageFolderDataset(other / "train", decode_size=36)
    assert len(list((cache / "decoded").glob("*.u8"))) == 1  # the older entry went
    monkeypatch.setenv("INFLAME_CACHE_MAX_GB", str(0.5 * one_entry / 1024**3))
    too_big = ImageFolderDataset(images, decode_size=36)
    assert not too_big.cached and too_big.decoded(0).shape == (3, 36, 36)
    assert (
        decoded.max_cache_bytes({}) == 50 * 1024**3
        and decoded.max_cache_bytes({"INFLAME_CACHE_MAX_GB": "0"}) == 0
    )
    for wrong in ("abc", "-1", "nan", "inf"):  # refused, not silently the default
        with pytest.raises(InflameError, match=f"INFLAME_CACHE_MAX_GB='{wrong}' is not a size"):
            decoded.max_cache_bytes({"INFLAME_CACHE_MAX_GB": wrong})


def test_an_entry_in_use_is_not_evicted_and_survives_a_clear(cache, images, tmp_path, monkeypatch):
    other = tmp_path / "other"
    make_demo_dataset(other, per_class=4, image_size=40, seed=2, ratios=(1.0, 0.0, 0.0))
    train = ImageFolderDataset(images, decode_size=36)
    expected = train.decoded(5)
    one_entry = next((cache / "decoded").glob("*.u8")).stat().st_size
    monkeypatch.setenv("INFLAME_CACHE_MAX_GB", str(1.5 * one_entry / 1024**3))
    ImageFolderDataset(other / "train", decode_size=36)  # over the limit, but train is in use
    assert len(list((cache / "decoded").glob("*.u8"))) == 2
    from inflame.cache import clear

    clear(["decoded"])  # e.g. `inflame cache clear` while a run reads its entry
    assert torch.equal(train.decoded(5), expected)


def test_the_same_images_under_another_root_reuse_the_entry_correctly(
    cache, images, tmp_path, decodes
):
    import shutil

    broken = images / sorted(p.name for p in images.iterdir())[1] / "broken.jpg"
    broken.write_bytes(b"not an image")
    first = ImageFolderDataset(images, decode_size=36, bad_images="skip")
    copy = tmp_path / "copy"
    shutil.copytree(images, copy)
    second = ImageFolderDataset(copy, decode_size=36, bad_images="skip")
    assert len(decodes) == 13  # the copy's entry is the same: nothing decoded again
    assert len(second) == len(first) == 12
    assert [s.path.relative_to(copy) for s in second.samples] == [
        s.path.relative_to(images) for s in first.samples
    ]
    assert [p for p, _ in second.skipped] == [copy / broken.relative_to(images)]
    for i in range(len(second)):
        assert torch.equal(second.decoded(i), first.decoded(i))
        assert second[i][1] == first[i][1]
    with pytest.raises(DataError, match=str(copy)):
        ImageFolderDataset(copy, decode_size=36)


def test_an_unwritable_cache_folder_costs_only_the_cache(images, monkeypatch, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("INFLAME_CACHE_DIR", str(blocker / "cache"))
    data = ImageFolderDataset(images, eval_transform(32), decode_size=decode_side(32))
    assert not data.cached and data[0][0].shape == (3, 32, 32)
    assert "cannot be used" in capsys.readouterr().err


def test_concurrent_builders_decode_once(cache, images, decodes):
    built: list[ImageFolderDataset] = []
    threads = [
        threading.Thread(target=lambda: built.append(ImageFolderDataset(images, decode_size=36)))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(built) == 3 and all(d.cached for d in built)
    assert len(decodes) == 12


def test_a_damaged_entry_is_rebuilt(cache, images, decodes):
    ImageFolderDataset(images, decode_size=36)
    array = next((cache / "decoded").glob("*.u8"))
    array.write_bytes(array.read_bytes()[:100])  # cut short
    again = ImageFolderDataset(images, decode_size=36)
    assert again.cached and len(decodes) == 24 and again.decoded(11).shape == (3, 36, 36)


def test_cache_ls_and_clear(cache, images, cli):
    from tests.helpers import assert_clean_error

    ImageFolderDataset(images, decode_size=36)
    listed = {
        row["kind"]: row
        for row in map(json.loads, cli("cache", "ls", "--json", check=True).stdout.splitlines())
    }
    assert listed["decoded"]["entries"] == 1 and listed["decoded"]["bytes"] >= 12 * 3 * 36 * 36
    assert listed["fingerprints"]["entries"] == 12  # the images, hashed once
    assert listed["decoded"]["path"] == str(cache / "decoded")
    cli("cache", "clear", "decoded", check=True)
    assert not list((cache / "decoded").glob("*.u8"))
    assert (cache / "fingerprints").is_dir()  # the other kinds are kept
    assert_clean_error(cli("cache", "clear", "decode"), "Unknown cache kind", "decoded")
