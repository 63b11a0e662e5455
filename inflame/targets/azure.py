"""Azure ML, through azure-ai-ml: a CommandJob submitted with MLClient; everything inflame
knows about Azure ML lives in this module.

The code bundle is unpacked into a content-addressed folder (`$INFLAME_HOME/bundles/<sha256>/`,
checked file by file against the bundle before reuse; the 10 most recently used are kept)
that becomes the job's `code`; Azure ML hashes it and skips the upload when that code is
already registered. Each [data] input is a
`uri_folder` input mounted read-only; the run directory and the checkpoints are `uri_folder`
outputs at fixed datastore paths per job, so a rerun resumes. Paths reach the job on its
command line (`--data train=${{inputs.train}} --run-dir ${{outputs.run}}`), which
`python -m inflame.job` reads; with several GPUs or nodes Azure ML's PyTorch distribution
starts every process itself (docs/platforms.md).

Compute is a named cluster (`compute`) or serverless (`instance_type`). `spot = true` asks for
the spot tier on serverless compute; a cluster's own tier (dedicated or low priority) decides
for a cluster, so submitting a spot job to a dedicated cluster is refused. The cluster's VM
size is read at submit time and checked against `gpus_per_node`.

Every request is checked with azure-ai-ml's own job schema (the YAML loads with `load_job`)
and, as sent over REST, against Azure ML's published model of the body (`azure_rest`) and its
documented name, tier and input rules.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shlex
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inflame.errors import InflameError
from inflame.targets import base
from inflame.targets.azure_rest import API_VERSIONS, MODEL_VERSION, refuse_body
from inflame.targets.base import (
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

# A curated Azure ML environment at an exact version: ACPT PyTorch 2.8, CUDA 12.6, Python 3.10.
DEFAULT_ENVIRONMENT = (
    "azureml://registries/azureml/environments/acpt-pytorch-2.8-cuda12.6/versions/17"
)
IMAGE_TORCH = "2.8"
_STATES = {
    "NotStarted": "pending",
    "Queued": "pending",
    "Preparing": "pending",
    "Provisioning": "pending",
    "Starting": "pending",
    "Running": "running",
    "Finalizing": "running",
    "CancelRequested": "stopping",
    "Completed": "completed",
    "Failed": "failed",
    "Canceled": "stopped",
    "NotResponding": "running",
    "Paused": "pending",
}
RUN_PREFIX = "inflame/jobs/{job}/run/"  # the `run` output, on the job's datastore
LOGS_DATASTORE = "workspaceartifactstore"
LOGS_PREFIX = "ExperimentRun/dcid.{job}/user_logs/"
OUTPUTS = ("run", "checkpoints")
GPUS_TAG, SPOT_TAG = "inflame:gpus-per-node", "inflame:spot"  # read back at submit time
_JOB_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_-]{0,254}")
_EXPERIMENT_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_-]{0,255}")
_IO_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
SETTINGS = (
    Setting(
        "subscription_id",
        required=True,
        example='"00000000-0000-0000-0000-000000000000"',
        pattern=r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}",
        rule="`subscription_id` must be a GUID.",
    ),
    Setting("resource_group", required=True, example='"my-rg"'),
    Setting("workspace", required=True, example='"my-workspace"'),
    Setting(
        "compute",
        example='"gpu-cluster"',
        pattern=r"[a-zA-Z][a-zA-Z0-9-]{2,23}",
        rule="a compute name is 3-24 letters, digits or -, starting with a letter.",
    ),
    Setting("instance_type"),  # serverless compute, instead of `compute`
    Setting("environment", DEFAULT_ENVIRONMENT),
    Setting("experiment"),  # default: the job's name
    Setting("datastore", "workspaceblobstore"),
    # `inflame deploy --target azure` (inflame/deploy/azure.py)
    Setting("endpoint_instance_type", "Standard_DS3_v2"),
    Setting("endpoint_instances", 1, kind=int, minimum=1, maximum=100),
    Setting("endpoint_top_k", 5, kind=int, minimum=1, maximum=1000),  # labels per answer
    Setting("inference_environment"),  # default: `environment` (it has the inference server)
)
# JobService.jobServiceType as the REST API names them (azure-ai-ml JobServiceTypeNames)
SERVICE_TYPES = (
    "Custom",
    "Tracking",
    "Studio",
    "JupyterLab",
    "SSH",
    "TensorBoard",
    "VSCode",
    "RayDashboard",
)
# [tracking] tensorboard: the job writes events here, relative to its working folder (the
# code snapshot); Azure ML uploads ./outputs with the job, and the TensorBoard job service
# (`services`, log_dir relative to the same folder) shows them while it runs
TENSORBOARD_DIR = "outputs/tensorboard"
JOB_TIERS = ("Spot", "Basic", "Standard", "Premium", "Null")
INPUT_MODES = ("ReadOnlyMount", "ReadWriteMount", "Download", "Direct", "EvalMount", "EvalDownload")
DATASTORE_URI = re.compile(r"azureml://datastores/(?P<store>[^/]+)/paths/(?P<path>[^?#]+)")
URI_SCHEMES = ("azureml://", "https://", "wasbs://", "abfss://")
# GPUs per Azure VM size (Azure VM size documentation); keys are lower case.
GPU_SIZES = {
    size.lower(): n
    for size, n in {
        "Standard_NC6s_v3": 1,
        "Standard_NC12s_v3": 2,
        "Standard_NC24s_v3": 4,
        "Standard_NC24rs_v3": 4,
        "Standard_NC4as_T4_v3": 1,
        "Standard_NC8as_T4_v3": 1,
        "Standard_NC16as_T4_v3": 1,
        "Standard_NC64as_T4_v3": 4,
        "Standard_NC24ads_A100_v4": 1,
        "Standard_NC48ads_A100_v4": 2,
        "Standard_NC96ads_A100_v4": 4,
        "Standard_ND96asr_v4": 8,
        "Standard_ND96amsr_A100_v4": 8,
        "Standard_NC40ads_H100_v5": 1,
        "Standard_NC80adis_H100_v5": 2,
        "Standard_ND96isr_H100_v5": 8,
        "Standard_ND96isr_H200_v5": 8,
        "Standard_NV36ads_A10_v5": 1,
        "Standard_NV72ads_A10_v5": 2,
        **{
            f"Standard_{family}{n}_v{v}": 0
            for family, v in (("D", 4), ("D", 5), ("E", 4), ("E", 5))
            for n in (2, 4, 8, 16, 32, 48, 64)
        },
        **{f"Standard_DS{n}_v2": 0 for n in (1, 2, 3, 4, 5, 11, 12, 13, 14)},
        **{f"Standard_F{n}s_v2": 0 for n in (2, 4, 8, 16, 32, 48, 64, 72)},
    }.items()
}


def _rule_violations(name: str, body: Mapping[str, Any]) -> Iterator[str]:
    """Azure ML's documented rules for a command job, on the REST body (`PUT jobs/{name}`)."""
    if not _JOB_NAME_RE.fullmatch(name):
        yield f"name: {name!r} must be 1-255 letters, digits, - or _, not starting with - or _"
    props = body.get("properties", {})
    if props.get("jobType") != "Command":
        yield "properties.jobType: must be Command"
    if not str(props.get("command", "")).strip():
        yield "properties.command: required"
    if not props.get("environmentId"):
        yield "properties.environmentId: required"
    experiment = props.get("experimentName")
    if experiment is not None and not _EXPERIMENT_RE.fullmatch(experiment):
        yield (
            f"properties.experimentName: {experiment!r} must be 1-256 letters, digits, _ or -, "
            "starting with a letter or digit"
        )
    for kind in ("inputs", "outputs"):
        for key, item in (props.get(kind) or {}).items():
            if not _IO_NAME_RE.fullmatch(key):
                yield f"properties.{kind}: name {key!r} must be letters, digits and _"
            if kind == "inputs":
                uri = str(item.get("uri", ""))
                if not uri.startswith(URI_SCHEMES):
                    yield f"properties.inputs.{key}.uri: {uri!r} is not a datastore or blob URI"
                elif "/datastores/" in uri and not re.search(r"/datastores/[^/]+/paths/", uri):
                    yield (
                        f"properties.inputs.{key}.uri: {uri!r}: a datastore URI is "
                        "azureml://datastores/NAME/paths/FOLDER"
                    )
                if item.get("mode") not in INPUT_MODES:
                    yield f"properties.inputs.{key}.mode: {item.get('mode')!r} is not allowed"
    overlap = set(props.get("inputs") or {}) & set(props.get("outputs") or {})
    if overlap:
        yield f"properties: {', '.join(sorted(overlap))} is both an input and an output"
    resources = props.get("resources") or {}
    if int(resources.get("instanceCount", 1)) < 1:
        yield "properties.resources.instanceCount: at least 1"
    if not props.get("computeId") and not resources.get("instanceType"):
        yield "properties: a job needs computeId (a cluster) or resources.instanceType (serverless)"
    tier = (props.get("queueSettings") or {}).get("jobTier")
    if tier is not None and tier not in JOB_TIERS:
        yield f"properties.queueSettings.jobTier: {tier!r} is not one of {', '.join(JOB_TIERS)}"
    distribution = props.get("distribution")
    if distribution is not None:
        if distribution.get("distributionType") != "PyTorch":
            yield "properties.distribution.distributionType: inflame sends PyTorch"
        if int(distribution.get("processCountPerInstance", 1)) < 1:
            yield "properties.distribution.processCountPerInstance: at least 1"
    for key in props.get("environmentVariables") or {}:
        if not base.ENV_NAME.fullmatch(key):
            yield f"properties.environmentVariables: {key!r} is not a valid variable name"
    for key, service in (props.get("services") or {}).items():
        kind = service.get("jobServiceType")
        if kind not in SERVICE_TYPES:
            yield f"properties.services.{key}.jobServiceType: {kind!r} is not one of " + (
                ", ".join(SERVICE_TYPES)
            )
        log_dir = (service.get("properties") or {}).get("logDir", "")
        if kind == "TensorBoard" and (
            not log_dir or log_dir.startswith("/") or ".." in Path(log_dir).parts
        ):
            yield (
                f"properties.services.{key}.properties.logDir: {log_dir!r} must be a path "
                "inside the job's working folder"
            )


