"""The Vertex AI target with the real google-cloud-aiplatform and google-cloud-storage: plans
parse as the API's CustomJob message and follow Vertex AI's machine and naming rules, the real
submit path runs against a loopback fake as strict as those rules (REST transport), and the
job's command runs as Vertex AI starts it: CLUSTER_SPEC, RANK/WORLD_SIZE/MASTER_* per node,
AIP_* folders, the /gcs mount, a Python holding only the image's packages, no network, two
nodes of two processes on loopback, and a restart that resumes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from google.cloud.aiplatform_v1.types import CustomJob, Scheduling

from inflame.errors import InflameError
from inflame.ledger import Ledger
from inflame.submit import cancel, download, follow, plan_submission, refresh, submit_plan
from inflame.targets.vertex import default_machine, validate_request
from tests.conftest import guarded_env
from tests.emulation import assert_all_ok, free_port, image_env, run_nodes
from tests.fakes.gcp import FakeGCP
from tests.helpers import write_cloud_spec


@pytest.fixture
def vx_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("INFLAME_HOME", str(tmp_path / "home"))

    def write(**tables: dict) -> Path:
        return write_cloud_spec(
            tmp_path / "vx.toml",
            "tiny_vx",
            {"train": "gs://my-data/fowl/train", "val": "gs://my-data/fowl/val"},
            "vertex",
            {"project": "my-proj", "region": "us-central1", "staging_bucket": "gs://my-staging"},
            **tables,
        )

    return write


@pytest.fixture
def gcp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with FakeGCP(tmp_path / "gcs") as fake:
        fake.install(monkeypatch)
        yield fake


def test_dry_run_parses_as_the_api_type_and_is_offline(vx_spec, tmp_path: Path):
    env = guarded_env(INFLAME_HOME=str(tmp_path / "home"))
    env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "inflame",
            "submit",
            str(vx_spec()),
            "--target",
            "vertex",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    job = CustomJob.from_json(result.stdout)  # the Vertex AI API's own message type
    [pool] = job.job_spec.worker_pool_specs
    assert pool.machine_spec.machine_type == "g2-standard-8"
    assert pool.machine_spec.accelerator_type.name == "NVIDIA_L4"
    assert pool.machine_spec.accelerator_count == 1 and pool.replica_count == 1
    assert pool.container_spec.command == ["sh", "-c"]
    assert "entry.sh" in pool.container_spec.args[0]
    env_vars = {e.name: e.value for e in pool.container_spec.env}
    assert env_vars["INFLAME_BUNDLE"].startswith("/gcs/my-staging/inflame/code/")
    assert env_vars["INFLAME_IMAGE_TORCH"] == "2.4"
    assert job.job_spec.scheduling.strategy == Scheduling.Strategy.SPOT
    assert job.job_spec.scheduling.timeout.total_seconds() == 3600
    assert job.job_spec.base_output_directory.output_uri_prefix.startswith(
        "gs://my-staging/inflame/jobs/tiny-vx-"
    )
    summary = " ".join(result.stderr.split())
    assert "spot yes" in summary and "CustomJob message (aiplatform_v1)" in summary
    assert "would send POST https://us-central1-aiplatform.googleapis.com/v1/projects/my-proj" in (
        summary
    )


@pytest.mark.parametrize(
    ("tables", "fragment"),
    [
        ({"targets": {"vertex": {"staging_bucket": "my-staging"}}}, "must be gs://BUCKET"),
        ({"targets": {"vertex": {"staging_bucket": "gs://My_Bucket"}}}, "must be gs://BUCKET"),
        ({"targets": {"vertex": {"machine": "a2"}}}, "Did you mean `machine_type`?"),
        ({"targets": {"vertex": {"project": "My Project"}}}, "a project id is 6-30"),
        ({"targets": {"vertex": {"accelerator_type": "L4"}}}, "unknown accelerator 'L4'"),
        ({"data": {"train": "s3://bucket/train"}}, "vertex reads data from gs://"),
        (
            {
                "targets": {"vertex": {"machine_type": "g2-standard-8"}},
                "compute": {"gpus_per_node": 2},
            },
            "g2-standard-8 has 1 GPU(s) but compute.gpus_per_node is 2",
        ),
        (
            {
                "targets": {"vertex": {"machine_type": "n1-standard-8"}},
                "compute": {"gpus_per_node": 8},
            },
            "n1-standard-8 cannot take NVIDIA_L4 GPUs",
        ),
        (
            {
                "targets": {
                    "vertex": {
                        "machine_type": "n1-standard-8",
                        "accelerator_type": "NVIDIA_TESLA_T4",
                    }
                },
                "compute": {"gpus_per_node": 8},
            },
            "n1-standard-8 takes 1, 2, 4 x NVIDIA_TESLA_T4, not 8",
        ),
        (
            {"targets": {"vertex": {"machine_type": "e2-standard-8"}}},
            "e2-standard-8 cannot take GPUs",
        ),
        (
            {
                "targets": {"vertex": {"accelerator_type": "NVIDIA_TESLA_T4"}},
                "compute": {"gpus_per_node": 8},
            },
            "no Vertex AI machine type carries 8 x NVIDIA_TESLA_T4",
        ),
        (
            {
                "targets": {
                    "vertex": {"machine_type": "a2-highgpu-1g", "accelerator_type": "NVIDIA_L4"}
                }
            },
            "a2-highgpu-1g comes with NVIDIA_TESLA_A100 GPUs",
        ),
    ],
)
def test_plan_errors_are_precise(vx_spec, tables, fragment):
    with pytest.raises(InflameError) as info:
        plan_submission(vx_spec(**tables), "vertex")
    message = " ".join(str(info.value).split())
    assert fragment in message and "vx.toml:" in message


@pytest.mark.parametrize(
    ("tables", "fragment"),
    [
        (
            {"targets": {"vertex": {"boot_disk_gb": 50}}},
            "boot_disk_gb` must be between 100 and 64000, got 50",
        ),
        ({"compute": {"disk_gb": 70000}}, "compute.disk_gb): Vertex AI boot disks are 100 to"),
    ],
)
def test_disk_sizes_are_checked_where_they_are_written(vx_spec, tables, fragment):
    with pytest.raises(InflameError) as info:
        plan_submission(vx_spec(**tables), "vertex")
    assert fragment in " ".join(str(info.value).split())


def test_machines_that_boot_from_hyperdisk_get_it(vx_spec):
    plan = plan_submission(
        vx_spec(
            compute={"gpus_per_node": 8},
            targets={"vertex": {"accelerator_type": "NVIDIA_H200_141GB"}},
        ),
        "vertex",
    )
    [pool] = plan.request["jobSpec"]["workerPoolSpecs"]
    assert pool["machineSpec"]["machineType"] == "a3-ultragpu-8g"
    assert pool["diskSpec"]["bootDiskType"] == "hyperdisk-balanced"


def test_a_hostile_bucket_name_never_reaches_a_shell(vx_spec, tmp_path: Path):
    """The bucket once went into the entry script unquoted: `$(…)` ran in the job."""
    marker = tmp_path / "pwned"
    with pytest.raises(InflameError, match="must be gs://BUCKET"):
        plan_submission(
            vx_spec(targets={"vertex": {"staging_bucket": f'gs://b"; touch {marker}; "'}}),
            "vertex",
        )
    plan = plan_submission(
        vx_spec(targets={"vertex": {"staging_bucket": "gs://my.staging"}}), "vertex"
    )
    [pool] = plan.request["jobSpec"]["workerPoolSpecs"]
    assert "my.staging" not in pool["containerSpec"]["args"][0]  # values travel as variables
    # and a variable's content is never run, whatever it holds: run the job's own command
    container = pool["containerSpec"]
    result = subprocess.run(
        [*container["command"], *container["args"]],
        env=guarded_env(
            INFLAME_BUNDLE=f'/b"; touch {marker}; "$(touch {marker})`touch {marker}`',
            INFLAME_PLATFORM_ROOT=str(tmp_path / "root"),
        ),
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0  # no such archive
    assert not marker.exists()


@pytest.mark.parametrize(
    ("accelerator", "count", "machine"),
    [
        ("NVIDIA_L4", 1, "g2-standard-8"),
        ("NVIDIA_L4", 4, "g2-standard-48"),
        ("NVIDIA_TESLA_T4", 2, "n1-standard-16"),
        ("NVIDIA_TESLA_V100", 8, "n1-standard-64"),
        ("NVIDIA_TESLA_A100", 8, "a2-highgpu-8g"),
        ("NVIDIA_A100_80GB", 2, "a2-ultragpu-2g"),
        ("NVIDIA_H100_80GB", 8, "a3-highgpu-8g"),
        ("NVIDIA_H200_141GB", 8, "a3-ultragpu-8g"),
    ],
)
def test_the_machine_type_follows_accelerator_and_count(vx_spec, accelerator, count, machine):
    assert default_machine(accelerator, count) == machine
    plan = plan_submission(
        vx_spec(
            compute={"gpus_per_node": count},
            targets={"vertex": {"accelerator_type": accelerator}},
        ),
        "vertex",
    )
    [pool] = plan.request["jobSpec"]["workerPoolSpecs"]
    assert pool["machineSpec"] == {
        "machineType": machine,
        "acceleratorType": accelerator,
        "acceleratorCount": count,
    }


@pytest.mark.parametrize("region", ["us-central1", "europe-west4", "asia-southeast1"])
@pytest.mark.parametrize(("gpus", "nodes"), [(0, 1), (1, 1), (2, 2), (4, 3), (8, 4)])
@pytest.mark.parametrize("spot", [False, True])
def test_plan_matrix_is_valid_everywhere(vx_spec, region, gpus, nodes, spot):
    long_name = "a_" + "very_long_experiment_name_" * 2 + "x"
    plan = plan_submission(
        vx_spec(
            job={"name": long_name},
            data={"train-2024.v1": "gs://my-data/t", "_val": "gs://my-data/v"},
            compute={"gpus_per_node": gpus, "nodes": nodes, "spot": spot},
            targets={"vertex": {"region": region, "accelerator_type": "NVIDIA_TESLA_A100"}},
        ),
        "vertex",
    )
    validate_request(plan.request)
    job = CustomJob.from_json(json.dumps(plan.request))
    pools = job.job_spec.worker_pool_specs
    assert [p.replica_count for p in pools] == [1] + ([nodes - 1] if nodes > 1 else [])
    machine = pools[0].machine_spec
    assert machine.accelerator_count == gpus
    assert machine.machine_type == ("n1-standard-8" if gpus == 0 else f"a2-highgpu-{gpus}g")
    assert (job.job_spec.scheduling.strategy == Scheduling.Strategy.SPOT) == spot
    assert len(job.display_name) <= 128 and job.display_name.startswith("a-very-long")


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda r: r.update(displayName="x" * 129), "allowed 1..128"),
        (lambda r: r.update(labels={"Bad Key": "v"}), "labels['Bad Key']"),
        (lambda r: r.update(surprise=1), "not a valid CustomJob"),
        (
            lambda r: r["jobSpec"]["workerPoolSpecs"][0].update(replicaCount="2"),
            "primary pool has exactly 1 replica",
        ),
        (
            lambda r: r["jobSpec"]["workerPoolSpecs"][0]["machineSpec"].update(acceleratorCount=3),
            "g2-standard-8 comes with 1 x NVIDIA_L4, not 3",
        ),
        (
            lambda r: r["jobSpec"]["workerPoolSpecs"][0]["diskSpec"].update(bootDiskSizeGb=10),
            "allowed 100..64000",
        ),
        (
            lambda r: r["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["env"].append(
                {"name": "1X", "value": "y"}
            ),
            "'1X' is not a valid variable name",
        ),
    ],
)
def test_requests_are_checked_against_vertex_rules(vx_spec, change, fragment):
    request = plan_submission(vx_spec(), "vertex").request
    validate_request(request)
    change(request)
    with pytest.raises(InflameError) as info:
        validate_request(request)
    assert fragment in str(info.value)


def test_the_strict_fake_refuses_what_vertex_refuses(vx_spec, gcp, tmp_path: Path):
    plan = plan_submission(vx_spec(), "vertex")
    plan.request["labels"]["Bad Key"] = "x"  # as if inflame had built a bad request
    with pytest.raises(InflameError, match=r"400.*labels"):
        submit_plan(plan, Ledger(tmp_path / "ledger.sqlite"))


# ---- the job, run as Vertex AI runs it ----------------------------------------------------


def vertex_nodes(plan, gcs: Path, where: Path, bin_dir: Path, port: int):
    """Every replica of the job: worker pool 0 (the primary) and pool 1, each with Vertex AI's
    variables, buckets under /gcs (shared), and the pool's own command."""
    pools = plan.request["jobSpec"]["workerPoolSpecs"]
    base = plan.request["jobSpec"]["baseOutputDirectory"]["outputUriPrefix"]
    replicas = [("workerpool0", 0)] + [
        ("workerpool1", i) for i in range(int(pools[1]["replicaCount"]) if len(pools) > 1 else 0)
    ]
    cluster = {
        pool: [f"{pool}-{i}:{port}" for p, i in replicas if p == pool]
        for pool in dict.fromkeys(p for p, _ in replicas)
    }
    nodes = []
    for rank, (pool_name, index) in enumerate(replicas):
        root = where / f"{pool_name}-{index}"
        root.mkdir(parents=True)
        (root / "gcs").symlink_to(gcs)  # Cloud Storage FUSE: every replica sees the buckets
        pool = pools[0 if pool_name == "workerpool0" else 1]
        container = pool["containerSpec"]
        cluster_spec = {
            "cluster": cluster,
            "environment": "cloud",
            "task": {"type": pool_name, "index": index},
            "job": json.dumps({"worker_pool_specs": pools}),
        }
        extra = {}
        if len(replicas) > 1:  # Vertex AI's own variables for multi-replica jobs
            extra = {
                "RANK": str(rank),
                "WORLD_SIZE": str(len(replicas)),
                "MASTER_ADDR": "workerpool0-0",
                "MASTER_PORT": str(port),
            }
        env = image_env(
            bin_dir,
            **{e["name"]: e["value"] for e in container["env"]},
            **extra,
            CLUSTER_SPEC=json.dumps(cluster_spec),
            CLOUD_ML_JOB_ID="42",
            AIP_MODEL_DIR=f"{base}/model/",
            AIP_CHECKPOINT_DIR=f"{base}/checkpoints/",
            AIP_TENSORBOARD_LOG_DIR=f"{base}/logs/",
            INFLAME_PLATFORM_ROOT=str(root),
            INFLAME_TEST_HOSTS_FILE=str(where / "dns"),
        )
        nodes.append(([*container["command"], *container["args"]], env, root))
    (where / "dns").write_text("\n".join(f"{p}-{i}" for p, i in replicas))
    return nodes


