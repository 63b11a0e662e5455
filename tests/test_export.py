"""`inflame export`: ONNX and TorchScript exports match the PyTorch model (checked and
recorded), `predict --backend onnx` answers as `predict` does without importing torch, and a
missing, changed or stale export is refused."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from inflame.hashing import sha256_file
from inflame.predict import Predictor
from tests.conftest import guarded_env
from tests.helpers import assert_clean_error, run_inflame


@pytest.fixture(scope="module")
def exported(finished_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the finished run with its ONNX export."""
    run = tmp_path_factory.mktemp("exported") / "run"
    shutil.copytree(finished_run, run)
    result = run_inflame("export", run, "--format", "onnx", cwd=run.parent)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == run / "export" / "model.onnx"
    return run


def test_onnx_export_is_checked_and_recorded(exported: Path):
    manifest = json.loads((exported / "manifest.json").read_text())
    record = manifest["exports"]["export/model.onnx"]
    assert record["sha256"] == sha256_file(exported / "export" / "model.onnx")
    assert record["weights_sha256"] == manifest["weights_sha256"]
    parity = record["parity"]
    assert parity["images"] == 9 and "test input" in parity["source"]
    assert 0 <= parity["max_abs_diff_probability"] <= parity["tolerance"] == 1e-4
    import onnx

    model = onnx.load(str(exported / "export" / "model.onnx"))
    [meta] = [json.loads(p.value) for p in model.metadata_props if p.key == "inflame"]
    assert meta["classes"] == json.loads((exported / "model" / "model.json").read_text())["classes"]
    assert meta["preprocessing"]["image_size"] == 32 and meta["run"] == "run"
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # any batch size


def _predict(run: Path, images: list[Path], *backend: str) -> tuple[list[dict], bool]:
    """`inflame predict`'s answers, and whether it imported torch: run in a plain
    interpreter (not the test zygote, which holds torch) with `-X importtime`."""
    command = [sys.executable, "-X", "importtime", "-m", "inflame", "predict", *images]
    result = subprocess.run(
        [*command, "--run", str(run), "--top-k", "3", *backend],
        capture_output=True,
        text=True,
        env=guarded_env(INFLAME_HOME=str(run.parent / "home")),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    return [json.loads(line) for line in result.stdout.splitlines()], "torch" in imported


def test_predict_with_the_onnx_backend_answers_as_pytorch_without_torch(exported: Path):
    manifest = json.loads((exported / "manifest.json").read_text())
    images = sorted(Path(manifest["data"]["inputs"]["test"]["path"]).rglob("*.jpg"))
    onnx_answers, torch_imported = _predict(exported, images, "--backend", "onnx")
    assert not torch_imported
    torch_answers = list(Predictor.from_run(exported).predict(images, top_k=3))
    assert len(onnx_answers) == len(torch_answers) == 9
    for mine, theirs in zip(onnx_answers, torch_answers, strict=True):
        assert mine["image"] == theirs["image"] and mine["label"] == theirs["label"]
        assert [r["label"] for r in mine["top_k"]] == [r["label"] for r in theirs["top_k"]]
        for a, b in zip(mine["top_k"], theirs["top_k"], strict=True):
            assert a["probability"] == pytest.approx(b["probability"], abs=2e-4)
    _, torch_imported = _predict(exported, images[:1])
    assert torch_imported  # the check can tell


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_export_loads_with_torch_jit_and_matches(finished_run: Path, tmp_path: Path):
    import torch

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    out = tmp_path / "elsewhere" / "classifier.pt"
    result = run_inflame("export", run, "--format", "torchscript", "--out", out, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "largest probability difference from PyTorch" in " ".join(result.stderr.split())
    record = json.loads((run / "manifest.json").read_text())["exports"][str(out.resolve())]
    assert record["format"] == "torchscript" and record["sha256"] == sha256_file(out)

    extra = {"inflame.json": ""}
    loaded = torch.jit.load(str(out), _extra_files=extra)
    meta = json.loads(extra["inflame.json"])
    predictor = Predictor.from_run(run, device="cpu")
    assert meta["classes"] == predictor.classes
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (3, predictor.side, predictor.side), np.uint8) for _ in range(5)]
    with torch.no_grad():
        theirs = loaded(torch.from_numpy(predictor.normalized(images))).numpy()
    assert np.abs(theirs - predictor.probabilities(images)).max() <= 1e-5
    assert np.allclose(theirs.sum(axis=1), 1.0, atol=1e-5)  # probabilities, not logits


def test_a_missing_changed_or_stale_onnx_export_is_refused(exported: Path, tmp_path: Path):
    manifest = json.loads((exported / "manifest.json").read_text())
    image = next(Path(manifest["data"]["inputs"]["test"]["path"]).rglob("*.jpg"))
    bare = tmp_path / "bare"
    shutil.copytree(exported, bare)
    shutil.rmtree(bare / "export")
    missing = run_inflame("predict", image, "--run", bare, "--backend", "onnx", cwd=tmp_path)
    assert_clean_error(missing, "has no ONNX export", "inflame export")

    changed = tmp_path / "changed"
    shutil.copytree(exported, changed)
    onnx_file = changed / "export" / "model.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx_file.write_bytes(bytes(data))
    refused = run_inflame("predict", image, "--run", changed, "--backend", "onnx", cwd=tmp_path)
    assert_clean_error(refused, "has changed since it was exported")

    stale = tmp_path / "stale"
    shutil.copytree(exported, stale)
    manifest = json.loads((stale / "manifest.json").read_text())
    manifest["exports"]["export/model.onnx"]["weights_sha256"] = "0" * 64
    (stale / "manifest.json").write_text(json.dumps(manifest))
    old = run_inflame("predict", image, "--run", stale, "--backend", "onnx", cwd=tmp_path)
    assert_clean_error(old, "exported from other weights")


def test_export_errors_are_clean(finished_run: Path, tmp_path: Path):
    unknown = run_inflame("export", finished_run, "--format", "tflite", cwd=tmp_path)
    assert_clean_error(unknown, "Unknown export format `tflite`", "onnx or torchscript")
    folder = run_inflame("export", finished_run, "--out", tmp_path, cwd=tmp_path)
    assert_clean_error(folder, "is a folder")
