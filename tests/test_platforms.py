"""Inside cloud jobs: cluster descriptions and the torchrun command each node runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from inflame.errors import InflameError
from inflame.job import torchrun_command
from inflame.platforms import sagemaker_cluster, vertex_cluster


def test_sagemaker_cluster_from_resourceconfig(tmp_path: Path):
    (tmp_path / "resourceconfig.json").write_text(
        json.dumps({"current_host": "algo-2", "hosts": ["algo-1", "algo-2", "algo-3"]})
    )
    cluster = sagemaker_cluster({"SM_INPUT_CONFIG_DIR": str(tmp_path)})
    assert (cluster.nnodes, cluster.node_rank, cluster.master_addr) == (3, 1, "algo-1")
    with pytest.raises(InflameError, match="cluster description"):
        sagemaker_cluster({"SM_INPUT_CONFIG_DIR": str(tmp_path / "missing")})


def test_vertex_cluster_from_cluster_spec():
    spec = {
        "cluster": {
            "workerpool0": ["cmle-training-workerpool0-ab-0:2222"],
            "workerpool1": ["w-0:2222", "w-1:2222"],
        },
        "task": {"type": "workerpool1", "index": 1},
    }
    cluster = vertex_cluster({"CLUSTER_SPEC": json.dumps(spec)})
    assert (cluster.nnodes, cluster.node_rank) == (3, 2)
    assert (cluster.master_addr, cluster.master_port) == ("cmle-training-workerpool0-ab-0", 2222)
    with pytest.raises(InflameError, match="CLUSTER_SPEC"):
        vertex_cluster({})


def test_torchrun_command_for_one_node_and_for_several(tmp_path: Path):
    single = torchrun_command(["spec.toml", "--nproc-per-node", "4"], "sagemaker", 1, 4, {})
    assert single[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--standalone" in single and "--nproc-per-node=4" in single
    assert single[-4:] == ["inflame.job", "spec.toml", "--nproc-per-node", "4"]
    (tmp_path / "resourceconfig.json").write_text(
        json.dumps({"current_host": "algo-2", "hosts": ["algo-1", "algo-2"]})
    )
    multi = torchrun_command(
        ["spec.toml"], "sagemaker", 2, 8, {"SM_INPUT_CONFIG_DIR": str(tmp_path)}
    )
    assert {"--nnodes=2", "--node-rank=1", "--master-addr=algo-1", "--master-port=7777"} <= set(
        multi
    )
    with pytest.raises(InflameError, match="platform reports 2"):
        torchrun_command(["spec.toml"], "sagemaker", 3, 1, {"SM_INPUT_CONFIG_DIR": str(tmp_path)})