def validate_request(name: str, body: Mapping[str, Any]) -> None:
    """Check a command job, as sent over REST, as strictly as Azure ML does (offline): its
    published model (JobBase) in full, then the documented rules the model cannot express."""
    refuse_body("Azure ML job", "JobBase", body, lambda: _rule_violations(name, body))


CHECKS = (
    "azure-ai-ml's own job schema (the YAML loads back with load_job)",
    f"Azure ML's published REST model of the request (JobBase, api-version {MODEL_VERSION}; "
    f"MLClient sends {API_VERSIONS['JobBase']}), in full: members, types, required and "
    "read-only members, enum values, the job, input, output and distribution types",
    "Azure ML's documented rules on the REST body: job, experiment, input and output names, "
    "input URIs and modes, compute or serverless resources, job tier, distribution",
    "the VM size's GPU count against compute.gpus_per_node (a named cluster's size is read "
    "and checked at submit time)",
)


def _error_table() -> ErrorTable:
    from azure.core.exceptions import (
        AzureError,
        ClientAuthenticationError,
        HttpResponseError,
        ServiceRequestError,
        ServiceResponseError,
    )

    def explain(exc: BaseException) -> str | None:
        if isinstance(exc, ClientAuthenticationError):
            return (
                "no usable Azure credentials. Run `az login` (or set AZURE_CLIENT_ID/"
                "AZURE_TENANT_ID/AZURE_CLIENT_SECRET); `inflame submit --dry-run` needs none."
            )
        if isinstance(exc, HttpResponseError):
            hint = {
                403: " Check your role on the workspace (and Storage Blob Data Reader on its "
                "storage account for logs and downloads).",
                404: " Check subscription_id, resource_group, workspace and compute.",
            }.get(exc.status_code or 0, "")
            return f"Azure said {exc.status_code}: {exc.message}.{hint}"
        if isinstance(exc, AzureError):
            return f"Azure: {exc}"
        return None

    def transient(exc: BaseException) -> bool:
        if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
            return True
        return isinstance(exc, HttpResponseError) and (
            exc.status_code == 429 or (exc.status_code or 0) >= 500
        )

    return ErrorTable(explain, transient)


