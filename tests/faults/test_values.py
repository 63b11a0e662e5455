"""Faults: values that pass a type check but no run could use. NaN compares false with
everything (`nan <= 0` is False), so every numeric check must reject it explicitly."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from inflame.data.split import parse_ratios, split_dataset
from inflame.errors import DataError, InflameError, SpecError
from inflame.jobprep import prepare_job
from tests.helpers import assert_clean_error


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ("hyperparameters.learning_rate=nan", "must be a finite number, got nan"),
        ("hyperparameters.learning_rate=inf", "must be a finite number, got inf"),
        ("hyperparameters.weight_decay=-nan", "must be a finite number"),
        ("hyperparameters.epochs=100000000000000000000000", "beyond what any run can use"),
        ("hyperparameters.epochs=1000000", "must be between 1 and 100000"),
        ("hyperparameters.momentum=1.0", "must be at least 0 and below 1"),
        ("hyperparameters.image_size=100000", "must be between 16 and 4096"),
        ("hyperparameters.num_workers=100000", "0 to 256"),
        ("job.seed=-1", "`job.seed` must be 0 or more"),
        ("compute.nodes=100000000000000000000", "beyond what any run can use"),
    ],
)
def test_unusable_values_are_spec_errors_naming_the_key(write_spec, override, says):
    key = override.partition("=")[0]
    with pytest.raises(SpecError) as caught:
        prepare_job(write_spec(), [override])
    assert says in str(caught.value) and f"--set {key}" in str(caught.value)


def test_the_cli_refuses_a_nan_learning_rate_before_writing_anything(cli, write_spec, tmp_path):
    result = cli("train", "--local", write_spec(), "--set", "hyperparameters.learning_rate=nan")
    assert_clean_error(result, "must be a finite number")
    assert not (tmp_path / "runs").exists()


def test_pretrained_weights_that_are_not_there_or_not_weights_are_clean_errors(
    cli, write_spec, tmp_path
):
    quoted = cli("train", "--local", write_spec(), "--set", 'hyperparameters.pretrained="false"')
    assert_clean_error(quoted, "hyperparameters.pretrained", "write true or false without quotes")
    assert not (tmp_path / "runs").exists()  # refused with the spec, before anything is written
    missing = cli("train", "--local", write_spec(), "--set", "hyperparameters.pretrained='r.pth'")
    assert_clean_error(missing, "hyperparameters.pretrained", f"{tmp_path / 'r.pth'} does not")
    (tmp_path / "junk.pth").write_text("not weights")
    junk = cli("train", "--local", write_spec(), "--set", "hyperparameters.pretrained='junk.pth'")
    assert_clean_error(junk, "junk.pth could not be read (UnpicklingError)", "state_dict()")
    assert "weights_only" not in junk.stderr  # torch's advice to load it unsafely: not ours
    assert not list((tmp_path / "runs").iterdir())  # each cleared: nothing was trained


def write_app(folder: Path, hparams: str) -> Path:
    folder.mkdir()
    (folder / "app.py").write_text(
        f"from inflame import HParam\nHPARAMS = ({hparams})\ndef train(ctx):\n    pass\n"
    )
    return folder


@pytest.mark.parametrize(
    ("hparams", "says"),
    [
        ('HParam("lr", float, 0.1), HParam("lr", float, 0.2),', "`lr` is declared twice"),
        ('HParam("lr", float, "0.1"),', "the default of hyperparameter `lr` must be of type"),
        ('HParam("mode", str, "x", choices=("a", "b")),', "the default of hyperparameter `mode`"),
    ],
)
def test_an_app_whose_declarations_are_unsound_is_refused(write_spec, tmp_path, hparams, says):
    app = write_app(tmp_path / "bad_app", hparams)
    spec = write_spec(job={"app": str(app)}, hyperparameters={})
    with pytest.raises(SpecError) as caught:
        prepare_job(spec)
    assert says in str(caught.value) and str(app / "app.py") in str(caught.value)


def test_an_empty_environment_variable_is_an_error_that_names_it(write_spec, monkeypatch):
    spec = write_spec(data={"extra": "${env:INFLAME_TEST_DATA}"})
    monkeypatch.setenv("INFLAME_TEST_DATA", "")
    with pytest.raises(SpecError, match="`INFLAME_TEST_DATA` is set but empty"):
        prepare_job(spec)
    monkeypatch.delenv("INFLAME_TEST_DATA")
    with pytest.raises(SpecError, match="`INFLAME_TEST_DATA` is not set"):
        prepare_job(spec)


def test_an_empty_variable_with_a_default_uses_the_default_as_the_shell_does(
    write_spec, monkeypatch, demo_set
):
    spec = write_spec(data={"train": "${env:INFLAME_TEST_DATA:-" + str(demo_set / "train") + "}"})
    monkeypatch.setenv("INFLAME_TEST_DATA", "")
    assert prepare_job(spec).spec.data["train"].value == str(demo_set / "train")


@pytest.mark.parametrize("text", ["nan,0.5,0.5", "0.8,nan,0.2", "inf,-inf,1", "0.5,0.5,nan"])
def test_split_ratios_must_be_finite(text):
    with pytest.raises(InflameError, match="Invalid --ratios"):
        parse_ratios(text)


def test_split_refuses_a_destination_inside_its_source(demo_set, tmp_path):
    source = tmp_path / "src"
    shutil.copytree(demo_set / "train", source)
    before = sorted(p.name for p in source.iterdir())
    for destination in (source / "splits", source, source / "square" / "x"):
        with pytest.raises(DataError, match="inside the source"):
            split_dataset(source, destination, (0.5, 0.5))
    assert sorted(p.name for p in source.iterdir()) == before  # nothing was written


def test_integers_are_usable_up_to_two_to_the_53():
    """2**53 is the largest integer that JSON readers and floats hold exactly."""
    from inflame.hparams import unusable_number

    assert unusable_number(2**53) is None and unusable_number(-(2**53)) is None
    assert "beyond what any run can use (at most 9007199254740992)" in unusable_number(2**53 + 1)
    assert unusable_number(-(2**53) - 1) is not None
