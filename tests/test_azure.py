"""The Azure ML target with the real azure-ai-ml: the dry-run YAML loads with load_job and the
REST body follows Azure ML's documented rules, the real MLClient submit path runs against a
loopback fake as strict as those rules, and the job's command runs as Azure ML starts it: the
code snapshot as working folder, `${{…}}` replaced by mounted paths, the PyTorch distribution
starting every process with its variables, a Python holding only the image's packages, no
network, two nodes of two processes on loopback, and a rerun that resumes."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
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
from inflame.targets.azure import (
    DEFAULT_ENVIRONMENT,
    FRESH_S,
    KEEP_STAGED,
    TARGET,
    stage_bundle,
    validate_request,
)
from tests.conftest import guarded_env
from tests.emulation import assert_all_ok, free_port, image_env, run_nodes
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


@pytest.fixture
def azure(monkeypatch: pytest.MonkeyPatch):
    with FakeAzureML() as fake:
        for name in ("client", "credential", "blob_options"):
            monkeypatch.setattr(TARGET, name, getattr(fake, name))
        monkeypatch.setattr(TARGET.calls, "wait", 0.01)
        yield fake


def rest_body(plan) -> dict:
    """The job as MLClient sends it (PUT jobs/{name}): the plan's request."""
    return json.loads(json.dumps(plan.request))


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
    argv = shlex.split(job.command)  # the shell's view: every value one argument
    assert argv[:2] == ["bash", "entry.sh"]
    assert "--data=train=${{inputs.train}}" in argv and "--run-dir=${{outputs.run}}" in argv
    assert "pip" not in job.command and "flock" not in job.command  # nothing installed
    assert job.environment == DEFAULT_ENVIRONMENT and "/versions/" in DEFAULT_ENVIRONMENT
    assert job.environment_variables["INFLAME_PLATFORM"] == "azure"
    assert job.limits.timeout == 3600
    # spot on a named cluster: the cluster's tier decides, and the user is told so
    assert job.queue_settings is None or job.queue_settings.job_tier is None
    summary = " ".join(result.stderr.split())
    assert "spot = true on cluster gpu-cluster: the cluster's tier decides" in summary
    assert "azure-ai-ml's own job schema" in summary and "would send PUT https://management" in (
        summary
    )
    code = Path(job.code)
    assert (code / "spec.toml").is_file() and (code / "entry.sh").is_file()
    assert (code / "vendor" / "inflame" / "job.py").is_file()
    assert 'app = "./app"' in (code / "spec.toml").read_text()
    assert "Experimental" not in result.stderr and "experimental" not in result.stderr


@pytest.mark.parametrize(
    ("tables", "fragment"),
    [
        ({"targets": {"azure": {"subscription_id": "my-sub"}}}, "must be a GUID"),
        ({"targets": {"azure": {"workspce": "ws"}}}, "Did you mean `workspace`?"),
        ({"targets": {"azure": {"compute": "1-bad name"}}}, "a compute name is 3-24"),
        (
            {"targets": {"azure": {"instance_type": "Standard_NC24ads_A100_v4"}}},
            "set either `compute`",
        ),
        ({"data": {"train": "s3://bucket/train"}}, "azure reads data from azureml://"),
        ({"data": {"train-set": f"{STORE}/t"}}, "Azure ML input names are letters"),
        ({"data": {"run": f"{STORE}/t"}}, "`run` is used by inflame itself"),
    ],
)
def test_plan_errors_are_precise(az_spec, tables, fragment):
    with pytest.raises(InflameError) as info:
        plan_submission(az_spec(**tables), "azure")
    message = " ".join(str(info.value).split())
    assert fragment in message and "az.toml:" in message


def test_missing_compute_names_both_choices(az_spec):
    path = az_spec()
    spec = tomlfile.loads(path.read_text())
    del spec["targets"]["azure"]["compute"]
    path.write_text(tomlfile.dumps(spec))
    with pytest.raises(InflameError, match=r"set either `compute` \(the name of a compute cluster"):
        plan_submission(path, "azure")


