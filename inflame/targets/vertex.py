"""Google Vertex AI through google-cloud-aiplatform: a CustomJob with one worker pool.

The code bundle is uploaded once per content hash to
`<staging_bucket>/inflame/code/<sha256>.tar.gz` with google-cloud-storage. The container reads
it, and every `gs://bucket/path` [data] input, through the Cloud Storage FUSE mount at
`/gcs/bucket/path`; it writes the run directory to AIP_MODEL_DIR and checkpoints to
AIP_CHECKPOINT_DIR (both under the job's base output directory, also through /gcs), so a
restarted job resumes. `spot = true` uses the SPOT scheduling strategy.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from inflame.errors import InflameError
from inflame.packaging import Bundle
from inflame.spec import JobSpec
from inflame.targets.base import (
    JobState,
    Plan,
    Submitted,
    TargetSettings,
    launch_args,
    missing_sdk,
    plan_summary,
    unique_job_name,
)

KEYS = (
    "project",
    "region",
    "staging_bucket",
    "machine_type",
    "accelerator_type",
    "image",
    "service_account",
    "boot_disk_gb",
)
LOGGING_ENDPOINT = "https://logging.googleapis.com"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
DEFAULT_IMAGE = "us-docker.pkg.dev/vertex-ai/training/pytorch-gpu.2-4.py310:latest"
_STATES = {
    "JOB_STATE_QUEUED": "pending",
    "JOB_STATE_PENDING": "pending",
    "JOB_STATE_RUNNING": "running",
    "JOB_STATE_SUCCEEDED": "completed",
    "JOB_STATE_FAILED": "failed",
    "JOB_STATE_CANCELLING": "stopping",
    "JOB_STATE_CANCELLED": "stopped",
    "JOB_STATE_PAUSED": "pending",
    "JOB_STATE_EXPIRED": "failed",
    "JOB_STATE_UPDATING": "running",
    "JOB_STATE_PARTIALLY_SUCCEEDED": "failed",
}

ENTRY_SCRIPT = """\
set -euo pipefail
WORK="${{INFLAME_WORKDIR:-/tmp/inflame}}"
mkdir -p "$WORK" && tar -xzf "${{INFLAME_GCS_ROOT:-/gcs}}/{bundle}" -C "$WORK" && cd "$WORK"
python -m pip install --quiet --disable-pip-version-check -r requirements.txt
PYTHONPATH="$WORK/vendor${{PYTHONPATH:+:$PYTHONPATH}}" exec python -m inflame.job spec.toml
"""


def _split_gs(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("gs://") :].partition("/")
    return bucket, key


class VertexTarget:
    name = "vertex"
    extra = "gcp"

    def _sdk(self) -> Any:
        try:
            from google.cloud import aiplatform
        except ImportError as exc:
            raise missing_sdk(self.name, self.extra, exc) from None
        logging.getLogger("google.cloud.aiplatform").setLevel(logging.WARNING)  # chatter
        return aiplatform

    def plan(self, spec: JobSpec, bundle: Bundle) -> Plan:
        settings = TargetSettings(spec, self.name)
        settings.check_known(KEYS)
        project = settings.get("project", required=True, example='"my-project"')
        region = settings.get("region", required=True, example='"us-central1"')
        staging = settings.get("staging_bucket", required=True, example='"gs://my-bucket"')
        if not staging.startswith("gs://") or not _split_gs(staging)[0]:
            raise settings.fail(
                "staging_bucket",
                f"`staging_bucket` must be a bucket URI like gs://my-bucket, got {staging!r}.",
            )
        staging = staging.rstrip("/")
        machine_type = settings.get("machine_type", "g2-standard-8")
        accelerator = settings.get("accelerator_type", "NVIDIA_L4")
        image = settings.get("image", DEFAULT_IMAGE)
        for name, item in spec.data.items():
            if not item.value.startswith("gs://"):
                raise InflameError(
                    f"Invalid job spec, {spec.locate(('data', name))}: Vertex AI reads data from "
                    f"Cloud Storage (gs://…), but `{name}` is {item.value}. Upload it (e.g. "
                    f"`gcloud storage cp -r {item.value} gs://BUCKET/{name}`) and pass "
                    f"`--set data.{name}=gs://…`."
                )
        aiplatform = self._sdk()
        from google.auth.credentials import AnonymousCredentials
        from google.cloud.aiplatform_v1.types import CustomJob, Scheduling

        name = unique_job_name(spec.job.name.lower(), r"[^a-z0-9-]+")
        bucket, prefix = _split_gs(staging)
        code_key = f"{prefix + '/' if prefix else ''}inflame/code/{bundle.sha256}.tar.gz"
        base_output = f"{staging}/inflame/jobs/{name}"
        pool: dict[str, Any] = {
            "machine_spec": {"machine_type": machine_type},
            "replica_count": 1,
            "container_spec": {
                "image_uri": image,
                "command": ["bash", "-c"],
                "args": [
                    ENTRY_SCRIPT.format(bundle=f"{bucket}/{code_key}").rstrip("\n")
                    + launch_args(spec)
                    + "\n"
                ],
                "env": [
                    {"name": "INFLAME_PLATFORM", "value": "vertex"},
                    {"name": "PYTHONUNBUFFERED", "value": "1"},
                ],
            },
            "disk_spec": {
                "boot_disk_type": "pd-ssd",
                "boot_disk_size_gb": spec.compute.disk_gb
                or settings.get("boot_disk_gb", 100, kind=int),
            },
        }
        if spec.compute.gpus_per_node:
            pool["machine_spec"].update(
                accelerator_type=accelerator, accelerator_count=spec.compute.gpus_per_node
            )
        # Build the job offline: anonymous credentials, no request is sent.
        job = aiplatform.CustomJob(
            display_name=name,
            # pool 0: the primary node; pool 1: the other nodes (Vertex's CLUSTER_SPEC names both)
            worker_pool_specs=[pool]
            + (
                [{**pool, "replica_count": spec.compute.nodes - 1}]
                if spec.compute.nodes > 1
                else []
            ),
            base_output_dir=base_output,
            project=project,
            location=region,
            credentials=AnonymousCredentials(),
            staging_bucket=staging,
            labels={
                "inflame-job": re.sub(r"[^a-z0-9_-]", "-", spec.job.name.lower())[:63],
                "inflame-bundle": bundle.sha256[:12],
            },
        )
        scheduling = Scheduling(restart_job_on_worker_restart=True)
        if spec.compute.max_runtime_s:
            scheduling.timeout = f"{spec.compute.max_runtime_s}s"
        if spec.compute.spot:
            scheduling.strategy = Scheduling.Strategy.SPOT
        job._gca_resource.job_spec.scheduling = scheduling
        if "service_account" in settings.table:
            job._gca_resource.job_spec.service_account = settings.get("service_account")
        request = job.to_dict()
        CustomJob.from_json(json.dumps(request))  # the API's own type accepts it
        summary = plan_summary(
            self.name,
            name,
            spec,
            bundle,
            where={
                "project / region": f"{project} / {region}",
                "machine": f"{machine_type} + {spec.compute.gpus_per_node} x {accelerator}",
            },
            image=image,
            spot="SPOT scheduling, restarts resume",
            outputs=f"{base_output}/model/",
        )
        return Plan(
            target=self.name,
            job_name=name,
            request=request,
            rendered=json.dumps(request, indent=2),
            summary=summary,
            bundle=bundle,
            spec_sha256=spec.resolved_sha256,
            locator={"project": project, "region": region, "staging_bucket": staging},
            uploads={f"gs://{bucket}/{code_key}": f"code bundle ({bundle.size} bytes)"},
        )

    def _init(self, locator: dict[str, Any]) -> Any:
        aiplatform = self._sdk()
        aiplatform.init(
            project=locator["project"],
            location=locator["region"],
            staging_bucket=locator["staging_bucket"],
            **self.client_options(),
        )
        return aiplatform

    def client_options(self) -> dict[str, Any]:
        """Extra aiplatform.init arguments (tests point the SDK at a loopback fake)."""
        return {}

    def storage_client(self, locator: dict[str, Any]) -> Any:
        from google.cloud import storage

        return storage.Client(project=locator["project"])

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from google.api_core import exceptions as api_exceptions
        from google.auth import exceptions as auth_exceptions

        try:
            return fn(*args, **kwargs)
        except auth_exceptions.DefaultCredentialsError:
            raise InflameError(
                f"{what}: no Google Cloud credentials. Run `gcloud auth "
                "application-default login` (or set "
                "GOOGLE_APPLICATION_CREDENTIALS); `inflame submit --dry-run` "
                "needs none."
            ) from None
        except api_exceptions.GoogleAPIError as exc:
            raise InflameError(f"{what}: Google Cloud said {exc}") from None

    def submit(self, plan: Plan) -> Submitted:
        from google.cloud.aiplatform_v1.types import Scheduling

        aiplatform = self._call("Connecting to Vertex AI", self._init, plan.locator)
        bucket_name = next(iter(plan.uploads))
        bucket, key = _split_gs(bucket_name)
        storage = self._call("Connecting to Cloud Storage", self.storage_client, plan.locator)
        blob = storage.bucket(bucket).blob(key)
        if not self._call("Checking the code bundle", blob.exists):
            self._call(
                f"Uploading the code bundle to {bucket_name}",
                blob.upload_from_string,
                plan.bundle.data,
                content_type="application/gzip",
            )
        from google.cloud.aiplatform_v1.types import CustomJob as CustomJobProto

        proto = CustomJobProto.from_json(json.dumps(plan.request))
        job = aiplatform.CustomJob(
            display_name=proto.display_name,
            worker_pool_specs=[type(s).to_dict(s) for s in proto.job_spec.worker_pool_specs],
            base_output_dir=proto.job_spec.base_output_directory.output_uri_prefix,
            labels=dict(proto.labels),
        )
        scheduling = proto.job_spec.scheduling
        timeout = int(scheduling.timeout.total_seconds()) if scheduling.timeout else None
        spot = scheduling.strategy == Scheduling.Strategy.SPOT
        self._call(
            "Creating the Vertex AI custom job",
            job.submit,
            service_account=proto.job_spec.service_account or None,
            timeout=timeout,
            restart_job_on_worker_restart=scheduling.restart_job_on_worker_restart,
            scheduling_strategy=Scheduling.Strategy.SPOT if spot else None,
        )
        region, project = plan.locator["region"], plan.locator["project"]
        job_id = job.resource_name.rsplit("/", 1)[-1]
        return Submitted(
            provider_id=job.resource_name,
            console_url=f"https://console.cloud.google.com/vertex-ai/locations/{region}/"
            f"training/{job_id}/cpu?project={project}",
        )

    def _job(self, provider_id: str, locator: dict[str, Any]) -> Any:
        aiplatform = self._call("Connecting to Vertex AI", self._init, locator)
        return self._call("Reading the job", aiplatform.CustomJob.get, provider_id)

    def status(self, provider_id: str, locator: dict[str, Any]) -> JobState:
        job = self._job(provider_id, locator)
        provider_state = job.state.name
        error = job.error.message if job._gca_resource.error else ""
        return JobState(
            state=_STATES.get(provider_state, "pending"),
            provider_state=provider_state,
            message=error,
            model_uri=job._gca_resource.job_spec.base_output_directory.output_uri_prefix
            + "/model/",
        )

    def logging_session(self, locator: dict[str, Any]) -> tuple[Any, str]:
        """An authorized HTTP session for Cloud Logging, and the API's base URL."""
        import google.auth
        from google.auth.transport.requests import AuthorizedSession

        credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
        return AuthorizedSession(credentials), LOGGING_ENDPOINT

    def logs(self, provider_id: str, locator: dict[str, Any]) -> Iterator[str]:
        """The job's log lines from Cloud Logging (resource type ml_job), oldest first."""
        session, endpoint = self._call("Connecting to Cloud Logging", self.logging_session, locator)
        job_id = provider_id.rsplit("/", 1)[-1]
        body: dict[str, Any] = {
            "resourceNames": [f"projects/{locator['project']}"],
            "filter": f'resource.type="ml_job" AND resource.labels.job_id="{job_id}"',
            "orderBy": "timestamp asc",
            "pageSize": 1000,
        }
        while True:
            reply = session.post(f"{endpoint}/v2/entries:list", json=body, timeout=60)
            if reply.status_code != 200:
                raise InflameError(
                    f"Reading the job's logs: Cloud Logging said "
                    f"{reply.status_code}: {reply.text[:300]}"
                )
            page = reply.json()
            for entry in page.get("entries", []):
                payload = entry.get("jsonPayload") or {}
                yield entry.get("textPayload") or payload.get("message") or json.dumps(payload)
            if not page.get("nextPageToken"):
                return
            body["pageToken"] = page["nextPageToken"]

    def cancel(self, provider_id: str, locator: dict[str, Any]) -> None:
        self._call("Cancelling the job", self._job(provider_id, locator).cancel)

    def download(
        self, provider_id: str, locator: dict[str, Any], destination: Path, state: JobState
    ) -> Path:
        if not state.model_uri:
            raise InflameError(f"Job {provider_id} completed but reports no model artifact.")
        bucket, prefix = _split_gs(state.model_uri)
        client = self._call("Connecting to Cloud Storage", self.storage_client, locator)
        for blob in self._call(
            "Listing the job's outputs", lambda: list(client.list_blobs(bucket, prefix=prefix))
        ):
            relative = blob.name[len(prefix) :].lstrip("/")
            if not relative or relative.endswith("/") or ".." in Path(relative).parts:
                continue
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            self._call(
                f"Downloading gs://{bucket}/{blob.name}", blob.download_to_filename, str(target)
            )
        return destination


TARGET = VertexTarget()
