"""inflame's own safetensors reader and writer: the same files as the safetensors library."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import safetensors.torch
import torch

from inflame.tensorfile import TensorFileError, load_tensors, read_metadata, save_tensors


def sample() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {
        "conv.weight": torch.randn(4, 3, 3, 3),
        "bn.num_batches_tracked": torch.tensor(7),  # 0-dim int64
        "half": torch.randn(5).half(),
        "brain": torch.randn(3, 2).bfloat16(),
        "mask": torch.tensor([True, False, True]),
        "bytes": torch.arange(7, dtype=torch.uint8),  # odd size before wider ones
        "empty": torch.zeros(0, 4),
        "double": torch.randn(2, dtype=torch.float64),
        "ints": torch.tensor([1, -2, 3], dtype=torch.int32),
    }


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        assert torch.equal(a[name], b[name]), name


def test_round_trip_and_metadata(tmp_path: Path):
    tensors, path = sample(), tmp_path / "t.safetensors"
    save_tensors(tensors, path, metadata={"inflame": '{"epoch": 3}'})
    assert_same(load_tensors(path), tensors)
    assert read_metadata(path) == {"inflame": '{"epoch": 3}'}


def test_a_header_one_byte_longer_than_the_file_is_refused(tmp_path: Path):
    """A file cut short by one byte: its header must not read as the shorter JSON."""
    path = tmp_path / "short.safetensors"
    path.write_bytes(struct.pack("<Q", 3) + b"{}")  # claims 3 bytes, holds 2
    with pytest.raises(TensorFileError, match="claims 3 bytes, more than the file holds"):
        load_tensors(path)


def test_a_file_of_metadata_only_is_read(tmp_path: Path):
    """No tensors: the header runs exactly to the end of the file, which is valid."""
    path = tmp_path / "meta.safetensors"
    save_tensors({}, path, metadata={"note": "no tensors"})
    (length,) = struct.unpack("<Q", path.read_bytes()[:8])
    assert length == path.stat().st_size - 8
    assert load_tensors(path) == {} and read_metadata(path) == {"note": "no tensors"}
    safetensors.torch.save_file({}, tmp_path / "lib.safetensors")  # the library's own
    assert load_tensors(tmp_path / "lib.safetensors") == {}


@pytest.mark.parametrize(
    "tensors",
    [
        sample(),
        # same item size, names sorting against the library's dtype order
        {"a": torch.arange(3, dtype=torch.int32), "b": torch.ones(2), "c": torch.ones(2).half()},
        {"a": torch.tensor([True]), "b": torch.arange(4, dtype=torch.uint8), "z": torch.ones(1)},
    ],
)
def test_the_library_reads_ours_and_we_read_the_librarys(tmp_path: Path, tensors):
    ours, theirs = tmp_path / "ours.safetensors", tmp_path / "theirs.safetensors"
    save_tensors(tensors, ours, metadata={"k": "v"})
    assert_same(safetensors.torch.load_file(str(ours)), tensors)
    with safetensors.safe_open(str(ours), framework="pt") as handle:
        assert handle.metadata() == {"k": "v"}
    safetensors.torch.save_file(tensors, str(theirs), metadata={"k": "v"})
    assert_same(load_tensors(theirs), tensors)
    assert read_metadata(theirs) == {"k": "v"}
    # same layout as the library's: the files are byte for byte equal
    assert ours.read_bytes() == theirs.read_bytes()


def _header(payload: bytes) -> bytes:
    return struct.pack("<Q", len(payload)) + payload


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\x01\x02",
        b"\x02\0\0\0\0\0\0",  # 7 bytes: one short of the header's length field
        struct.pack("<Q", 10**9) + b"{}",  # a header longer than the file
        _header(b"not json"),
        _header(b"[1, 2]"),
        _header(b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}') + b"\0" * 4,
        _header(b'{"a": {"dtype": "Q9", "shape": [1], "data_offsets": [0, 4]}}') + b"\0" * 4,
        _header(b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}') + b"\0" * 8,
    ],
)
def test_damaged_files_are_refused(tmp_path: Path, content: bytes):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(TensorFileError):
        load_tensors(path)


def test_a_header_above_the_formats_limit_is_refused_before_it_is_read(tmp_path: Path):
    from inflame.tensorfile import _MAX_HEADER

    path = tmp_path / "huge.safetensors"
    with open(path, "wb") as handle:  # sparse: the file is large, the disk use is not
        handle.write(struct.pack("<Q", _MAX_HEADER + 1))
        handle.truncate(_MAX_HEADER + 1024)
    with pytest.raises(TensorFileError, match="above the format's limit of 104857600"):
        load_tensors(path)
    with open(path, "r+b") as handle:  # at the limit: read, and refused as not JSON
        handle.write(struct.pack("<Q", _MAX_HEADER))
    with pytest.raises(TensorFileError, match="not JSON"):
        load_tensors(path)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"\x02\0\0\0\0\0\0", "shorter than a safetensors header"),  # 7 bytes
        (struct.pack("<Q", 0), "the header is not JSON"),  # 8: a whole length field, no header
    ],
)
def test_the_refusal_says_what_is_wrong_at_the_length_fields_edge(
    tmp_path: Path, content: bytes, says: str
):
    path = tmp_path / "edge.safetensors"
    path.write_bytes(content)
    with pytest.raises(TensorFileError, match=says):
        load_tensors(path)