def test_serverless_spot_uses_the_spot_tier_and_checks_gpus(az_spec, tmp_path: Path):
    path = az_spec(compute={"gpus_per_node": 2, "nodes": 2})
    spec = tomlfile.loads(path.read_text())
    del spec["targets"]["azure"]["compute"]
    spec["targets"]["azure"]["instance_type"] = "Standard_NC48ads_A100_v4"
    path.write_text(tomlfile.dumps(spec))
    plan = plan_submission(path, "azure")
    body = rest_body(plan)["properties"]
    assert body["queueSettings"] == {"jobTier": "Spot"} and "computeId" not in body
    assert body["resources"]["instanceType"] == "Standard_NC48ads_A100_v4"
    assert body["distribution"] == {"distributionType": "PyTorch", "processCountPerInstance": 2}
    spec["compute"]["gpus_per_node"] = 4
    path.write_text(tomlfile.dumps(spec))
    with pytest.raises(InflameError) as info:
        plan_submission(path, "azure")
    message = " ".join(str(info.value).split())
    assert "Standard_NC48ads_A100_v4 has 2 GPU(s) but compute.gpus_per_node is 4" in message
    assert "standard_nc96ads_a100_v4" in message.lower()


@pytest.mark.parametrize("serverless_compute", [False, True])
@pytest.mark.parametrize(("gpus", "nodes"), [(1, 1), (2, 2), (4, 3), (8, 4)])
@pytest.mark.parametrize("spot", [False, True])
def test_plan_matrix_is_valid_everywhere(az_spec, serverless_compute, gpus, nodes, spot):
    sizes = {1: "Standard_NC24ads_A100_v4", 2: "Standard_NC48ads_A100_v4"}
    sizes |= {4: "Standard_NC96ads_A100_v4", 8: "Standard_ND96isr_H100_v5"}
    path = az_spec(
        job={"name": "a_" + "very_long_experiment_name_" * 2 + "x"},
        data={"train_2024_v1": f"{STORE}/t", "_val": "https://acct.blob.core.windows.net/c/v"},
        compute={"gpus_per_node": gpus, "nodes": nodes, "spot": spot},
    )
    if serverless_compute:
        spec = tomlfile.loads(path.read_text())
        del spec["targets"]["azure"]["compute"]
        spec["targets"]["azure"]["instance_type"] = sizes[gpus]
        path.write_text(tomlfile.dumps(spec))
    plan = plan_submission(path, "azure")
    body = rest_body(plan)
    validate_request(plan.job_name, body)
    props = body["properties"]
    assert props["resources"]["instanceCount"] == nodes
    assert ("distribution" in props) == (gpus * nodes > 1)
    tier = (props.get("queueSettings") or {}).get("jobTier")
    assert tier == ("Spot" if spot and serverless_compute else None)
    assert props["tags"]["inflame:gpus-per-node"] == str(gpus)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda b: b["properties"].update(command=" "), "command: required"),
        (
            lambda b: b["properties"]["inputs"].update(
                {"bad-name": {"uri": "azureml://x", "mode": "ReadOnlyMount"}}
            ),
            "name 'bad-name'",
        ),
        (
            lambda b: b["properties"].update(queueSettings={"jobTier": "Cheap"}),
            "'Cheap' is not one of",
        ),
        (lambda b: b["properties"].update(experimentName="-x"), "experimentName"),
        (
            lambda b: b["properties"]["inputs"]["train"].update(uri="s3://b/t"),
            "not a datastore or blob URI",
        ),
        (
            lambda b: b["properties"]["inputs"]["train"].update(
                uri="azureml://datastores/workspaceblobstore/fowl/train"  # no /paths/
            ),
            "a datastore URI is azureml://datastores/NAME/paths/FOLDER",
        ),
        (
            lambda b: b["properties"]["environmentVariables"].update({"A-B": "1"}),
            "'A-B' is not a valid",
        ),
    ],
)
def test_requests_are_checked_against_azure_rules(az_spec, change, fragment):
    plan = plan_submission(az_spec(), "azure")
    body = rest_body(plan)
    validate_request(plan.job_name, body)
    change(body)
    with pytest.raises(InflameError) as info:
        validate_request(plan.job_name, body)
    assert fragment in str(info.value)
    with pytest.raises(InflameError, match="must be 1-255"):
        validate_request("-starts-with-a-dash", rest_body(plan))


