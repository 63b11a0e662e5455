"""The Azure ML target with the real azure-ai-ml: the dry-run YAML loads with load_job, the
real MLClient submit path runs against a loopback fake, and the job's command runs in a
simulated Azure ML node with its bound inputs and outputs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from azure.ai.ml import load_job

from inflame import tomlfile
from inflame.errors import InflameError
from inflame.ledger import Ledger
from inflame.submit import (
    cancel,
    download,
    follow,
    job_logs,
    plan_submission,
    refresh,
    submit_plan,
)
from inflame.targets.azure import TARGET, stage_bundle
from tests.conftest import guarded_env
from tests.fakes.azureml import FakeAzureML
from tests.helpers import write_cloud_spec

SUB = "00000000-0000-0000-0000-000000000000"
STORE = "azureml://datastores/workspaceblobstore/paths"


@pytest.fixture
def az_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("INFLAME_HOME", str(tmp_path / "home"))

    def write(**tables: dict) -> Path:
        return write_cloud_spec(
            tmp_path / "az.toml",
            "tiny_az",
            {"train": f"{STORE}/fowl/train", "val": f"{STORE}/fowl/val"},
            "azure",
            {
                "subscription_id": SUB,
                "resource_group": "rg",
                "workspace": "ws",
                "compute": "gpu-cluster",
            },
            **tables,
        )

    return write


def test_dry_run_yaml_loads_with_the_sdk_and_is_offline(az_spec, tmp_path: Path):
    out = tmp_path / "job.yml"
    env = guarded_env(INFLAME_HOME=str(tmp_path / "home"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "inflame",
            "submit",
            str(az_spec()),
            "--target",
            "azure",
            "--dry-run",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert out.read_text().strip() == result.stdout.strip()
    job = load_job(source=out)  # azure-ai-ml's own schema
    assert job.compute.endswith("gpu-cluster") and job.resources.instance_count == 1
    assert job.inputs["train"].path == f"{STORE}/fowl/train"
    assert job.inputs["train"].mode == "ro_mount" and job.outputs["run"].mode == "rw_mount"
    assert job.outputs["run"].path.startswith(
        "azureml://datastores/workspaceblobstore/paths/inflame/jobs/tiny_az-"
    )
    assert "--data train=${{inputs.train}}" in job.command
    assert "--run-dir ${{outputs.run}}" in job.command
    assert job.environment_variables["INFLAME_PLATFORM"] == "azure"
    assert job.limits.timeout == 3600 and job.queue_settings.job_tier.lower() == "spot"
    code = Path(job.code)
    assert (code / "spec.toml").is_file() and (code / "vendor" / "inflame" / "job.py").is_file()
    assert 'app = "./app"' in (code / "spec.toml").read_text()
    assert "Experimental" not in result.stderr and "experimental" not in result.stderr


@pytest.mark.parametrize(
    ("tables", "fragment"),
    [
        ({"targets": {"azure": {"subscription_id": "my-sub"}}}, "must be a GUID"),
        ({"targets": {"azure": {"workspce": "ws"}}}, "Did you mean `workspace`?"),
        ({"data": {"train": "s3://bucket/train"}}, "Azure ML reads data from a datastore"),
    ],
)
def test_plan_errors_are_precise(az_spec, tables, fragment):
    with pytest.raises(InflameError) as info:
        plan_submission(az_spec(**tables), "azure")
    assert fragment in " ".join(str(info.value).split())


def test_missing_required_setting_names_the_key(az_spec, tmp_path: Path):
    path = az_spec()
    spec = tomlfile.loads(path.read_text())
    del spec["targets"]["azure"]["compute"]
    path.write_text(tomlfile.dumps(spec))
    with pytest.raises(InflameError, match=r"missing required key `targets.azure.compute`"):
        plan_submission(path, "azure")


def test_submit_status_and_cancel_through_mlclient(az_spec, tmp_path: Path, monkeypatch):
    plan = plan_submission(az_spec(), "azure")
    ledger = Ledger(tmp_path / "ledger.sqlite")
    with FakeAzureML() as fake:
        monkeypatch.setattr(TARGET, "client", fake.client)
        record = submit_plan(plan, ledger)
        assert record.status == "submitted" and record.provider_id == plan.job_name
        assert record.console_url.startswith("https://ml.azure.com/runs/")
        [(_, _, body)] = [r for r in fake.requests if r[0] == "PUT" and "/jobs/" in r[1]]
        sent = json.loads(body)["properties"]
        assert sent["jobType"] == "Command"
        assert sent["computeId"].endswith("/computes/gpu-cluster")
        assert sent["inputs"]["train"]["uri"] == f"{STORE}/fowl/train"
        assert sent["environmentVariables"]["INFLAME_PLATFORM"] == "azure"
        uploaded = {path.rsplit("/", 1)[-1] for path in fake.blobs}
        assert {"spec.toml", "requirements.txt", "app.py", "job.py"} <= uploaded
        assert refresh(record, ledger).state == "pending"
        cancel(record, ledger)
        assert refresh(record, ledger).state == "stopping"
        # --follow when the logs cannot be read: it follows the status instead
        fake.jobs[record.provider_id]["properties"]["status"] = "Completed"

        def unreadable(*args: object) -> None:
            raise InflameError("no access to the artifact store")

        monkeypatch.setattr(TARGET, "logs", unreadable)
        lines: list[str] = []
        state = follow(record, ledger, logs=True, emit=lines.append, sleep=lambda s: None)
        assert state.state == "completed" and "no access to the artifact store" in lines[0]


def _run_node(plan, demo_set: Path, node: Path, checkpoints: Path) -> subprocess.CompletedProcess:
    """Azure ML on a node: the code snapshot as the working folder, `${{…}}` replaced by the
    mounted paths."""
    shutil.copytree(stage_bundle(plan.bundle), node / "code")
    command = plan.request["command"]
    for name in ("train", "val"):
        mount = node / "mnt" / name
        shutil.copytree(demo_set / name, mount)
        command = command.replace(f"${{{{inputs.{name}}}}}", str(mount))
    command = command.replace("${{outputs.run}}", str(node / "outputs" / "run"))
    command = command.replace("${{outputs.checkpoints}}", str(checkpoints))
    env = guarded_env(
        **plan.request["environment_variables"],
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    )
    return subprocess.run(
        ["bash", "-c", command], cwd=node / "code", env=env, capture_output=True, text=True
    )


def test_job_command_runs_the_same_loop_on_a_simulated_node(
    az_spec, demo_set: Path, tmp_path: Path, monkeypatch
):
    plan = plan_submission(az_spec(hyperparameters={"epochs": 2}), "azure")
    checkpoints = tmp_path / "datastore" / "checkpoints"
    first = _run_node(plan, demo_set, tmp_path / "node1", checkpoints)
    assert first.returncode == 0, first.stdout + first.stderr
    run = tmp_path / "node1" / "outputs" / "run"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["platform"] == "azure"
    assert (run / "model" / "weights.safetensors").is_file()

    (checkpoints / "epoch-0002.safetensors").unlink()  # a preempted node, rerun
    second = _run_node(plan, demo_set, tmp_path / "node2", checkpoints)
    assert second.returncode == 0, second.stdout + second.stderr
    again = json.loads((tmp_path / "node2" / "outputs" / "run" / "manifest.json").read_text())
    assert again["resumed"] and again["weights_sha256"] == manifest["weights_sha256"]

    # Azure ML keeps the `run` output on the datastore and the logs in the artifact store:
    # `inflame logs` and `inflame download` read them with azure-storage-blob
    with FakeAzureML() as fake:
        for name in ("client", "credential", "blob_options"):
            monkeypatch.setattr(TARGET, name, getattr(fake, name))
        ledger = Ledger(tmp_path / "ledger.sqlite")
        record = submit_plan(plan, ledger)
        job = record.provider_id
        fake.put_folder("azureml-blobstore", f"inflame/jobs/{job}/run/", run)
        fake.store[("azureml", f"ExperimentRun/dcid.{job}/user_logs/std_log.txt")] = (
            first.stdout + first.stderr
        ).encode()
        assert "inflame: run complete" in "\n".join(job_logs(record))
        with pytest.raises(InflameError, match="once it has completed"):
            download(record, tmp_path / "early")
        assert not (tmp_path / "early").exists()  # refused before anything is written
        fake.jobs[job]["properties"]["status"] = "Completed"
        local = download(record, tmp_path / "downloaded")
    assert (
        json.loads((local / "manifest.json").read_text())["weights_sha256"]
        == manifest["weights_sha256"]
    )
    from inflame.predict import Predictor

    [answer] = Predictor.from_run(local).predict([next((demo_set / "test" / "circle").iterdir())])
    assert answer["label"] in ("circle", "square", "triangle")


def test_a_missing_sdk_names_the_extra(az_spec, monkeypatch):
    monkeypatch.setitem(sys.modules, "azure.ai.ml", None)  # as if azure-ai-ml were absent
    with pytest.raises(InflameError, match=r'pip install "inflame\[azure\]"'):
        plan_submission(az_spec(), "azure")


def test_several_gpus_and_nodes_map_to_a_pytorch_distribution(az_spec, tmp_path: Path):
    plan = plan_submission(az_spec(compute={"gpus_per_node": 2, "nodes": 3}), "azure")
    out = tmp_path / "job.yml"
    out.write_text(plan.rendered)
    job = load_job(source=out)
    assert job.distribution.process_count_per_instance == 2
    assert job.resources.instance_count == 3
    assert job.command.startswith("flock ") and "--nnodes 3 --nproc-per-node 2" in job.command


def test_azure_started_processes_train_together(az_spec, demo_set: Path, tmp_path: Path):
    """Azure ML's PyTorch distribution starts every process itself, with RANK, LOCAL_RANK,
    WORLD_SIZE, MASTER_ADDR and MASTER_PORT set; each runs the job's command."""
    plan = plan_submission(az_spec(compute={"gpus_per_node": 2}), "azure")
    node = tmp_path / "node"
    shutil.copytree(stage_bundle(plan.bundle), node / "code")
    command = plan.request["command"]
    for name in ("train", "val"):
        shutil.copytree(demo_set / name, node / "mnt" / name)
        command = command.replace(f"${{{{inputs.{name}}}}}", str(node / "mnt" / name))
    command = command.replace("${{outputs.run}}", str(node / "outputs" / "run"))
    command = command.replace("${{outputs.checkpoints}}", str(node / "checkpoints"))
    port = str(29_500 + os.getpid() % 1000)
    procs = [
        subprocess.Popen(
            ["bash", "-c", command],
            cwd=node / "code",
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=guarded_env(
                **plan.request["environment_variables"],
                RANK=str(rank),
                LOCAL_RANK=str(rank),
                WORLD_SIZE="2",
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=port,
                PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            ),
        )
        for rank in (0, 1)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    manifest = json.loads((node / "outputs" / "run" / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["world_size"] == 2
    assert (node / "outputs" / "run" / "model" / "weights.safetensors").is_file()


def test_missing_credentials_get_the_az_login_hint(az_spec, tmp_path: Path, monkeypatch):
    from azure.identity import EnvironmentCredential

    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    # a real azure-identity credential with nothing to go on: it fails before any request
    monkeypatch.setattr(TARGET, "credential", EnvironmentCredential)
    ledger = Ledger(tmp_path / "ledger.sqlite")
    with pytest.raises(InflameError, match="Run `az login`"):
        submit_plan(plan_submission(az_spec(), "azure"), ledger)
    assert ledger.all()[0].status == "submit-failed"
