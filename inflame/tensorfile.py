"""Read and write the safetensors format with torch alone.

Checkpoints and models are safetensors files: an 8-byte little-endian header length, a JSON
header (`{name: {dtype, shape, data_offsets}, "__metadata__": {str: str}}`, padded with
spaces to a multiple of 8 bytes), then the tensors' raw bytes. The format is small enough to
implement here, and doing so keeps the code that runs inside a cloud job free of compiled
dependencies that training images do not ship (the `safetensors` package is one). Files
written here are byte for byte those the `safetensors` library writes, and each reads the
other's (tests check both).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

_MAX_HEADER = 100 * 1024 * 1024  # the library's own limit
DIGEST_KEY = "inflame.sha256"  # metadata: sha256 of the header (less this key) and the data
# The library's Dtype enum order: it writes tensors by dtype, last in this list first, then
# by name (which also keeps every tensor aligned to its item size).
_DTYPE_ORDER = (
    "BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16",
    "I32", "U32", "F32", "F64", "I64", "U64",
)  # fmt: skip


def _dtypes() -> dict[str, torch.dtype]:
    import torch

    names = {
        "F64": "float64",
        "F32": "float32",
        "F16": "float16",
        "BF16": "bfloat16",
        "I64": "int64",
        "I32": "int32",
        "I16": "int16",
        "I8": "int8",
        "U8": "uint8",
        "U16": "uint16",
        "U32": "uint32",
        "U64": "uint64",
        "BOOL": "bool",
        "F8_E4M3": "float8_e4m3fn",
        "F8_E5M2": "float8_e5m2",
    }
    return {code: getattr(torch, name) for code, name in names.items() if hasattr(torch, name)}


class TensorFileError(ValueError):
    """The file is not a well-formed safetensors file."""


def _digest(header: Mapping[str, Any], data: Iterable[bytes | bytearray | memoryview]) -> str:
    """sha256 over the header (less the digest itself, as canonical JSON) and the data."""
    canonical = dict(header)
    metadata = {k: v for k, v in (header.get("__metadata__") or {}).items() if k != DIGEST_KEY}
    canonical["__metadata__"] = metadata
    hasher = hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode())
    for part in data:
        hasher.update(part)
    return hasher.hexdigest()


def save_tensors(
    tensors: Mapping[str, torch.Tensor],
    path: str | Path,
    metadata: Mapping[str, str] | None = None,
    *,
    digest: bool = False,
) -> None:
    """Write `tensors` (and string metadata) to `path` in the safetensors format. With
    `digest`, the metadata also holds the sha256 of the header and the data (DIGEST_KEY),
    which `load_tensors` checks: a changed bit anywhere is found."""
    import torch

    codes = {dtype: code for code, dtype in _dtypes().items()}
    rank = {code: i for i, code in enumerate(_DTYPE_ORDER)}
    order = sorted(tensors, key=lambda name: (-rank.get(codes.get(tensors[name].dtype), 0), name))
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs: list[memoryview] = []
    offset = 0
    for name in order:
        tensor = tensors[name].detach().to("cpu").contiguous()
        if tensor.dtype not in codes:
            raise TypeError(f"tensor {name!r} has dtype {tensor.dtype}, which safetensors lacks")
        raw = tensor.reshape(-1).view(torch.uint8).numpy().data if tensor.numel() else b""
        size = len(raw)
        header[name] = {
            "dtype": codes[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        blobs.append(memoryview(raw))
        offset += size
    if digest:
        metadata = dict(header.get("__metadata__") or {})  # type: ignore[call-overload]
        metadata[DIGEST_KEY] = _digest(header, blobs)
        header["__metadata__"] = metadata
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-(8 + len(encoded)) % 8)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        for blob in blobs:
            handle.write(blob)


def _read_header(handle, size: int) -> tuple[dict, int]:
    if size < 8:
        raise TensorFileError("the file is shorter than a safetensors header")
    (length,) = struct.unpack("<Q", handle.read(8))
    if length > _MAX_HEADER:  # never read a crafted file's giant header into memory
        raise TensorFileError(
            f"the header claims {length} bytes, above the format's limit of {_MAX_HEADER}"
        )
    if length > size - 8:
        raise TensorFileError(f"the header claims {length} bytes, more than the file holds")
    try:
        header = json.loads(handle.read(length))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TensorFileError(f"the header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise TensorFileError("the header is not a JSON object")
    return header, 8 + length


def read_metadata(path: str | Path) -> dict[str, str]:
    """The file's `__metadata__` strings, without reading its tensors."""
    with open(path, "rb") as handle:
        header, _ = _read_header(handle, os.fstat(handle.fileno()).st_size)
    return dict(header.get("__metadata__") or {})


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, on the CPU."""
    import torch

    dtypes = _dtypes()
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        header, start = _read_header(handle, size)
        data = bytearray(size - start)  # read once, straight into the tensors' memory
        if handle.readinto(data) != len(data):
            raise TensorFileError("the file changed while it was read")
    recorded = (header.get("__metadata__") or {}).get(DIGEST_KEY)
    if recorded is not None and _digest(header, [data]) != recorded:
        raise TensorFileError(
            "its content does not match the sha256 digest it was written with (a changed "
            "or damaged file)"
        )
    tensors: dict[str, torch.Tensor] = {}
    end_of_data = 0
    for name, entry in sorted(
        ((k, v) for k, v in header.items() if k != "__metadata__"),
        key=lambda item: item[1]["data_offsets"][0] if isinstance(item[1], dict) else 0,
    ):
        try:
            dtype = dtypes[entry["dtype"]]
            shape = [int(n) for n in entry["shape"]]
            begin, end = (int(n) for n in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise TensorFileError(f"tensor {name!r} has a malformed header entry") from None
        count = 1
        for n in shape:
            count *= n
        itemsize = torch.empty((), dtype=dtype).element_size()
        if begin != end_of_data or end - begin != count * itemsize or end > len(data):
            raise TensorFileError(f"tensor {name!r} has invalid data offsets {begin}..{end}")
        end_of_data = end
        if count == 0:
            tensors[name] = torch.empty(shape, dtype=dtype)
        else:
            flat = torch.frombuffer(data, dtype=torch.uint8, count=end - begin, offset=begin)
            tensors[name] = flat.view(dtype).reshape(shape)
    if end_of_data != len(data):
        raise TensorFileError("the file holds bytes that no tensor claims")
    return tensors
