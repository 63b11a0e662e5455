"""Assertions shared by the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def assert_clean_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit code 2, a one-paragraph `error:` message holding the fragments, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert "error:" in result.stderr, result.stderr
    flat = " ".join(result.stderr.split())
    for fragment in fragments:
        assert fragment in flat, f"{fragment!r} not in {flat!r}"


def write_cloud_spec(
    path, name: str, inputs: dict, target: str, settings: dict, /, **tables
) -> Any:
    """A spec for the fowl classifier on the tiny hyperparameters, for one cloud target.
    Keyword tables are merged in, one level deep (`targets={"azure": {...}}` patches keys)."""
    from inflame import tomlfile
    from tests.conftest import TINY_HPARAMS

    spec = {
        "job": {"name": name, "app": "fowl_classifier", "seed": 3},
        "data": dict(inputs),
        "hyperparameters": dict(TINY_HPARAMS),
        "compute": {"spot": True, "max_runtime": "1h"},
        "targets": {target: dict(settings)},
    }
    for table, values in tables.items():
        for key, value in values.items():
            if isinstance(value, dict):
                spec.setdefault(table, {}).setdefault(key, {}).update(value)
            else:
                spec.setdefault(table, {})[key] = value
    path.write_text(tomlfile.dumps(spec))
    return path


def run_inflame(*args: str | Path, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m inflame ARGS` in `cwd` (its own INFLAME_HOME there), loopback only."""
    from tests.conftest import guarded_env

    return inflame_process(
        args, cwd=cwd, env=guarded_env(COLUMNS="200", INFLAME_HOME=str(cwd / "home"), **env)
    )


def inflame_process(
    args: Sequence[str | Path], *, cwd: Path, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """As `subprocess.run([python, -m, inflame, *args], capture_output=True, text=True,
    timeout=timeout)`, through `inflame_popen`."""
    process = inflame_popen(args, cwd=cwd, env=env)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def inflame_popen(
    args: Sequence[str | Path],
    *,
    cwd: Path,
    env: dict[str, str],
    stdout: int | None = subprocess.PIPE,
    stderr: int | None = subprocess.PIPE,
    sigint_default: bool = False,
) -> Any:
    """`subprocess.Popen([python, -m, inflame, *args], text=True, ...)`, as a process
    forked from a server that has torch imported already (tests/zygote.py);
    INFLAME_TEST_ZYGOTE=0 starts a plain interpreter instead. `sigint_default`: Ctrl-C
    acts as in a terminal even when the tests run in the background (where SIGINT is
    inherited ignored)."""
    argv = [str(arg) for arg in args]
    if os.environ.get("INFLAME_TEST_ZYGOTE", "1") == "0":
        from tests.zygote import _default_sigint

        return subprocess.Popen(
            [sys.executable, "-m", "inflame", *argv],
            cwd=cwd,
            env=env,
            stdout=stdout,
            stderr=stderr,
            text=True,
            preexec_fn=_default_sigint if sigint_default else None,
        )
    from tests.zygote import ZYGOTE

    return ZYGOTE.popen(
        argv, cwd=cwd, env=env, stdout=stdout, stderr=stderr, sigint_default=sigint_default
    )


def train_tiny_run(
    root: Path,
    *,
    name: str,
    seed: int,
    data_seed: int,
    per_class: int,
    ratios: tuple[float, float, float],
    epochs: int,
) -> Path:
    """A finished run of the tiny fowl classifier on a generated 3-class set (train, val,
    test) under `root`; its run directory."""
    from inflame import tomlfile
    from inflame.data.demo import make_demo_dataset
    from inflame.launcher import train_local
    from tests.conftest import TINY_HPARAMS

    data = root / "demo"
    make_demo_dataset(data, per_class=per_class, image_size=32, seed=data_seed, ratios=ratios)
    spec = {
        "job": {"name": name, "app": "fowl_classifier", "seed": seed},
        "data": {split: str(data / split) for split in ("train", "val", "test")},
        "hyperparameters": {**TINY_HPARAMS, "epochs": epochs},
    }
    path = root / "job.toml"
    path.write_text(tomlfile.dumps(spec), encoding="utf-8")
    return train_local(path, run_dir=root / "run").run_dir


class LiveService:
    """`inflame ARGS --port 0` (serve or api) in a subprocess, its stderr collected, and an
    HTTP client for the address it announces."""

    def __init__(self, args: Sequence[str | Path], cwd: Path, **env: str):
        import re
        import threading

        import httpx

        from tests.conftest import guarded_env

        self.process = inflame_popen(
            [*args, "--port", "0"],
            cwd=cwd,
            env=guarded_env(INFLAME_HOME=str(cwd / "home"), **env),
            stdout=subprocess.DEVNULL,
        )
        self.lines: list[str] = []
        self._announced = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()
        if not self._announced.wait(120):
            self.process.kill()
            raise AssertionError(f"the service did not start: {self.log}")
        self.url = re.search(r" on (http://\S+) ", self.log).group(1)  # type: ignore[union-attr]
        self.client = httpx.Client(base_url=self.url, timeout=120)

    def _drain(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line)
            if line.startswith("inflame ") and " on http://" in line:
                self._announced.set()

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def wait_ready(self, headers: dict[str, str] | None = None) -> None:
        import time

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            answer = self.client.get("/readyz", headers=headers)
            if answer.status_code == 200:
                return
            assert answer.json()["status"] == "loading", answer.text
            time.sleep(0.1)
        raise AssertionError(f"not ready: {self.log}")

    def stop(self) -> None:
        """SIGTERM: uvicorn finishes what is in flight and shuts down; one worker then ends
        by the signal (exit status 143 in a shell), a worker pool's supervisor with 0."""
        import signal

        self.process.send_signal(signal.SIGTERM)
        status = self.process.wait(180)
        assert status in (0, -signal.SIGTERM), (status, self.log)
        assert "Finished server process" in self.log, self.log
        assert "Traceback" not in self.log, self.log


def offline_aws_env(home: Path) -> dict[str, str]:
    """A subprocess environment with no AWS credentials or config at all."""
    from tests.conftest import guarded_env

    env = guarded_env(
        INFLAME_HOME=str(home),
        AWS_CONFIG_FILE="/nonexistent",
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
    )
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        env.pop(key, None)
    return env


def loop_data(root: Path) -> tuple[Path, Path]:
    """A loop's data under `root`: the demo set in d/ (12 train, 12 val, 24 test images) and
    pool/, the test images without their class folders (d/test is their oracle)."""
    import shutil

    from inflame.data.demo import make_demo_dataset

    data = root / "d"
    make_demo_dataset(data, per_class=16, image_size=32, seed=3, ratios=(0.25, 0.25, 0.5))
    pool = root / "pool"
    pool.mkdir()
    for image in sorted((data / "test").rglob("*.jpg")):
        shutil.copy(image, pool / image.name)
    return data, pool
