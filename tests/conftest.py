"""Shared fixtures: a loopback-only network guard, tiny generated image sets, tiny specs,
and a helper that runs the real `inflame` CLI in a subprocess."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from inflame import tomlfile
from inflame.data.demo import make_demo_dataset

_LOOPBACK = ("127.", "::1", "localhost")
# One cache folder for the whole session (subprocesses inherit it): never the user's own,
# removed when the session ends.
os.environ["INFLAME_CACHE_DIR"] = tempfile.mkdtemp(prefix="inflame-test-cache-")
atexit.register(shutil.rmtree, os.environ["INFLAME_CACHE_DIR"], ignore_errors=True)

# Tests run in parallel, one pytest-xdist worker per core (at most _MAX_WORKERS: each worker
# starts torch processes of its own). Each worker's torch, and every process it starts, gets
# its share of the cores: more threads than cores makes OpenMP spin against itself.
_MAX_WORKERS = 4
_CORES = len(os.sched_getaffinity(0))  # the cores this process may use (containers: fewer)
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _share = _CORES // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _share)))


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one worker per core, at most _MAX_WORKERS."""
    return max(1, min(_CORES, _MAX_WORKERS))


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection outside 127.0.0.1/::1 fails the test."""
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: object) -> object:
        host = address[0] if isinstance(address, tuple) else str(address)
        if self.family in (socket.AF_INET, socket.AF_INET6) and not str(host).startswith(_LOOPBACK):
            raise AssertionError(f"test tried to reach {address}: only loopback is allowed")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


NETGUARD = Path(__file__).parent / "netguard"


def guarded_env(**extra: str) -> dict[str, str]:
    """os.environ for a subprocess whose every non-loopback connection fails."""
    path = os.pathsep.join(p for p in (str(NETGUARD), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


@pytest.fixture(scope="session")
def demo_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes x 20 images of 32 px, split 0.6/0.2/0.2 (12/4/4 per class)."""
    root = tmp_path_factory.mktemp("data") / "demo"
    make_demo_dataset(root, per_class=20, image_size=32, seed=7, ratios=(0.6, 0.2, 0.2))
    return root


TINY_HPARAMS = {
    "architecture": "resnet18",
    "pretrained": False,
    "optimizer": "adamw",
    "learning_rate": 0.001,
    "epochs": 2,
    "batch_size": 8,
    "image_size": 32,
    "num_workers": 0,
    "early_stopping_patience": 0,
}


@pytest.fixture
def write_spec(tmp_path: Path, demo_set: Path) -> Callable[..., Path]:
    """Write a spec for the fowl classifier on the tiny demo set; keyword args patch tables."""

    def write(name: str = "job.toml", **tables: dict) -> Path:
        spec = {
            "job": {"name": "tiny", "app": "fowl_classifier", "seed": 3},
            "data": {
                "train": str(demo_set / "train"),
                "val": str(demo_set / "val"),
                "test": str(demo_set / "test"),
            },
            "hyperparameters": dict(TINY_HPARAMS),
        }
        for table, values in tables.items():
            spec.setdefault(table, {}).update(values)
        path = tmp_path / name
        path.write_text(tomlfile.dumps(spec), encoding="utf-8")
        return path

    return write


@pytest.fixture
def cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `python -m inflame ARGS` in tmp_path with runs kept under tmp_path/runs."""

    def run(
        *args: str | Path,
        check: bool = False,
        cwd: Path | None = None,
        timeout: float = 300,
        **extra: str,
    ) -> subprocess.CompletedProcess[str]:
        env = guarded_env(
            **{
                "INFLAME_RUNS_DIR": str(tmp_path / "runs"),
                "COLUMNS": "200",
                "INFLAME_HOME": str(tmp_path / "home"),
                **extra,  # these win
            }
        )
        from tests.helpers import inflame_process

        result = inflame_process(args, cwd=cwd or tmp_path, env=env, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(
                f"inflame {args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            )
        return result

    return run


@pytest.fixture(scope="session")
def image_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin folder of a Python holding only a training image's packages (see
    tests/emulation.py)."""
    from tests.emulation import make_image_python

    return make_image_python(tmp_path_factory.mktemp("image") / "venv")


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 1-epoch run of the tiny fowl classifier (3 classes; 3 test images each),
    for the tests that serve or export a model. Copy it before changing it."""
    from tests.helpers import train_tiny_run

    return train_tiny_run(
        tmp_path_factory.mktemp("finished"),
        name="served",
        seed=2,
        data_seed=4,
        per_class=12,
        ratios=(0.5, 0.25, 0.25),
        epochs=1,
    )


@pytest.fixture(scope="module")
def run(finished_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test module's own copy of `finished_run`, which its tests may change."""
    copy = tmp_path_factory.mktemp("run-copy") / "run"
    shutil.copytree(finished_run, copy)
    return copy