def test_submit_status_cancel_and_follow_through_mlclient(az_spec, azure, tmp_path: Path):
    azure.clusters["gpu-cluster"] = ("Standard_NC24ads_A100_v4", "LowPriority")
    plan = plan_submission(az_spec(), "azure")
    ledger = Ledger(tmp_path / "ledger.sqlite")
    record = submit_plan(plan, ledger)
    assert record.status == "submitted" and record.provider_id == plan.job_name
    assert record.console_url.startswith("https://ml.azure.com/runs/")
    [(_, _, body)] = [r for r in azure.requests if r[0] == "PUT" and "/jobs/" in r[1]]
    sent = json.loads(body)["properties"]
    assert sent["jobType"] == "Command"
    assert sent["computeId"].endswith("/computes/gpu-cluster")
    assert sent["inputs"]["train"]["uri"] == f"{STORE}/fowl/train"
    assert sent["environmentVariables"]["INFLAME_PLATFORM"] == "azure"
    uploaded = {path.rsplit("/", 1)[-1] for path in azure.blobs}
    assert {"spec.toml", "entry.sh", "app.py", "job.py"} <= uploaded
    azure.fail_next[r"/jobs/[^/?]+\?"] = 2  # Azure busy: reads are retried
    assert refresh(record, ledger).state == "pending"
    cancel(record, ledger)
    assert refresh(record, ledger).state == "stopping"
    azure.jobs[record.provider_id]["properties"]["status"] = "Completed"

    def unreadable(*args: object) -> None:
        raise InflameError("no access to the artifact store")

    lines: list[str] = []
    import inflame.targets.azure as module

    original = module.AzureML.logs
    module.AzureML.logs = unreadable  # type: ignore[method-assign]
    try:
        state = follow(record, ledger, logs=True, emit=lines.append, sleep=lambda s: None)
    finally:
        module.AzureML.logs = original  # type: ignore[method-assign]
    assert state.state == "completed" and "no access to the artifact store" in lines[0]


@pytest.mark.parametrize(
    ("cluster", "fragment"),
    [
        (("Standard_NC24ads_A100_v4", "Dedicated"), "compute cluster gpu-cluster is dedicated"),
        (
            ("Standard_NC48ads_A100_v4", "LowPriority"),
            "VM size Standard_NC48ads_A100_v4 with 2 GPU(s), but compute.gpus_per_node is 1",
        ),
    ],
)
def test_submit_checks_the_named_cluster(az_spec, azure, tmp_path: Path, cluster, fragment):
    azure.clusters["gpu-cluster"] = cluster
    ledger = Ledger(tmp_path / "ledger.sqlite")
    with pytest.raises(InflameError, match=re.escape(fragment)):
        submit_plan(plan_submission(az_spec(), "azure"), ledger)
    assert not [r for r in azure.requests if r[0] == "PUT" and "/jobs/" in r[1]]
    assert ledger.all()[0].status == "submit-failed"


def test_a_changed_staged_bundle_is_never_uploaded(az_spec, tmp_path: Path):
    plan = plan_submission(az_spec(), "azure")
    staged = stage_bundle(plan.bundle)
    (staged / "app" / "app.py").write_text("print('tampered')\n")
    (staged / "extra.py").write_text("x = 1\n")
    again = stage_bundle(plan.bundle)
    assert again == staged and not (staged / "extra.py").exists()
    assert "tampered" not in (staged / "app" / "app.py").read_text()


