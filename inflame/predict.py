"""Label images with a trained run: one JSON-ready dict per image, in input order."""

from __future__ import annotations

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
    from inflame.runs import MANIFEST, read_manifest

    if not (run_dir / MANIFEST).is_file():
        return  # a bare model folder: its weights still carry their own digest
    recorded = read_manifest(run_dir).get("outputs") or {}
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


class Predictor:
    """A trained image classifier, rebuilt from a run directory alone."""

    def __init__(self, model_dir: Path, device: str | None = None):
        import torch

        from inflame.vision import eval_transform, load_classifier

        self.model, self.meta = load_classifier(model_dir)
        self.classes: list[str] = self.meta["classes"]
        prep = self.meta["preprocessing"]
        self.transform = eval_transform(prep["image_size"], prep["mean"], prep["std"])
        self.side = int(prep["resize"])
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device)

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str | None = None) -> Predictor:
        """The run's model, after checking its files against the sha256s the run recorded."""
        verify_model_files(Path(run_dir))
        return cls(Path(run_dir) / "model", device)

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

    def probabilities(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities (N, classes) of decoded images, in one forward pass."""
        import torch

        batch = torch.stack([self.transform(torch.from_numpy(image)) for image in images])
        with torch.inference_mode():
            logits = self.model(batch.to(self.device))
            return torch.softmax(logits.float(), dim=1).cpu().numpy()

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
