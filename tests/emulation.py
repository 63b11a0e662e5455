"""What every emulated cloud job needs: a Python that holds only what a training image holds,
the network blocked, a stand-in for the cluster's DNS, free ports, and running a job's nodes
side by side on loopback.

The image environment is a virtual environment with no pip, whose site-packages link to this
machine's torch, torchvision, numpy and pillow and to the packages they require, and nothing
else: inflame, typer, rich, safetensors and the cloud SDKs are absent, so a job that imports
anything beyond what its bundle carries fails as it would in the cloud.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import venv
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from tests.conftest import guarded_env

IMAGE_PACKAGES = ("torch", "torchvision", "numpy", "pillow")


def _closure(names: Sequence[str]) -> list[metadata.Distribution]:
    """The distributions `names` need (their requirements, recursively; no extras)."""
    seen: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        dist = metadata.distribution(todo.pop())
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in seen:
            continue
        seen[key] = dist
        for text in dist.requires or ():
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return list(seen.values())


def make_image_python(root: Path, extra: Sequence[str] = ()) -> Path:
    """A Python environment with only the image's packages (and `extra` ones, with what they
    require); returns its bin folder."""
    venv.EnvBuilder(with_pip=False, symlinks=True).create(root)
    site = next((root / "lib").glob("python3*/site-packages"))
    linked: set[str] = set()
    for dist in _closure([*IMAGE_PACKAGES, *extra]):
        for file in dist.files or ():
            top = Path(str(file)).parts[0]
            if top in linked or top == ".." or top == "__pycache__":
                continue
            source = Path(dist.locate_file(top))
            if source.exists():
                (site / top).symlink_to(source)
                linked.add(top)
    assert not any(name.startswith(("inflame", "typer", "rich", "safetensors")) for name in linked)
    return root / "bin"


def image_env(bin_dir: Path, **extra: str) -> dict[str, str]:
    """A job's environment: the image's Python first on PATH, the network guard, no
    PYTHONPATH of ours (so inflame comes only from the bundle)."""
    env = guarded_env()
    for name in ("VIRTUAL_ENV", "PYTHONHOME", "INFLAME_HOME", "RANK", "WORLD_SIZE"):
        env.pop(name, None)
    env["PYTHONPATH"] = str(Path(__file__).parent / "netguard")
    env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    return {**env, **extra}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_nodes(
    commands: Sequence[tuple[Sequence[str], Mapping[str, str], Path]], timeout: float = 400
) -> list[subprocess.CompletedProcess[str]]:
    """Start every (command, env, cwd) at once, like a cluster's nodes, and wait for all.
    Each node's temp dir is its own folder (as a container's is), not this machine's."""
    procs = [
        subprocess.Popen(
            list(command),
            env={"TMPDIR": str(cwd), **env},
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command, env, cwd in commands
    ]
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return results


def assert_all_ok(results: Sequence[subprocess.CompletedProcess[str]]) -> None:
    for i, result in enumerate(results):
        assert result.returncode == 0, f"node {i}:\n{result.stdout}\n{result.stderr}"


def python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"