def test_unpacked_bundles_are_pruned_to_the_most_recently_used(az_spec, tmp_path: Path):
    root = tmp_path / "home" / "bundles"
    root.mkdir(parents=True)
    now = time.time()

    def folder(name: str, age_s: float) -> Path:
        path = root / name
        (path / "app").mkdir(parents=True)
        (path / "app" / "app.py").write_text("x = 1\n")
        os.utime(path, (now - age_s,) * 2)
        return path

    old = [folder(f"old{i}", 86400 * (i + 1)) for i in range(3)]  # days ago
    recent = [folder(f"recent{i}", 60 * (i + 1)) for i in range(KEEP_STAGED)]  # minutes ago
    stale = folder(".staging-abc", FRESH_S + 60)  # left by a stopped unpack
    unpacking = folder(".staging-now", 5)  # another submission unpacking now
    staged = stage_bundle(plan_submission(az_spec(), "azure").bundle)
    left = set(root.iterdir())
    # beyond the 10 most recently used, but used within the hour: kept (maybe uploading)
    assert left == {staged, *recent, unpacking}
    assert not any(p.exists() for p in [*old, stale])
    assert (staged / "entry.sh").is_file()
    # reused: marked as used again, so it is never the one pruned
    os.utime(staged, (now - 10 * FRESH_S,) * 2)
    assert stage_bundle(plan_submission(az_spec(), "azure").bundle) == staged
    assert time.time() - staged.stat().st_mtime < FRESH_S


def azure_processes(
    plan,
    node_roots: list[Path],
    mounts: dict[str, Path],
    run: Path,
    checkpoints: Path,
    bin_dir: Path,
    per_node: int,
):
    """Azure ML's PyTorch distribution: on every node, `per_node` processes of the job's
    command, from the node's code snapshot, with `${{…}}` replaced by the mounted paths and
    MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK, LOCAL_RANK and NODE_RANK set."""
    command = plan.request["properties"]["command"]
    for name, path in mounts.items():
        command = command.replace(f"${{{{inputs.{name}}}}}", str(path))
    command = command.replace("${{outputs.run}}", str(run))
    command = command.replace("${{outputs.checkpoints}}", str(checkpoints))
    port, world = free_port(), len(node_roots) * per_node
    processes = []
    for node_rank, root in enumerate(node_roots):
        shutil.copytree(stage_bundle(plan.bundle), root / "code")
        for local_rank in range(per_node):
            env = image_env(
                bin_dir,
                **plan.request["properties"]["environmentVariables"],
                AZUREML_RUN_ID=plan.job_name,
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(port),
                WORLD_SIZE=str(world),
                NODE_RANK=str(node_rank),
                RANK=str(node_rank * per_node + local_rank),
                LOCAL_RANK=str(local_rank),
            )
            processes.append((["bash", "-c", command], env, root / "code"))
    return processes


