"""Tracking: TensorBoard event files, read back with TensorBoard's own reader, hold every
logged number at its epoch; a resume replaces the epochs after the checkpoint; a tracker
that fails never costs the run, and `inflame runs sync` replays it later."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from inflame.launcher import train_local
from inflame.tracking.tensorboard import VERTEX_LOG_DIR_ENV, log_dir, tag
from tests.helpers import assert_clean_error, run_inflame


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(folder))
    events.Reload()
    return {
        name: [(e.step, e.value) for e in events.Scalars(name)] for name in events.Tags()["scalars"]
    }


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def expected(run: Path) -> dict[str, list[tuple[int, float]]]:
    """What metrics.jsonl says, as TensorBoard would chart it."""
    found: dict[str, list[tuple[int, float]]] = {}
    last = 0
    for record in records(run):
        last = record.get("epoch", last)
        for key, value in record.items():
            if key not in ("epoch", "seconds"):
                found.setdefault(tag(key), []).append((last, pytest.approx(value, rel=1e-6)))
    return found


def test_every_logged_number_is_a_tensorboard_scalar_at_its_epoch(write_spec, tmp_path):
    spec = write_spec(tracking={"tensorboard": True})
    run = train_local(spec, run_dir=tmp_path / "run").run_dir
    charted = scalars(run / "tensorboard")
    assert {"loss/train", "loss/val", "accuracy/val", "learning_rate", "accuracy/test"} <= set(
        charted
    )
    assert charted == expected(run)
    assert [step for step, _ in charted["loss/val"]] == [1, 2]
    assert charted["accuracy/test"][0][0] == 2  # a test score sits at the last epoch
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["tracking"] == {
        "tensorboard": {"log_dir": str(run / "tensorboard"), "drawn": ["images", "graph"]}
    }

    # sample images, as the model sees them, and the model's graph
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    [grid] = events.Images("samples/train")
    picture = Image.open(io.BytesIO(grid.encoded_image_string))
    assert grid.step == 0 and picture.mode == "RGB"
    assert (picture.width, picture.height) == (8 * 32, 2 * 32)  # 16 images, 8 to a row
    pixels = np.asarray(picture)
    assert pixels.min() == 0 and pixels.max() == 255  # stretched, not washed out
    graph = events.Graph()
    operations = {node.op for node in graph.node}
    assert "aten::_convolution" in operations and "aten::linear" in operations
    # neither drawing changed the training: the same weights as without TensorBoard
    plain = train_local(write_spec("plain.toml"), run_dir=tmp_path / "plain").manifest
    assert manifest["weights_sha256"] == plain["weights_sha256"]


def test_a_resume_replaces_the_epochs_after_the_checkpoint(write_spec, tmp_path):
    spec = write_spec(tracking={"tensorboard": True}, hyperparameters={"epochs": 3})
    run = train_local(spec, run_dir=tmp_path / "run").run_dir
    first = scalars(run / "tensorboard")
    # as if killed after epoch 3 was logged but before its checkpoint was written
    (run / "checkpoints" / "epoch-0003.safetensors").unlink()
    shutil.rmtree(run / "model")
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["status"] = "interrupted"
    (run / "manifest.json").write_text(json.dumps(manifest))
    with open(run / "metrics.jsonl", "a") as log:  # a stale epoch 3 the resume must drop
        log.write(json.dumps({"epoch": 3, "val_loss": 99.0}) + "\n")
    train_local(None, resume=str(run))
    charted = scalars(run / "tensorboard")
    assert [step for step, _ in charted["loss/val"]] == [1, 2, 3]  # once each
    assert charted == expected(run)
    assert charted["loss/val"] == first["loss/val"]  # deterministic: the same epoch 3 again


def test_a_failing_tracker_never_costs_the_run_and_sync_replays_it(write_spec, tmp_path):
    reference = train_local(write_spec(), run_dir=tmp_path / "plain").manifest["weights_sha256"]
    run = tmp_path / "run"
    occupied = tmp_path / "occupied"
    occupied.write_text("a file where the platform's event folder should be")
    spec = write_spec(tracking={"tensorboard": True})
    result = run_inflame(
        "train",
        "--local",
        spec,
        "--run-dir",
        run,
        cwd=tmp_path,
        **{VERTEX_LOG_DIR_ENV: str(occupied)},
    )
    assert result.returncode == 0, result.stderr
    assert "warning: tensorboard tracking stopped" in result.stderr
    assert f"inflame runs sync {run}" in result.stderr
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["weights_sha256"] == reference
    assert manifest["tracking"]["tensorboard"]["error"]

    synced = run_inflame("runs", "sync", run, cwd=tmp_path)
    assert synced.returncode == 0, synced.stderr
    assert scalars(run / "tensorboard") == expected(run)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["tracking"]["tensorboard"]["records"] == len(records(run))
    assert "error" not in manifest["tracking"]["tensorboard"]

    plain = tmp_path / "plain"
    assert_clean_error(run_inflame("runs", "sync", plain, cwd=tmp_path), "asks for no tracker")
    assert run_inflame("runs", "sync", plain, "--tensorboard", cwd=tmp_path).returncode == 0
    assert scalars(plain / "tensorboard") == expected(plain)


def test_tracking_spec_errors_and_where_the_events_go(cli, write_spec, tmp_path):
    result = cli("train", "--local", write_spec(tracking={"tensorboard": "yes"}))
    assert_clean_error(result, "`tracking.tensorboard` must be true or false")
    result = cli("train", "--local", write_spec(tracking={"tensorbord": True}))
    assert_clean_error(result, "unknown key `tracking.tensorbord`", "Did you mean")
    assert not (tmp_path / "runs").exists()
    assert log_dir(tmp_path, {}) == str(tmp_path / "tensorboard")
    assert log_dir(tmp_path, {VERTEX_LOG_DIR_ENV: "gs://b/tb/logs"}) == "/gcs/b/tb/logs"


def test_a_model_that_cannot_be_traced_still_gets_its_images_and_metrics(tmp_path, capsys):
    import torch

    from inflame.tracking.tensorboard import TensorBoardLog

    class Named(torch.nn.Module):  # a dict output: strict tracing refuses it
        def forward(self, x):
            return {"logits": x.mean(dim=(2, 3))}

    sink = TensorBoardLog(str(tmp_path / "tb"))
    sink.preview(Named(), torch.randn(4, 3, 8, 8))
    sink({"epoch": 1, "train_loss": 0.5})
    sink.close()
    sink.preview(Named(), torch.randn(4, 3, 8, 8))  # once per run: a second call draws nothing
    assert sink.describe()["drawn"] == ["images"]
    assert sink.describe()["not_drawn"].startswith("graph: ")
    printed = capsys.readouterr()
    assert "TensorBoard shows no model graph" in printed.err
    assert printed.out == ""  # stdout is the CLI's answer: torch's own error print stays out

    features = TensorBoardLog(str(tmp_path / "features"))  # e.g. a head on cached features
    features.preview(torch.nn.Linear(5, 2), torch.randn(4, 5))
    features.close()
    assert features.describe()["drawn"] == ["graph"]
    assert features.describe()["not_drawn"] == "images: the inputs have shape (5,)"
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert events.Tags()["images"] == ["samples/train"] and not events.Tags()["graph"]
    assert scalars(tmp_path / "tb") == {"loss/train": [(1, 0.5)]}
