"""The feature cache: a frozen backbone's features computed once, the head trained on them,
the same features as the backbone computes, reused by a second run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from inflame.data.dataset import ImageFolderDataset
from inflame.launcher import train_local
from inflame.tensorfile import load_tensors
from inflame.training import features as feats
from inflame.training.features import FeatureViews, compute_features, headless
from inflame.vision import build_classifier, decode_side, eval_transform, load_classifier


class Noisy(torch.utils.data.Dataset):
    def __init__(self):
        self.x = torch.randn(10, 3, 16, 16, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int):
        return self.x[i] + torch.rand(()), i % 2


def test_features_are_what_the_backbone_computes():
    model = build_classifier("resnet18", 2)
    data = Noisy()
    features, labels = compute_features(model, data, views=3, seed=1, device=torch.device("cpu"))
    assert features.shape == (3, 10, 512) and labels.tolist() == [i % 2 for i in range(10)]
    assert isinstance(model.fc, nn.Linear)  # the head is back
    assert not torch.equal(features[0], features[1])  # each view its own augmentation
    again, _ = compute_features(model, data, views=3, seed=1, device=torch.device("cpu"))
    assert torch.equal(features, again)  # and replayable
    from inflame.training.loading import SeededSamples

    sample = SeededSamples(data, 1)[(2, 4)][0]  # view 2 of image 4
    with headless(model.eval()) as backbone, torch.no_grad():
        expected = backbone(sample[None])[0]
    torch.testing.assert_close(features[2, 4], expected)
    views = FeatureViews(features, labels)
    assert torch.equal(views[(5, 4)][0], features[2, 4])  # epoch 5 trains on view 5 mod 3


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = feats.compute_features

    def counting(*args, **kwargs):
        calls.append(len(args[1]))
        return real(*args, **kwargs)

    monkeypatch.setattr(feats, "compute_features", counting)
    return calls


def test_frozen_backbone_trains_the_head_on_cached_features(
    tmp_path: Path, write_spec, counted, monkeypatch, demo_set
):
    monkeypatch.setenv("INFLAME_CACHE_DIR", str(tmp_path / "cache"))
    spec = write_spec(hyperparameters={"freeze_backbone": True, "epochs": 3, "learning_rate": 0.01})
    first = train_local(spec, runs_root=tmp_path / "runs")
    assert counted == [36, 12]  # train and val features, once each
    trained = load_tensors(first.run_dir / "model" / "weights.safetensors")
    # the saved model's backbone is the one that made the cached features: it stayed frozen
    model, _ = load_classifier(first.run_dir / "model")
    val = ImageFolderDataset(demo_set / "val", eval_transform(32), decode_size=decode_side(32))
    recomputed, _ = compute_features(model, val, views=1, seed=3, device=torch.device("cpu"))
    cached = [load_tensors(p) for p in (tmp_path / "cache" / "features").glob("*.safetensors")]
    val_features = next(t["features"] for t in cached if t["features"].shape[1] == 12)
    torch.testing.assert_close(recomputed, val_features)
    metrics = [json.loads(line) for line in (first.run_dir / "metrics.jsonl").open()]
    epochs = [m for m in metrics if "epoch" in m]
    assert [m["epoch"] for m in epochs] == [1, 2, 3]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]  # the head learned
    assert any("test_accuracy" in m for m in metrics)  # the whole model, on test images

    second = train_local(spec, runs_root=tmp_path / "runs")
    assert counted == [36, 12]  # nothing computed again
    again = load_tensors(second.run_dir / "model" / "weights.safetensors")
    assert all(torch.equal(again[k], v) for k, v in trained.items())


def test_feature_cache_off_trains_the_whole_frozen_model(tmp_path: Path, write_spec, counted):
    spec = write_spec(
        hyperparameters={"freeze_backbone": True, "feature_cache": False, "epochs": 1}
    )
    train_local(spec, runs_root=tmp_path / "runs")
    assert counted == []


def test_the_key_covers_backbone_preprocessing_and_batch(tmp_path, counted, monkeypatch):
    monkeypatch.setenv("INFLAME_CACHE_DIR", str(tmp_path / "cache"))
    cpu = torch.device("cpu")
    model, data = build_classifier("resnet18", 2), Noisy()

    def get(model=model, data=data, batch_size=64):
        return feats.cached_features(
            model, data, {"data": "x"}, views=1, seed=0, device=cpu, batch_size=batch_size
        )

    first = get()
    moved: list[object] = []
    real_to = model.to
    monkeypatch.setattr(model, "to", lambda *a, **k: moved.append(a) or real_to(*a, **k))
    assert torch.equal(get().features, first.features) and len(counted) == 1  # a hit
    assert moved  # on a hit too: the backbone is put on the device the head trains on
    get(batch_size=8)
    assert len(counted) == 2
    data.transform = "another transform"
    get(data=data)
    assert len(counted) == 3
    other = build_classifier("resnet18", 2)  # other backbone weights, same architecture
    get(model=other)
    assert len(counted) == 4