def _staged_matches(folder: Path, bundle: Bundle) -> bool:
    """Whether `folder` holds exactly the bundle's files, byte for byte."""
    import io

    expected: dict[str, str] = {}
    with tarfile.open(fileobj=io.BytesIO(bundle.data), mode="r:gz") as tar:
        for member in tar.getmembers():
            if member.isfile():
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                expected[member.name] = hashlib.sha256(data).hexdigest()
    found = {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }
    return found == expected


KEEP_STAGED = 10  # unpacked bundles kept (the most recently used), besides fresh ones
FRESH_S = 3600.0  # a folder used this recently may be uploading: never removed


def stage_bundle(bundle: Bundle) -> Path:
    """The bundle unpacked at `$INFLAME_HOME/bundles/<sha256>`, reused only when it still
    holds exactly the bundle's files (else unpacked again). Older unpacked bundles beyond
    the KEEP_STAGED most recently used are removed (each retraining round of a loop, say,
    makes one, with its parent's weights)."""
    from inflame.ledger import inflame_home

    folder = inflame_home() / "bundles" / bundle.sha256
    _unpack(bundle, folder)
    prune_staged(folder.parent, keep=folder)
    return folder


def prune_staged(root: Path, keep: Path) -> None:
    """Remove the unpacked bundles (and stale `.staging-*` folders) under `root` beyond the
    KEEP_STAGED most recently used, except `keep` and any used in the last FRESH_S."""
    now = time.time()
    used: dict[Path, float] = {}
    for path in root.iterdir():
        try:
            if path.is_dir() and path != keep:
                used[path] = path.stat().st_mtime
        except OSError:  # removed meanwhile by another submission
            continue
    newest_first = sorted(used, key=used.__getitem__, reverse=True)
    staging = [p for p in newest_first if p.name.startswith(".staging-")]
    unpacked = [p for p in newest_first if p not in staging]
    for path in unpacked[KEEP_STAGED - 1 :] + staging:
        try:  # stat again: another submission may have just started to use it
            if now - path.stat().st_mtime <= FRESH_S:
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)