def test_two_nodes_of_two_processes_train_resume_and_download(
    az_spec, azure, demo_set: Path, tmp_path: Path, image_python: Path
):
    azure.clusters["gpu-cluster"] = ("Standard_NC48ads_A100_v4", "Dedicated")
    plan = plan_submission(
        az_spec(
            hyperparameters={"epochs": 2}, compute={"gpus_per_node": 2, "nodes": 2, "spot": False}
        ),
        "azure",
    )
    mounts = {name: demo_set / name for name in ("train", "val")}
    store = tmp_path / "datastore"  # the rw_mount outputs: shared by every node
    run, checkpoints = store / "run", store / "checkpoints"
    nodes = [tmp_path / "run1" / f"node{i}" for i in range(2)]
    first = run_nodes(azure_processes(plan, nodes, mounts, run, checkpoints, image_python, 2))
    assert_all_ok(first)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["platform"] == "azure"
    assert manifest["world_size"] == 4 and manifest["image"]["torch_expected"] == "2.8"

    (checkpoints / "epoch-0002.safetensors").unlink()  # preempted after epoch 1: rerun
    kept = (checkpoints / "epoch-0001.safetensors").read_bytes()
    shutil.rmtree(run)
    nodes = [tmp_path / "run2" / f"node{i}" for i in range(2)]
    second = run_nodes(azure_processes(plan, nodes, mounts, run, checkpoints, image_python, 2))
    assert_all_ok(second)
    again = json.loads((run / "manifest.json").read_text())
    assert again["resumed"] and again["weights_sha256"] == manifest["weights_sha256"]
    assert "resuming at epoch 2/2" in "".join(r.stderr for r in second)
    assert (checkpoints / "epoch-0001.safetensors").read_bytes() == kept

    # the run output stays on the datastore, the logs in the artifact store
    ledger = Ledger(tmp_path / "ledger.sqlite")
    record = submit_plan(plan, ledger)
    job = record.provider_id
    azure.put_folder("azureml-blobstore", f"inflame/jobs/{job}/run/", run)
    azure.store[("azureml", f"ExperimentRun/dcid.{job}/user_logs/std_log.txt")] = (
        first[0].stdout + first[0].stderr
    ).encode()
    assert "inflame: run complete" in "\n".join(job_logs(record))
    with pytest.raises(InflameError, match="once it has completed"):
        download(record, tmp_path / "early")
    assert not (tmp_path / "early").exists()  # refused before anything is written
    azure.jobs[job]["properties"]["status"] = "Completed"
    local = download(record, tmp_path / "downloaded")
    assert (
        json.loads((local / "manifest.json").read_text())["weights_sha256"]
        == (manifest["weights_sha256"])
    )


@pytest.mark.parametrize("name", ["/tmp/evil.txt", "../evil.txt", "model/../../evil.txt"])
def test_a_blob_never_lands_outside_the_download(az_spec, azure, tmp_path: Path, name: str):
    """Azure `download` once refused `..` but not an absolute name: both stop the download,
    and nothing is left behind."""
    plan = plan_submission(az_spec(compute={"spot": False}), "azure")
    record = submit_plan(plan, Ledger(tmp_path / "ledger.sqlite"))
    prefix = f"inflame/jobs/{record.provider_id}/run/"
    azure.store[("azureml-blobstore", prefix + "model/model.json")] = b"{}"
    azure.store[("azureml-blobstore", prefix + name)] = b"evil"
    azure.jobs[record.provider_id]["properties"]["status"] = "Completed"
    with pytest.raises(InflameError, match="Refusing to write"):
        download(record, tmp_path / "out" / "run")
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/evil.txt").exists()
    assert list((tmp_path / "out").iterdir()) == []


def test_processes_must_match_the_job(az_spec, demo_set: Path, tmp_path: Path, image_python):
    """The platform started a different number of processes than the job asked for."""
    plan = plan_submission(az_spec(compute={"gpus_per_node": 2, "spot": False}), "azure")
    mounts = {name: demo_set / name for name in ("train", "val")}
    [(command, env, cwd)] = azure_processes(
        plan, [tmp_path / "node"], mounts, tmp_path / "run", tmp_path / "ckpt", image_python, 1
    )
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "The platform started 1 process(es) but the job asked for 1 node(s) x 2" in (
        result.stderr
    )


def test_a_missing_sdk_names_the_extra(az_spec, monkeypatch):
    monkeypatch.setitem(sys.modules, "azure.ai.ml", None)  # as if azure-ai-ml were absent
    with pytest.raises(InflameError, match=r'pip install "inflame\[azure\]"'):
        plan_submission(az_spec(), "azure")


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


