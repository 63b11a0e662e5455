"""Inside cloud jobs: each provider's cluster reader, path resolver and detection, the torchrun
command each node runs, and the registry every part of inflame reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from inflame.errors import InflameError
from inflame.job import LAUNCHED_ENV, torchrun_command
from inflame.spec import KNOWN_TARGETS
from inflame.targets import PROVIDERS, data_schemes, detect_platform, get_target

SAGEMAKER, VERTEX, AZURE = (get_target(n) for n in ("sagemaker", "vertex", "azure"))


def resourceconfig(root: Path, current: str, hosts: list[str]) -> dict[str, str]:
    config = root / "opt" / "ml" / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "resourceconfig.json").write_text(
        json.dumps({"current_host": current, "hosts": hosts, "network_interface_name": "eth1"})
    )
    return {"INFLAME_PLATFORM_ROOT": str(root)}


def test_sagemaker_cluster_from_resourceconfig(tmp_path: Path):
    env = resourceconfig(tmp_path, "algo-2", ["algo-3", "algo-1", "algo-2"])  # any order
    cluster = SAGEMAKER.cluster(env)
    assert (cluster.nnodes, cluster.node_rank, cluster.master_addr) == (3, 1, "algo-1")
    assert cluster.master_port == 7777 and cluster.network_interface == "eth1"
    with pytest.raises(InflameError, match="cluster description"):
        SAGEMAKER.cluster({"INFLAME_PLATFORM_ROOT": str(tmp_path / "missing")})


def test_vertex_cluster_from_cluster_spec():
    spec = {
        "cluster": {
            "workerpool0": ["cmle-training-workerpool0-ab-0:2222"],
            "workerpool1": ["w-0:2222", "w-1:2222"],
        },
        "task": {"type": "workerpool1", "index": 1},
    }
    cluster = VERTEX.cluster({"CLUSTER_SPEC": json.dumps(spec)})
    assert (cluster.nnodes, cluster.node_rank) == (3, 2)
    assert (cluster.master_addr, cluster.master_port) == ("cmle-training-workerpool0-ab-0", 2222)
    with pytest.raises(InflameError, match="CLUSTER_SPEC"):
        VERTEX.cluster({})
    with pytest.raises(InflameError, match="starts every process"):
        AZURE.cluster({})


@pytest.fixture
def algo_hosts(monkeypatch: pytest.MonkeyPatch):
    """algo-1 and algo-2 resolve to loopback, as a cluster's DNS would answer."""
    import socket

    real = socket.gethostbyname
    monkeypatch.setattr(
        socket,
        "gethostbyname",
        lambda host: "127.0.0.1" if host.startswith("algo-") else real(host),
    )


def test_torchrun_command_for_one_node_and_for_several(tmp_path: Path, algo_hosts):
    single, env = torchrun_command(["spec.toml", "--nproc-per-node", "4"], SAGEMAKER, 1, 4, {})
    assert single[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--standalone" in single and "--nproc-per-node=4" in single
    assert single[-4:] == ["inflame.job", "spec.toml", "--nproc-per-node", "4"]
    assert env[LAUNCHED_ENV] == "1"  # the processes it starts run the app, not torchrun
    platform_env = resourceconfig(tmp_path, "algo-2", ["algo-1", "algo-2"])
    multi, env = torchrun_command(["spec.toml"], SAGEMAKER, 2, 8, platform_env)
    assert {"--nnodes=2", "--node-rank=1", "--master-port=7777"} <= set(multi)
    assert "--master-addr=127.0.0.1" in multi  # algo-1, resolved once by the wait
    assert env["NCCL_SOCKET_IFNAME"] == "eth1"
    with pytest.raises(InflameError, match="platform reports 2"):
        torchrun_command(["spec.toml"], SAGEMAKER, 3, 1, platform_env)


def test_each_provider_detects_its_own_jobs():
    assert detect_platform({"TRAINING_JOB_NAME": "j", "TRAINING_JOB_ARN": "arn"}) == "sagemaker"
    assert detect_platform({"CLOUD_ML_JOB_ID": "42"}) == "vertex"
    assert detect_platform({"AZUREML_RUN_ID": "r"}) == "azure"
    assert detect_platform({"INFLAME_PLATFORM": "vertex", "AZUREML_RUN_ID": "r"}) == "vertex"
    assert detect_platform({"HOME": "/root"}) is None


def test_the_registry_is_the_one_list():
    assert ("local", *PROVIDERS) == KNOWN_TARGETS
    assert set(data_schemes()) >= {"s3://", "gs://", "azureml://"}
    for name in PROVIDERS:
        provider = get_target(name)
        assert provider.name == name and provider.capabilities.data_schemes
    with pytest.raises(InflameError, match="Did you mean `vertex`"):
        get_target("vertx")


def test_provider_modules_import_without_torch_or_sdks():
    """A job imports its provider before torch; `inflame --help` imports no SDK."""
    code = (
        "import sys\n"
        "before = set(sys.modules)  # what .pth files import at start-up does not count\n"
        "import inflame.targets as t\n"
        "[t.get_target(n) for n in t.PROVIDERS]\n"
        "import inflame.job, inflame.launcher\n"
        "heavy = ('torch', 'boto3', 'botocore', 'azure', 'google', 'sagemaker', 'pathspec', "
        "'typer', 'rich', 'yaml')\n"
        "bad = [m for m in set(sys.modules) - before if m.split('.')[0] in heavy]\n"
        "print(bad)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_vertex_paths_come_through_the_gcs_mount(tmp_path: Path):
    from inflame.spec import validate_spec

    spec = validate_spec(
        {"job": {"name": "x", "app": "fowl_classifier"}, "data": {"train": "gs://b/fowl/train/"}},
        path=tmp_path / "spec.toml",
    )
    env = {
        "AIP_MODEL_DIR": "gs://stage/jobs/j/model/",
        "AIP_CHECKPOINT_DIR": "gs://stage/jobs/j/checkpoints/",
        "INFLAME_PLATFORM_ROOT": str(tmp_path),
    }
    paths = VERTEX.job_paths(spec, env, None)
    assert paths.data["train"] == tmp_path / "gcs" / "b" / "fowl" / "train"
    assert paths.run_dir == tmp_path / "gcs" / "stage" / "jobs" / "j" / "model"
    with pytest.raises(InflameError, match="AIP_MODEL_DIR"):
        VERTEX.job_paths(spec, {}, None)
    with pytest.raises(InflameError, match="paths come from the command line"):
        AZURE.job_paths(spec, {}, None)


def test_capabilities_are_checked_in_one_place(tmp_path: Path):
    """A provider that runs one node only refuses `nodes = 2` before anything is planned."""
    import copy
    import dataclasses

    from inflame.spec import validate_spec
    from inflame.targets.base import check_capabilities

    spec = validate_spec(
        {
            "job": {"name": "x", "app": "fowl_classifier"},
            "data": {"train": "gs://b/t"},
            "compute": {"nodes": 2},
        },
        path=tmp_path / "spec.toml",
    )
    single = copy.copy(VERTEX)
    single.capabilities = dataclasses.replace(VERTEX.capabilities, multi_node=False)
    check_capabilities(spec, VERTEX)
    with pytest.raises(InflameError, match="vertex runs jobs on one node only"):
        check_capabilities(spec, single)
    with pytest.raises(InflameError, match=r"reads data from s3:// URIs.*aws s3 sync"):
        check_capabilities(spec, SAGEMAKER)
