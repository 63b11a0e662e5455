"""The [compute] speed switches: parsed from the spec, resolved per device, applied by fit,
recorded in the manifest; and data loading that replays exactly with any worker count."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from inflame import memory_format, performance
from inflame.errors import SpecError
from inflame.performance import Performance
from inflame.spec import load_spec
from inflame.training import fastpath, fit, seed_everything
from inflame.training.loading import EpochOrder, SeededSamples
from inflame.training.seeding import seed_rngs
from tests.test_training import make_ctx


class NoisyImages(Dataset):
    """Images whose every read draws fresh random noise (like random augmentation)."""

    def __init__(self, n: int = 40):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 8, 8, generator=g)
        self.y = torch.randint(0, 3, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        flip = torch.rand(()) < 0.5
        x = self.x[i].flip(-1) if flip else self.x[i]
        return x + 0.1 * torch.randn_like(x), self.y[i]


def conv_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    )


def train(tmp_path: Path, workers: int, performance: Performance | None = None, epochs: int = 2):
    seed_everything(0)
    model = conv_net()
    ctx = make_ctx(tmp_path)
    if performance is not None:
        ctx.performance = performance
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    result = fit(
        ctx,
        model,
        NoisyImages(),
        NoisyImages(12),
        epochs=epochs,
        batch_size=8,
        optimizer=optimizer,
        num_workers=workers,
    )
    return result, ctx


def test_results_do_not_depend_on_the_worker_count(tmp_path: Path):
    """Each sample's augmentation comes from (seed, epoch, index), and loading in the
    training process leaves dropout's random stream alone."""
    in_process, _ = train(tmp_path / "w0", workers=0)
    with_workers, _ = train(tmp_path / "w2", workers=2)
    for a, b in zip(
        in_process.model.state_dict().values(),
        with_workers.model.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b)
    assert in_process.history[-1]["train_loss"] == with_workers.history[-1]["train_loss"]


def test_each_epoch_draws_new_augmentations_and_a_new_order():
    samples = SeededSamples(NoisyImages(4), seed=1)
    assert torch.equal(samples[(0, 2)][0], samples[(0, 2)][0])  # replayable
    assert not torch.equal(samples[(0, 2)][0], samples[(1, 2)][0])  # a new epoch, new noise
    order = EpochOrder(10, seed=1, shuffle=True)
    first = list(order)
    order.set_epoch(1)
    second = list(order)
    assert sorted(i for _, i in first) == list(range(10)) == sorted(i for _, i in second)
    assert [i for _, i in first] != [i for _, i in second]


def test_a_batch_is_its_samples_and_leaves_the_global_random_state_alone():
    samples = SeededSamples(NoisyImages(4), seed=1)
    keys = [(0, 2), (0, 0), (1, 2)]

    def draws() -> tuple[list[float], float, float]:
        return torch.rand(3).tolist(), random.random(), float(np.random.rand())

    seed_rngs(5)
    batch = samples.__getitems__(keys)  # as the DataLoader asks for a batch
    after = draws()
    seed_rngs(5)
    assert draws() == after  # the batch drew from its own seeds, not the global stream
    for key, sample in zip(keys, batch, strict=True):
        assert torch.equal(sample[0], samples[key][0])
    assert not torch.equal(batch[0][0], batch[2][0])


def test_shards_cover_the_data_padded_to_equal_sizes():
    shards = [list(EpochOrder(10, seed=1, shuffle=True, rank=r, world=4)) for r in range(4)]
    assert {len(s) for s in shards} == {3}
    seen = [i for shard in shards for _, i in shard]
    assert set(seen) == set(range(10)) and len(seen) == 12


def test_fit_records_the_modes_it_ran_with(tmp_path: Path):
    _, ctx = train(tmp_path, workers=0, epochs=1)
    record = ctx.records["performance"]
    assert record["device"] == "cpu" and record["precision"] == "fp32"
    assert record["channels_last"] is False  # a plain conv net on 8 px images, on a CPU
    assert record["deterministic"] is True and record["data_workers"] == 0
    assert record["torch_threads"] == torch.get_num_threads()


