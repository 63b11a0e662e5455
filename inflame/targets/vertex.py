"""Google Vertex AI, through google-cloud-aiplatform: a CustomJob; everything inflame knows
about Vertex AI lives in this module.

The code bundle is uploaded once per content hash to
`<staging_bucket>/inflame/code/<sha256>.tar.gz` with google-cloud-storage (a bundle already
there is reused only when its MD5, as Cloud Storage computed it, matches). Inside the
container every bucket is mounted at `/gcs/<bucket>` (Cloud Storage FUSE): the bootstrap
unpacks the bundle from there, data inputs `gs://b/p` are read at `/gcs/b/p`, and the run
directory and checkpoints go to AIP_MODEL_DIR and AIP_CHECKPOINT_DIR (under the job's base
output directory), so a restarted job resumes. `spot = true` uses the SPOT scheduling
strategy. Several nodes are worker pool 0 (the primary) plus a pool of the others; each node
starts its processes with torchrun, from CLUSTER_SPEC (docs/platforms.md).

Every request parses as the API's own CustomJob message (unknown fields rejected) and is
checked against the documented rules the message cannot express: machine types and their
GPUs, label and name limits, disks, the primary pool's single replica.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import mimetypes
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inflame.errors import InflameError, did_you_mean
from inflame.targets import base
from inflame.targets.base import (
    BUNDLE_ENV,
    BoundPaths,
    Capabilities,
    Cluster,
    JobPaths,
    JobState,
    Plan,
    Provider,
    Setting,
    Submitted,
    TargetSettings,
)
from inflame.targets.sdk import Calls, ErrorTable, import_sdk

if TYPE_CHECKING:  # pragma: no cover
    from inflame.packaging import Bundle
    from inflame.spec import JobSpec

LOGGING_ENDPOINT = "https://logging.googleapis.com"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# Google publishes its prebuilt training images only under `:latest` per framework version
# ("Using image names without the latest tag isn't supported"): the name pins torch 2.4 and
# Python 3.10; pin the exact build with `image = "…@sha256:…"`.
DEFAULT_IMAGE = "us-docker.pkg.dev/vertex-ai/training/pytorch-gpu.2-4.py310:latest"
IMAGE_TORCH = "2.4"
GCS_MOUNT = "/gcs"
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
BUCKET_RE = r"[a-z0-9][a-z0-9_.-]{1,61}[a-z0-9]"
SETTINGS = (
    Setting(
        "project",
        required=True,
        example='"my-project"',
        pattern=r"[a-z][a-z0-9-]{4,28}[a-z0-9]",
        rule="a project id is 6-30 lowercase letters, digits or hyphens.",
    ),
    Setting(
        "region",
        required=True,
        example='"us-central1"',
        pattern=r"[a-z]+-[a-z]+\d+",
        rule="`region` must be a Google Cloud region like us-central1.",
    ),
    Setting(
        "staging_bucket",
        required=True,
        example='"gs://my-bucket"',
        pattern=rf"gs://{BUCKET_RE}(/[^\s]*)?",
        rule="`staging_bucket` must be gs://BUCKET (3-63 lowercase letters, digits, `-`, `_` "
        "or `.`), optionally with a folder.",
    ),
    Setting("machine_type"),  # default: derived from the accelerator and its count
    Setting("accelerator_type", "NVIDIA_L4"),
    Setting("image", DEFAULT_IMAGE),
    Setting(
        "service_account",
        pattern=r"[^@\s]+@[a-z0-9.-]+\.gserviceaccount\.com",
        rule="`service_account` must be a service account's email address.",
    ),
    Setting("boot_disk_gb", 100, kind=int, minimum=100, maximum=64000),
    # `inflame deploy --target vertex` (inflame/deploy/vertex.py)
    Setting("endpoint_machine_type", "n1-standard-4"),
    Setting("endpoint_replicas", 1, kind=int, minimum=1, maximum=1000),
    Setting("endpoint_top_k", 5, kind=int, minimum=1, maximum=1000),  # labels per answer
    Setting("inference_image"),  # default: the region's prebuilt PyTorch prediction image
    Setting(  # a Vertex AI TensorBoard instance: Vertex sets AIP_TENSORBOARD_LOG_DIR
        "tensorboard",
        pattern=r"projects/[^/\s]+/locations/[a-z0-9-]+/tensorboards/\d+",
        rule="`tensorboard` must be a TensorBoard instance's resource name, "
        "projects/PROJECT/locations/REGION/tensorboards/ID.",
    ),
)
_LABEL_KEY_RE = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LABEL_VALUE_RE = re.compile(r"[a-z0-9_-]{0,63}")
BOOT_DISK_TYPES = ("pd-ssd", "pd-standard", "hyperdisk-balanced")
HYPERDISK_MACHINES = ("a3-ultragpu-8g", "a4-highgpu-8g")  # boot from hyperdisk-balanced

# Machine types that come with their GPUs (Vertex AI "Configure compute resources").
FIXED_GPU_MACHINES: dict[str, tuple[str, int]] = {
    **{f"g2-standard-{n}": ("NVIDIA_L4", 1) for n in (4, 8, 12, 16, 32)},
    "g2-standard-24": ("NVIDIA_L4", 2),
    "g2-standard-48": ("NVIDIA_L4", 4),
    "g2-standard-96": ("NVIDIA_L4", 8),
    **{f"a2-highgpu-{n}g": ("NVIDIA_TESLA_A100", n) for n in (1, 2, 4, 8)},
    "a2-megagpu-16g": ("NVIDIA_TESLA_A100", 16),
    **{f"a2-ultragpu-{n}g": ("NVIDIA_A100_80GB", n) for n in (1, 2, 4, 8)},
    **{f"a3-highgpu-{n}g": ("NVIDIA_H100_80GB", n) for n in (1, 2, 4, 8)},
    "a3-megagpu-8g": ("NVIDIA_H100_MEGA_80GB", 8),
    "a3-ultragpu-8g": ("NVIDIA_H200_141GB", 8),
    "a4-highgpu-8g": ("NVIDIA_B200", 8),
    **{f"g4-standard-{48 * n}": ("NVIDIA_RTX_PRO_6000", n) for n in (1, 2, 4, 8)},
}
# N1 machine types take T4, V100, P100 or P4 GPUs, in these counts.
_N1_SMALL = ("n1-standard-4", "n1-standard-8", "n1-highmem-2", "n1-highmem-4", "n1-highmem-8")
_N1_16 = ("n1-standard-16", "n1-highmem-16", "n1-highcpu-16")
_N1_32 = ("n1-standard-32", "n1-highmem-32", "n1-highcpu-32")
_N1_64 = ("n1-highcpu-64",)
_N1_96 = ("n1-standard-64", "n1-standard-96", "n1-highmem-64", "n1-highmem-96", "n1-highcpu-96")
N1_GPUS: dict[str, dict[str, tuple[int, ...]]] = {}
for _machines, _counts in (
    (_N1_SMALL, {"P4": (1, 2, 4), "P100": (1, 2, 4), "T4": (1, 2, 4), "V100": (1, 2, 4, 8)}),
    (_N1_16, {"P4": (1, 2, 4), "P100": (1, 2, 4), "T4": (1, 2, 4), "V100": (2, 4, 8)}),
    (_N1_32, {"P4": (2, 4), "P100": (2, 4), "T4": (2, 4), "V100": (4, 8)}),
    (_N1_64, {"P4": (4,), "P100": (4,), "T4": (4,), "V100": (8,)}),
    (_N1_96, {"P4": (4,), "T4": (4,), "V100": (8,)}),
):
    for _machine in _machines:
        N1_GPUS[_machine] = {f"NVIDIA_TESLA_{k}": v for k, v in _counts.items()}
ACCELERATORS = sorted(
    {a for a, _ in FIXED_GPU_MACHINES.values()} | {a for c in N1_GPUS.values() for a in c}
)
CPU_MACHINE = "n1-standard-8"  # for gpus_per_node = 0


def default_machine(accelerator: str, count: int) -> str | None:
    """The smallest machine type that carries `count` GPUs of `accelerator`."""
    if count == 0:
        return CPU_MACHINE
    fixed = [m for m, (a, n) in FIXED_GPU_MACHINES.items() if a == accelerator and n == count]
    if fixed:
        preferred = [m for m in fixed if m == "g2-standard-8"] or fixed  # L4 x1: 8 vCPUs
        return preferred[0]
    # N1: about 8 vCPUs per GPU where the table allows it, else any machine that fits
    sized = {1: "n1-standard-8", 2: "n1-standard-16", 4: "n1-standard-32", 8: "n1-standard-64"}
    for machine in (sized.get(count), *N1_GPUS):
        if machine and count in N1_GPUS[machine].get(accelerator, ()):
            return machine
    return None


def machine_problem(machine: str, accelerator: str | None, count: int) -> str | None:
    """Why Vertex AI would refuse this machine/accelerator/count (None: it accepts it)."""
    if machine in FIXED_GPU_MACHINES:
        need, n = FIXED_GPU_MACHINES[machine]
        if accelerator != need or count != n:
            return f"{machine} comes with {n} x {need}, not {count} x {accelerator or 'no GPU'}"
        return None
    if accelerator is None or count == 0:
        return None
    if machine in N1_GPUS:
        allowed = N1_GPUS[machine].get(accelerator)
        if not allowed:
            return f"{machine} cannot take {accelerator} GPUs"
        if count not in allowed:
            counts = ", ".join(map(str, allowed))
            return f"{machine} takes {counts} x {accelerator}, not {count}"
        return None
    return f"{machine} cannot take GPUs (attach them to an N1 machine type, or use A2/A3/G2)"


def name_and_label_violations(
    display_name: str, labels: Mapping[str, str], where: str = ""
) -> Iterator[str]:
    """Vertex AI's limits on a resource's displayName and labels."""
    if not 1 <= len(display_name) <= 128:
        yield f"{where}displayName: {len(display_name)} characters, allowed 1..128"
    if len(labels) > 64:
        yield f"{where}labels: {len(labels)}, at most 64"
    for key, value in labels.items():
        if not _LABEL_KEY_RE.fullmatch(key) or not _LABEL_VALUE_RE.fullmatch(value):
            yield (
                f"{where}labels[{key!r}]: keys are 1-63 lowercase letters, digits, _ or - "
                f"(starting with a letter), values at most 63 of them; got {key!r}={value!r}"
            )


def checked_region(settings: TargetSettings) -> str:
    """`region`, when it is one Vertex AI runs in (the SDK's own list of regions)."""
    constants = import_sdk("vertex", "gcp", "google.cloud.aiplatform.constants.base")
    region = settings["region"]
    if region not in constants.SUPPORTED_REGIONS:
        raise settings.fail(
            "region",
            f"{region!r} is not a region Vertex AI runs in."
            f"{did_you_mean(region, constants.SUPPORTED_REGIONS)} Regions: "
            "https://cloud.google.com/vertex-ai/docs/general/locations",
        )
    return region


def _rule_violations(job: Any) -> Iterator[str]:
    """Vertex AI's documented CustomJob rules the message type does not express."""
    from google.cloud.aiplatform_v1.types import AcceleratorType

    yield from name_and_label_violations(job.display_name, job.labels)
    spec = job.job_spec
    pools = spec.worker_pool_specs
    if not 1 <= len(pools) <= 4:
        yield f"jobSpec.workerPoolSpecs: {len(pools)} pools, allowed 1..4"
    for i, pool in enumerate(pools):
        where = f"jobSpec.workerPoolSpecs[{i}]"
        if pool.replica_count < 1:
            yield f"{where}.replicaCount: at least 1"
        if i == 0 and pool.replica_count != 1:
            yield f"{where}.replicaCount: the primary pool has exactly 1 replica"
        machine = pool.machine_spec
        if not machine.machine_type:
            yield f"{where}.machineSpec.machineType: required"
        accelerator = machine.accelerator_type
        name = (
            None
            if accelerator == AcceleratorType.ACCELERATOR_TYPE_UNSPECIFIED
            else (AcceleratorType(accelerator).name)
        )
        problem = machine_problem(machine.machine_type, name, machine.accelerator_count)
        if problem:
            yield f"{where}.machineSpec: {problem}"
        container = pool.container_spec
        if not container.image_uri:
            yield f"{where}.containerSpec.imageUri: required"
        for env in container.env:
            if not base.ENV_NAME.fullmatch(env.name):
                yield f"{where}.containerSpec.env: {env.name!r} is not a valid variable name"
        disk = pool.disk_spec
        if disk.boot_disk_type and disk.boot_disk_type not in BOOT_DISK_TYPES:
            yield f"{where}.diskSpec.bootDiskType: {disk.boot_disk_type!r} is not one of " + (
                ", ".join(BOOT_DISK_TYPES)
            )
        if disk.boot_disk_size_gb and not 100 <= disk.boot_disk_size_gb <= 64000:
            yield f"{where}.diskSpec.bootDiskSizeGb: {disk.boot_disk_size_gb}, allowed 100..64000"
    output = spec.base_output_directory.output_uri_prefix
    if output and not re.fullmatch(rf"gs://{BUCKET_RE}(/.*)?", output):
        yield f"jobSpec.baseOutputDirectory: {output!r} is not a gs:// URI of a valid bucket"
    if spec.scheduling.timeout and spec.scheduling.timeout.total_seconds() <= 0:
        yield "jobSpec.scheduling.timeout: must be positive"
    if spec.tensorboard:  # "Training with TensorBoard": a service account and an output folder
        if not spec.service_account:
            yield "jobSpec.tensorboard: needs jobSpec.serviceAccount"
        if not output:
            yield "jobSpec.tensorboard: needs jobSpec.baseOutputDirectory"


def validate_request(request: Mapping[str, Any]) -> None:
    """Check a CustomJob request as strictly as Vertex AI does (offline)."""
    from google.cloud.aiplatform_v1.types import CustomJob

    try:
        job = CustomJob.from_json(json.dumps(request))  # unknown fields are errors
    except Exception as exc:
        raise InflameError(f"The Vertex AI request is not a valid CustomJob: {exc}") from None
    problems = list(_rule_violations(job))
    base.refuse_problems("Vertex AI request", problems)


CHECKS = (
    "the Vertex AI API's own CustomJob message (aiplatform_v1), unknown fields rejected",
    "Vertex AI's documented rules: machine type and accelerator table, GPU counts, the "
    "primary pool's single replica, label, name, disk and environment-variable limits",
    "the staging bucket's name against Cloud Storage's naming rules",
)


def _error_table() -> ErrorTable:
    from google.api_core import exceptions as api
    from google.auth import exceptions as auth

    transient_types = (
        api.ServiceUnavailable,
        api.TooManyRequests,
        api.InternalServerError,
        api.GatewayTimeout,
        api.DeadlineExceeded,
        auth.TransportError,
    )

    def explain(exc: BaseException) -> str | None:
        if isinstance(exc, (auth.DefaultCredentialsError, auth.RefreshError)):
            return (
                "no usable Google Cloud credentials. Run `gcloud auth application-default "
                "login` (or set GOOGLE_APPLICATION_CREDENTIALS); `inflame submit --dry-run` "
                "needs none."
            )
        if isinstance(exc, api.PermissionDenied):
            return f"Google Cloud said {exc}. Check your roles on the project and bucket."
        if isinstance(exc, (api.GoogleAPIError, auth.GoogleAuthError)):
            return f"Google Cloud said {exc}"
        return None

    def transient(exc: BaseException) -> bool:
        import requests

        return isinstance(exc, (*transient_types, requests.ConnectionError))

    return ErrorTable(explain, transient)


class Vertex(Provider):
    name = "vertex"
    extra = "gcp"
    capabilities = Capabilities(
        spot="SPOT scheduling, restarts resume from checkpoints",
        logs="Cloud Logging (resource type ml_job)",
        data_schemes=("gs://",),
        input_name=r".+",  # the job reads inputs through /gcs; Vertex AI never sees the names
        input_name_rule="",
        upload_hint="gcloud storage cp -r {path} gs://BUCKET/{name}",
    )

    def __init__(self) -> None:
        self.calls = Calls(_error_table)

    def _sdk(self) -> Any:
        aiplatform = import_sdk(self.name, self.extra, "google.cloud.aiplatform")
        logging.getLogger("google.cloud.aiplatform").setLevel(logging.WARNING)  # chatter
        return aiplatform

    # ---- plan -----------------------------------------------------------------------------

    def _machine(self, settings: TargetSettings, spec: JobSpec) -> tuple[str, str | None, list]:
        """(machine type, accelerator or None, warnings), checked against the GPU tables."""
        gpus = spec.compute.gpus_per_node
        accelerator = settings["accelerator_type"]
        if accelerator not in ACCELERATORS:
            raise settings.fail(
                "accelerator_type",
                f"unknown accelerator {accelerator!r}. Vertex AI GPUs: {', '.join(ACCELERATORS)}.",
            )
        machine = settings["machine_type"]
        if machine is None:
            machine = default_machine(accelerator, gpus)
            if machine is None:
                raise settings.fail(
                    "accelerator_type",
                    f"no Vertex AI machine type carries {gpus} x {accelerator}. Change "
                    "compute.gpus_per_node, or set `machine_type` and `accelerator_type`.",
                )
        if machine in FIXED_GPU_MACHINES:
            fixed = {m: n for m, (a, n) in FIXED_GPU_MACHINES.items()}
            warnings = base.check_gpus(
                settings, "machine_type", machine, fixed, family=machine.split("-")[0]
            )
            carried = FIXED_GPU_MACHINES[machine][0]
            if settings.given("accelerator_type") and accelerator != carried:
                raise settings.fail(
                    "accelerator_type",
                    f"{machine} comes with {carried} GPUs, not {accelerator}. Remove "
                    "`accelerator_type`, or pick a machine type for it.",
                )
            return machine, carried, warnings
        problem = machine_problem(machine, accelerator if gpus else None, gpus)
        if problem:
            suggestion = default_machine(accelerator, gpus)
            hint = f" For {gpus} x {accelerator}, use {suggestion}." if suggestion else ""
            raise settings.fail("machine_type", f"{problem}.{hint}")
        return machine, accelerator if gpus else None, []

    def plan(self, spec: JobSpec, bundle: Bundle) -> Plan:
        settings = TargetSettings(spec, self.name, SETTINGS)
        project, region = settings["project"], checked_region(settings)
        staging = settings["staging_bucket"].rstrip("/")
        machine, accelerator, warnings = self._machine(settings, spec)
        image = settings["image"]
        image_torch = "" if settings.given("image") else IMAGE_TORCH
        disk_gb = spec.compute.disk_gb or settings["boot_disk_gb"]
        if not 100 <= disk_gb <= 64000:
            raise InflameError(
                f"Invalid job spec, {spec.locate(('compute', 'disk_gb'))}: Vertex AI boot disks "
                f"are 100 to 64000 GB, not {disk_gb}."
            )
        warnings += base.image_torch_warning(self.name, image, image_torch)
        aiplatform = self._sdk()
        from google.auth.credentials import AnonymousCredentials
        from google.cloud.aiplatform_v1.types import Scheduling

        name = base.unique_job_name(spec.job.name.lower(), r"[^a-z0-9-]+", limit=128)
        bucket, prefix = base.split_uri(staging)
        code_key = f"{prefix + '/' if prefix else ''}inflame/code/{bundle.sha256}.tar.gz"
        base_output = f"{staging}/inflame/jobs/{name}"
        environment = base.job_environment(spec, self.name, image, image_torch)
        environment[BUNDLE_ENV] = f"{GCS_MOUNT}/{bucket}/{code_key}"
        pool: dict[str, Any] = {
            "machine_spec": {"machine_type": machine},
            "replica_count": 1,
            "container_spec": {
                "image_uri": image,
                "command": ["sh", "-c"],
                "args": [base.bootstrap_command(spec)],
                "env": [{"name": k, "value": v} for k, v in environment.items()],
            },
            "disk_spec": {
                "boot_disk_type": "hyperdisk-balanced"
                if machine in HYPERDISK_MACHINES
                else "pd-ssd",
                "boot_disk_size_gb": disk_gb,
            },
        }
        if accelerator:
            pool["machine_spec"].update(
                accelerator_type=accelerator, accelerator_count=spec.compute.gpus_per_node
            )
        # Built offline: anonymous credentials, no request is sent.
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
        if settings["service_account"]:
            job._gca_resource.job_spec.service_account = settings["service_account"]
        if settings["tensorboard"]:
            self._link_tensorboard(spec, settings, region)
            job._gca_resource.job_spec.tensorboard = settings["tensorboard"]
        request = job.to_dict()
        validate_request(request)
        gpus = f" + {spec.compute.gpus_per_node} x {accelerator}" if accelerator else ""
        return base.build_plan(
            self,
            spec,
            bundle,
            name,
            request,
            where={"project / region": f"{project} / {region}", "machine": machine + gpus},
            image=image,
            image_torch=image_torch,
            outputs=f"{base_output}/model/",
            locator={"project": project, "region": region, "staging_bucket": staging},
            uploads={f"gs://{bucket}/{code_key}": f"code bundle ({bundle.size} bytes)"},
            checks=CHECKS,
            endpoint=f"POST https://{region}-aiplatform.googleapis.com/v1/projects/{project}"
            f"/locations/{region}/customJobs",
            warnings=warnings,
        )

    # ---- submit and follow ------------------------------------------------------------------

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
        storage = import_sdk(self.name, self.extra, "google.cloud.storage")
        return storage.Client(project=locator["project"])

    def upload_once(
        self,
        storage: Any,
        uri: str,
        data: bytes,
        content_type: str = "application/gzip",
        what: str = "code bundle",
    ) -> None:
        """Upload `data` (a code bundle, a model archive) unless an object with the same MD5
        is there already."""
        bucket, key = base.split_uri(uri)
        blob = self.calls.read(
            f"Checking the {what} at {uri}", storage.bucket(bucket).get_blob, key
        )
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
        if blob is not None and blob.md5_hash == md5:
            return  # the same bytes, verified: not uploaded twice
        self.calls.run(
            f"Uploading the {what} to {uri}",
            storage.bucket(bucket).blob(key).upload_from_string,
            data,
            content_type=content_type,
            checksum="md5",  # the client compares what Cloud Storage received
        )

    def upload_folder(self, folder: Path, uri: str, locator: dict[str, Any]) -> int:
        storage = self.calls.run("Connecting to Cloud Storage", self.storage_client, locator)

        def put(name: str, to: str, data: bytes) -> None:
            kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
            self.upload_once(storage, to, data, kind, f"file {name}")

        return base.upload_tree(folder, uri, put)

    @staticmethod
    def _link_tensorboard(spec: JobSpec, settings: Any, region: str) -> None:
        """A TensorBoard instance needs events to show (`[tracking] tensorboard = true`), a
        service account to write them, and the job's region."""
        if not spec.tracking.tensorboard:
            raise settings.fail(
                "tensorboard",
                "a TensorBoard instance is linked, but the run writes no events: add "
                "`tensorboard = true` under [tracking].",
            )
        if not settings["service_account"]:
            raise settings.fail(
                "tensorboard",
                "Vertex AI writes to a TensorBoard instance as the job's service account: "
                'set `service_account = "NAME@PROJECT.iam.gserviceaccount.com"` too.',
            )
        location = settings["tensorboard"].split("/")[3]
        if location != region:
            raise settings.fail(
                "tensorboard",
                f"the TensorBoard instance is in {location}, but the job runs in {region}; "
                "Vertex AI needs them in the same region.",
            )

    def submit(self, plan: Plan) -> Submitted:
        from google.cloud.aiplatform_v1.types import CustomJob as CustomJobProto
        from google.cloud.aiplatform_v1.types import Scheduling

        aiplatform = self.calls.run("Connecting to Vertex AI", self._init, plan.locator)
        storage = self.calls.run("Connecting to Cloud Storage", self.storage_client, plan.locator)
        for uri in plan.uploads:
            self.upload_once(storage, uri, plan.bundle.data)
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
        self.calls.run(
            "Creating the Vertex AI custom job",
            job.submit,
            service_account=proto.job_spec.service_account or None,
            tensorboard=proto.job_spec.tensorboard or None,
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
        aiplatform = self.calls.run("Connecting to Vertex AI", self._init, locator)
        return self.calls.read("Reading the job", aiplatform.CustomJob.get, provider_id)

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
        session, endpoint = self.calls.run(
            "Connecting to Cloud Logging", self.logging_session, locator
        )
        job_id = provider_id.rsplit("/", 1)[-1]
        body: dict[str, Any] = {
            "resourceNames": [f"projects/{locator['project']}"],
            "filter": f'resource.type="ml_job" AND resource.labels.job_id="{job_id}"',
            "orderBy": "timestamp asc",
            "pageSize": 1000,
        }
        while True:
            reply = self.calls.read(
                "Reading the job's logs",
                session.post,
                f"{endpoint}/v2/entries:list",
                json=body,
                timeout=60,
            )
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
        self.calls.run("Cancelling the job", self._job(provider_id, locator).cancel)

    def download(
        self, provider_id: str, locator: dict[str, Any], destination: Path, state: JobState
    ) -> Path:
        if not state.model_uri:
            raise InflameError(f"Job {provider_id} completed but reports no model artifact.")
        bucket_name, prefix = base.split_uri(state.model_uri)
        client = self.calls.run("Connecting to Cloud Storage", self.storage_client, locator)
        bucket = client.bucket(bucket_name)
        names = self.calls.read(
            "Listing the job's outputs",
            lambda: [b.name for b in client.list_blobs(bucket_name, prefix=prefix)],
        )
        base.download_tree(
            destination,
            prefix,
            names,
            lambda name: self.calls.read(
                f"Downloading gs://{bucket_name}/{name}", bucket.blob(name).download_as_bytes
            ),
        )
        return destination

    # ---- inside the job -----------------------------------------------------------------------

    def detect(self, env: Mapping[str, str]) -> bool:
        return "CLOUD_ML_JOB_ID" in env

    def job_paths(
        self, spec: JobSpec, env: Mapping[str, str], bound: BoundPaths | None
    ) -> JobPaths:
        """Inputs and outputs through the /gcs mount: gs://b/p is /gcs/b/p; the run directory
        is AIP_MODEL_DIR, checkpoints AIP_CHECKPOINT_DIR (set from the base output folder)."""
        missing = [name for name in ("AIP_MODEL_DIR", "AIP_CHECKPOINT_DIR") if not env.get(name)]
        if missing:
            raise InflameError(
                f"Inside the Vertex AI job, {', '.join(missing)} is not set; the job needs a "
                "base output directory (inflame sets one)."
            )

        def mounted(uri: str) -> Path:
            return base.platform_path(env, f"{GCS_MOUNT}/{uri.rstrip('/')[len('gs://') :]}")

        return JobPaths(
            platform=self.name,
            data={name: mounted(item.value) for name, item in spec.data.items()},
            run_dir=mounted(env["AIP_MODEL_DIR"]),
            checkpoint_dir=mounted(env["AIP_CHECKPOINT_DIR"]),
        )

    def cluster(self, env: Mapping[str, str]) -> Cluster:
        """From CLUSTER_SPEC: pool 0 is the primary (node 0, the master, at its listed
        port), pool 1 the other nodes in index order."""
        try:
            spec = json.loads(env["CLUSTER_SPEC"])
            pools, task = spec["cluster"], spec["task"]
            primary = pools["workerpool0"][0]
            workers = pools.get("workerpool1", [])
            node_rank = 0 if task["type"] == "workerpool0" else 1 + int(task["index"])
            host, _, port = primary.rpartition(":")
            return Cluster(1 + len(workers), node_rank, host, int(port))
        except (KeyError, ValueError, IndexError, TypeError) as exc:
            raise InflameError(f"Cannot read Vertex AI's CLUSTER_SPEC: {exc!r}.") from None


TARGET = Vertex()
