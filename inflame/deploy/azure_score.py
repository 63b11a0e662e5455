"""The scoring script of `inflame deploy --target azure`: it becomes `score.py` in the
deployment's code folder, beside inflame itself and the run's model (`model/`), and Azure ML's
inference server (azureml-inference-server-http) calls it: `init()` once, then `run(request)`
for each request to the endpoint's `/score` (raw HTTP: `@rawhttp`).

A request is one image (its bytes; Content-Type image/* or application/octet-stream); the
answer is the JSON `inflame serve` gives for it: {"predictions": [{"image", "label",
"probability", "top_k"}]}, with the top $INFLAME_TOP_K labels (default 5). A request that is
not an image is answered 400 or 415 with {"error": ...}.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # inflame travels in this folder

from azureml.contrib.services.aml_request import rawhttp  # noqa: E402  (the server's alias)
from azureml.contrib.services.aml_response import AMLResponse  # noqa: E402

from inflame.data.images import UnreadableImage  # noqa: E402
from inflame.predict import Predictor  # noqa: E402

IMAGE_TYPES = ("image/", "application/x-image", "application/octet-stream")
NAME = "request"
_state: dict[str, Predictor] = {}


def _json(status: int, payload: dict[str, Any]) -> AMLResponse:
    return AMLResponse(
        json.dumps(payload, allow_nan=False), status, {"Content-Type": "application/json"}
    )


def init() -> None:
    _state["predictor"] = Predictor(HERE / "model")


@rawhttp
def run(request: Any) -> AMLResponse:
    if request.method != "POST":
        return _json(405, {"error": "POST one image to /score."})
    kind = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if not kind.startswith(IMAGE_TYPES):
        return _json(
            415,
            {"error": f"Send one image per request (Content-Type image/jpeg, ...), not {kind!r}."},
        )
    predictor = _state["predictor"]
    try:
        image = predictor.decode(NAME, request.get_data())
    except UnreadableImage as exc:
        return _json(400, {"error": str(exc)})
    top_k = int(os.environ.get("INFLAME_TOP_K", "5"))
    answer = predictor.answer(NAME, predictor.probabilities([image])[0], top_k)
    if "error" in answer:
        return _json(500, {"error": answer["error"]})
    return _json(200, {"predictions": [answer]})
