"""The TorchServe handler of `inflame deploy --target vertex`: it becomes `handler.py` at the
root of the model archive (`model.mar`), beside inflame itself, and Vertex AI's prebuilt
PyTorch prediction image (TorchServe) calls it: `handle(None, context)` once to load the
model, then `handle(rows, context)` for each batch.

A request to the endpoint is Vertex's JSON: `{"instances": [{"b64": "<base64 image>"}, ...]}`
(`{"data": {"b64": ...}}` and a bare base64 string are read too). The answer is what `inflame
serve` gives: `{"predictions": [{"label", "probability", "top_k"}, ...]}`, one per instance,
with the top $INFLAME_TOP_K labels (default 5). The image unwraps the instances into rows
(TorchServe's JSON envelope) and wraps the rows' answers; a request that reaches the handler
whole is answered whole.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import Any

from inflame.data.images import UnreadableImage
from inflame.predict import Predictor

_IMAGE_KEYS = ("b64", "data", "image", "bytes")
_state: dict[str, Predictor] = {}


class BadInstance(ValueError):
    """An instance that is not an image this handler can read (answered 400)."""


def _client_error(message: str) -> Exception:
    """TorchServe's own error type where it exists (it answers with that status)."""
    try:
        from ts.utils.util import PredictionException
    except ImportError:
        return BadInstance(message)
    return PredictionException(message, 400)


def _image_bytes(instance: Any, where: str) -> bytes:
    """The image in one instance: bytes (the envelope decoded {"b64"}), base64 text, or an
    object holding either under b64/data/image/bytes."""
    if isinstance(instance, dict):
        found = [instance[key] for key in _IMAGE_KEYS if key in instance]
        if len(found) != 1:
            raise _client_error(
                f'{where}: an instance is {{"b64": "<base64 image>"}}; got the keys '
                f"{sorted(instance)}."
            )
        return _image_bytes(found[0], where)
    if isinstance(instance, (bytes, bytearray)):
        return bytes(instance)
    if isinstance(instance, str):
        try:
            return base64.b64decode(instance, validate=True)
        except (binascii.Error, ValueError):
            raise _client_error(f"{where}: not base64 text.") from None
    raise _client_error(
        f"{where}: an instance is base64 image text, not {type(instance).__name__}."
    )


def _predict(instances: list[Any], predictor: Predictor) -> list[dict[str, Any]]:
    top_k = int(os.environ.get("INFLAME_TOP_K", "5"))
    images = []
    for i, instance in enumerate(instances):
        name = f"instances[{i}]"
        try:
            images.append(predictor.decode(name, _image_bytes(instance, name)))
        except UnreadableImage as exc:
            raise _client_error(str(exc)) from None
    answers = []
    for i, row in enumerate(predictor.probabilities(images) if images else []):
        answer = predictor.answer(f"instances[{i}]", row, top_k)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        answers.append({key: value for key, value in answer.items() if key != "image"})
    return answers


def _whole_request(row: Any) -> list[Any] | None:
    """The instances of a row that is a whole request (no envelope), else None."""
    if isinstance(row, dict):
        body = row.get("body", row.get("data", row))
        if isinstance(body, (bytes, bytearray)):
            import json

            try:
                body = json.loads(body)
            except ValueError:
                return None
        if isinstance(body, dict) and isinstance(body.get("instances"), list):
            return body["instances"]
    return None


def handle(data: list[Any] | None, context: Any) -> list[Any] | None:
    """TorchServe's entry point: load the model when `data` is None, else answer each row."""
    if data is None:
        model_dir = Path(context.system_properties["model_dir"])
        _state["predictor"] = Predictor(model_dir / "model")
        return None
    predictor = _state["predictor"]
    whole = [_whole_request(row) for row in data]
    if all(instances is not None for instances in whole):
        return [{"predictions": _predict(instances, predictor)} for instances in whole]
    return _predict(data, predictor)  # rows are instances (the JSON envelope unwrapped them)