def test_two_nodes_of_two_processes_train_resume_and_download(
    vx_spec, gcp, demo_set: Path, tmp_path: Path, image_python: Path
):
    gcs = tmp_path / "gcs"
    for name in ("train", "val"):
        shutil.copytree(demo_set / name, gcs / "my-data" / "fowl" / name)
    plan = plan_submission(
        vx_spec(
            hyperparameters={"epochs": 2},
            compute={"gpus_per_node": 2, "nodes": 2},
            targets={"vertex": {"accelerator_type": "NVIDIA_TESLA_T4"}},
        ),
        "vertex",
    )
    ledger = Ledger(tmp_path / "ledger.sqlite")
    record = submit_plan(plan, ledger)  # uploads the bundle where /gcs shows it
    [(_, _, body)] = [r for r in gcp.requests if r[1].startswith("/v1/projects/my-proj")]
    sent = json.loads(body)["jobSpec"]
    assert sent["workerPoolSpecs"][1]["replicaCount"] == "1"
    assert sent["scheduling"]["restartJobOnWorkerRestart"] is True

    first = run_nodes(vertex_nodes(plan, gcs, tmp_path / "run1", image_python, free_port()))
    assert_all_ok(first)
    base = gcs / plan.request["jobSpec"]["baseOutputDirectory"]["outputUriPrefix"][5:]
    manifest = json.loads((base / "model" / "manifest.json").read_text())
    # one process per GPU on every node: Vertex's RANK/WORLD_SIZE (per node) decided nothing
    assert manifest["status"] == "completed" and manifest["world_size"] == 4
    assert manifest["platform"] == "vertex" and manifest["image"]["torch_expected"] == "2.4"
    # no google-cloud-storage in this image: the inputs' files were hashed, and it says why
    train = manifest["data"]["inputs"]["train"]
    assert train["listing_unused"] == "google-cloud-storage is not installed in the job's image"

    # preempted after epoch 1: the restarted job resumes from AIP_CHECKPOINT_DIR
    (base / "checkpoints" / "epoch-0002.safetensors").unlink()
    kept = (base / "checkpoints" / "epoch-0001.safetensors").read_bytes()
    shutil.rmtree(base / "model")
    second = run_nodes(vertex_nodes(plan, gcs, tmp_path / "run2", image_python, free_port()))
    assert_all_ok(second)
    again = json.loads((base / "model" / "manifest.json").read_text())
    assert again["resumed"] and again["weights_sha256"] == manifest["weights_sha256"]
    assert "resuming at epoch 2/2" in "".join(r.stderr for r in second)
    assert (base / "checkpoints" / "epoch-0001.safetensors").read_bytes() == kept

    gcp.jobs[record.provider_id]["state"] = "JOB_STATE_SUCCEEDED"
    local = download(record, tmp_path / "downloaded")
    assert (
        json.loads((local / "manifest.json").read_text())["weights_sha256"]
        == (manifest["weights_sha256"])
    )
    assert (local / "model" / "weights.safetensors").is_file()


