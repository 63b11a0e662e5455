"""The SageMaker PyTorch inference handler of `inflame deploy --target sagemaker`: it
becomes `code/inference.py` in the model archive, beside inflame itself (`code/inflame`),
and the image's inference toolkit calls it: `model_fn` once, then `input_fn`, `predict_fn`
and `output_fn` for each request to the endpoint (`InvokeEndpoint`, `/invocations`).

A request is one image (its bytes; Content-Type image/* or application/x-image); the answer
is the JSON `inflame serve` gives for it: {"predictions": [{"image", "label", "probability",
"top_k"}]}, with the top $INFLAME_TOP_K labels (default 5).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from inflame.data.images import UnreadableImage
from inflame.predict import Predictor

IMAGE_TYPES = ("image/", "application/x-image", "application/octet-stream")
NAME = "request"


def _client_error(status: int, message: str) -> Exception:
    """The toolkit's own error type where it exists (it answers with that status)."""
    try:
        from sagemaker_inference.errors import GenericInferenceToolkitError
    except ImportError:
        return ValueError(message)
    return GenericInferenceToolkitError(status, message)


def model_fn(model_dir: str) -> Predictor:
    return Predictor(Path(model_dir) / "model")


def input_fn(request_body: Any, content_type: str) -> bytes:
    kind = (content_type or "").split(";")[0].strip().lower()
    if not kind.startswith(IMAGE_TYPES):
        raise _client_error(
            415, f"Send one image per request (Content-Type image/jpeg, ...), not {kind!r}."
        )
    return bytes(request_body)


def predict_fn(data: bytes, predictor: Predictor) -> dict[str, Any]:
    try:
        image = predictor.decode(NAME, data)
    except UnreadableImage as exc:
        raise _client_error(400, str(exc)) from None
    top_k = int(os.environ.get("INFLAME_TOP_K", "5"))
    answer = predictor.answer(NAME, predictor.probabilities([image])[0], top_k)
    if "error" in answer:
        raise RuntimeError(answer["error"])
    return {"predictions": [answer]}


def output_fn(prediction: dict[str, Any], accept: str) -> tuple[str, str]:
    return json.dumps(prediction, allow_nan=False), "application/json"
