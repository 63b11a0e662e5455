"""Label images with a trained run: one JSON-ready dict per image, in input order."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inflame.data.images import MAX_PIXELS, UnreadableImage, is_image_file
from inflame.errors import InflameError, RunError


@dataclass(frozen=True)
class ImageInput:
    path: Path
    error: str | None = None  # set when the input cannot even be listed


def collect_images(inputs: Sequence[str | Path]) -> list[ImageInput]:
    """Files as given, folders expanded to their image files (sorted, recursive)."""
    found: list[ImageInput] = []
    for item in map(Path, inputs):
        if item.is_dir():
            images = sorted(p for p in item.rglob("*") if p.is_file() and is_image_file(p))
            if not images:
                found.append(ImageInput(item, f"{item}: folder holds no images"))
            found.extend(ImageInput(p) for p in images)
        elif item.exists():
            found.append(ImageInput(item))
        else:
            found.append(ImageInput(item, f"{item}: no such file or folder"))
    return found


def verify_model_files(run_dir: Path) -> None:
    """Every file of `run_dir/model` must have the sha256 the manifest recorded when the run
    finished: a model changed after training is never served silently."""
    from inflame.hashing import sha256_file
    from inflame.runs import MANIFEST, read_manifest, run_status

    if not (run_dir / MANIFEST).is_file():
        return  # a bare model folder: its weights still carry their own digest
    manifest = read_manifest(run_dir)
    status = run_status(manifest)
    if status in ("running", "stopped", "interrupted", "failed"):
        raise RunError(
            f"{run_dir} is {status}, not completed: it holds no final model yet. "
            + (
                "Wait for it to finish"
                if status == "running"
                else f"Continue it with `inflame train --local --resume {run_dir}`"
            )
            + " (`inflame runs` shows every run's state)."
        )
    recorded = manifest.get("outputs") or {}
    for name, digest in sorted(recorded.items()):
        path = run_dir / "model" / name
        try:
            actual = sha256_file(path)
        except OSError as exc:
            raise RunError(
                f"Cannot read {path} ({exc.strerror}), which the run recorded in "
                f"{run_dir / MANIFEST}. Restore it, or train the run again."
            ) from None
        if actual != digest:
            raise RunError(
                f"{path} has changed since the run finished: its sha256 is {actual[:12]}…, "
                f"but {run_dir / MANIFEST} recorded {digest[:12]}… (outputs.{name}). A changed "
                "model is not used. Restore the file, or train the run again."
            )


class BasePredictor:
    """What every backend shares: the classes, the preprocessing, decoding, batching and the
    JSON answers. A backend adds `probabilities`."""

    def __init__(self, meta: dict[str, Any]):
        self.meta = meta
        self.classes: list[str] = meta["classes"]
        prep = meta["preprocessing"]
        self.image_size = int(prep["image_size"])
        self.side = int(prep["resize"])
        self.mean = np.asarray(prep["mean"], dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(prep["std"], dtype=np.float32).reshape(3, 1, 1)

    def probabilities(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities (N, classes) of decoded images, in one forward pass."""
        raise NotImplementedError

    def normalized(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """The model's input (N, 3, S, S) float32 from decoded uint8 images: the centre crop,
        scaled to [0, 1] and normalised, bit for bit as torchvision's eval transform."""
        top = round((self.side - self.image_size) / 2.0)
        crop = slice(top, top + self.image_size)
        batch = np.stack([image[:, crop, crop] for image in images]).astype(np.float32)
        batch *= np.float32(1 / 255)
        return (batch - self.mean) / self.std

    def predict(
        self,
        inputs: Sequence[str | Path],
        *,
        top_k: int | None = None,
        batch_size: int = 32,
        max_pixels: int = MAX_PIXELS,
    ) -> Iterator[dict[str, Any]]:
        """Yield {"image", "label", "probability"[, "top_k"]} or {"image", "error"}."""
        if top_k is not None and top_k < 1:
            raise InflameError(f"--top-k must be at least 1, got {top_k}.")
        items = collect_images(inputs)
        for start in range(0, len(items), batch_size):
            yield from self._predict_batch(items[start : start + batch_size], top_k, max_pixels)

    def _predict_batch(
        self, items: Sequence[ImageInput], top_k: int | None, max_pixels: int
    ) -> Iterator[dict[str, Any]]:
        decoded: list[np.ndarray] = []
        results: list[dict[str, Any]] = []
        for item in items:
            if item.error:
                results.append({"image": str(item.path), "error": item.error})
                continue
            try:
                decoded.append(self.decode(item.path, max_pixels=max_pixels))
                results.append({"image": str(item.path)})
            except UnreadableImage as exc:
                results.append({"image": str(item.path), "error": str(exc)})
        rows = iter(self.probabilities(decoded) if decoded else ())
        for result in results:
            yield result if "error" in result else self.answer(result["image"], next(rows), top_k)

    def decode(
        self, name: str | Path, data: bytes | None = None, *, max_pixels: int = MAX_PIXELS
    ) -> np.ndarray:
        """The image file `name` (or the bytes `data`, named `name`) as the model's uint8
        input before the crop; raises UnreadableImage."""
        from inflame.data.decoded import decode_image

        return decode_image(Path(name), self.side, max_pixels, data)

    def answer(self, name: str, probabilities: np.ndarray, top_k: int | None) -> dict[str, Any]:
        """{"image", "label", "probability"[, "top_k"]} for one image's probabilities, or
        {"image", "error"} when they are not numbers."""
        if not np.isfinite(probabilities).all():
            return {
                "image": name,
                "error": f"{name}: the model's output is not a number (NaN or infinity); "
                "its weights are damaged or training diverged",
            }
        k = min(top_k or 1, len(self.classes))
        ranked = [int(i) for i in np.argsort(-probabilities, kind="stable")[:k]]
        result: dict[str, Any] = {
            "image": name,
            "label": self.classes[ranked[0]],
            "probability": round(float(probabilities[ranked[0]]), 4),
        }
        if top_k is not None:
            result["top_k"] = [
                {"label": self.classes[i], "probability": round(float(probabilities[i]), 4)}
                for i in ranked
            ]
        return result


class Predictor(BasePredictor):
    """A trained image classifier in PyTorch, rebuilt from a run directory alone."""

    backend = "torch"

    def __init__(
        self, model_dir: Path, device: str | None = None, channels_last: bool | None = None
    ):
        """`channels_last`: None decides as training's "auto" does (inflame.memory_format)."""
        import torch

        from inflame.memory_format import channels_last_pays
        from inflame.vision import eval_transform, load_classifier

        self.model, meta = load_classifier(model_dir)
        super().__init__(meta)
        prep = meta["preprocessing"]
        self.transform = eval_transform(prep["image_size"], prep["mean"], prep["std"])
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device)
        if channels_last is None:
            size = (self.image_size, self.image_size)
            channels_last = channels_last_pays(self.model, self.device, size)
        self.channels_last = channels_last
        if channels_last:
            self.model.to(memory_format=torch.channels_last)

    @classmethod
    def from_run(
        cls, run_dir: str | Path, device: str | None = None, channels_last: bool | None = None
    ) -> Predictor:
        """The run's model, after checking its files against the sha256s the run recorded."""
        verify_model_files(Path(run_dir))
        return cls(Path(run_dir) / "model", device, channels_last)

    def probabilities(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities (N, classes) of decoded images, in one forward pass."""
        import torch

        batch = torch.stack([self.transform(torch.from_numpy(image)) for image in images])
        batch = batch.to(self.device)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            logits = self.model(batch)
            return torch.softmax(logits.float(), dim=1).cpu().numpy()


ONNX_FILE = "export/model.onnx"  # where `inflame export RUN --format onnx` writes by default
ONNX_METADATA_KEY = "inflame"  # the ONNX model's metadata_props entry: model.json and more


class OnnxPredictor(BasePredictor):
    """A run's ONNX export on onnxruntime: no torch is imported."""

    backend = "onnx"

    def __init__(self, model_file: Path):
        try:
            import onnxruntime
        except ImportError:
            raise InflameError(
                "The ONNX backend needs onnxruntime: `pip install 'inflame[onnx]'` (or "
                "`pip install onnxruntime`)."
            ) from None
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only
        try:
            self.session = onnxruntime.InferenceSession(
                str(model_file), options, providers=["CPUExecutionProvider"]
            )
            meta = json.loads(self.session.get_modelmeta().custom_metadata_map[ONNX_METADATA_KEY])
        except Exception as exc:  # a damaged or foreign file: onnxruntime's own error types
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise RunError(
                f"{model_file} cannot be loaded as an inflame ONNX export: {reason}. Export it "
                "again with `inflame export RUN --format onnx`."
            ) from None
        super().__init__(meta)
        self.input_name = self.session.get_inputs()[0].name

    @classmethod
    def from_run(cls, run_dir: str | Path) -> OnnxPredictor:
        """The run's ONNX export, after checking it against the sha256 the export recorded."""
        return cls(verify_onnx_export(Path(run_dir)))

    def probabilities(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return self.session.run(None, {self.input_name: self.normalized(images)})[0]


def verify_onnx_export(run_dir: Path) -> Path:
    """The run's ONNX export, if it is there, recorded, from the run's weights and unchanged."""
    from inflame.hashing import sha256_file
    from inflame.runs import MANIFEST, read_manifest

    path = run_dir / ONNX_FILE
    if not path.is_file():
        raise RunError(
            f"{run_dir} has no ONNX export ({path}). Create it with `inflame export "
            f"{run_dir} --format onnx`, or use the PyTorch backend."
        )
    if (run_dir / MANIFEST).is_file():
        manifest = read_manifest(run_dir)
        record = (manifest.get("exports") or {}).get(ONNX_FILE) or {}
        digest = record.get("sha256")
        if digest is None:
            raise RunError(
                f"{path} is not recorded in {run_dir / MANIFEST} (exports.{ONNX_FILE}); "
                f"create it with `inflame export {run_dir} --format onnx`."
            )
        weights = manifest.get("weights_sha256")
        if record.get("weights_sha256") != weights:
            raise RunError(
                f"{path} was exported from other weights than the run's own (sha256 "
                f"{str(record.get('weights_sha256'))[:12]}…, the run's {str(weights)[:12]}…). "
                f"Export it again with `inflame export {run_dir} --format onnx`."
            )
        actual = sha256_file(path)
        if actual != digest:
            raise RunError(
                f"{path} has changed since it was exported: its sha256 is {actual[:12]}…, "
                f"but {run_dir / MANIFEST} recorded {digest[:12]}…. A changed model is not "
                f"used. Export it again with `inflame export {run_dir} --format onnx`."
            )
    return path


def load_predictor(run_dir: str | Path, backend: str = "torch") -> BasePredictor:
    """A run's predictor on `backend` ("torch" or "onnx")."""
    if backend == "torch":
        return Predictor.from_run(run_dir)
    if backend == "onnx":
        return OnnxPredictor.from_run(run_dir)
    raise InflameError(f"Unknown backend `{backend}`: use `torch` or `onnx`.")
