"""App hyperparameter declarations and the runtime Context."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inflame.errors import InflameError, SpecError
from inflame.hparams import HParam, between, positive, resolve_hparams
from inflame.runtime import DataInputs, distributed_ranks, local_context
from inflame.spec import load_spec

DECLARED = (
    HParam("learning_rate", float, 0.01, "Initial learning rate.", check=positive),
    HParam("epochs", int, 10),
    HParam("pretrained", (bool, str), True),
    HParam("optimizer", str, "sgd", choices=("sgd", "adamw")),
)


def resolve(**given):
    return resolve_hparams(
        DECLARED, given, app_name="demo", locate=lambda path: f"job.toml ({'.'.join(path)})"
    )


def test_defaults_fill_in_and_ints_become_floats():
    resolved = resolve(learning_rate=1)
    assert resolved == {"learning_rate": 1.0, "epochs": 10, "pretrained": True, "optimizer": "sgd"}
    assert isinstance(resolved["learning_rate"], float)
    assert resolve(pretrained="weights.safetensors")["pretrained"] == "weights.safetensors"


@pytest.mark.parametrize(
    ("given", "fragments"),
    [
        (
            {"learning_rte": 0.1},
            [
                "unknown hyperparameter `learning_rte`",
                "Did you mean `learning_rate`?",
                "job.toml (hyperparameters.learning_rte)",
            ],
        ),
        ({"epochs": 2.5}, ["`epochs` must be of type int, got float 2.5"]),
        ({"epochs": True}, ["must be of type int, got bool"]),
        ({"learning_rate": -1.0}, ["must be positive", "Initial learning rate."]),
        ({"optimizer": "adam"}, ["must be one of 'sgd', 'adamw'"]),
        ({"pretrained": 3}, ["must be of type bool | str"]),
    ],
)
def test_bad_hyperparameters_are_spec_errors(given, fragments):
    with pytest.raises(SpecError) as info:
        resolve(**given)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_distributed_ranks_come_from_torchrun_variables():
    assert distributed_ranks({}) == (0, 0, 1)
    assert distributed_ranks({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4"}) == (3, 1, 4)
    with pytest.raises(InflameError, match="RANK=4, WORLD_SIZE=4"):
        distributed_ranks({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(InflameError, match="must be an integer"):
        distributed_ranks({"RANK": "zero"})


def test_missing_data_input_names_what_exists():
    data = DataInputs({"train": Path("/d/train")}, where="job.toml")
    with pytest.raises(InflameError) as info:
        data["vall"]
    assert "has only: train" in str(info.value) and "--set data.vall=PATH" in str(info.value)
    assert "train" in data and "test" not in data and data.get("test") is None


def _spec(tmp_path: Path, data: str) -> Path:
    (tmp_path / "train").mkdir(exist_ok=True)
    path = tmp_path / "job.toml"
    path.write_text(f'[job]\nname = "t"\napp = "fowl_classifier"\nseed = 5\n[data]\n{data}\n')
    return path


def test_local_context_resolves_paths_ranks_and_metrics(tmp_path: Path):
    spec = load_spec(_spec(tmp_path, 'train = "train"'))
    run_dir = tmp_path / "run"
    ctx = local_context(spec, {"epochs": 1}, run_dir, env={})
    assert ctx.data["train"] == tmp_path / "train"
    assert ctx.output_dir == run_dir / "model" and ctx.checkpoint_dir == run_dir / "checkpoints"
    assert (ctx.seed, ctx.rank, ctx.world_size, ctx.is_main) == (5, 0, 1, True)
    assert ctx.resolve_path("w.pt") == tmp_path / "w.pt"
    ctx.log_metrics({"train_loss": 0.5}, epoch=1)
    ctx.log_metric("lr", 0.1, step=7)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert lines == [{"epoch": 1, "train_loss": 0.5}, {"step": 7, "lr": 0.1}]

    worker = local_context(spec, {}, tmp_path / "run2", env={"RANK": "1", "WORLD_SIZE": "2"})
    worker.log_metrics({"train_loss": 1.0}, epoch=1)
    assert not worker.is_main and not (tmp_path / "run2" / "metrics.jsonl").exists()


def test_local_context_refuses_cloud_uris(tmp_path: Path):
    spec = load_spec(_spec(tmp_path, 'train = "gs://bucket/train"'))
    with pytest.raises(InflameError, match="cloud URI"):
        local_context(spec, {}, tmp_path / "run", env={})


def test_range_checks_include_their_bounds_and_positive_excludes_zero():
    check = between(0.0, 1.0)
    for value in (0.0, 0.5, 1.0):
        check(value)
    for value in (-1e-9, 1.000001):
        with pytest.raises(ValueError, match=r"must be between 0\.0 and 1\.0"):
            check(value)
    positive(1e-12)
    for value in (0, 0.0, -3):
        with pytest.raises(ValueError, match="must be positive"):
            positive(value)


def test_a_declaration_is_a_value_no_code_can_change():
    """An app's HPARAMS are module-level values shared by every run in the process."""
    import dataclasses

    lr = HParam("lr", float, 0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        lr.default = 0.5  # type: ignore[misc]
    assert {lr: 1}[HParam("lr", float, 0.1)] == 1  # equal declarations are one key
