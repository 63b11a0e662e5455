"""Where things are inside a cloud job: one resolver per platform maps the spec's named
inputs, the output folder and the checkpoint folder to local paths.

Each target sets INFLAME_PLATFORM in the job's environment; the platforms' own variables
are honoured when present (SageMaker's SM_CHANNEL_<NAME>, SM_MODEL_DIR).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from inflame.errors import InflameError
from inflame.spec import JobSpec

PLATFORM_ENV = "INFLAME_PLATFORM"
CHECKPOINT_ENV = "INFLAME_CHECKPOINT_DIR"


@dataclass(frozen=True)
class JobPaths:
    platform: str
    data: dict[str, Path]
    run_dir: Path  # collected by the platform after the job (the model folder is inside)
    checkpoint_dir: Path  # survives restarts where the platform supports it


def detect_platform(env: Mapping[str, str]) -> str:
    if env.get(PLATFORM_ENV):
        return env[PLATFORM_ENV]
    if "SM_MODEL_DIR" in env or "TRAINING_JOB_NAME" in env:
        return "sagemaker"
    return "local"


def sagemaker_paths(spec: JobSpec, env: Mapping[str, str]) -> JobPaths:
    """SageMaker: channels under /opt/ml/input/data/<name>, the model under /opt/ml/model
    (uploaded as model.tar.gz), checkpoints in /opt/ml/checkpoints (synced to S3)."""
    data = {
        name: Path(env.get(f"SM_CHANNEL_{name.upper()}", f"/opt/ml/input/data/{name}"))
        for name in spec.data
    }
    return JobPaths(
        platform="sagemaker",
        data=data,
        run_dir=Path(env.get("SM_MODEL_DIR", "/opt/ml/model")),
        checkpoint_dir=Path(env.get(CHECKPOINT_ENV, "/opt/ml/checkpoints")),
    )


RESOLVERS = {"sagemaker": sagemaker_paths}


def job_paths(spec: JobSpec, env: Mapping[str, str]) -> JobPaths:
    platform = detect_platform(env)
    if platform not in RESOLVERS:
        raise InflameError(
            f"Unknown platform {platform!r} (from {PLATFORM_ENV}); known: "
            f"{', '.join(RESOLVERS)}. Locally, use `inflame train --local`."
        )
    paths = RESOLVERS[platform](spec, env)
    missing = [f"{name} ({path})" for name, path in paths.data.items() if not path.is_dir()]
    if missing:
        raise InflameError(
            f"Inside the {platform} job, data input(s) {', '.join(missing)} are "
            "not mounted. Check that the job's input channels match [data]."
        )
    return paths