def _unpack(bundle: Bundle, folder: Path) -> None:
    """Unpack `bundle` at `folder` unless it holds exactly its files; marks it used."""
    from inflame.packaging import safe_extract

    try:
        os.utime(folder)  # in use from now on: another submission's pruning leaves it alone
        if _staged_matches(folder, bundle):
            return
        shutil.rmtree(folder)  # changed since it was unpacked: never upload that
    except FileNotFoundError:  # not unpacked yet, or pruned meanwhile: unpack it
        pass
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder.parent))
    safe_extract(bundle.data, staging)
    try:
        staging.rename(folder)
    except OSError:  # another submission unpacked the same bundle meanwhile
        shutil.rmtree(staging, ignore_errors=True)
        if not (folder.is_dir() and _staged_matches(folder, bundle)):
            raise InflameError(
                f"Could not unpack the code bundle into {folder}; remove that folder and "
                "submit again."
            ) from None


def job_command(spec: JobSpec) -> str:
    """The job's command line: entry.sh with the paths Azure ML binds. Names are checked
    (letters, digits, _) and every argument is quoted."""
    args = [f"--data={name}=${{{{inputs.{name}}}}}" for name in spec.data]
    args += ["--run-dir=${{outputs.run}}", "--checkpoint-dir=${{outputs.checkpoints}}"]
    return shlex.join(["bash", "entry.sh", *args, *base.launch_args(spec)])