def test_tensorboard_events_go_where_the_jobs_tensorboard_service_reads_them(
    az_spec, azure, tmp_path: Path, monkeypatch
):
    """[tracking] tensorboard = true: the job carries a TensorBoard service reading
    outputs/tensorboard (relative to its working folder, the code snapshot, whose ./outputs
    Azure ML keeps with the job), accepted by the SDK's schema and the strict fake; inside
    the job the events are written exactly there."""
    from inflame.runtime import metrics_log
    from inflame.spec import load_spec
    from inflame.targets.azure import TENSORBOARD_DIR
    from inflame.targets.base import BoundPaths
    from tests.test_tracking import scalars

    spec_path = az_spec(tracking={"tensorboard": True})
    plan = plan_submission(spec_path, "azure")
    body = rest_body(plan)
    assert body["properties"]["services"] == {
        "tensorboard": {"jobServiceType": "TensorBoard", "properties": {"logDir": TENSORBOARD_DIR}}
    }
    (tmp_path / "job.yml").write_text(plan.rendered)
    assert load_job(source=tmp_path / "job.yml").services["tensorboard"].log_dir == TENSORBOARD_DIR
    for bad in ("/mnt/tb", "../tb", ""):
        body["properties"]["services"]["tensorboard"]["properties"]["logDir"] = bad
        with pytest.raises(InflameError, match="must be a path inside the job's working"):
            validate_request(plan.job_name, body)
    body["properties"]["services"]["tensorboard"]["jobServiceType"] = "Tensorboard"
    with pytest.raises(InflameError, match="'Tensorboard' is not one of"):
        validate_request(plan.job_name, body)
    azure.clusters["gpu-cluster"] = ("Standard_NC24ads_A100_v4", "LowPriority")
    submit_plan(plan, Ledger(tmp_path / "ledger.sqlite"))
    [(_, _, sent)] = [r for r in azure.requests if r[0] == "PUT" and "/jobs/" in r[1]]
    assert json.loads(sent)["properties"]["services"] == rest_body(plan)["properties"]["services"]

    code = tmp_path / "code"  # the job's working folder
    code.mkdir()
    monkeypatch.chdir(code)
    bound = BoundPaths({}, tmp_path / "mnt" / "run", tmp_path / "mnt" / "checkpoints")
    paths = TARGET.job_paths(load_spec(spec_path), {"AZUREML_RUN_ID": "x"}, bound)
    assert paths.tensorboard_dir == code / TENSORBOARD_DIR
    paths.run_dir.mkdir(parents=True)
    log = metrics_log(load_spec(spec_path), paths.run_dir, 0, {}, paths.tensorboard_dir)
    log.append({"epoch": 1, "train_loss": 0.5})
    log.close()
    assert scalars(code / "outputs" / "tensorboard") == {"loss/train": [(1, 0.5)]}
    assert not (paths.run_dir / "tensorboard").exists()
    assert "services" not in rest_body(plan_submission(az_spec(), "azure"))["properties"]


def test_upload_folder_writes_to_the_datastore_path_once(azure, tmp_path: Path):
    """What `inflame loop --target azure` uploads a round's training set with: the blob
    container behind the datastore, each blob once (by its MD5)."""
    folder = tmp_path / "train"
    for name, data in (("duck/1.jpg", b"\xff\xd8one"), ("hen/2.jpg", b"\xff\xd8two")):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    locator = {"subscription_id": SUB, "resource_group": "rg", "workspace": "ws"}

    def puts() -> int:
        return sum(1 for m, path, _ in azure.requests if m == "PUT" and ".blob." in path)

    assert TARGET.upload_folder(folder, f"{STORE}/loops/r0/train/", locator) == 2
    assert azure.store[("azureml-blobstore", "loops/r0/train/duck/1.jpg")] == b"\xff\xd8one"
    assert azure.store[("azureml-blobstore", "loops/r0/train/hen/2.jpg")] == b"\xff\xd8two"
    assert puts() == 2
    TARGET.upload_folder(folder, f"{STORE}/loops/r0/train", locator)  # the same bytes
    assert puts() == 2
    (folder / "hen" / "2.jpg").write_bytes(b"\xff\xd8changed")
    TARGET.upload_folder(folder, f"{STORE}/loops/r0/train", locator)
    assert puts() == 3
    assert azure.store[("azureml-blobstore", "loops/r0/train/hen/2.jpg")] == b"\xff\xd8changed"
    with pytest.raises(InflameError, match="azureml://datastores/<datastore>/paths/<folder>"):
        TARGET.upload_folder(folder, "https://acct.blob.core.windows.net/c/x", locator)


