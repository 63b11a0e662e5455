"""`inflame api`: training jobs over HTTP, on a loopback port. A job goes new → in_progress →
ready with its run; bad requests and failing jobs say why; a job survives a restart of the
service (resumed from its checkpoint) and its crash (followed to the end); cancel stops a
job at a safe point."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inflame.ledger import Ledger
from tests.helpers import LiveService, assert_clean_error, run_inflame

TOKEN = "jobs-token-for-tests-0123456789ab"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def start_api(tmp_path: Path, *extra: str, **env: str) -> LiveService:
    service = LiveService(
        ["api", "--root", tmp_path / "api", "--allowed-root", tmp_path, *extra],
        tmp_path,
        INFLAME_API_TOKEN=TOKEN,
        **env,
    )
    service.wait_ready()
    return service


def wait_for(service: LiveService, job_id: str, done: Any, timeout: float = 300) -> dict:
    """Poll the job until `done(job)`; every status seen is kept in the answer's `_seen`."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = service.client.get(f"/jobs/{job_id}", headers=AUTH).json()
        if not seen or seen[-1] != job["status"]:
            seen.append(job["status"])
        if done(job):
            return {**job, "_seen": seen}
        assert job["status"] != "error", job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never got there (seen {seen}): {service.log}")


def submit(service: LiveService, **body: Any) -> dict:
    answer = service.client.post("/jobs", json=body, headers=AUTH)
    assert answer.status_code == 201, answer.text
    assert answer.headers["location"] == f"/jobs/{answer.json()['id']}"
    return answer.json()


def test_a_job_goes_from_new_to_ready_with_its_run(write_spec, tmp_path: Path):
    write_spec()
    service = start_api(tmp_path)
    try:
        job = submit(service, spec_path="job.toml", overrides=["hyperparameters.epochs=2"])
        assert job["status"] == "new" and job["overrides"] == ["hyperparameters.epochs=2"]
        final = wait_for(service, job["id"], lambda j: j["status"] == "ready")
        assert final["_seen"][-2:] == ["in_progress", "ready"]
        run = Path(final["result"]["run_dir"])
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["status"] == "completed" and manifest["hyperparameters"]["epochs"] == 2
        assert final["result"]["weights_sha256"] == manifest["weights_sha256"]
        assert final["result"]["saved"]["epoch"] == manifest["saved"]["epoch"]
        assert final["metrics"]["epoch"] == 2 and "val_loss" in final["metrics"]
        listed = service.client.get("/jobs", headers=AUTH).json()["jobs"]
        assert [j["id"] for j in listed] == [job["id"]]
        assert service.client.get("/jobs?status=new", headers=AUTH).json() == {"jobs": []}
        log = service.client.get(f"/jobs/{job['id']}/log", headers=AUTH).text
        assert "epoch 2/2" in log
    finally:
        service.stop()


def test_bad_requests_and_failing_jobs_say_why(write_spec, tmp_path: Path):
    write_spec(hyperparameters={"architecture": "resnet19"})  # valid spec, fails in the app
    (tmp_path.parent / "outside.toml").write_text("[job]\n")
    service = start_api(tmp_path)
    try:
        assert service.client.get("/jobs").status_code == 401
        assert service.client.get("/healthz").status_code == 200
        refusals = {
            "outside": ({"spec_path": "../outside.toml"}, 403, "outside the service's allowed"),
            "missing": ({"spec_path": "nope.toml"}, 400, "no such file"),
            "both": ({"spec": "x", "spec_path": "job.toml"}, 400, "exactly one of"),
            "neither": ({}, 400, "exactly one of"),
            "invalid spec": ({"spec": "[job]\nname = 1\n"}, 422, "Invalid job spec"),
            "bad override": (
                {"spec_path": "job.toml", "overrides": ["nonsense"]},
                422,
                "expected `section.key=value`",
            ),
            "wrong type": ({"spec_path": 3}, 422, "spec_path"),
            "hyperparameter type": (
                {"spec_path": "job.toml", "overrides": ["hyperparameters.epochs=two"]},
                422,
                "hyperparameters.epochs",
            ),
            "unknown hyperparameter": (
                {"spec_path": "job.toml", "overrides": ["hyperparameters.learning_rte=0.1"]},
                422,
                "Did you mean `learning_rate`?",
            ),
            "no such app": ({"spec": '[job]\nname = "x"\napp = "./myapp"\n'}, 422, "myapp"),
            "control character": (
                {"spec_path": "job.toml", "overrides": ["hyperparameters.x=a\x00b"]},
                400,
                "no control characters",
            ),
            "not unicode": (b'{"spec": "\\udc80"}', 400, "not valid Unicode"),  # a lone surrogate
        }
        for name, (body, status, fragment) in refusals.items():
            if isinstance(body, bytes):
                headers = {**AUTH, "content-type": "application/json"}
                answer = service.client.post("/jobs", content=body, headers=headers)
            else:
                answer = service.client.post("/jobs", json=body, headers=AUTH)
            assert answer.status_code == status, (name, answer.text)
            assert fragment in answer.json()["error"], (name, answer.text)
        assert service.client.get("/jobs", headers=AUTH).json() == {"jobs": []}
        assert not list((tmp_path / "api" / "jobs").glob("*/job.toml"))  # nothing left
        chunks = (b"x" * 65536 for _ in range(8))  # no Content-Length: read up to the limit
        big = service.client.post(
            "/jobs", content=chunks, headers={**AUTH, "content-type": "application/json"}
        )
        assert big.status_code == 413 and "limit of 262,144 bytes" in big.json()["error"]
        assert service.client.get("/nowhere", headers=AUTH).json() == {"error": "Not Found"}
        second = run_inflame("api", "--root", tmp_path / "api", "--port", "0", cwd=tmp_path,
                             INFLAME_API_TOKEN=TOKEN)  # fmt: skip
        assert_clean_error(second, "Another `inflame api` serves")

        job = submit(service, spec_path="job.toml")
        failed = wait_for(service, job["id"], lambda j: j["status"] == "error")
        assert "Unknown architecture `resnet19`" in failed["error"]
        assert service.client.get("/jobs/nope", headers=AUTH).status_code == 404
        again = service.client.delete(f"/jobs/{job['id']}", headers=AUTH)
        assert again.status_code == 409 and "already error" in again.json()["error"]
    finally:
        service.stop()