class AzureML(Provider):
    name = "azure"
    extra = "azure"
    capabilities = Capabilities(
        spot="spot tier on serverless compute; on a cluster, the cluster's own tier",
        logs="the job's user_logs/ in the workspace artifact store",
        data_schemes=URI_SCHEMES,
        input_name=r"[a-zA-Z_][a-zA-Z0-9_]*",
        input_name_rule="Azure ML input names are letters, digits and `_`, not starting "
        "with a digit.",
        upload_hint="az storage blob upload-batch -s {path} --destination-path {name} …",
        reserved_inputs=OUTPUTS,
        starts_processes=True,
    )

    def __init__(self) -> None:
        self.calls = Calls(_error_table)

    def _sdk(self) -> Any:
        ml = import_sdk(self.name, self.extra, "azure.ai.ml")
        for noisy in ("azure.ai.ml", "azure.core.pipeline.policies.http_logging_policy"):
            logging.getLogger(noisy).setLevel(logging.ERROR)  # "experimental class" chatter
        return ml

    # ---- plan -------------------------------------------------------------------------------

    def plan(self, spec: JobSpec, bundle: Bundle) -> Plan:
        settings = TargetSettings(spec, self.name, SETTINGS)
        compute, instance_type = settings["compute"], settings["instance_type"]
        subscription, resource_group = settings["subscription_id"], settings["resource_group"]
        workspace = settings["workspace"]
        if (compute is None) == (instance_type is None):
            raise settings.fail(
                "compute",
                "set either `compute` (the name of a compute cluster) or `instance_type` "
                '(a VM size for serverless compute, e.g. "Standard_NC24ads_A100_v4"), not '
                "both and not neither.",
            )
        warnings: list[str] = []
        if instance_type is not None:
            warnings += base.check_gpus(settings, "instance_type", instance_type, GPU_SIZES)
        elif spec.compute.spot:
            warnings.append(
                f"spot = true on cluster {compute}: the cluster's tier decides (create it with "
                "tier low_priority); submitting checks that tier and refuses a dedicated one. "
                "For spot without a cluster, set `instance_type` (serverless) instead"
            )
        environment = settings["environment"]
        image_torch = "" if settings.given("environment") else IMAGE_TORCH
        warnings += base.image_torch_warning(self.name, environment, image_torch)
        datastore = settings["datastore"]
        ml = self._sdk()
        name = base.unique_job_name(spec.job.name, r"[^a-zA-Z0-9_-]+", limit=255)
        experiment = settings["experiment"] or spec.job.name
        # the public builder gives the Command node that MLClient.jobs.create_or_update takes
        from azure.ai.ml.entities import TensorBoardJobService

        job = ml.command(
            name=name,
            display_name=spec.job.name,
            experiment_name=experiment,
            description=spec.job.description or None,
            code=str(stage_bundle(bundle)),
            command=job_command(spec),
            environment=environment,
            compute=compute,
            instance_type=instance_type,
            instance_count=spec.compute.nodes,
            inputs={
                n: ml.Input(type="uri_folder", path=item.value, mode="ro_mount")
                for n, item in spec.data.items()
            },
            outputs={
                "run": ml.Output(
                    type="uri_folder",
                    mode="rw_mount",
                    path=f"azureml://datastores/{datastore}/paths/{RUN_PREFIX.format(job=name)}",
                ),
                "checkpoints": ml.Output(
                    type="uri_folder",
                    mode="rw_mount",
                    path=f"azureml://datastores/{datastore}/paths/inflame/checkpoints/{name}/",
                ),
            },
            environment_variables=base.job_environment(spec, self.name, environment, image_torch),
            # [tracking] tensorboard: the job's TensorBoard service reads the events live
            services={"tensorboard": TensorBoardJobService(log_dir=TENSORBOARD_DIR)}
            if spec.tracking.tensorboard
            else None,
            # Azure ML's PyTorch distribution starts every process itself
            distribution=ml.PyTorchDistribution(
                process_count_per_instance=base.processes_per_node(spec)
            )
            if spec.compute.nodes * base.processes_per_node(spec) > 1
            else None,
            timeout=spec.compute.max_runtime_s,
            job_tier="spot" if spec.compute.spot and instance_type is not None else None,
            tags={
                "inflame:job": spec.job.name,
                "inflame:spec-sha256": spec.resolved_sha256,
                "inflame:bundle-sha256": bundle.sha256,
                GPUS_TAG: str(spec.compute.gpus_per_node),
                SPOT_TAG: str(spec.compute.spot).lower(),
            },
        )
        from azure.ai.ml.entities._job.to_rest_functions import to_rest_job_object

        # what MLClient sends (PUT jobs/{name}): read-only members (the name) left out
        request = to_rest_job_object(job).as_dict(exclude_readonly=True)
        validate_request(name, request)
        compute_name = compute or f"serverless {instance_type}"
        return base.build_plan(
            self,
            spec,
            bundle,
            name,
            request,
            where={
                "workspace": f"{subscription}/{resource_group}/{workspace}",
                "compute": compute_name,
            },
            image=environment,
            image_torch=image_torch,
            outputs=f"azureml://datastores/{datastore}/paths/{RUN_PREFIX.format(job=name)}",
            locator={
                "subscription_id": subscription,
                "resource_group": resource_group,
                "workspace": workspace,
                "datastore": datastore,
            },
            checks=CHECKS,
            endpoint=f"PUT https://management.azure.com/subscriptions/{subscription}/"
            f"resourceGroups/{resource_group}/providers/Microsoft.MachineLearningServices/"
            f"workspaces/{workspace}/jobs/{name}",
            warnings=warnings,
            render=lambda _, secrets: self._dump(job, secrets),
            payload=job,
        )

    def _dump(self, job: Any, secrets: tuple[str, ...]) -> str:
        """The job YAML (secrets masked), checked by loading it back with
        azure.ai.ml.load_job. azure-ai-ml dumps an https://, wasbs:// or abfss:// input as
        `azureml:https://…`, which would not load as the same job: written as given."""
        import yaml

        from inflame.redact import redact

        ml = self._sdk()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "job.yml"
            job._to_job().dump(path)
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            for item in (data.get("inputs") or {}).values():
                if str(item.get("path", "")).startswith(
                    tuple(f"azureml:{s}" for s in URI_SCHEMES[1:])
                ):
                    item["path"] = item["path"][len("azureml:") :]
            text = yaml.safe_dump(redact(data, secrets), sort_keys=False)
            path.write_text(text, encoding="utf-8")
            try:
                ml.load_job(source=path)
            except Exception as exc:
                raise InflameError(f"The Azure ML job does not validate: {exc}") from None
        return text

    # ---- submit and follow ------------------------------------------------------------------

    def credential(self) -> Any:
        """The user's Azure credential (az login, managed identity, environment…)."""
        identity = import_sdk(self.name, self.extra, "azure.identity")
        return identity.DefaultAzureCredential()

    def client(self, locator: dict[str, Any]) -> Any:
        """An MLClient for the workspace, with the user's Azure credentials."""
        ml = self._sdk()
        return ml.MLClient(
            self.credential(),
            locator["subscription_id"],
            locator["resource_group"],
            locator["workspace"],
        )

    def blob_options(self) -> dict[str, Any]:
        """Extra azure-storage-blob client arguments (tests pass a loopback transport)."""
        return {}

    def container(self, locator: dict[str, Any], datastore: str) -> Any:
        """The blob container behind a workspace datastore, read with the user's credential."""
        blob = import_sdk(self.name, self.extra, "azure.storage.blob")
        store = self.calls.read(
            f"Reading datastore {datastore}", self.client(locator).datastores.get, datastore
        )
        account_url = f"{store.protocol or 'https'}://{store.account_name}.blob.{store.endpoint}"
        return blob.ContainerClient(
            account_url, store.container_name, credential=self.credential(), **self.blob_options()
        )

    @staticmethod
    def _datastore_path(uri: str, where: str) -> re.Match[str]:
        """`azureml://datastores/<store>/paths/<path>`, the form a job input reads and the
        only one inflame writes to."""
        found = DATASTORE_URI.fullmatch(uri.rstrip("/"))
        if found is None:
            raise InflameError(
                f"{where} {uri}: inflame uploads to Azure ML datastore paths, "
                "azureml://datastores/<datastore>/paths/<folder>; give one of those."
            )
        return found

    def check_upload_uri(self, uri: str, where: str) -> None:
        self._datastore_path(uri, where)

    def upload_folder(self, folder: Path, uri: str, locator: dict[str, Any]) -> int:
        """To a datastore path; a blob with the same MD5 is not sent again (the MD5 is set
        on the blob, so that blobs uploaded in blocks carry one too)."""
        from azure.core.exceptions import ResourceNotFoundError
        from azure.storage.blob import ContentSettings

        found = self._datastore_path(uri, "Upload to")
        container = self.container(locator, found["store"])

        def put(name: str, to: str, data: bytes) -> None:
            blob = container.get_blob_client(f"{found['path']}/{name}")
            md5 = hashlib.md5(data).digest()

            def stored_md5() -> bytes | None:
                try:
                    return blob.get_blob_properties().content_settings.content_md5
                except ResourceNotFoundError:
                    return None

            if self.calls.read(f"Checking {to}", stored_md5) == md5:
                return  # the same bytes, verified: not uploaded twice
            self.calls.run(
                f"Uploading {name} to {to}",
                blob.upload_blob,
                data,
                overwrite=True,
                validate_content=True,
                content_settings=ContentSettings(content_md5=bytearray(md5)),
            )

        return base.upload_tree(folder, uri, put)

    def _check_cluster(self, client: Any, job: Any) -> None:
        """A named cluster: its VM size must carry gpus_per_node GPUs, and a spot job needs
        a low-priority cluster."""
        if not job.compute or job.resources.instance_type:
            return  # serverless: checked when planned
        name = str(job.compute).rsplit("/", 1)[-1]
        cluster = self.calls.read(f"Reading compute cluster {name}", client.compute.get, name)
        size = str(getattr(cluster, "size", "") or "")
        gpus, wanted = GPU_SIZES.get(size.lower()), int(job.tags[GPUS_TAG])
        if gpus is not None and gpus != wanted:
            raise InflameError(
                f"Compute cluster {name} has VM size {size} with {gpus} GPU(s), but "
                f"compute.gpus_per_node is {wanted}. Set `gpus_per_node = {gpus}`, or use a "
                "cluster of the right size."
            )
        if job.tags[SPOT_TAG] == "true" and str(getattr(cluster, "tier", "")) == "dedicated":
            raise InflameError(
                f"spot = true, but compute cluster {name} is dedicated: on a cluster the "
                "cluster's tier decides. Use a low_priority cluster, set `instance_type` "
                "for serverless spot compute, or set spot = false."
            )

    def submit(self, plan: Plan) -> Submitted:
        """Send the planned CommandJob itself (its YAML does not round-trip: azure-ai-ml
        dumps an https:// input as `azureml:https://…`)."""
        client = self.client(plan.locator)
        self._check_cluster(client, plan.payload)
        created = self.calls.run(
            "Creating the Azure ML job", client.jobs.create_or_update, plan.payload
        )
        return Submitted(provider_id=created.name, console_url=created.studio_url or "")

    def status(self, provider_id: str, locator: dict[str, Any]) -> JobState:
        job = self.calls.read("Reading the job status", self.client(locator).jobs.get, provider_id)
        provider_state = str(getattr(job.status, "value", job.status))
        return JobState(state=_STATES.get(provider_state, "pending"), provider_state=provider_state)

    def logs(self, provider_id: str, locator: dict[str, Any]) -> Iterator[str]:
        """The job's user logs (`user_logs/` in the workspace artifact store), file by file."""
        container = self.container(locator, LOGS_DATASTORE)
        prefix = LOGS_PREFIX.format(job=provider_id)
        names = self.calls.read(
            "Listing the job's logs",
            lambda: sorted(b.name for b in container.list_blobs(name_starts_with=prefix)),
        )
        for name in names:
            data = self.calls.read(
                "Reading the job's logs", lambda n=name: container.download_blob(n).readall()
            )
            yield from data.decode("utf-8", errors="replace").splitlines()

    def cancel(self, provider_id: str, locator: dict[str, Any]) -> None:
        self.calls.run("Cancelling the job", self.client(locator).jobs.begin_cancel, provider_id)

    def download(
        self, provider_id: str, locator: dict[str, Any], destination: Path, state: JobState
    ) -> Path:
        """Copy the job's `run` output (manifest, metrics, model) from its datastore path."""
        container = self.container(locator, locator.get("datastore", "workspaceblobstore"))
        prefix = RUN_PREFIX.format(job=provider_id)
        names = self.calls.read(
            "Listing the job's run output",
            lambda: [b.name for b in container.list_blobs(name_starts_with=prefix)],
        )
        base.download_tree(
            destination,
            prefix,
            names,
            lambda name: self.calls.read(
                f"Downloading {name}", lambda: container.download_blob(name).readall()
            ),
        )
        return destination

    # ---- inside the job ---------------------------------------------------------------------

    def detect(self, env: Mapping[str, str]) -> bool:
        return "AZUREML_RUN_ID" in env

    def job_paths(
        self, spec: JobSpec, env: Mapping[str, str], bound: BoundPaths | None
    ) -> JobPaths:
        """Azure ML puts the mounted paths on the command line (`--data`, `--run-dir`,
        `--checkpoint-dir`)."""
        if bound is None:
            raise InflameError(
                "Inside an Azure ML job the paths come from the command line: pass --data "
                "NAME=PATH for each input, --run-dir and --checkpoint-dir."
            )
        return JobPaths(
            self.name,
            dict(bound.data),
            bound.run_dir,
            bound.checkpoint_dir,
            tensorboard_dir=Path.cwd() / TENSORBOARD_DIR,  # entry.sh runs in the code folder
        )

    def cluster(self, env: Mapping[str, str]) -> Cluster:
        raise InflameError(
            "Azure ML starts every process of a distributed job itself; inflame does not "
            "start torchrun there."
        )


TARGET = AzureML()