# ---- Azure ML's published REST model (inflame/targets/azure_rest.py) ----------------------


def _serverless(path: Path, instance_type: str) -> Path:
    spec = tomlfile.loads(path.read_text())
    del spec["targets"]["azure"]["compute"]
    spec["targets"]["azure"]["instance_type"] = instance_type
    path.write_text(tomlfile.dumps(spec))
    return path


@pytest.mark.parametrize(
    ("tables", "instance_type"),
    [
        ({}, None),
        ({"compute": {"gpus_per_node": 2, "nodes": 2}}, None),  # PyTorch distribution
        ({"compute": {"gpus_per_node": 2, "nodes": 2}}, "Standard_NC48ads_A100_v4"),  # spot
        ({"compute": {"spot": False}}, "Standard_NC24ads_A100_v4"),
        ({"tracking": {"tensorboard": True}}, None),  # the TensorBoard job service
        ({"data": {"_val": "https://acct.blob.core.windows.net/c/v"}}, None),
    ],
)
def test_planned_jobs_follow_azure_mls_published_model(az_spec, tables, instance_type):
    from inflame.targets.azure_rest import model_violations

    path = az_spec(**tables)
    if instance_type:
        path = _serverless(path, instance_type)
    body = rest_body(plan_submission(path, "azure"))
    assert model_violations("JobBase", body) == []
    # read-only members (the name, which is in the URL) are left out, as MLClient sends it
    assert set(body) == {"properties"}


def _distributed_tensorboard_body(az_spec) -> tuple[str, dict]:
    plan = plan_submission(
        az_spec(compute={"gpus_per_node": 2, "nodes": 2}, tracking={"tensorboard": True}), "azure"
    )
    return plan.job_name, rest_body(plan)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b.update(priority=1), "priority: unknown member of JobBase"),
        (
            lambda b: b["properties"]["inputs"]["train"].update(readOnly=True),
            "properties.inputs.train.readOnly: unknown member of UriFolderJobInput",
        ),
        (
            lambda b: b["properties"]["services"]["tensorboard"].update(logDir="x"),
            "properties.services.tensorboard.logDir: unknown member of JobService",
        ),
        (
            lambda b: b["properties"]["resources"].update(instanceCount="2"),
            "properties.resources.instanceCount: must be an integer",
        ),
        (
            lambda b: b["properties"]["tags"].update({"inflame:gpus-per-node": 2}),
            "properties.tags.inflame:gpus-per-node: must be a string",
        ),
        (
            lambda b: b["properties"].update(jobType="Commnd"),
            "properties.jobType: 'Commnd' is not one of AutoML, Command, FineTuning",
        ),
        (
            lambda b: b["properties"]["inputs"]["train"].update(jobInputType="uri_directory"),
            "properties.inputs.train.jobInputType: 'uri_directory' is not one of custom_model",
        ),
        (
            lambda b: b["properties"]["distribution"].update(distributionType="Torch"),
            "properties.distribution.distributionType: 'Torch' is not one of Mpi, PyTorch",
        ),
        (
            lambda b: b["properties"]["outputs"]["run"].update(mode="ReadOnlyMount"),
            "properties.outputs.run.mode: 'ReadOnlyMount' is not one of ReadWriteMount, Upload",
        ),
        (
            lambda b: b["properties"]["limits"].update(timeout="1h"),
            "properties.limits.timeout: '1h' is not an ISO 8601 duration",
        ),
        (
            lambda b: b["properties"]["inputs"]["val"].pop("uri"),
            "properties.inputs.val.uri: required",
        ),
        (lambda b: b["properties"].pop("environmentId"), "properties.environmentId: required"),
        (
            lambda b: b["properties"]["inputs"]["train"].pop("jobInputType"),
            "properties.inputs.train.jobInputType: required",
        ),
        (
            lambda b: b["properties"].update(status="Running"),
            "properties.status: read-only (Azure ML sets it)",
        ),
        (lambda b: b.update(name="x"), "name: read-only (Azure ML sets it)"),
        (lambda b: b["properties"].update(command=None), "properties.command: must not be null"),
    ],
)
def test_the_published_job_model_refuses_what_azure_ml_would(az_spec, change, message):
    from inflame.targets.azure_rest import model_violations

    name, body = _distributed_tensorboard_body(az_spec)
    change(body)
    [problem] = model_violations("JobBase", body)
    assert problem.startswith(message)
    with pytest.raises(InflameError) as info:
        validate_request(name, body)
    assert message in str(info.value)