def test_submit_status_logs_cancel_and_bundle_reuse(vx_spec, gcp, tmp_path: Path):
    plan = plan_submission(vx_spec(), "vertex")
    ledger = Ledger(tmp_path / "ledger.sqlite")
    record = submit_plan(plan, ledger)
    assert record.provider_id.startswith("projects/123/locations/us-central1/customJobs/")
    assert "console.cloud.google.com/vertex-ai" in record.console_url
    bundle = tmp_path / "gcs" / "my-staging" / "inflame" / "code" / f"{plan.bundle.sha256}.tar.gz"
    assert bundle.read_bytes() == plan.bundle.data

    gcp.fail_next[r"customJobs/\d+(\?|$)"] = 2  # Vertex AI overloaded: reads are retried
    assert refresh(record, ledger).state == "pending"
    assert gcp.fail_next[r"customJobs/\d+(\?|$)"] == 0

    job_id = record.provider_id.rsplit("/", 1)[-1]
    for n in range(1, 4):
        gcp.add_log(job_id, text=f"epoch {n}/3")
    gcp.add_log(job_id, message="inflame: run complete")
    gcp.add_log("999", text="another job's line")
    gcp.jobs[record.provider_id]["state"] = "JOB_STATE_SUCCEEDED"
    lines: list[str] = []
    state = follow(record, ledger, logs=True, emit=lines.append, sleep=lambda s: None)
    assert state.state == "completed"
    assert lines == ["epoch 1/3", "epoch 2/3", "epoch 3/3", "inflame: run complete"]

    uploads = lambda: [p for m, p, _ in gcp.requests if p.startswith("/upload/")]  # noqa: E731
    second = submit_plan(plan, ledger, again=True)
    assert len(uploads()) == 1  # the same code, MD5 verified: not uploaded twice
    bundle.write_bytes(b"tampered")
    submit_plan(plan, ledger, again=True)
    assert len(uploads()) == 2 and bundle.read_bytes() == plan.bundle.data
    cancel(second, ledger)
    assert refresh(second, ledger).state == "stopping"


