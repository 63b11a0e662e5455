"""Faults: a user's own app raises, or training runs out of memory. The user gets the app's
part of the traceback (or what to lower) and what to do next, not a crash report that blames
inflame; a bug in inflame itself still gets the crash report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from inflame import appfault, tomlfile
from inflame.appfault import NEW_RUN, AppFailed, app_traceback, training_failure

APP = '''"""An app with a switchable bug: the blobs MLP, trained with inflame's own loop."""
import torch
from torch.utils.data import TensorDataset

from inflame import HParam
from inflame.training.loop import fit

HPARAMS = (HParam("bug", str, "none"), HParam("epochs", int, 2))


class Net(torch.nn.Module):
    def __init__(self, wrong, put=False):
        super().__init__()
        self.first = torch.nn.Linear(2, 8)
        self.second = torch.nn.Linear(9 if wrong else 8, 2)
        self.put = put

    def forward(self, x):
        if self.put:  # put_ has no deterministic kernel, on any device
            x = x.clone().put_(torch.tensor([0]), torch.tensor([0.0]))
        return self.second(torch.relu(self.first(x)))


def summarize(history):
    return {"best": max(history["val_accuracy"])}


def train(ctx):
    bug = ctx.hparams["bug"]
    if bug == "key":
        settings = {"lr": 0.1}
        return settings["learning_rate"]
    if bug == "memory":
        torch.empty(1 << 50, dtype=torch.uint8)  # a batch no machine holds
    x = torch.randn(256, 2, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] - x[:, 1] > 0).long()
    model = Net(wrong=bug == "shape", put=bug == "put")
    fit(
        ctx, model, TensorDataset(x[:192], y[:192]), TensorDataset(x[192:], y[192:]),
        epochs=ctx.hparams["epochs"], batch_size=32,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1), num_workers=0,
    )
    if bug == "after" and not (ctx.spec_dir / "fixed").exists():
        return summarize({"val_loss": [1.0]})  # the bug: a key the history does not have
    return None