def test_the_sdks_own_models_send_what_azure_ml_rejects(az_spec, azure):
    """Why the model check exists: azure-ai-ml's generated models and client take a body with
    an unknown member (and a job type that does not exist) and send it as it is."""
    from azure.ai.ml._restclient.arm_ml_service import MachineLearningServicesMgmtClient
    from azure.ai.ml._restclient.arm_ml_service.models import JobBase, JobBaseProperties
    from azure.core.exceptions import HttpResponseError

    from inflame.targets.azure_rest import API_VERSIONS
    from tests.fakes.azureml import FakeCredential, RedirectTransport

    name, body = _distributed_tensorboard_body(az_spec)
    body["properties"]["inputs"]["train"]["readOnly"] = True
    model = JobBase(body)  # the SDK's own deserialization: no complaint
    assert model.properties.inputs["train"]["readOnly"] is True
    unknown_type = JobBase({"properties": {**body["properties"], "jobType": "Commnd"}})
    assert type(unknown_type.properties) is JobBaseProperties  # quietly the base model
    client = MachineLearningServicesMgmtClient(
        FakeCredential(),
        SUB,
        "https://management.azure.com",
        api_version=API_VERSIONS["JobBase"],
        transport=RedirectTransport(azure.port),
    )
    with pytest.raises(HttpResponseError, match="readOnly: unknown member of UriFolderJobInput"):
        client.jobs.create_or_update("rg", "ws", name, model)  # our strict fake refuses it
    [(_, url, sent)] = [r for r in azure.requests if r[0] == "PUT" and "/jobs/" in r[1]]
    assert json.loads(sent)["properties"]["inputs"]["train"]["readOnly"] is True  # as it was
    assert f"api-version={API_VERSIONS['JobBase']}" in url


def test_mlclient_sends_the_planned_job_with_the_checked_api_version(az_spec, azure, tmp_path):
    """The API version the model check names is the one MLClient.jobs.create_or_update uses,
    and the body it sends follows the model (no read-only member, nothing unknown)."""
    from inflame.targets.azure_rest import API_VERSIONS, model_violations

    azure.clusters["gpu-cluster"] = ("Standard_NC48ads_A100_v4", "LowPriority")
    plan = plan_submission(
        az_spec(compute={"gpus_per_node": 2, "nodes": 2}, tracking={"tensorboard": True}), "azure"
    )
    submit_plan(plan, Ledger(tmp_path / "ledger.sqlite"))
    [(_, url, sent)] = [r for r in azure.requests if r[0] == "PUT" and "/jobs/" in r[1]]
    assert f"api-version={API_VERSIONS['JobBase']}" in url
    assert model_violations("JobBase", json.loads(sent)) == []
    assert set(json.loads(sent)["properties"]) == set(rest_body(plan)["properties"])


def test_the_model_version_named_is_the_one_azure_ai_ml_generated():
    """The checks say which published model they use: the version its client defaults to."""
    import inspect

    from azure.ai.ml._restclient.arm_ml_service import _configuration

    from inflame.targets.azure_rest import MODEL_VERSION

    source = inspect.getsource(_configuration)
    assert f'kwargs.pop("api_version", "{MODEL_VERSION}")' in source