def test_a_region_vertex_ai_does_not_run_in_is_refused_with_the_nearest(vx_spec):
    typo = {"vertex": {"region": "us-centrall1"}}
    with pytest.raises(InflameError) as refused:
        plan_submission(vx_spec(targets=typo), "vertex")
    said = str(refused.value)
    assert "targets.vertex.region" in said and "'us-centrall1' is not a region" in said
    assert "Did you mean `us-central1`?" in said


def test_a_missing_sdk_names_the_extra(vx_spec, monkeypatch):
    monkeypatch.setitem(sys.modules, "google.cloud.aiplatform", None)  # no [gcp] extra
    with pytest.raises(InflameError, match=r'pip install "inflame\[gcp\]"'):
        plan_submission(vx_spec(), "vertex")


def test_missing_credentials_get_the_gcloud_hint(vx_spec, tmp_path: Path, monkeypatch):
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud"))
    monkeypatch.setenv("NO_GCE_CHECK", "true")  # no metadata-server probe
    ledger = Ledger(tmp_path / "ledger.sqlite")
    with pytest.raises(InflameError, match="gcloud auth application-default login"):
        submit_plan(plan_submission(vx_spec(), "vertex"), ledger)
    assert ledger.all()[0].status == "submit-failed"


TENSORBOARD = "projects/my-proj/locations/us-central1/tensorboards/1234"
ACCOUNT = "trainer@my-proj.iam.gserviceaccount.com"


