"""End to end through the real CLI: train -> predict, determinism, kill and resume,
errors without tracebacks, and a fast `--help` that never imports torch."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from inflame.hashing import sha256_file
from tests.conftest import guarded_env
from tests.helpers import assert_clean_error, inflame_popen

CLASSES = ["circle", "square", "triangle"]


def run_dir_of(result: subprocess.CompletedProcess[str]) -> Path:
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip().splitlines()[-1])


def manifest_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def test_help_and_version_import_neither_torch_nor_cloud_sdks():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from inflame.cli import app\n"
        "for args in (['--help'], ['train', '--help'], ['predict', '--help'], ['runs', '--help'],"
        " ['submit', '--help'], ['jobs', '--help'], ['sweep', '--help'], ['serve', '--help'],"
        " ['export', '--help'], ['api', '--help'], ['deploy', '--help'], ['endpoints', '--help'],"
        " ['--version']):\n"
        "    result = CliRunner().invoke(app, args)\n"
        "    assert result.exit_code == 0, (args, result.output)\n"
        "heavy = sorted(set(sys.modules) & {'torch', 'torchvision', 'numpy', 'boto3', "
        "'botocore', 'azure.ai.ml', 'azure.identity', 'google.cloud.aiplatform', "
        "'google.cloud.storage', 'moto', 'optuna', 'sqlalchemy', 'matplotlib', 'fastapi', "
        "'uvicorn', 'onnx', 'onnxruntime'})\n"
        "assert not heavy, heavy\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr


def test_local_training_imports_no_cloud_sdk(write_spec, tmp_path: Path):
    code = (
        "import sys\n"
        "from inflame.launcher import train_local\n"
        f"train_local({str(write_spec(hyperparameters={'epochs': 1}))!r}, "
        f"run_dir={str(tmp_path / 'run')!r})\n"
        "sdks = sorted(set(sys.modules) & {'boto3', 'botocore', 'azure.ai.ml', 'azure.identity',"
        " 'google.cloud.aiplatform', 'google.cloud.storage'})\n"
        "assert not sdks, sdks\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=guarded_env(),
        cwd=tmp_path,
    )
    assert result.stdout.strip().endswith("ok"), result.stderr


def test_train_then_predict(cli, write_spec, demo_set: Path, tmp_path: Path):
    spec = write_spec()
    train = cli("train", "--local", spec)
    run_dir = run_dir_of(train)
    assert "epoch 1/2" in train.stderr and "epoch 2/2" in train.stderr
    assert run_dir.parent == tmp_path / "runs" and run_dir.name.startswith("tiny-")

    manifest = manifest_of(run_dir)
    weights = run_dir / "model" / "weights.safetensors"
    assert manifest["status"] == "completed"
    assert manifest["weights_sha256"] == sha256_file(weights)
    assert manifest["spec"]["sha256"] == sha256_file(spec)
    assert manifest["hyperparameters"]["epochs"] == 2
    assert manifest["hyperparameters"]["weight_decay"] == 0.0001  # app default, resolved
    assert {"python", "torch", "torchvision", "platform"} <= set(manifest["environment"])
    assert "app.py" in manifest["app"]["files"]
    train_files = manifest["data"]["inputs"]["train"]["files"]
    assert len(train_files) == 36 and all(len(h) == 64 for h in train_files.values())
    some = next(iter(train_files))
    assert train_files[some] == sha256_file(demo_set / "train" / some)
    assert len(manifest["data"]["fingerprint"]) == 64
    assert (run_dir / "spec.toml").is_file()
    meta = json.loads((run_dir / "model" / "model.json").read_text())
    assert meta["classes"] == CLASSES and meta["architecture"] == "resnet18"

    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = [m for m in metrics if "epoch" in m]
    assert [m["epoch"] for m in epochs] == [1, 2]
    for m in epochs:
        assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy"} <= set(m)
    assert "test_accuracy" in metrics[-1]

    predict = cli("predict", demo_set / "test", "--run", run_dir, "--top-k", "2")
    assert predict.returncode == 0, predict.stderr
    lines = [json.loads(x) for x in predict.stdout.splitlines()]
    assert len(lines) == 12
    for line in lines:
        assert line["label"] in CLASSES and 0.0 <= line["probability"] <= 1.0
        assert line["top_k"][0]["label"] == line["label"] and len(line["top_k"]) == 2

    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    bomb = tmp_path / "bomb.png"
    Image.new("1", (9000, 9000)).save(bomb)  # 81 megapixels in a few kB
    good = next((demo_set / "test" / "circle").iterdir())
    mixed = cli("predict", bad, good, tmp_path / "missing.png", bomb, "--run", "latest")
    assert mixed.returncode == 1 and "Traceback" not in mixed.stderr
    answers = [json.loads(x) for x in mixed.stdout.splitlines()]
    assert [("error" in a) for a in answers] == [True, False, True, True]
    assert answers[1]["image"] == str(good) and answers[1]["label"] in CLASSES
    assert "decompression-bomb guard" in answers[3]["error"]
    assert "3 of 4 input(s) could not be labelled" in mixed.stderr

    listing = cli("runs", "--json", check=True)
    [row] = [json.loads(x) for x in listing.stdout.splitlines()]
    assert row["status"] == "completed" and row["epochs"] == 2
    assert row["weights_sha256"] == manifest["weights_sha256"]
    shown = cli("runs", "show", run_dir.name, check=True)
    assert manifest["weights_sha256"] in shown.stdout and "val_accuracy" in shown.stdout
    wide = cli("runs", check=True).stdout  # the suite's 200 columns: every column
    assert run_dir.name in wide and manifest["weights_sha256"][:12] in wide
    narrow = cli("runs", check=True, COLUMNS="80", FORCE_COLOR="1").stdout  # a terminal's
    assert run_dir.name in narrow and "completed" in narrow  # the name whole, on one line
    assert manifest["weights_sha256"][:12] not in narrow  # the hash gave way
    piped = cli("runs", check=True, COLUMNS="80").stdout  # a script reads every column
    assert run_dir.name in piped and manifest["weights_sha256"][:12] in piped

    again = cli("train", "--local", spec)  # same spec and seed: the same weights
    assert manifest_of(run_dir_of(again))["weights_sha256"] == manifest["weights_sha256"]
    other = cli("train", "--local", spec, "--set", "job.seed=4")
    assert manifest_of(run_dir_of(other))["weights_sha256"] != manifest["weights_sha256"]


def test_killed_run_resumes_to_the_same_weights(cli, write_spec, tmp_path: Path):
    """Killed twice, before its first checkpoint and after epoch 3, resumed each time: the
    same weights as a run never killed, every epoch logged once."""
    spec = write_spec(hyperparameters={"epochs": 7, "lr_schedule": "cosine"})
    reference = manifest_of(run_dir_of(cli("train", "--local", spec)))["weights_sha256"]
    run_dir = tmp_path / "killed"
    env = {**os.environ, "INFLAME_RUNS_DIR": str(tmp_path / "runs")}

    def kill_when(marker: Path, *args: str | Path) -> None:
        proc = inflame_popen(
            ["train", *args],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
        assert not (run_dir / "model" / "weights.safetensors").exists()
        listed = [
            json.loads(x)
            for x in cli("runs", "--json", "--runs-dir", tmp_path, check=True).stdout.splitlines()
        ]
        assert [r["status"] for r in listed if r["run"] == str(run_dir)] == ["stopped"]

    kill_when(run_dir / "manifest.json", "--local", spec, "--run-dir", run_dir)  # no checkpoint
    assert not list((run_dir / "checkpoints").glob("*.safetensors"))
    third = run_dir / "checkpoints" / "epoch-0003.safetensors"
    kill_when(third, "--local", "--resume", run_dir)  # from the start, killed after epoch 3
    logged = (run_dir / "metrics.jsonl").read_text().splitlines()[:3]  # with their timings
    resumed = cli("train", "--local", "--resume", run_dir)
    assert run_dir_of(resumed) == run_dir
    manifest = manifest_of(run_dir)
    assert manifest["status"] == "completed" and len(manifest["resumed"]) == 2
    assert manifest["weights_sha256"] == reference
    epochs = [
        json.loads(x)["epoch"]
        for x in (run_dir / "metrics.jsonl").read_text().splitlines()
        if '"epoch"' in x
    ]
    assert epochs == list(range(1, 8))
    assert (run_dir / "metrics.jsonl").read_text().splitlines()[:3] == logged  # not run again


def test_resume_refuses_a_changed_spec_or_a_finished_run(cli, write_spec):
    spec = write_spec(hyperparameters={"epochs": 1})
    run_dir = run_dir_of(cli("train", "--local", spec))
    (run_dir / "manifest.json").write_text(
        (run_dir / "manifest.json").read_text().replace('"completed"', '"interrupted"')
    )
    changed = cli(
        "train", "--local", spec, "--resume", run_dir, "--set", "hyperparameters.learning_rate=0.5"
    )
    assert_clean_error(changed, "Cannot resume", "changed: hyperparameters.learning_rate")
    (run_dir / "manifest.json").write_text(
        (run_dir / "manifest.json").read_text().replace('"interrupted"', '"completed"')
    )
    assert_clean_error(cli("train", "--resume", run_dir), "already completed")


def _corrupt_copy(demo_set: Path, tmp_path: Path) -> Path:
    data = tmp_path / "corrupt"
    shutil.copytree(demo_set, data)
    victim = next((data / "train" / "square").iterdir())
    victim.write_bytes(victim.read_bytes()[:200])
    return victim


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        (
            {"hyperparameters": {"learning_rte": 0.1}},
            ["unknown hyperparameter `learning_rte`", "Did you mean `learning_rate`?"],
        ),
        ({"hyperparameters": {"epochs": "ten"}}, ["`epochs` must be of type int"]),
        (
            {"job": {"app": "fowl_clasifier"}},
            ["Unknown app `fowl_clasifier`", "Did you mean `fowl_classifier`?"],
        ),
        ({"data": {"train": "no/such/dir"}}, ["data input `train`", "does not exist"]),
        (
            {"hyperparameters": {"architecture": "resnet19"}},
            ["Unknown architecture `resnet19`", "Did you mean `resnet18`?"],
        ),
    ],
)
def test_bad_specs_fail_cleanly_and_write_nothing(cli, write_spec, tmp_path: Path, edit, fragments):
    result = cli("train", "--local", write_spec(**edit))
    assert_clean_error(result, *fragments)
    runs = tmp_path / "runs"
    if "architecture" not in edit.get("hyperparameters", {}):
        assert not runs.exists()  # rejected before any run directory was made
    else:  # the app itself rejects it: nothing trained, so nothing is left behind
        assert "Nothing was trained" in " ".join(result.stderr.split())
        assert list(runs.iterdir()) == []


def test_cli_input_errors(cli, write_spec, tmp_path: Path):
    broken = tmp_path / "broken.toml"
    broken.write_text("[job]\nname = 'x'\napp = [\n")
    assert_clean_error(cli("train", "--local", broken), str(broken), "line", "column")
    assert_clean_error(
        cli("train", "--local", write_spec(), "--set", "epochs"), "expected `section.key=value`"
    )
    assert_clean_error(cli("train", "--local", tmp_path / "missing.toml"), "Job spec not found")
    assert_clean_error(cli("predict", "x.jpg", "--run", tmp_path / "nope"), "not found")
    assert_clean_error(cli("split", tmp_path / "nope", tmp_path / "out"), "does not exist")


def test_corrupt_training_image_is_named_or_skipped(
    cli, write_spec, demo_set: Path, tmp_path: Path
):
    victim = _corrupt_copy(demo_set, tmp_path)
    data = victim.parent.parent.parent
    spec = write_spec(
        data={"train": str(data / "train"), "val": str(data / "val"), "test": str(data / "test")},
        hyperparameters={"epochs": 1},
    )
    assert_clean_error(
        cli("train", "--local", spec), "1 unreadable image(s)", str(victim), "bad_images"
    )
    skipped = cli("train", "--local", spec, "--set", "job.bad_images=skip")
    assert skipped.returncode == 0, skipped.stderr
    assert "skipped 1 unreadable image(s)" in skipped.stderr


def test_help_app_lists_the_declared_hyperparameters(cli, write_spec):
    result = cli("train", "--help-app", write_spec(), check=True)
    for name in (
        "architecture",
        "pretrained",
        "freeze_backbone",
        "learning_rate",
        "momentum",
        "weight_decay",
        "image_size",
        "early_stopping_patience",
    ):
        assert name in result.stdout


def test_zoo_app_runs_on_its_own(write_spec, tmp_path: Path):
    app = Path(__file__).parents[1] / "model_zoo" / "fowl_classifier" / "app.py"
    spec = write_spec(hyperparameters={"epochs": 1})
    # without the optional test input (the app must not ask for it)
    spec.write_text("".join(x for x in spec.read_text().splitlines(True) if "test =" not in x))
    result = subprocess.run(
        [sys.executable, str(app), str(spec), "--run-dir", str(tmp_path / "solo")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "solo" / "model" / "weights.safetensors").is_file()


def test_init_scaffolds_an_app_that_trains_out_of_the_box(cli, tmp_path: Path):
    cli("init", tmp_path / "myapp", check=True)
    assert {"app.py", "job.toml", "data"} <= {p.name for p in (tmp_path / "myapp").iterdir()}
    assert_clean_error(cli("init", tmp_path / "myapp"), "not empty")
    result = subprocess.run(
        [
            sys.executable,
            "app.py",
            "--set",
            "hyperparameters.epochs=1",
            "--set",
            "hyperparameters.image_size=32",
            "--run-dir",
            str(tmp_path / "myrun"),
        ],
        cwd=tmp_path / "myapp",
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    manifest = manifest_of(tmp_path / "myrun")
    assert manifest["status"] == "completed" and manifest["job"]["name"] == "myapp"
    assert manifest["app"]["file"] == str((tmp_path / "myapp" / "app.py").resolve())
    assert set(manifest["app"]["files"]) == {"app.py", "job.toml"}  # data/ is not app code


def test_demo_data_and_split_commands(cli, tmp_path: Path):
    made = cli(
        "demo-data",
        tmp_path / "raw",
        "--per-class",
        "10",
        "--image-size",
        "16",
        "--no-split",
        check=True,
    )
    assert made.stdout.strip() == str(tmp_path / "raw")
    assert_clean_error(cli("demo-data", tmp_path / "raw"), "refusing to overwrite")
    kept = cli("demo-data", tmp_path / "raw", "--exist-ok", check=True)
    assert "leaving it as it is" in " ".join(kept.stderr.split())
    cli(
        "split",
        tmp_path / "raw",
        tmp_path / "split",
        "--ratios",
        "0.8,0.2",
        "--seed",
        "1",
        check=True,
    )
    assert sorted(p.name for p in (tmp_path / "split").iterdir()) == ["train", "val"]
    assert len(list((tmp_path / "split" / "val").rglob("*.jpg"))) == 6
    assert_clean_error(cli("split", tmp_path / "raw", tmp_path / "split"), "refusing to overwrite")


def test_ddp_on_two_processes_is_deterministic_and_resumes(cli, write_spec, tmp_path: Path):
    spec = write_spec(hyperparameters={"epochs": 3})
    temp = tmp_path / "temp"  # the processes' temp dir
    temp.mkdir()
    first = cli(
        "train",
        "--local",
        spec,
        "--nproc-per-node",
        "2",
        "--run-dir",
        tmp_path / "a",
        TMPDIR=str(temp),
    )
    assert first.returncode == 0, first.stderr
    # torchrun's per-run log folder is gone (torch's compile cache is per user, kept on purpose)
    assert [p.name for p in temp.iterdir() if not p.name.startswith("torchinductor_")] == []
    manifest = manifest_of(tmp_path / "a")
    assert manifest["status"] == "completed" and manifest["world_size"] == 2
    epochs = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs if "epoch" in e] == [1, 2, 3]  # rank 0 logs, once
    # a copy, as if interrupted after epoch 2: the resume uses the run's own process count,
    # and its epoch 3 (computed again, by two processes) gives the same weights
    run = tmp_path / "b"
    shutil.copytree(tmp_path / "a", run)
    (run / "checkpoints" / "epoch-0003.safetensors").unlink()
    shutil.rmtree(run / "model")
    (run / "manifest.json").write_text(
        (run / "manifest.json").read_text().replace('"completed"', '"interrupted"')
    )
    assert_clean_error(
        cli("train", "--resume", run, "--nproc-per-node", "1"), "started with 2 process(es)"
    )
    resumed = cli("train", "--resume", run)
    assert resumed.returncode == 0, resumed.stderr
    assert manifest_of(run)["weights_sha256"] == manifest["weights_sha256"]


def test_the_cli_annotations_are_objects_made_once_at_import():
    """As strings (postponed annotations), typer would compile and evaluate all of them,
    ~700, on every start: ~35 ms of each `inflame --help`."""
    from inflame import cli

    functions = [f for f in vars(cli).values() if getattr(f, "__module__", "") == cli.__name__]
    annotations = [a for f in functions for a in getattr(f, "__annotations__", {}).values()]
    assert len(annotations) > 100
    assert not [a for a in annotations if isinstance(a, str)]
