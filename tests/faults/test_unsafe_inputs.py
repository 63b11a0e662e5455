"""Faults: inputs that are unsafe by version or unbounded. Pickled weights need a torch
whose weights_only loader has no known bypass; Pillow decodes only the formats inflame
lists (it picks decoders by content, not by name); archives are bounded in members and in
what they expand to, checked before anything is written."""

from __future__ import annotations

import io
import tarfile

import pytest
import torch

from inflame import packaging
from inflame.data.images import UnreadableImage, open_image
from inflame.errors import InflameError
from inflame.packaging import safe_extract
from inflame.vision import build_backbone


def test_pickled_weights_need_a_torch_without_known_bypasses(tmp_path, monkeypatch):
    model = build_backbone("resnet18")
    weights = tmp_path / "weights.pth"
    torch.save(model.state_dict(), weights)
    loaded = build_backbone("resnet18", pretrained=weights)  # torch 2.14 here: allowed
    assert torch.equal(loaded.fc.weight, model.fc.weight)
    monkeypatch.setattr(torch, "__version__", "2.5.1+cu121")
    with pytest.raises(InflameError, match=r"cannot load pickles safely.*\.safetensors"):
        build_backbone("resnet18", pretrained=weights)


def test_a_file_named_png_that_holds_postscript_never_reaches_the_eps_decoder(tmp_path):
    eps = tmp_path / "innocent.png"
    eps.write_bytes(
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"
        b"newpath 0 0 moveto 10 10 lineto stroke\nshowpage\n%%EOF\n"
    )
    with pytest.raises(UnreadableImage, match="not an image in a format inflame reads"):
        open_image(eps)


def _archive(members: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def test_archives_are_bounded_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(packaging, "MAX_MEMBERS", 5)
    many = _archive({f"f{i}.txt": b"x" for i in range(10)})
    with pytest.raises(InflameError, match="more than 5 members"):
        safe_extract(many, tmp_path / "many")
    assert not (tmp_path / "many").exists()

    bomb = _archive({"zeros.bin": bytes(4 * 2**20)})  # 4 MiB of zeros: a few KiB packed
    assert len(bomb) < 2**16
    monkeypatch.setattr(packaging, "EXPANSION_FLOOR", 2**20)
    with pytest.raises(InflameError, match="archive bomb"):
        safe_extract(bomb, tmp_path / "bomb")
    assert not (tmp_path / "bomb").exists()

    monkeypatch.setattr(packaging, "EXPANSION_FLOOR", 2**30)
    monkeypatch.setattr(packaging, "MAX_EXTRACTED_BYTES", 2**20)
    with pytest.raises(InflameError, match="archive bomb"):
        safe_extract(bomb, tmp_path / "big")
    monkeypatch.undo()  # the real limits: 4 MiB is below the floor where ratios count
    [written] = safe_extract(bomb, tmp_path / "fine")
    assert written.stat().st_size == 4 * 2**20


def test_the_archive_limits_are_inclusive(tmp_path, monkeypatch):
    """Exactly MAX_MEMBERS members, and exactly EXPANSION_FLOOR bytes, still extract."""
    monkeypatch.setattr(packaging, "MAX_MEMBERS", 5)
    assert len(safe_extract(_archive({f"f{i}.txt": b"x" for i in range(5)}), tmp_path / "a")) == 5
    bomb = _archive({"zeros.bin": bytes(2**20)})  # 1 MiB of zeros, a few KiB packed
    monkeypatch.setattr(packaging, "EXPANSION_FLOOR", 2**20)  # at the floor: ratios not counted
    [written] = safe_extract(bomb, tmp_path / "b")
    assert written.stat().st_size == 2**20


def test_the_bundle_size_warning_counts_what_a_job_unpacks(tmp_path):
    """100 MiB unpacked is the limit, however well it compresses."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "app.py").write_text("def train(ctx):\n    pass\n")
    with tarfile.open(fileobj=io.BytesIO(packaging.build_bundle(app, "").data)) as tar:
        base = sum(member.size for member in tar)  # app.py, entry.sh, vendored modules
    (app / "zeros.bin").write_bytes(bytes(100 * 2**20 - base))  # compresses to ~100 KiB
    bundle = packaging.build_bundle(app, "")
    assert len(bundle.data) < 2**20 and not any("MiB of files" in w for w in bundle.warnings)
    with open(app / "zeros.bin", "ab") as more:
        more.write(bytes(1024))
    bundle = packaging.build_bundle(app, "")
    assert any("holds 100 MiB of files" in w for w in bundle.warnings), bundle.warnings


def test_the_64_gib_cap_counts_what_the_headers_declare(tmp_path):
    """A member declaring 64 GiB + 1 byte in an archive large enough that the expansion
    ratio allows it: the cap alone refuses it, from the header, before a byte is written."""
    path = tmp_path / "huge.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("huge.bin")
        info.size = 64 * 2**30 + 1
        tar.addfile(info)  # the header only: the data never existed
    with open(path, "r+b") as handle:
        handle.truncate(400 * 2**20)  # sparse; 200 x 400 MiB is above 64 GiB
    assert packaging.MAX_EXPANSION * path.stat().st_size > 64 * 2**30
    with pytest.raises(InflameError, match=r"more than 64\.0 GiB from a 400\.0 MiB archive"):
        safe_extract(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
