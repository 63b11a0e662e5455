"""Faults: files changed after they were written. Checkpoints and weights carry their own
sha256; resume falls back to the last intact checkpoint and says so; predict refuses a model
that differs from what the run recorded, and never prints NaN into JSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from inflame.errors import RunError
from inflame.tensorfile import DIGEST_KEY, TensorFileError, load_tensors, save_tensors
from tests.helpers import assert_clean_error


def flip_byte(path: Path, offset_from_end: int = 5) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_digest_catches_any_changed_bit(tmp_path: Path):
    tensors = {"w": torch.arange(12, dtype=torch.float32).reshape(3, 4), "b": torch.ones(2)}
    path = tmp_path / "t.safetensors"
    save_tensors(tensors, path, metadata={"note": "x"}, digest=True)
    assert torch.equal(load_tensors(path)["w"], tensors["w"])
    original = path.read_bytes()

    flip_byte(path)  # one bit of the data
    with pytest.raises(TensorFileError, match="does not match the sha256 digest"):
        load_tensors(path)
    # the header too: F32 -> I32 keeps every size, so only the digest can tell
    path.write_bytes(original.replace(b'"dtype":"F32"', b'"dtype":"I32"', 1))
    with pytest.raises(TensorFileError, match="does not match"):
        load_tensors(path)
    path.write_bytes(original.replace(b'"note":"x"', b'"note":"y"', 1))  # the metadata
    with pytest.raises(TensorFileError, match="does not match"):
        load_tensors(path)
    assert DIGEST_KEY.encode() in original

    plain = tmp_path / "plain.safetensors"  # files without a digest (older runs) still load
    save_tensors(tensors, plain)
    assert DIGEST_KEY.encode() not in plain.read_bytes()
    assert torch.equal(load_tensors(plain)["b"], tensors["b"])


@pytest.fixture
def finished_run(cli, write_spec) -> Path:
    spec = write_spec(hyperparameters={"epochs": 3})
    result = cli("train", "--local", spec, check=True)
    return Path(result.stdout.strip().splitlines()[-1])


def test_resume_falls_back_from_a_damaged_checkpoint_and_says_so(cli, finished_run, tmp_path):
    reference = json.loads((finished_run / "manifest.json").read_text())["weights_sha256"]
    run = tmp_path / "copy"
    shutil.copytree(finished_run, run)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["status"] = "interrupted"  # as if stopped right after epoch 3's checkpoint
    (run / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(run / "model")
    damaged = run / "checkpoints" / "epoch-0003.safetensors"
    flip_byte(damaged)

    resumed = cli("train", "--local", "--resume", run, check=True)
    flat = " ".join(resumed.stderr.split())
    assert "checkpoint epoch-0003.safetensors is damaged" in flat
    assert "resuming from epoch-0002.safetensors instead" in flat
    assert "resuming at epoch 3/3" in flat  # epoch 3 ran again, from epoch 2's state
    assert (run / "checkpoints" / "epoch-0003.safetensors.damaged").is_file()
    assert json.loads((run / "manifest.json").read_text())["weights_sha256"] == reference


def test_predict_refuses_a_model_changed_after_training(cli, finished_run, demo_set, tmp_path):
    image = next((demo_set / "test").rglob("*.jpg"))
    good = cli("predict", image, "--run", finished_run, check=True)
    assert json.loads(good.stdout)["label"]

    tampered = tmp_path / "tampered"
    shutil.copytree(finished_run, tampered)
    flip_byte(tampered / "model" / "weights.safetensors")
    refused = cli("predict", image, "--run", tampered)
    assert_clean_error(refused, "weights.safetensors has changed since the run finished")
    assert refused.stdout == ""

    edited = tmp_path / "edited"
    shutil.copytree(finished_run, edited)
    meta = json.loads((edited / "model" / "model.json").read_text())
    meta["classes"] = list(reversed(meta["classes"]))  # labels swapped: every answer wrong
    (edited / "model" / "model.json").write_text(json.dumps(meta))
    assert_clean_error(cli("predict", image, "--run", edited), "model.json has changed")


def test_predict_never_prints_nan_and_damaged_files_are_clean_errors(
    cli, finished_run, demo_set, tmp_path
):
    from inflame.hashing import sha256_file

    image = next((demo_set / "test").rglob("*.jpg"))
    run = tmp_path / "nan"
    shutil.copytree(finished_run, run)
    weights = run / "model" / "weights.safetensors"
    tensors = load_tensors(weights)
    tensors = {
        k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
        for k, v in tensors.items()
    }
    save_tensors(tensors, weights, digest=True)  # a diverged model, recorded as the output
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["outputs"]["weights.safetensors"] = sha256_file(weights)
    (run / "manifest.json").write_text(json.dumps(manifest))
    answered = cli("predict", image, "--run", run)
    assert answered.returncode == 1 and "Traceback" not in answered.stderr
    [line] = answered.stdout.splitlines()
    result = json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert "not a number" in result["error"] and "label" not in result

    broken = tmp_path / "broken"
    shutil.copytree(finished_run, broken)
    (broken / "model" / "model.json").write_text("{not json")
    # a manifest without outputs (nothing recorded to compare): the load itself must fail cleanly
    (broken / "manifest.json").write_text(json.dumps({"status": "completed"}))
    assert_clean_error(cli("predict", image, "--run", broken), "model.json cannot be read")


@pytest.mark.parametrize("status", ["interrupted", "failed", "running"])
def test_a_run_that_did_not_finish_says_how_to_finish_it(tmp_path: Path, status: str):
    from inflame.predict import Predictor

    run = tmp_path / "run"
    run.mkdir()  # a run that died while "running" (its process is gone): `stopped`
    (run / "manifest.json").write_text(json.dumps({"status": status, "pid": 2**22 + 7}))
    with pytest.raises(RunError) as refused:
        Predictor.from_run(run)
    said = str(refused.value)
    shown = "stopped" if status == "running" else status
    assert f"{run} is {shown}, not completed" in said
    assert f"`inflame train --local --resume {run}`" in said