def test_channels_last_is_applied_to_conv_nets_only():
    cpu = torch.device("cpu")
    conv = fastpath.prepare_model(conv_net(), fastpath.resolve(Performance(), cpu, conv_net()))
    assert conv[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv[0].weight.is_contiguous()
    mlp = nn.Sequential(nn.Linear(4, 4))
    assert fastpath.resolve(Performance(), cpu, mlp).channels_last is False
    forced_off = fastpath.resolve(Performance(channels_last=False), cpu, conv_net())
    assert forced_off.channels_last is False


def test_ddp_processes_on_cpus_share_them_unless_threads_are_set(monkeypatch):
    monkeypatch.setattr(performance, "available_cpus", lambda: 16)
    share = performance.threads_env
    assert share(2, {}, gpu=False) == {"OMP_NUM_THREADS": "8"}  # torchrun: 1 each
    assert share(3, {}, gpu=False) == {"OMP_NUM_THREADS": "5"}
    assert share(32, {}, gpu=False) == {"OMP_NUM_THREADS": "1"}
    assert share(2, {}, gpu=False, recorded=3) == {"OMP_NUM_THREADS": "3"}  # a resumed run
    assert share(2, {"OMP_NUM_THREADS": "4"}, gpu=False) == {}  # the user's choice
    assert share(2, {}, gpu=True) == {}  # GPUs: the CPUs feed them through the workers
    from inflame.launcher import _threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the suite's workers set it
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # resumed on CPUs:
    assert _threads({"ddp_threads": 3}, 2) == {"OMP_NUM_THREADS": "3"}  # the count it began with
    # a GPU run recorded none (its processes had torchrun's 1 thread): the CPUs' share
    assert _threads({"world_size": 2}, 2) == {"OMP_NUM_THREADS": "8"}


def test_a_cpu_ddp_run_records_its_thread_count_as_it_starts(write_spec, tmp_path, monkeypatch):
    from inflame import launcher
    from inflame.errors import RunError

    monkeypatch.setattr(performance, "available_cpus", lambda: 16)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    seen = {}

    def torchrun(command, run_dir, extra_env):  # stands in for the processes: look, then fail
        seen["env"] = extra_env
        seen["manifest"] = json.loads((run_dir / "manifest.json").read_text())
        return 1

    monkeypatch.setattr(launcher, "_run_torchrun", torchrun)
    with pytest.raises(RunError, match="A training process"):
        launcher.train_local(write_spec(), run_dir=tmp_path / "ddp", nproc_per_node=2)
    assert seen["env"] == {"OMP_NUM_THREADS": "8"}
    assert seen["manifest"]["status"] == "running" and seen["manifest"]["ddp_threads"] == 8


class Squares(Dataset):
    """Noise images of one side; each read draws from the global random stream."""

    def __init__(self, side: int):
        self.side = side

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int):
        return torch.rand(3, self.side, self.side), i % 2


def test_channels_last_on_a_cpu_follows_the_image_size_unless_convolutions_are_grouped():
    cpu, fp32 = torch.device("cpu"), Performance(precision="fp32")
    depthwise = nn.Sequential(nn.Conv2d(3, 6, 3), nn.Conv2d(6, 6, 3, groups=6))
    limit = memory_format.CPU_CHANNELS_LAST_MIN_SIDE
    assert fastpath.resolve(fp32, cpu, conv_net(), Squares(limit - 1)).channels_last is False
    assert fastpath.resolve(fp32, cpu, conv_net(), Squares(limit)).channels_last is True
    assert fastpath.resolve(fp32, cpu, depthwise, Squares(8)).channels_last is True
    assert fastpath.resolve(fp32, cpu, conv_net(), None).channels_last is True  # not sized
    gpu = fastpath.resolve(fp32, torch.device("cuda"), conv_net(), Squares(8))
    assert gpu.channels_last is True  # on a GPU for every conv net
    forced = fastpath.resolve(Performance(channels_last=True), cpu, conv_net(), Squares(8))
    assert forced.channels_last is True
    net = conv_net()
    seed_rngs(3)
    fastpath.resolve(fp32, cpu, net, Squares(8), seed=1)
    after = torch.rand(2)
    seed_rngs(3)
    assert torch.equal(torch.rand(2), after)  # sizing the data drew nothing from the stream


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_and_resumes(tmp_path: Path, precision: str):
    settings = Performance(precision=precision)
    result, ctx = train(tmp_path, workers=0, performance=settings, epochs=2)
    assert ctx.records["performance"]["precision"] == precision
    assert all(torch.isfinite(v).all() for v in result.model.state_dict().values())
    assert result.history[-1]["train_loss"] < 5
    fast = fastpath.resolve(settings, torch.device("cpu"), conv_net())
    assert fast.amp_dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    assert fast.scaler().is_enabled() is (precision == "fp16")
    again, _ = train(tmp_path, workers=0, performance=settings, epochs=3)  # resumes
    assert [h["epoch"] for h in again.history] == [1, 2, 3]


