"""Faults: data that would be misread silently. Junk folders are not classes; a class with
no (readable) images, a single class and one-image batches are clear errors; 16-bit images
and EXIF orientation load as they look; a folder or image the user may not read is named."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inflame.data.dataset import ImageFolderDataset
from inflame.data.decoded import decode_image
from inflame.data.images import open_image, scan_image_folder
from inflame.errors import DataError
from tests.conftest import guarded_env
from tests.helpers import assert_clean_error


def image_set(root: Path, classes: dict[str, int]) -> Path:
    rng = np.random.default_rng(0)
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_junk_folders_are_never_classes(tmp_path):
    root = image_set(tmp_path / "set", {"cat": 2, "dog": 2})
    shutil.copytree(root / "cat", root / "__MACOSX" / "cat")  # what macOS zips carry
    shutil.copytree(root / "dog", root / "dog" / "__MACOSX")
    (root / ".ipynb_checkpoints").mkdir()
    classes, samples = scan_image_folder(root)
    assert classes == ["cat", "dog"]
    assert len(samples) == 4 and not any("__MACOSX" in str(s.path) for s in samples)


def test_a_class_without_images_is_an_error_naming_it(tmp_path):
    root = image_set(tmp_path / "set", {"cat": 2, "dog": 2})
    (root / "owl").mkdir()
    (root / "owl" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"Class folder\(s\) owl in .* hold no images"):
        scan_image_folder(root)


def test_one_class_is_not_a_classifier(tmp_path):
    root = image_set(tmp_path / "set", {"cat": 3})
    with pytest.raises(
        DataError, match="one class folder \\(cat\\); a classifier needs at least two"
    ):
        scan_image_folder(root)


def test_a_class_whose_every_image_is_unreadable_is_an_error_even_when_skipping(tmp_path):
    root = image_set(tmp_path / "set", {"cat": 2, "dog": 2})
    for path in (root / "dog").iterdir():
        path.write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match="Every image of class\\(es\\) dog"):
        ImageFolderDataset(root, bad_images="skip")


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    levels = np.full((32, 32), 32768, dtype=np.uint16)  # half of the 16-bit range
    levels[:, :16] = 0
    Image.fromarray(levels).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I;16")
    rgb = np.asarray(open_image(tmp_path / "g16.png"))
    assert rgb[:, :16].max() == 0 and abs(int(rgb[:, 16:].mean()) - 128) <= 1  # not 255

    eight = np.full((32, 32), 200, dtype=np.int32)  # 8-bit values in a 32-bit image
    Image.fromarray(eight, "I").save(tmp_path / "i32.tif")
    assert np.asarray(open_image(tmp_path / "i32.tif")).mean() == 200


def test_exif_orientation_is_applied_in_training_and_predict_alike(tmp_path):
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)  # wide: the left half white
    pixels[:, :20] = 255
    upright = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view": a camera held upright, stored sideways
    upright.save(tmp_path / "sideways.jpg", exif=exif.tobytes(), quality=95)
    opened = open_image(tmp_path / "sideways.jpg")
    assert opened.size == (20, 40)  # tall, as the camera was held
    expected = np.asarray(upright.transpose(Image.Transpose.ROTATE_270), dtype=np.float64)
    assert np.abs(np.asarray(opened, dtype=np.float64) - expected).mean() < 8
    decoded = decode_image(tmp_path / "sideways.jpg", 20, 50_000_000)  # the decode path
    assert decoded.shape == (3, 20, 20)
    assert decoded[:, 0, :].mean() > 200 and decoded[:, -1, :].mean() < 50  # top white


def test_batches_of_one_image_are_refused_before_training(cli, write_spec):
    result = cli("train", "--local", write_spec(hyperparameters={"batch_size": 1}))
    assert_clean_error(result, "needs at least 2 images per batch", "batch size is 1")


def test_training_refuses_a_single_class_cleanly(cli, write_spec, tmp_path):
    root = image_set(tmp_path / "one", {"cat": 4})
    result = cli("train", "--local", write_spec(data={"train": str(root), "val": str(root)}))
    assert_clean_error(result, "a classifier needs at least two")


def unprivileged(command: list[str]) -> list[str]:
    """`command` run so that file permissions apply: root ignores them unless it drops the
    capabilities that bypass them (tests usually run as root in containers)."""
    if os.geteuid() != 0:
        return command
    setpriv = shutil.which("setpriv")
    assert setpriv, "as root, permission tests need setpriv (util-linux) to drop DAC capabilities"
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", *command]


@pytest.mark.parametrize("locked", ["class folder", "image"])
def test_a_class_folder_or_image_without_read_permission_is_named(write_spec, tmp_path, locked):
    root = image_set(tmp_path / "set", {"cat": 3, "dog": 3})
    target = root / "dog" if locked == "class folder" else root / "dog" / "1.png"
    target.chmod(0)
    try:
        result = subprocess.run(
            unprivileged(
                [
                    sys.executable,
                    "-m",
                    "inflame",
                    "train",
                    "--local",
                    str(write_spec(data={"train": str(root), "val": str(root)})),
                ]
            ),
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=guarded_env(
                INFLAME_RUNS_DIR=str(tmp_path / "runs"),
                COLUMNS="200",
                INFLAME_HOME=str(tmp_path / "home"),
            ),
            timeout=300,
        )
    finally:
        target.chmod(0o755)
    if locked == "class folder":
        assert_clean_error(
            result, f"Class folder {target} cannot be read (permission denied)", "chmod -R u+rX"
        )
    else:
        assert_clean_error(result, f"Permission denied: {target}.", "Fix the permissions")
    assert not list((tmp_path / "runs").glob("*/weights.safetensors"))


def test_predict_inputs_name_an_empty_folder_and_a_missing_path(tmp_path):
    """Folders expand to their images (sorted, recursive); one holding none, or a path
    that does not exist, becomes an error line of its own instead of vanishing."""
    from inflame.predict import collect_images

    image_set(tmp_path / "set", {"b": 1, "a/deeper": 1})
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    found = collect_images([tmp_path / "set", tmp_path / "empty", tmp_path / "gone.png"])
    assert [(p.path.relative_to(tmp_path).as_posix(), p.error) for p in found] == [
        ("set/a/deeper/0.png", None),
        ("set/b/0.png", None),
        ("empty", f"{tmp_path / 'empty'}: folder holds no images"),
        ("gone.png", f"{tmp_path / 'gone.png'}: no such file or folder"),
    ]
