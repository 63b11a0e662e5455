"""Where things are inside a cloud job: one resolver per platform maps the spec's named
inputs, the output folder and the checkpoint folder to local paths.

Each target sets INFLAME_PLATFORM in the job's environment; the platforms' own variables
are honoured when present (SageMaker's SM_CHANNEL_<NAME>, SM_MODEL_DIR).
"""

from __future__ import annotations

import json
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


def gcs_local(uri: str, env: Mapping[str, str]) -> Path:
    """gs://bucket/path as Cloud Storage FUSE mounts it on Vertex AI: /gcs/bucket/path."""
    root = Path(env.get("INFLAME_GCS_ROOT", "/gcs"))
    return root / uri[len("gs://") :] if uri.startswith("gs://") else Path(uri)


def vertex_paths(spec: JobSpec, env: Mapping[str, str]) -> JobPaths:
    """Vertex AI: inputs and outputs through the /gcs mount; the run directory is
    AIP_MODEL_DIR and checkpoints AIP_CHECKPOINT_DIR (set from the base output directory)."""
    missing = [name for name in ("AIP_MODEL_DIR", "AIP_CHECKPOINT_DIR") if not env.get(name)]
    if missing:
        raise InflameError(
            f"Inside the Vertex AI job, {', '.join(missing)} is not set; the job "
            "needs a base output directory (inflame sets one)."
        )
    return JobPaths(
        platform="vertex",
        data={name: gcs_local(item.value, env) for name, item in spec.data.items()},
        run_dir=gcs_local(env["AIP_MODEL_DIR"].rstrip("/"), env),
        checkpoint_dir=gcs_local(env["AIP_CHECKPOINT_DIR"].rstrip("/"), env),
    )


@dataclass(frozen=True)
class BoundPaths:
    """Paths the platform substituted into the job's command line (Azure ML binds inputs and
    outputs as `${{inputs.x}}` / `${{outputs.y}}` arguments)."""

    data: dict[str, Path]
    run_dir: Path
    checkpoint_dir: Path


RESOLVERS = {"sagemaker": sagemaker_paths, "vertex": vertex_paths}


@dataclass(frozen=True)
class Cluster:
    """The nodes of a job, as torchrun needs them."""

    nnodes: int
    node_rank: int
    master_addr: str
    master_port: int


def sagemaker_cluster(env: Mapping[str, str]) -> Cluster:
    """From SageMaker's resourceconfig.json: hosts algo-1…algo-N, this host, master algo-1."""
    config_dir = Path(env.get("SM_INPUT_CONFIG_DIR", "/opt/ml/input/config"))
    try:
        config = json.loads((config_dir / "resourceconfig.json").read_text())
        hosts, current = list(config["hosts"]), config["current_host"]
        return Cluster(len(hosts), hosts.index(current), sorted(hosts)[0], 7777)
    except (OSError, ValueError, KeyError) as exc:
        raise InflameError(
            f"Cannot read SageMaker's cluster description in {config_dir}: {exc}."
        ) from None


def vertex_cluster(env: Mapping[str, str]) -> Cluster:
    """From Vertex AI's CLUSTER_SPEC: pool 0 is the primary (node 0), pool 1 the workers."""
    try:
        spec = json.loads(env["CLUSTER_SPEC"])
        pools, task = spec["cluster"], spec["task"]
        primary = pools["workerpool0"][0]
        workers = pools.get("workerpool1", [])
        node_rank = 0 if task["type"] == "workerpool0" else 1 + int(task["index"])
        host, _, port = primary.rpartition(":")
        return Cluster(1 + len(workers), node_rank, host, int(port))
    except (KeyError, ValueError, IndexError) as exc:
        raise InflameError(f"Cannot read Vertex AI's CLUSTER_SPEC: {exc!r}.") from None


CLUSTERS = {"sagemaker": sagemaker_cluster, "vertex": vertex_cluster}


def job_paths(
    spec: JobSpec,
    env: Mapping[str, str],
    bound: BoundPaths | None = None,
    platform: str | None = None,
) -> JobPaths:
    platform = platform or detect_platform(env)
    if bound is not None:
        unbound = sorted(set(spec.data) - set(bound.data))
        if unbound:
            raise InflameError(
                f"The job's command binds no path for data input(s) {', '.join(unbound)}; "
                "pass `--data NAME=PATH` for each."
            )
        paths = JobPaths(platform, dict(bound.data), bound.run_dir, bound.checkpoint_dir)
    elif platform in RESOLVERS:
        paths = RESOLVERS[platform](spec, env)
    else:
        raise InflameError(
            f"Unknown platform {platform!r} (from {PLATFORM_ENV}); known: "
            f"{', '.join(RESOLVERS)}, or bind paths with --data/--run-dir. Locally, use "
            "`inflame train --local`."
        )
    missing = [f"{name} ({path})" for name, path in paths.data.items() if not path.is_dir()]
    if missing:
        raise InflameError(
            f"Inside the {platform} job, data input(s) {', '.join(missing)} are "
            "not mounted. Check that the job's input channels match [data]."
        )
    return paths