def test_the_api_always_needs_a_token(tmp_path: Path):
    result = run_inflame("api", "--root", tmp_path / "api", "--port", "0", cwd=tmp_path)
    assert_clean_error(result, "always needs an API token", "INFLAME_API_TOKEN")


def _status_in_db(tmp_path: Path, job_id: str) -> str:
    with contextlib.closing(sqlite3.connect(tmp_path / "api" / "jobs.db")) as db:
        return db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]


def test_jobs_survive_a_restart_and_a_crash_of_the_service_and_cancel_stops_them(
    write_spec, tmp_path: Path
):
    write_spec("short.toml", hyperparameters={"epochs": 4})
    write_spec("long.toml", hyperparameters={"epochs": 60})
    first = start_api(tmp_path)
    try:
        short = submit(first, spec_path="short.toml")
        wait_for(first, short["id"], lambda j: (j.get("metrics") or {}).get("epoch", 0) >= 1)
    finally:
        first.stop()  # the job stops at a safe point and waits for the next start
    assert _status_in_db(tmp_path, short["id"]) == "new"

    second = start_api(tmp_path)
    try:
        final = wait_for(second, short["id"], lambda j: j["status"] == "ready")
        manifest = json.loads((Path(final["result"]["run_dir"]) / "manifest.json").read_text())
        assert manifest["resumed"] and manifest["status"] == "completed"
        assert final["attempts"] == 1  # a stop for a restart is not one of its attempts
        log = second.client.get(f"/jobs/{short['id']}/log", headers=AUTH).text
        assert "resuming at epoch" in log

        long = submit(second, spec_path="long.toml")
        running = wait_for(second, long["id"], lambda j: (j.get("metrics") or {}).get("epoch"))
    finally:
        second.process.send_signal(signal.SIGKILL)  # a crash: the job's process lives on
        second.process.wait(60)
    assert _status_in_db(tmp_path, long["id"]) == "in_progress"

    third = start_api(tmp_path)
    try:
        later = wait_for(
            third, long["id"], lambda j: j["metrics"]["epoch"] > running["metrics"]["epoch"]
        )
        assert later["status"] == "in_progress" and later["attempts"] == 1  # followed, not rerun
        cancel = third.client.delete(f"/jobs/{long['id']}", headers=AUTH)
        assert cancel.status_code == 202, cancel.text
        ended = wait_for(third, long["id"], lambda j: j["status"] == "cancelled", timeout=120)
        assert "keeps its last checkpoint" in ended["error"]
        run = tmp_path / "api" / "runs" / long["id"]
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["status"] == "interrupted" and manifest["stopped_by"] == "SIGTERM"
        assert ended["metrics"]["epoch"] < 60
    finally:
        third.stop()