def test_a_resume_gives_the_optimizer_state_its_parameters_layout(tmp_path: Path):
    settings = Performance(channels_last=True)
    straight, _ = train(tmp_path / "straight", workers=0, performance=settings, epochs=2)
    train(tmp_path / "resumed", workers=0, performance=settings, epochs=1)
    seed_everything(0)
    model = conv_net()
    ctx = make_ctx(tmp_path / "resumed")
    ctx.performance = settings
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    resumed = fit(
        ctx, model, NoisyImages(), NoisyImages(12), epochs=2, batch_size=8,
        optimizer=optimizer, num_workers=0,
    )  # fmt: skip
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    weight = model[0].weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    momentum = optimizer.state[weight]["momentum_buffer"]
    assert momentum.stride() == weight.stride()  # as its parameter, not the checkpoint's
    for name, value in straight.model.state_dict().items():  # and the same run as no stop
        assert torch.equal(value, resumed.model.state_dict()[name]), name


def test_auto_is_fp32_and_deterministic_on_cpu():
    fast = fastpath.resolve(Performance(), torch.device("cpu"), conv_net())
    assert (fast.precision, fast.deterministic, fast.tf32, fast.compile) == (
        "fp32",
        True,
        False,
        False,
    )


def test_spec_switches_are_checked_and_stored_only_when_set(tmp_path: Path, write_spec):
    plain = load_spec(write_spec())
    assert plain.compute.performance == Performance()
    assert "precision" not in plain.to_dict()["compute"]  # old specs keep their hash
    forced = load_spec(write_spec("f.toml", compute={"precision": "bf16", "compile": True}))
    assert forced.compute.performance.precision == "bf16"
    assert forced.to_dict()["compute"]["compile"] is True
    with pytest.raises(SpecError) as bad:
        load_spec(write_spec("b.toml", compute={"precision": "fp8"}))
    assert "compute.precision" in str(bad.value) and "b.toml" in str(bad.value)
    with pytest.raises(SpecError, match="channels_last"):
        load_spec(write_spec("c.toml", compute={"channels_last": "yes"}))


def test_the_manifest_says_which_fast_paths_ran(tmp_path: Path, write_spec, monkeypatch):
    from inflame.launcher import train_local

    spec = write_spec(hyperparameters={"epochs": 1})
    result = train_local(spec, ['compute.precision="bf16"'], runs_root=tmp_path / "runs")
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["performance"]["precision"] == "bf16"
    assert manifest["performance"]["device"] == "cpu"


