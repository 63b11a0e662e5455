"""`inflame export`: a run's model as ONNX or TorchScript, with its classes and preprocessing
inside, checked against the PyTorch model on sample images before it is kept.

The parity check runs the export the way its users will: the ONNX file through
`OnnxPredictor` (numpy preprocessing, onnxruntime, no torch), the TorchScript file through
`torch.jit.load`. The largest difference of any class probability is recorded in the
export's metadata and in the run's manifest (`exports`); above `TOLERANCE` nothing is kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inflame.errors import InflameError
from inflame.predict import ONNX_FILE, ONNX_METADATA_KEY, Predictor, collect_images

FORMATS = {"onnx": ONNX_FILE, "torchscript": "export/model.torchscript.pt"}
TORCHSCRIPT_METADATA = "inflame.json"  # the TorchScript archive's extra file
TOLERANCE = 1e-4  # the largest difference of a probability an export may show
SAMPLES = 16
SAMPLE_INPUTS = ("test", "val", "train")
ONNX_OPSET = 18
ONNX_MAX_BYTES = 1_900_000_000  # protobuf's 2 GiB limit, less room for the graph


@dataclass(frozen=True)
class Export:
    path: Path
    record: dict[str, Any]  # what the manifest keeps under `exports`


def export_run(run_dir: str | Path, fmt: str, out: str | Path | None = None) -> Export:
    """Export `run_dir`'s model as `fmt` to `out` (default: RUN/export/...)."""
    from inflame.hashing import sha256_file
    from inflame.runlock import RunLock
    from inflame.runs import MANIFEST, read_manifest, utc_now, write_json_atomic

    if fmt not in FORMATS:
        raise InflameError(f"Unknown export format `{fmt}`: use {' or '.join(FORMATS)}.")
    if fmt == "onnx":
        from importlib.util import find_spec

        missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if find_spec(m) is None]
        if missing:
            raise InflameError(
                f"The ONNX export needs {', '.join(missing)}: `pip install 'inflame[onnx]'`."
            )
    run_dir = Path(run_dir)
    path = Path(out) if out is not None else run_dir / FORMATS[fmt]
    if path.is_dir():
        raise InflameError(f"--out {path} is a folder; give the file to write.")
    with RunLock(run_dir, purpose="exporting"):
        manifest = read_manifest(run_dir)
        # exported files hold the standard (contiguous) layout, whatever runs fastest here
        predictor = Predictor.from_run(run_dir, device="cpu", channels_last=False)
        images, source = sample_images(predictor, manifest)
        metadata = {
            **predictor.meta,
            "run": run_dir.name,
            "weights_sha256": manifest.get("weights_sha256"),
            "inflame_version": _version(),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            write = _write_onnx if fmt == "onnx" else _write_torchscript
            write(predictor, staging, metadata)
            exported = _exported_probabilities(fmt, staging, predictor, images)
            difference = float(np.abs(exported - predictor.probabilities(images)).max())
            if not difference <= TOLERANCE:
                raise InflameError(
                    f"The {fmt} export of {run_dir} does not match the PyTorch model: a class "
                    f"probability differs by {difference:.2e} on {source} (at most "
                    f"{TOLERANCE:.0e} is accepted). Nothing was written; try the other format."
                )
            os.replace(staging, path)
        finally:
            staging.unlink(missing_ok=True)
        record = {
            "format": fmt,
            "path": _relative(path, run_dir),
            "created": utc_now(),
            "sha256": sha256_file(path),
            "weights_sha256": manifest.get("weights_sha256"),
            "parity": {
                "images": len(images),
                "source": source,
                "max_abs_diff_probability": difference,
                "tolerance": TOLERANCE,
            },
        }
        manifest.setdefault("exports", {})[record["path"]] = record  # ours: locked
        write_json_atomic(run_dir / MANIFEST, manifest)
    return Export(path=path, record=record)


def sample_images(predictor: Predictor, manifest: dict[str, Any]) -> tuple[list[Any], str]:
    """Up to SAMPLES decoded images from the run's test, val or train input, spread over
    it; seeded random pixels when none of them can be read any more."""
    inputs = (manifest.get("data") or {}).get("inputs") or {}
    for name in SAMPLE_INPUTS:
        folder = (inputs.get(name) or {}).get("path")
        if not folder or not Path(folder).is_dir():
            continue
        found = [item.path for item in collect_images([folder]) if item.error is None]
        step = max(len(found) // SAMPLES, 1)
        images = []
        for image_path in found[::step][:SAMPLES]:
            with contextlib.suppress(InflameError):
                images.append(predictor.decode(image_path))
        if images:
            return images, f"{len(images)} images of the run's {name} input"
    rng = np.random.default_rng(0)
    shape = (3, predictor.side, predictor.side)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(SAMPLES)]
    return images, f"{SAMPLES} random images (the run's data folders are gone)"


def _probability_model(predictor: Predictor) -> Any:
    from torch import nn

    return nn.Sequential(predictor.model, nn.Softmax(dim=1)).eval().cpu()


def _example(predictor: Predictor) -> Any:
    import torch

    return torch.zeros(2, 3, predictor.image_size, predictor.image_size)


def _write_onnx(predictor: Predictor, path: Path, metadata: dict[str, Any]) -> None:
    import onnx
    import torch

    size = sum(p.numel() * p.element_size() for p in predictor.model.parameters())
    if size > ONNX_MAX_BYTES:
        raise InflameError(
            f"The model's weights take {size / 2**30:.1f} GiB; a single-file ONNX model holds "
            "at most 2 GiB, and inflame does not write ONNX external data yet. Use "
            "`--format torchscript`."
        )
    model = _probability_model(predictor)
    with _quiet():
        program = torch.onnx.export(
            model,
            (_example(predictor),),
            input_names=["images"],
            output_names=["probabilities"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            opset_version=ONNX_OPSET,
            dynamo=True,
            verbose=False,
        )
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_METADATA_KEY, json.dumps(metadata)
    onnx.save_model(proto, str(path))


def _write_torchscript(predictor: Predictor, path: Path, metadata: dict[str, Any]) -> None:
    import torch

    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(_probability_model(predictor), _example(predictor))
    torch.jit.save(traced, str(path), _extra_files={TORCHSCRIPT_METADATA: json.dumps(metadata)})


def _exported_probabilities(
    fmt: str, path: Path, predictor: Predictor, images: list[Any]
) -> np.ndarray:
    """The export's answers for `images`, computed the way its users will load it."""
    if fmt == "onnx":
        from inflame.predict import OnnxPredictor

        return OnnxPredictor(path).probabilities(images)
    import torch

    with _quiet():
        loaded = torch.jit.load(str(path), map_location="cpu")
    batch = torch.from_numpy(predictor.normalized(images))
    with torch.no_grad():
        return loaded(batch).numpy()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters' progress lines and deprecation notes are not the user's concern."""
    with (
        open(os.devnull, "w") as null,
        contextlib.redirect_stdout(null),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        yield


def _relative(path: Path, run_dir: Path) -> str:
    try:
        return path.resolve().relative_to(run_dir.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


def _version() -> str:
    from inflame import __version__

    return __version__