@pytest.fixture(autouse=True)
def _no_stray_training(tmp_path: Path) -> Iterator[None]:
    """A failed test must not leave a training process behind."""
    yield
    database = tmp_path / "api" / "jobs.db"
    if not database.exists():
        return
    with contextlib.closing(sqlite3.connect(database)) as db:
        pids = [pid for (pid,) in db.execute("SELECT pid FROM jobs WHERE pid IS NOT NULL")]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_the_scheduler_cancels_what_a_job_is_now_and_a_job_that_cannot_start_is_an_error(
    tmp_path: Path,
):
    from inflame.jobs_api.scheduler import Scheduler
    from inflame.jobs_api.store import JobStore

    store = JobStore(tmp_path / "jobs.db")
    scheduler = Scheduler(store, python=str(tmp_path / "no-such-python"))
    spec = tmp_path / "job.toml"
    waiting, launched = (store.create(spec, [], tmp_path) for _ in range(2))
    store.update(launched.id, status="in_progress", pid=None)  # started after it was read
    assert scheduler.cancel(waiting.id).status == "cancelled"
    now = scheduler.cancel(launched.id)
    assert now.status == "in_progress" and now.cancel_requested  # stopped, then settled
    assert scheduler.cancel("nope") is None

    first, second = (store.create(spec, [], tmp_path) for _ in range(2))
    scheduler.parallel = 3
    scheduler.tick()  # neither can start: each is an error, and neither blocks the other
    for job in (first, second):
        failed = store.get(job.id)
        assert failed.status == "error" and "cannot start its process" in failed.error
    store.close()


def test_a_cloud_job_is_submitted_followed_and_cancelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """`target = sagemaker`: submitted as `inflame submit` would (to moto on a loopback port,
    refusing any request that breaks botocore's model), followed through the provider's
    state, settled as ready; a cancelled one is stopped there."""
    import boto3
    from moto.core.responses import ActionResult
    from moto.sagemaker import models
    from moto.sagemaker.responses import SageMakerResponse
    from moto.server import ThreadedMotoServer

    from inflame.targets.sagemaker import validate_request
    from tests.helpers import write_cloud_spec

    def training_job(name: str) -> Any:
        return models.sagemaker_backends["123456789012"]["us-east-1"].training_jobs[name]

    lenient = SageMakerResponse.create_training_job

    def strict(self):
        validate_request(json.loads(self.body))
        return lenient(self)

    def stop(self):  # moto does not implement StopTrainingJob
        training_job(self._get_param("TrainingJobName")).training_job_status = "Stopped"
        return ActionResult({})

    started = models.FakeTrainingJob.__init__

    def running(self, *args: Any, **kwargs: Any) -> None:  # moto completes jobs at once
        started(self, *args, **kwargs)
        self.training_job_status = "InProgress"

    monkeypatch.setattr(SageMakerResponse, "create_training_job", strict)
    monkeypatch.setattr(SageMakerResponse, "stop_training_job", stop, raising=False)
    monkeypatch.setattr(models.FakeTrainingJob, "__init__", running)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    service = None
    try:
        endpoint = "http://{}:{}".format(*server.get_host_and_port())
        keys = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **keys)
        s3.create_bucket(Bucket="inflame-jobs")
        write_cloud_spec(
            tmp_path / "sm.toml",
            "cloudy",
            {"train": "s3://inflame-jobs/data/train", "val": "s3://inflame-jobs/data/val"},
            "sagemaker",
            {
                "role": "arn:aws:iam::123456789012:role/inflame-sagemaker",
                "region": "us-east-1",
                "output": "s3://inflame-jobs/inflame",
            },
        )
        service = start_api(
            tmp_path,
            "--poll-seconds",
            "0.2",
            AWS_ENDPOINT_URL=endpoint,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
        )
        nowhere = {"spec_path": "sm.toml", "target": "nowhere"}
        refused = service.client.post("/jobs", json=nowhere, headers=AUTH)
        assert refused.status_code == 422 and "nowhere" in refused.json()["error"]

        first = submit(service, spec_path="sm.toml", target="sagemaker")
        seen = wait_for(service, first["id"], lambda j: (j.get("metrics") or {}).get("provider_id"))
        assert seen["status"] == "in_progress" and "run_dir" not in seen
        name = seen["metrics"]["provider_id"]
        assert training_job(name).role_arn.endswith("role/inflame-sagemaker")
        training_job(name).training_job_status = "Completed"
        done = wait_for(service, first["id"], lambda j: j["status"] == "ready")
        assert done["result"]["provider_id"] == name and done["result"]["target"] == "sagemaker"
        ledger = Ledger(tmp_path / "home" / "ledger.sqlite")
        assert ledger.get(done["result"]["ledger_id"]).status == "completed"

        second = submit(service, spec_path="sm.toml", target="sagemaker", overrides=["job.seed=4"])
        wait_for(service, second["id"], lambda j: (j.get("metrics") or {}).get("provider_id"))
        assert service.client.delete(f"/jobs/{second['id']}", headers=AUTH).status_code == 202
        ended = wait_for(service, second["id"], lambda j: j["status"] == "cancelled")
        assert training_job(ended["result"]["provider_id"]).training_job_status == "Stopped"
    finally:
        if service is not None:
            service.stop()
        server.stop()
