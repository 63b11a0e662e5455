"""Fuzzing the inputs a user controls: any spec file, any `--set`, any image file ends in
success or a clear InflameError (one paragraph), never another exception."""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from inflame import tomlfile
from inflame.data.images import UnreadableImage, open_image
from inflame.errors import InflameError
from inflame.jobprep import prepare_job
from inflame.spec import apply_overrides, load_spec

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
SECTIONS = ("job", "data", "hyperparameters", "compute", "targets", "sweep", "")
KEYS = (
    "name", "app", "seed", "description", "bad_images", "train", "val", "epochs",
    "learning_rate", "gpus_per_node", "nodes", "spot", "max_runtime", "disk_gb", "precision",
    "compile", "sagemaker", "role", "x",
)  # fmt: skip
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["fowl_classifier", "resnet18", "${env:HOME}", "${env:NOPE_X}", "4h", "."]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)
    ),
    max_leaves=8,
)


def _clean(value):
    """TOML has no null: drop them (the spec loader never sees None)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_clean(v) for v in value if v is not None]
    return value


@FUZZ
@given(st.dictionaries(st.sampled_from(SECTIONS), st.dictionaries(st.sampled_from(KEYS), values)))
def test_any_spec_is_loaded_or_refused_clearly(tables):
    spec = {"job": {"name": "fuzz", "app": "fowl_classifier"}}  # most get past the basics
    for section, table in _clean(tables).items():
        if isinstance(spec.get(section), dict) and isinstance(table, dict):
            spec[section] = {**spec[section], **table}
        else:
            spec[section] = table
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "job.toml"
        try:
            path.write_text(tomlfile.dumps(spec), encoding="utf-8")
        except (TypeError, ValueError):
            return  # not expressible in TOML (e.g. a list of mixed tables): not a spec
        try:
            prepare_job(path)
        except InflameError as exc:
            assert str(exc) and "Traceback" not in str(exc)


@FUZZ
@given(st.text(max_size=200))
def test_any_spec_text_is_loaded_or_refused_clearly(text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "job.toml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        with contextlib.suppress(InflameError):
            load_spec(path)


@FUZZ
@given(st.lists(st.text(max_size=40), max_size=3))
def test_any_override_is_applied_or_refused_clearly(overrides):
    raw = {"job": {"name": "x", "app": "fowl_classifier"}, "hyperparameters": {"epochs": 1}}
    with contextlib.suppress(InflameError):
        apply_overrides(raw, overrides)


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


VALID = {"png": _png(0)}
_jpeg = io.BytesIO()
Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(_jpeg, format="JPEG")
VALID["jpg"] = _jpeg.getvalue()


@FUZZ
@given(
    st.sampled_from(sorted(VALID)),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=6),
    st.integers(min_value=0),
    st.binary(max_size=64),
)
def test_any_image_file_opens_or_is_refused_clearly(kind, flips, cut, tail):
    data = bytearray(VALID[kind])
    for position, byte in flips:  # damaged bytes, a truncation, junk appended
        data[position % len(data)] = byte
    data = data[: max(1, cut % (len(data) + 1))] + tail
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"x.{kind}"
        path.write_bytes(bytes(data))
        try:
            image = open_image(path)
        except UnreadableImage as exc:
            assert str(path) in str(exc)
        else:
            assert image.mode == "RGB" and image.size[0] > 0
