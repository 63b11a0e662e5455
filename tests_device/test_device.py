"""The fast paths on the device torch sees: the GPU expectations on a GPU machine, the CPU
ones elsewhere. Not part of the CI suite (`testpaths = ["tests"]`): CI has no GPU. Run them
where a GPU is, as one short script (tools/device-check.sh does, with the GPU benchmark):

    python -m pytest tests_device -p no:cacheprovider -o addopts="" -q -ra

On a CPU they check themselves against the CPU's expectations (about 1 minute here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch.utils.data import TensorDataset

from inflame.performance import Performance
from inflame.training import fit, seed_everything
from inflame.training.progress import SilentReporter
from tests.test_training import make_ctx

# deterministic cuBLAS needs this before cuBLAS starts (as `inflame train` sets it for a
# `deterministic = true` run); the first test of this process starts it
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
GPU = torch.cuda.is_available()
ROOT = Path(__file__).resolve().parents[1]
SIDE = 64 if GPU else 32  # images; smaller on a CPU, where these tests only check themselves


def learnable(n: int = 256, side: int = SIDE) -> TensorDataset:
    """Noise images whose class is their brightest colour channel: a conv net learns it."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, side, side, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    x[torch.arange(n), y] += 3.0
    return TensorDataset(x, y)


def train(tmp_path: Path, performance: Performance, epochs: int = 3, seed: int = 0):
    seed_everything(seed)
    model = torchvision.models.resnet18(num_classes=3)
    ctx = make_ctx(tmp_path, seed)
    ctx.performance = performance
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    result = fit(
        ctx,
        model,
        learnable(),
        learnable(64),
        epochs=epochs,
        batch_size=32,
        optimizer=optimizer,
        reporter=SilentReporter(),
    )
    return result, ctx.records["performance"]


def test_auto_picks_the_devices_fast_path_and_learns(tmp_path: Path):
    result, record = train(tmp_path, Performance())
    losses = [h["train_loss"] for h in result.history]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert result.history[-1]["train_accuracy"] > 0.9
    assert max(h["val_accuracy"] for h in result.history) > 0.6  # chance is 0.33
    if GPU:
        assert record["device"].startswith("cuda") and record["device_name"]
        native_bf16 = torch.cuda.get_device_capability() >= (8, 0)  # not emulated bf16
        assert record["precision"] == ("bf16" if native_bf16 else "fp16")
        assert record["channels_last"] is True and record["tf32"] is True
        assert record["deterministic"] is False and record["cudnn_benchmark"] is True
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert record["data_workers"] >= 1  # pinned memory feeds the GPU from workers
    else:
        assert record["device"] == "cpu" and record["precision"] == "fp32"
        assert record["channels_last"] is False  # resnet18 on small images on a CPU
        assert record["deterministic"] is True


def test_mixed_precision_trains_and_resumes_exactly(tmp_path: Path):
    """On a GPU fp16 with its gradient scaler, whose state the checkpoint carries; on a CPU
    bf16 (fp16 there is emulated: 15 s a step). Deterministic, so that a run resumed after
    epoch 2 must end with the weights of the run that was never stopped."""
    precision = "fp16" if GPU else "bf16"
    mixed = Performance(precision=precision, deterministic=True)
    whole, record = train(tmp_path / "whole", mixed, epochs=3)
    assert record["precision"] == precision
    train(tmp_path / "stopped", mixed, epochs=2)
    resumed, _ = train(tmp_path / "stopped", mixed, epochs=3)  # resumes after epoch 2
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    pairs = zip(whole.model.state_dict().values(), resumed.model.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


def test_deterministic_mode_gives_identical_weights(tmp_path: Path):
    exact = Performance(deterministic=True)
    a, record = train(tmp_path / "a", exact, epochs=2)
    b, _ = train(tmp_path / "b", exact, epochs=2)
    assert record["deterministic"] is True
    for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True):
        assert torch.equal(x, y)


def test_inflame_train_and_predict_end_to_end_on_this_device(tmp_path: Path):
    """The CLI as a user runs it: demo data, the fowl app, then predict on this device and
    on the CPU (same top label; probabilities within TF32's error)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "INFLAME_HOME": str(tmp_path / "home"),
        "INFLAME_CACHE_DIR": str(tmp_path / "cache"),
    }

    def inflame(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "inflame", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    inflame("demo-data", str(tmp_path / "data" / "demo"), "--per-class", "24")
    spec = (ROOT / "model_zoo" / "fowl_classifier" / "job.toml").read_text()
    (tmp_path / "job.toml").write_text(spec)
    inflame("train", "--local", "job.toml", "--set", "hyperparameters.epochs=2", "--run-dir", "run")
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["performance"]["device"].startswith("cuda" if GPU else "cpu")

    from inflame.predict import Predictor

    images = sorted((tmp_path / "data").rglob("*.jpg"))[:8]
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 on both sides (fit turned TF32 on)
    torch.backends.cudnn.allow_tf32 = False
    here = Predictor.from_run(tmp_path / "run")
    cpu = Predictor.from_run(tmp_path / "run", device="cpu")
    assert here.device.type == ("cuda" if GPU else "cpu")
    decoded = [here.decode(p) for p in images]
    on_device, on_cpu = here.probabilities(decoded), cpu.probabilities(decoded)
    top_two = np.sort(on_cpu, axis=1)[:, -2:]
    clear = top_two[:, 1] - top_two[:, 0] > 1e-2  # a near-tie may flip on another device
    assert (on_device.argmax(1) == on_cpu.argmax(1))[clear].all()
    np.testing.assert_allclose(on_device, on_cpu, atol=5e-3)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DDP over NCCL needs 2 GPUs")
def test_ddp_on_two_gpus_trains_end_to_end(tmp_path: Path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "INFLAME_HOME": str(tmp_path / "home")}
    spec = (ROOT / "model_zoo" / "fowl_classifier" / "job.toml").read_text()
    (tmp_path / "job.toml").write_text(spec)
    subprocess.run(
        [sys.executable, "-m", "inflame", "demo-data", "data/demo", "--per-class", "24"],
        cwd=tmp_path, env=env, check=True,
    )  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "inflame", "train", "--local", "job.toml", "--set",
         "hyperparameters.epochs=2",
         "--nproc-per-node", "2", "--run-dir", "run"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["status"] == "completed"


def test_torch_compile_when_asked(tmp_path: Path):
    result, record = train(tmp_path, Performance(compile=True), epochs=1)
    assert record["compile"] is True
    assert np.isfinite(result.history[-1]["train_loss"])