def test_a_tensorboard_instance_is_linked_to_the_job(vx_spec, gcp, tmp_path: Path):
    """jobSpec.tensorboard, with the service account Vertex AI writes as; Vertex then sets
    AIP_TENSORBOARD_LOG_DIR in the job, where the events go (tests/test_tracking.py)."""
    spec = vx_spec(
        tracking={"tensorboard": True},
        targets={"vertex": {"tensorboard": TENSORBOARD, "service_account": ACCOUNT}},
    )
    plan = plan_submission(spec, "vertex")
    assert plan.request["jobSpec"]["tensorboard"] == TENSORBOARD
    record = submit_plan(plan, Ledger(tmp_path / "ledger.sqlite"))
    sent = gcp.jobs[record.provider_id]["jobSpec"]  # through the SDK's own submit
    assert sent["tensorboard"] == TENSORBOARD and sent["serviceAccount"] == ACCOUNT
    with pytest.raises(InflameError, match=r"needs jobSpec\.serviceAccount"):
        validate_request({**plan.request, "jobSpec": {**sent, "serviceAccount": ""}})


@pytest.mark.parametrize(
    ("tracking", "vertex", "fragment"),
    [
        ({}, {"service_account": ACCOUNT}, "add `tensorboard = true` under [tracking]"),
        ({"tensorboard": True}, {}, "set `service_account"),
        (
            {"tensorboard": True},
            {"service_account": ACCOUNT, "tensorboard": TENSORBOARD.replace("central", "east")},
            "is in us-east1, but the job runs in us-central1",
        ),
        ({"tensorboard": True}, {"tensorboard": "tb-1"}, "a TensorBoard instance's resource name"),
    ],
)
def test_a_tensorboard_link_that_cannot_work_is_refused(vx_spec, tracking, vertex, fragment):
    tables = {"targets": {"vertex": {"tensorboard": TENSORBOARD, **vertex}}, "tracking": tracking}
    with pytest.raises(InflameError) as info:
        plan_submission(vx_spec(**tables), "vertex")
    message = " ".join(str(info.value).split())
    assert fragment in message and "vx.toml:" in message


