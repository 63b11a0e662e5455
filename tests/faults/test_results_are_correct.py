"""Results checked for being right, not just well-formed: the split's remainders go where
the largest-remainder method puts them, and predict's answers are the model's own
probabilities, most likely first."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from inflame.data.decoded import decode_image
from inflame.data.split import allocate
from inflame.errors import InflameError


@pytest.mark.parametrize(
    ("n", "ratios", "expected"),
    [
        (7, (0.5, 0.25, 0.25), [3, 2, 2]),  # remainders .5 .75 .75: the two largest get one
        (9, (0.7, 0.2, 0.1), [6, 2, 1]),  # 6.3 1.8 0.9: .9 and .8 win over .3
        (3, (0.8, 0.1, 0.1), [3, 0, 0]),  # 2.4 .3 .3: .4 beats .3
        (5, (0.45, 0.45, 0.1), [2, 2, 1]),  # 2.25 2.25 .5: one left over, and .5 is largest
        (6, (0.45, 0.45, 0.1), [3, 3, 0]),  # 2.7 2.7 .6: two left over, .7 and .7 beat .6
    ],
)
def test_split_remainders_go_to_the_largest_remainders(n, ratios, expected):
    assert allocate(n, ratios) == expected


def test_predict_answers_the_models_own_probabilities_most_likely_first(
    cli, write_spec, demo_set: Path
):
    from inflame.predict import Predictor

    result = cli("train", "--local", write_spec(hyperparameters={"epochs": 2}), check=True)
    run = Path(result.stdout.strip().splitlines()[-1])
    predictor = Predictor.from_run(run, device="cpu")
    images = sorted((demo_set / "test").rglob("*.jpg"))[:6]
    answers = list(predictor.predict(images, top_k=len(predictor.classes)))
    for image, answer in zip(images, answers, strict=True):
        pixels = torch.from_numpy(decode_image(image, predictor.side, 50_000_000))
        with torch.inference_mode():
            logits = predictor.model(predictor.transform(pixels).unsqueeze(0))
        probabilities = torch.softmax(logits.float(), dim=1)[0]
        best = int(probabilities.argmax())
        assert answer["label"] == predictor.classes[best]
        assert answer["probability"] == pytest.approx(float(probabilities[best]), abs=1e-4)
        assert answer["probability"] == round(float(probabilities[best]), 4)  # 4 digits
        ranked = [entry["probability"] for entry in answer["top_k"]]
        assert ranked == sorted(ranked, reverse=True)  # most likely first
        assert answer["top_k"][0]["label"] == answer["label"]
        assert sum(ranked) == pytest.approx(1.0, abs=1e-3)  # every class, once
        assert sorted(e["label"] for e in answer["top_k"]) == sorted(predictor.classes)
    with pytest.raises(InflameError, match="--top-k must be at least 1, got 0"):
        list(predictor.predict(images, top_k=0))
    [only] = predictor.predict(images[:1], top_k=1)
    assert [e["label"] for e in only["top_k"]] == [answers[0]["label"]]
