"""The job spec: loading, overrides, validation and error messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from inflame.errors import SpecError
from inflame.spec import load_spec, parse_duration, parse_override
from inflame.tomlfile import dumps, find_line, loads

GOOD = """\
[job]
name = "fowl"
app = "fowl_classifier"
seed = 7

[data]
train = "data/train"
val = "s3://bucket/val"

[hyperparameters]
epochs = 3
learning_rate = 0.01

[compute]
gpus_per_node = 2
max_runtime = "1h30m"

[targets.sagemaker]
region = "us-east-1"
"""


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    (tmp_path / "data" / "train").mkdir(parents=True)
    path = tmp_path / "job.toml"
    path.write_text(GOOD)
    return path


def error_of(path: Path, *overrides: str) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(path, overrides)
    return " ".join(str(info.value).split())


def test_loads_typed_sections_and_resolves_paths_against_the_spec_folder(spec_file: Path):
    spec = load_spec(spec_file)
    assert spec.job.name == "fowl" and spec.job.seed == 7
    assert spec.data["train"].path == spec_file.parent / "data" / "train"
    assert not spec.data["val"].is_local and spec.data["val"].value == "s3://bucket/val"
    assert spec.hyperparameters == {"epochs": 3, "learning_rate": 0.01}
    assert spec.compute.gpus_per_node == 2 and spec.compute.max_runtime_s == 5400
    assert spec.targets == {"sagemaker": {"region": "us-east-1"}}


@pytest.mark.parametrize("ref", ["./my_app", "../apps/my_app", "apps/my_app", "app.py", "~/x"])
def test_an_app_path_is_resolved_against_the_spec_folder_and_a_name_is_kept(
    spec_file: Path, monkeypatch: pytest.MonkeyPatch, ref: str
):
    monkeypatch.chdir("/")  # not the spec's folder
    monkeypatch.setenv("HOME", str(spec_file.parent))
    spec_file.write_text(GOOD.replace('"fowl_classifier"', f'"{ref}"'))
    home = spec_file.parent / "x" if ref == "~/x" else None  # `~` is the user's home
    assert load_spec(spec_file).job.app == str((home or spec_file.parent / ref).resolve())
    spec_file.write_text(GOOD)
    assert load_spec(spec_file).job.app == "fowl_classifier"  # a model_zoo name


def test_overrides_are_typed_and_repeatable(spec_file: Path):
    spec = load_spec(
        spec_file,
        [
            "hyperparameters.epochs=5",
            "hyperparameters.lr_schedule=cosine",
            "hyperparameters.pretrained=false",
            "job.seed=11",
            "hyperparameters.momentum=0.5",
            "hyperparameters.sizes=[1, 2]",
            'hyperparameters.name="quoted"',
        ],
    )
    hp = spec.hyperparameters
    assert hp["epochs"] == 5 and isinstance(hp["epochs"], int)
    assert hp["momentum"] == 0.5 and hp["pretrained"] is False
    assert hp["lr_schedule"] == "cosine" and hp["name"] == "quoted" and hp["sizes"] == [1, 2]
    assert spec.job.seed == 11


def test_override_errors_name_the_override(spec_file: Path):
    assert "--set hyperparamters.epochs=3" in error_of(spec_file, "hyperparamters.epochs=3")
    assert "Did you mean `hyperparameters`?" in error_of(spec_file, "hyperparamters.epochs=3")
    assert "expected `section.key=value`" in error_of(spec_file, "epochs")
    assert "the key must name a section and a key" in error_of(spec_file, "epochs=3")
    message = error_of(spec_file, "job.seed=abc")
    assert "--set job.seed" in message and "must be an integer" in message


def test_toml_syntax_error_gives_file_line_and_column(tmp_path: Path):
    path = tmp_path / "broken.toml"
    path.write_text('[job]\nname = "x"\napp = \n')
    message = error_of(path)
    assert str(path) in message and "line 3" in message and "column" in message


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        (lambda t: t.replace("[job]", "[jobb]"), ["unknown key `jobb`", "Did you mean `job`?"]),
        (lambda t: t.replace('name = "fowl"\n', ""), ["missing required key `job.name`"]),
        (
            lambda t: t.replace("seed = 7", 'seed = "7"'),
            ["job.toml:4", "`job.seed` must be an integer, got a string"],
        ),
        (
            lambda t: t.replace("seed = 7", "sed = 7"),
            ["unknown key `job.sed`", "Did you mean `seed`?"],
        ),
        (
            lambda t: t.replace("gpus_per_node", "gpu_per_node"),
            ["job.toml:15", "Did you mean `gpus_per_node`?"],
        ),
        (
            lambda t: t.replace('"data/train"', '"data/nope"'),
            ["job.toml:7", "data input `train`", "does not exist", "--set data.train=PATH"],
        ),
        (lambda t: t.replace('"fowl"', '"My Fowl!"'), ['Try `name = "my-fowl"`']),
        (lambda t: t.replace('"1h30m"', '"soon"'), ["duration like"]),
        (
            lambda t: t.replace("targets.sagemaker", "targets.sagemakr"),
            ["unknown target `sagemakr`", "Did you mean `sagemaker`?"],
        ),
        (lambda t: t.replace("gpus_per_node = 2", "gpus_per_node = -1"), ["at least 0"]),
        (lambda t: t.replace("seed = 7", "seed = -1"), ["`job.seed` must be 0 or more"]),
        (  # a key the file lacks entirely is located by the file and the key path
            lambda t: t.replace('[job]\nname = "fowl"\napp = "fowl_classifier"\nseed = 7\n', ""),
            ["job.toml (job): the spec has no [job] table"],
        ),
    ],
)
def test_invalid_specs_get_precise_errors(spec_file: Path, edit, fragments):
    spec_file.write_text(edit(GOOD))
    message = error_of(spec_file)
    for fragment in fragments:
        assert fragment in message, message


def test_errors_name_the_spec_as_the_user_gave_it(spec_file: Path, monkeypatch):
    """A relative path stays relative in the message (the absolute one is for resolving)."""
    spec_file.write_text(GOOD.replace("seed = 7", "seed = -1"))
    monkeypatch.chdir(spec_file.parent)
    message = error_of(Path("job.toml"))
    assert "spec, job.toml:4 (job.seed)" in message, message
    assert str(spec_file.parent) not in message


def test_missing_spec_file_and_directory_are_clear(tmp_path: Path):
    assert "Job spec not found" in error_of(tmp_path / "nope.toml")
    assert "is a directory" in error_of(tmp_path)


def test_a_spec_saved_in_another_encoding_or_with_a_bom_says_how_to_save_it(tmp_path: Path):
    latin = tmp_path / "latin.toml"
    latin.write_bytes('[job]\nname = "tiny"\n# caf\u00e9\n'.encode("latin-1"))
    with pytest.raises(SpecError, match=r"not UTF-8 text: byte 0xe9 on line 3 .*Save it as UTF-8"):
        load_spec(latin)
    bom = tmp_path / "bom.toml"
    bom.write_bytes('[job]\nname = "tiny"\n'.encode("utf-8-sig"))
    with pytest.raises(SpecError, match=r"byte-order mark .*Save it as UTF-8 without BOM"):
        load_spec(bom)


def test_env_references_expand_or_fail_clearly(spec_file: Path, monkeypatch):
    spec_file.write_text(GOOD.replace('"us-east-1"', '"${env:INFLAME_TEST_REGION}"'))
    monkeypatch.setenv("INFLAME_TEST_REGION", "eu-west-1")
    assert load_spec(spec_file).targets["sagemaker"]["region"] == "eu-west-1"
    monkeypatch.delenv("INFLAME_TEST_REGION")
    assert "`INFLAME_TEST_REGION` is not set" in error_of(spec_file)
    spec_file.write_text(GOOD.replace('"us-east-1"', '"${env:INFLAME_TEST_REGION:-us-west-2}"'))
    assert load_spec(spec_file).targets["sagemaker"]["region"] == "us-west-2"


def test_resolved_spec_round_trips_with_the_same_hash(spec_file: Path, tmp_path: Path):
    spec = load_spec(spec_file, ["hyperparameters.epochs=9"])
    copy = tmp_path / "copy" / "spec.toml"
    copy.parent.mkdir()
    copy.write_text(spec.to_toml())
    again = load_spec(copy)
    assert again.to_dict() == spec.to_dict()
    assert again.resolved_sha256 == spec.resolved_sha256
    assert load_spec(spec_file).resolved_sha256 != spec.resolved_sha256


def test_the_resolved_hash_does_not_depend_on_key_order_or_a_zero_seed(spec_file: Path):
    spec = load_spec(spec_file)
    reordered = GOOD.replace(
        "epochs = 3\nlearning_rate = 0.01", "learning_rate = 0.01\nepochs = 3"
    ).replace('name = "fowl"\napp = "fowl_classifier"', 'app = "fowl_classifier"\nname = "fowl"')
    assert reordered != GOOD
    spec_file.write_text(reordered)
    assert load_spec(spec_file).resolved_sha256 == spec.resolved_sha256  # resume accepts it
    spec_file.write_text(GOOD.replace("seed = 7", "seed = 0"))
    assert load_spec(spec_file).job.seed == 0


def test_the_resolved_hash_follows_the_values_of_env_references(spec_file: Path, monkeypatch):
    spec_file.write_text(GOOD.replace("learning_rate = 0.01", 'learning_rate = "${env:LR}"'))
    monkeypatch.setenv("LR", "0.1")
    first = load_spec(spec_file)
    monkeypatch.setenv("LR", "0.2")
    second = load_spec(spec_file)
    assert first.to_dict() == second.to_dict()  # stored as the reference
    assert first.resolved_sha256 != second.resolved_sha256  # but a resume sees the change


def test_parse_helpers():
    assert parse_override("hyperparameters.x=hello world") == (
        ("hyperparameters", "x"),
        "hello world",
    )
    assert parse_duration("2d") == 172800 and parse_duration(60) == 60
    with pytest.raises(ValueError):
        parse_duration("0s")


def test_toml_writer_and_line_finder():
    data = {"job": {"name": "x", "seed": 1}, "targets": {"azure": {"k": [1, 2.5, True]}}}
    text = dumps(data)
    assert loads(text) == data
    expected = text.splitlines().index("k = [1, 2.5, true]") + 1
    assert find_line(text, ("targets", "azure", "k")) == expected
    assert find_line(text, ("nope",)) is None


def test_durations_down_to_one_second():
    assert parse_duration("1s") == 1 and parse_duration(1) == 1
    assert parse_duration("1h30m") == 5400 and parse_duration("2d") == 172800
    for bad in ("0s", 0, "0h0m", -5):
        with pytest.raises(ValueError, match="positive"):
            parse_duration(bad)


def test_tracking_is_off_unless_asked_and_an_mlflow_experiment_needs_a_name(tmp_path: Path):
    spec = tmp_path / "job.toml"
    base = '[job]\nname = "t"\napp = "fowl_classifier"\n'
    spec.write_text(base)
    loaded = load_spec(spec)
    assert loaded.tracking.tensorboard is False and loaded.tracking.mlflow is None
    spec.write_text(base + '[tracking]\nmlflow_experiment = "birds"\n')
    assert load_spec(spec).tracking.mlflow_experiment == "birds"
    spec.write_text(base + '[tracking]\nmlflow_experiment = "  "\n')
    with pytest.raises(SpecError, match="`mlflow_experiment` is empty"):
        load_spec(spec)