'''


@pytest.fixture
def app_spec(tmp_path: Path) -> Path:
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "app.py").write_text(APP, encoding="utf-8")
    spec = {"job": {"name": "mine", "app": "./myapp", "seed": 1}}
    path = tmp_path / "job.toml"
    path.write_text(tomlfile.dumps(spec), encoding="utf-8")
    return path


def line_of(code: str) -> int:
    """The line of APP that holds `code`."""
    return next(n for n, line in enumerate(APP.splitlines(), 1) if code in line)


def assert_app_error(result, *fragments: str) -> str:
    """Exit code 1, the message and no crash report (no `bug in inflame`, no crash log)."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "bug in inflame" not in result.stderr and "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)
    return result.stderr


def test_an_apps_own_error_shows_its_traceback_and_the_run_is_cleared(cli, app_spec, tmp_path):
    line = line_of('return settings["learning_rate"]')
    said = assert_app_error(
        cli("train", "--local", app_spec, "--set", "hyperparameters.bug=key"),
        "The app's code raised KeyError: 'learning_rate'",
        f'File "{tmp_path / "myapp" / "app.py"}", line {line}, in train',
        'return settings["learning_rate"]',
        "then run the same command again",
        "Nothing was trained",
    )
    assert "inflame/launcher.py" not in said  # only the app's part of the traceback
    assert not list((tmp_path / "runs").glob("*"))  # nothing half-written
    assert not (tmp_path / "home" / "logs").exists() or not any((tmp_path / "home/logs").iterdir())


def test_a_shape_error_in_the_apps_model_names_its_forward(cli, app_spec, tmp_path):
    said = assert_app_error(
        cli("train", "--local", app_spec, "--set", "hyperparameters.bug=shape"),
        "The app's code raised RuntimeError: mat1 and mat2 shapes cannot be multiplied",
        "in forward",
        "return self.second(torch.relu(self.first(x)))",
    )
    # from the app's train, through inflame's loop, to the app's forward and into torch
    assert said.index("in train") < said.index("inflame/training/loop.py") < said.index("forward")


def test_an_app_error_after_training_resumes_once_fixed_without_training_again(
    cli, app_spec, tmp_path
):
    failed = cli("train", "--local", app_spec, "--set", "hyperparameters.bug=after")
    said = assert_app_error(failed, "KeyError: 'val_accuracy'", "in summarize", "--resume")
    [run] = (tmp_path / "runs").iterdir()
    assert f"--resume {run}" in " ".join(said.split())
    assert json.loads((run / "manifest.json").read_text())["status"] == "failed"
    (tmp_path / "fixed").touch()  # the user fixes the app
    resumed = cli("train", "--local", "--resume", run)
    assert resumed.returncode == 0, resumed.stderr
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    epochs = [json.loads(line).get("epoch") for line in (run / "metrics.jsonl").open()]
    assert [e for e in epochs if e] == [1, 2]  # trained once: the resume only finished


def test_a_run_out_of_memory_says_what_to_lower(cli, app_spec, tmp_path):
    said = assert_app_error(
        cli("train", "--local", app_spec, "--set", "hyperparameters.bug=memory"),
        "Training ran out of memory (RAM)",
        "can't allocate memory",
        "--set hyperparameters.batch_size=16",
    )
    assert "The app's code raised" not in said


def test_deterministic_true_refuses_an_operation_without_a_deterministic_kernel(
    cli, app_spec, tmp_path
):
    put = ["--set", "hyperparameters.bug=put"]
    strict = cli("train", "--local", app_spec, *put, "--set", "compute.deterministic=true")
    said = assert_app_error(strict, "`[compute] deterministic = true`, but put_ has no")
    assert 'deterministic = "auto"' in said and "The app's code raised" not in said
    relaxed = cli("train", "--local", app_spec, *put)  # "auto" on a CPU: on, warnings only
    assert relaxed.returncode == 0, relaxed.stderr
    assert "put_ does not have a deterministic implementation" in relaxed.stderr  # torch's


def test_an_error_in_one_ddp_process_is_the_apps_error(cli, app_spec, tmp_path):
    result = cli(
        "train", "--local", app_spec, "--set", "hyperparameters.bug=key", "--nproc-per-node", "2"
    )
    assert result.returncode == 2, result.stderr  # the parent's RunError
    said = result.stderr
    assert said.count("The app's code raised KeyError: 'learning_rate'") == 2  # each process
    assert "bug in inflame" not in said and "Traceback" not in said  # torchrun's summary: gone
    assert "ChildFailedError" not in said and "Root Cause" not in said
    assert "failed (exit code 1); its error is printed above" in said
    assert "run the same command again" in said and "--resume" not in said  # nothing trained
    assert not list((tmp_path / "runs").glob("*"))


def test_a_bug_in_inflame_called_by_the_app_is_still_inflames(tmp_path: Path):
    from inflame.hashing import sha256_file

    file = tmp_path / "calls.py"
    file.write_text(
        "def inflames_fault():\n    return sha256_file(1.5)\n"
        "def apps_fault():\n    return sha256_fiel(1.5)\n",
        encoding="utf-8",
    )
    namespace = {"sha256_file": sha256_file}
    exec(compile(file.read_text(), str(file), "exec"), namespace)
    with pytest.raises(TypeError) as inflames:  # raised in inflame's code, called by the app
        namespace["inflames_fault"]()
    assert app_traceback(inflames.value, tmp_path) is None
    assert training_failure(inflames.value, tmp_path, "again") is None  # the crash report
    with pytest.raises(NameError) as apps:  # raised in the app's own line
        namespace["apps_fault"]()
    shown = app_traceback(apps.value, tmp_path)
    assert shown is not None and shown.startswith("NameError: name 'sha256_fiel'")
    assert f'File "{file}", line 4, in apps_fault' in shown


def test_a_gpu_out_of_memory_error_names_the_gpu_and_mixed_precision(tmp_path: Path):
    message = (
        "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 "
        "GiB of which 1.02 GiB is free. Including non-PyTorch memory, this process has 78.16 "
        "GiB memory in use. Of the allocated memory 77.50 GiB is allocated by PyTorch. If "
        "reserved but unallocated memory is large try setting "
        "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation."
    )
    failure = training_failure(torch.OutOfMemoryError(message), tmp_path, "start a new run")
    assert isinstance(failure, AppFailed) and failure.exit_code == 1
    text = str(failure)
    assert text.startswith("Training ran out of GPU memory (CUDA out of memory. Tried to")
    assert "this process has 78.16 GiB memory in use" in text and "If reserved" not in text
    assert 'precision = "bf16"' in text and text.endswith(f"; then {NEW_RUN}.")
    assert "--resume" not in text  # a changed spec does not resume


def _load(file: Path, source: str, **namespace) -> dict:
    """Run `source` as the module `file` (its frames carry that file name)."""
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(source, encoding="utf-8")
    exec(compile(source, str(file), "exec"), namespace)
    return namespace


def test_packages_inside_the_app_folder_are_libraries_and_inflame_stays_inflame(
    tmp_path: Path, monkeypatch
):
    app = tmp_path / "proj"
    site = app / ".venv" / "lib" / "site-packages"
    monkeypatch.setattr(appfault, "_LIBRARIES", (*appfault._LIBRARIES, site.resolve()))
    library = _load(site / "lib.py", "def boom():\n    raise ValueError('bad shape')\n")
    calls = _load(app / "app.py", "def train():\n    return boom()\n", boom=library["boom"])
    with pytest.raises(ValueError) as raised:  # the app called a library wrongly: the app's
        calls["train"]()
    assert app_traceback(raised.value, app) is not None
    copy = site / "inflame"  # an inflame installed in a virtualenv inside the project
    monkeypatch.setattr(appfault, "_INFLAME", copy.resolve())
    ours = _load(copy / "hashing.py", "def digest():\n    raise TypeError('a bug')\n")
    calls = _load(app / "app2.py", "def train():\n    return digest()\n", digest=ours["digest"])
    with pytest.raises(TypeError) as bug:
        calls["train"]()
    assert app_traceback(bug.value, app) is None  # inflame's bug: the crash report


def test_a_full_disk_in_the_app_is_the_machines_fault_not_the_apps(tmp_path: Path):
    import errno

    calls = _load(
        tmp_path / "app.py",
        "def train(errno):\n    raise OSError(errno.ENOSPC, 'No space left on device', 'x')\n",
    )
    with pytest.raises(OSError) as full:
        calls["train"](errno)
    assert training_failure(full.value, tmp_path, "again") is None  # the launcher's message


def test_a_deep_traceback_keeps_the_apps_lines_and_the_innermost(tmp_path: Path):
    chain = "".join(f"def level{n}():\n    return level{n + 1}()\n" for n in range(20))
    calls = _load(
        tmp_path / "app.py",
        f"def train():\n    return level0()\n{chain}def level20():\n    return {{}}['missing']\n",
    )
    with pytest.raises(KeyError) as raised:  # 22 frames of the app: both ends are shown
        calls["train"]()
    shown = app_traceback(raised.value, tmp_path)
    assert shown is not None and "in train" in shown and "… 10 frames …" in shown
    assert "in level20\n    return {}['missing']" in shown  # the innermost frame


def test_an_error_in_a_dataloader_worker_is_classified_by_the_workers_traceback(tmp_path):
    from torch.utils.data import DataLoader

    calls = _load(
        tmp_path / "app.py",
        "class Broken:\n    def __len__(self):\n        return 4\n"
        "    def __getitem__(self, i):\n        return {}['label']\n"
        "def train(loader):\n    return list(loader(Broken(), num_workers=1))\n",
    )
    with pytest.raises(KeyError) as raised:  # re-raised by torch, from torch's own frames
        calls["train"](DataLoader)
    shown = app_traceback(raised.value, tmp_path)
    assert shown is not None and "__getitem__" in shown  # the worker's traceback, in the text


def test_a_ddp_process_killed_by_a_signal_is_named_without_torchruns_summary(tmp_path: Path):
    import subprocess
    import sys

    from tests.conftest import guarded_env

    script = tmp_path / "die.py"  # as the kernel's out-of-memory killer ends a process
    script.write_text("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    agent = [sys.executable, "-m", "inflame.ddp_agent", "--standalone", "--nproc-per-node=1"]
    env = guarded_env(TMPDIR=str(tmp_path))  # torchrun's log folder (no --log-dir) goes here
    result = subprocess.run(
        [*agent, str(script)], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 1
    assert "training process 0" in result.stderr and "was killed by SIGKILL" in result.stderr
    assert "Traceback" not in result.stderr and "Root Cause" not in result.stderr