def test_upload_folder_sends_each_file_once_and_a_changed_one_again(gcp, tmp_path: Path):
    """What `inflame loop --target vertex` uploads a round's training set with."""
    from inflame.targets.vertex import TARGET

    folder = tmp_path / "train"
    for name, data in (("duck/1.jpg", b"\xff\xd8one"), ("hen/2.jpg", b"\xff\xd8two")):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    locator = {"project": "my-proj", "region": "us-central1"}

    def uploads() -> int:
        return sum(1 for method, path, _ in gcp.requests if path.startswith("/upload/"))

    assert TARGET.upload_folder(folder, "gs://my-data/loops/r0/", locator) == 2
    stored = gcp.root / "my-data" / "loops" / "r0"
    assert (stored / "duck" / "1.jpg").read_bytes() == b"\xff\xd8one"
    assert (stored / "hen" / "2.jpg").read_bytes() == b"\xff\xd8two"
    assert uploads() == 2
    TARGET.upload_folder(folder, "gs://my-data/loops/r0", locator)  # the same bytes
    assert uploads() == 2
    (folder / "hen" / "2.jpg").write_bytes(b"\xff\xd8changed")
    TARGET.upload_folder(folder, "gs://my-data/loops/r0", locator)
    assert uploads() == 3 and (stored / "hen" / "2.jpg").read_bytes() == b"\xff\xd8changed"