def test_fp16_resume_restores_the_gradient_scaler(tmp_path: Path, monkeypatch):
    """The scaler's scale grows every step here: after a resume it must continue from the
    checkpoint's scale, ending where an uninterrupted run ends, with the same weights."""
    made: list[torch.amp.GradScaler] = []
    real = fastpath.FastPath.scaler

    def growing(self: fastpath.FastPath) -> torch.amp.GradScaler:
        if not self.needs_scaler:
            return real(self)
        made.append(torch.amp.GradScaler("cpu", init_scale=2.0, growth_interval=1))
        return made[-1]

    monkeypatch.setattr(fastpath.FastPath, "scaler", growing)
    fp16 = Performance(precision="fp16")
    whole, _ = train(tmp_path / "whole", workers=0, performance=fp16, epochs=3)
    whole_scale = made[-1].get_scale()
    train(tmp_path / "parts", workers=0, performance=fp16, epochs=2)
    resumed, _ = train(tmp_path / "parts", workers=0, performance=fp16, epochs=3)
    assert whole_scale > 2.0 * 2**10  # it grew at every one of the 15 steps
    assert made[-1].get_scale() == whole_scale
    for a, b in zip(
        whole.model.state_dict().values(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


def test_deterministic_kernels_follow_the_switch(tmp_path: Path):
    train(tmp_path / "a", workers=0, performance=Performance(deterministic=False), epochs=1)
    assert not torch.are_deterministic_algorithms_enabled()
    torch.utils.deterministic.fill_uninitialized_memory = True
    train(tmp_path / "b", workers=0, epochs=1)  # auto on CPU: deterministic
    assert torch.are_deterministic_algorithms_enabled()
    # without NaN-filling each new tensor (~4 % of a CPU step): same results for valid code
    assert not torch.utils.deterministic.fill_uninitialized_memory


def test_deterministic_kernels_reach_inductor_without_loading_it_at_start():
    # a fresh process: this one may have loaded inductor already
    script = """
import sys
import torch
from inflame.training import seed_everything
from inflame.training.fastpath import deterministic_kernels
seed_everything(1)
loaded = "torch._inductor" in sys.modules
on = (torch.are_deterministic_algorithms_enabled(),
      torch.is_deterministic_algorithms_warn_only_enabled())
import torch._inductor.config as inductor  # as torch.compile loads it, later
first = inductor.deterministic
deterministic_kernels(False)  # once loaded, through torch itself
print(loaded, on, first, inductor.deterministic, torch.are_deterministic_algorithms_enabled())
"""
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_DETERMINISTIC"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["False", "(True,", "True)", "True", "False", "False"], out


def test_a_compile_failure_at_the_first_batch_is_a_clear_error(tmp_path: Path, monkeypatch):
    """torch.compile compiles lazily: its failure comes from the first forward pass."""
    from torch._dynamo.exc import InternalTorchDynamoError

    from inflame.errors import InflameError

    class FailsToCompile(nn.Module):
        def __init__(self, inner: nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise InternalTorchDynamoError("no C++ compiler found\nmore detail")

    monkeypatch.setattr(torch, "compile", FailsToCompile)
    with pytest.raises(InflameError, match=r"no C\+\+ compiler found.*compute.compile = false"):
        train(tmp_path, workers=0, performance=Performance(compile=True), epochs=1)


@pytest.mark.parametrize("size, expected", [(32, False), (96, True)])
def test_predict_runs_channels_last_where_training_would_and_answers_the_same(
    tmp_path: Path, size: int, expected: bool
):
    from inflame.predict import Predictor
    from inflame.vision import build_classifier, save_classifier

    torch.manual_seed(0)
    model = build_classifier("resnet18", 3).eval()
    folder = tmp_path / "model"
    save_classifier(
        model, folder, architecture="resnet18", classes=["a", "b", "c"], image_size=size
    )
    predictor = Predictor(folder, device="cpu")
    assert predictor.channels_last is expected  # resnet18 on a CPU: from 96 px up
    conv = predictor.model.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) is expected
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (3, predictor.side, predictor.side), np.uint8) for _ in range(4)]
    with torch.no_grad():
        logits = model(torch.from_numpy(predictor.normalized(images)))
    expected_probabilities = torch.softmax(logits, dim=1).numpy()
    np.testing.assert_allclose(predictor.probabilities(images), expected_probabilities, atol=1e-5)
    exported = Predictor(folder, device="cpu", channels_last=False)  # as `inflame export` loads
    assert exported.model.conv1.weight.is_contiguous()
