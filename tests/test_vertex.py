"""The Vertex AI target with the real google-cloud-aiplatform and google-cloud-storage: the
dry-run parses as the API's CustomJob type, the real submit path runs against a loopback fake
(REST transport), and the job's command runs in a simulated container with a /gcs mount."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from google.cloud.aiplatform_v1.types import CustomJob, Scheduling

from inflame.errors import InflameError
from inflame.ledger import Ledger
from inflame.submit import cancel, download, plan_submission, refresh, submit_plan
from inflame.targets.vertex import TARGET
from tests.conftest import guarded_env
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
    assert pool.container_spec.command == ["bash", "-c"]
    assert "python -m inflame.job spec.toml" in pool.container_spec.args[0]
    assert job.job_spec.scheduling.strategy == Scheduling.Strategy.SPOT
    assert job.job_spec.scheduling.timeout.total_seconds() == 3600
    assert job.job_spec.base_output_directory.output_uri_prefix.startswith(
        "gs://my-staging/inflame/jobs/tiny-vx-"
    )
    assert "spot yes" in " ".join(result.stderr.split())


@pytest.mark.parametrize(
    ("tables", "fragment"),
    [
        ({"targets": {"vertex": {"staging_bucket": "my-staging"}}}, "must be a bucket URI"),
        ({"targets": {"vertex": {"machine": "a2"}}}, "Did you mean `machine_type`?"),
        ({"data": {"train": "s3://bucket/train"}}, "Vertex AI reads data from Cloud Storage"),
    ],
)
def test_plan_errors_are_precise(vx_spec, tables, fragment):
    with pytest.raises(InflameError) as info:
        plan_submission(vx_spec(**tables), "vertex")
    assert fragment in " ".join(str(info.value).split())


def _run_container(plan, demo_set: Path, gcs: Path, work: Path) -> subprocess.CompletedProcess:
    """Vertex AI's container: buckets under /gcs (here `gcs`), AIP_* set from the base
    output directory, the worker pool's own command."""
    for name in ("train", "val"):
        if not (gcs / "my-data" / "fowl" / name).exists():
            shutil.copytree(demo_set / name, gcs / "my-data" / "fowl" / name)
    [pool] = plan.request["jobSpec"]["workerPoolSpecs"]
    base = plan.request["jobSpec"]["baseOutputDirectory"]["outputUriPrefix"]
    container = pool["containerSpec"]
    env = guarded_env(
        **{e["name"]: e["value"] for e in container["env"]},
        AIP_MODEL_DIR=f"{base}/model/",
        AIP_CHECKPOINT_DIR=f"{base}/checkpoints/",
        INFLAME_GCS_ROOT=str(gcs),
        INFLAME_WORKDIR=str(work),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    )
    return subprocess.run(
        [*container["command"], *container["args"]],
        env=env,
        capture_output=True,
        text=True,
        cwd=work.parent,
    )


def test_submit_run_resume_download_against_a_fake(
    vx_spec, demo_set: Path, tmp_path: Path, monkeypatch
):
    gcs = tmp_path / "gcs"
    plan = plan_submission(vx_spec(hyperparameters={"epochs": 2}), "vertex")
    ledger = Ledger(tmp_path / "ledger.sqlite")
    with FakeGCP(gcs) as fake:
        monkeypatch.setattr(TARGET, "client_options", fake.client_options)
        monkeypatch.setattr(TARGET, "storage_client", fake.storage_client)
        record = submit_plan(plan, ledger)
        assert record.provider_id.startswith("projects/123/locations/us-central1/customJobs/")
        assert "console.cloud.google.com/vertex-ai" in record.console_url
        [created] = [
            json.loads(b)
            for m, p, b in fake.requests
            if p.startswith("/v1/projects/my-proj/locations/us-central1/customJobs")
        ]
        sent = created["jobSpec"]
        assert (
            sent["workerPoolSpecs"][0]["containerSpec"]["args"]
            == plan.request["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["args"]
        )
        assert sent["baseOutputDirectory"] == plan.request["jobSpec"]["baseOutputDirectory"]
        assert sent["scheduling"]["restartJobOnWorkerRestart"] is True
        bundle = gcs / "my-staging" / "inflame" / "code" / f"{plan.bundle.sha256}.tar.gz"
        assert bundle.read_bytes() == plan.bundle.data
        assert refresh(record, ledger).state == "pending"

        # the job runs: its command reads the bundle and data through /gcs, writes AIP_MODEL_DIR
        first = _run_container(plan, demo_set, gcs, tmp_path / "work1")
        assert first.returncode == 0, first.stdout + first.stderr
        base = gcs / plan.request["jobSpec"]["baseOutputDirectory"]["outputUriPrefix"][5:]
        manifest = json.loads((base / "model" / "manifest.json").read_text())
        assert manifest["status"] == "completed" and manifest["platform"] == "vertex"
        (base / "checkpoints" / "epoch-0002.safetensors").unlink()  # preempted: restart
        shutil.rmtree(base / "model")
        second = _run_container(plan, demo_set, gcs, tmp_path / "work2")
        assert second.returncode == 0, second.stdout + second.stderr
        again = json.loads((base / "model" / "manifest.json").read_text())
        assert again["resumed"] and again["weights_sha256"] == manifest["weights_sha256"]

        fake.jobs[record.provider_id]["state"] = "JOB_STATE_SUCCEEDED"
        local = download(record, tmp_path / "downloaded")
        assert (
            json.loads((local / "manifest.json").read_text())["weights_sha256"]
            == manifest["weights_sha256"]
        )
        assert (local / "model" / "weights.safetensors").is_file()

        job_id = record.provider_id.rsplit("/", 1)[-1]
        for n in range(1, 4):
            fake.add_log(job_id, text=f"epoch {n}/3")
        fake.add_log(job_id, message="inflame: run complete")
        fake.add_log("999", text="another job's line")
        monkeypatch.setattr(TARGET, "logging_session", fake.logging_session)
        lines: list[str] = []
        from inflame.submit import follow

        state = follow(record, ledger, logs=True, emit=lines.append, sleep=lambda s: None)
        assert state.state == "completed"
        assert lines == ["epoch 1/3", "epoch 2/3", "epoch 3/3", "inflame: run complete"]

        second_record = submit_plan(plan, ledger, again=True)
        uploads = [p for m, p, _ in fake.requests if p.startswith("/upload/")]
        assert len(uploads) == 1  # the same code hash is not uploaded twice
        cancel(second_record, ledger)
        assert refresh(second_record, ledger).state == "stopping"


def test_missing_credentials_get_the_gcloud_hint(vx_spec, tmp_path: Path, monkeypatch):
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud"))
    monkeypatch.setenv("NO_GCE_CHECK", "true")  # no metadata-server probe
    ledger = Ledger(tmp_path / "ledger.sqlite")
    with pytest.raises(InflameError, match="gcloud auth application-default login"):
        submit_plan(plan_submission(vx_spec(), "vertex"), ledger)
    assert ledger.all()[0].status == "submit-failed"


def test_several_nodes_map_to_two_worker_pools(vx_spec):
    plan = plan_submission(vx_spec(compute={"gpus_per_node": 2, "nodes": 3}), "vertex")
    job = CustomJob.from_json(json.dumps(plan.request))
    primary, workers = job.job_spec.worker_pool_specs
    assert (primary.replica_count, workers.replica_count) == (1, 2)
    assert primary.machine_spec.accelerator_count == workers.machine_spec.accelerator_count == 2
    assert "--nnodes 3 --nproc-per-node 2" in workers.container_spec.args[0]
