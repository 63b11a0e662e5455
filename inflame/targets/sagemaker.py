"""AWS SageMaker, through boto3: CreateTrainingJob, DescribeTrainingJob, StopTrainingJob and
CloudWatch Logs; everything inflame knows about SageMaker lives in this module.

The job: the code bundle is uploaded once per content hash to `<output>/code/<sha256>.tar.gz`
(with its SHA-256 checksum, verified before a bundle already there is reused) and arrives as
the `code` channel; each [data] input is an S3 channel of the same name. The container's
command is a short bootstrap that unpacks the bundle and runs its `entry.sh`, which starts
`python -m inflame.job` from the bundle's own `vendor/` (nothing is installed, so jobs work
with network isolation). The run directory is /opt/ml/model, which SageMaker uploads as
model.tar.gz; checkpoints in /opt/ml/checkpoints are synced to `<output>/jobs/<job>/checkpoints`,
so a restarted spot job resumes.

Every request is checked against botocore's full model of CreateTrainingJob (lengths,
patterns, enums, list and map sizes, which botocore itself does not check) and against the
documented rules the model cannot express. Overriding the image's entrypoint skips the
sagemaker-training toolkit, so no `SM_*` variable is set: paths come from SageMaker's fixed
layout and the cluster from /opt/ml/input/config/resourceconfig.json (docs/platforms.md).

The v3 `sagemaker` SDK's ModelTrainer calls AWS just to be constructed and weighs about 1 GB;
only its small `sagemaker-core` part is used, for the region's PyTorch image.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from functools import cache
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

# The default image: the AWS PyTorch training container of the job's region, at an exact
# framework version (sagemaker-core knows each region's registry account).
IMAGE_TORCH, IMAGE_PYTHON = "2.10.0", "py313"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
CODE_CHANNEL = "code"
OPT_ML = "/opt/ml"
# [tracking] tensorboard = true: written here, uploaded by SageMaker (TensorBoardOutputConfig)
TENSORBOARD_PATH = f"{OPT_ML}/output/tensorboard"
MASTER_PORT = 7777  # what the sagemaker-training toolkit uses for torchrun
MAX_RUNTIME = 28 * 24 * 3600  # CreateTrainingJob's documented maximum
SETTINGS = (
    Setting(
        "role",
        required=True,
        example='"arn:aws:iam::123456789012:role/inflame-sagemaker"',
        pattern=r"arn:aws[a-z-]*:iam::\d{12}:role/[a-zA-Z_0-9+=,.@/-]+",
        rule="`role` must be an IAM role ARN (infra/aws creates one).",
    ),
    Setting(
        "region",
        required=True,
        example='"us-east-1"',
        pattern=r"[a-z]{2}(-[a-z]+)+-\d",
        rule="`region` must be an AWS region name.",
    ),
    Setting(
        "output",
        required=True,
        example='"s3://my-bucket/inflame"',
        pattern=r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?",
        rule="`output` must be an S3 prefix like s3://my-bucket/inflame.",
    ),
    Setting("instance_type", "ml.g5.xlarge"),
    Setting("image"),  # default: the region's PyTorch training image
    Setting("max_wait", kind=int, minimum=1),  # spot: default twice the maximum runtime
    Setting("volume_size", 50, kind=int, minimum=1),
    Setting("keep_alive_seconds", kind=int, minimum=0, maximum=21600),
    # `inflame deploy`: the real-time endpoint
    Setting("endpoint_instance_type", "ml.m5.large"),
    Setting("endpoint_instances", 1, kind=int, minimum=1),
    Setting("endpoint_top_k", 5, kind=int, minimum=1, maximum=1000),  # labels per answer
    Setting("inference_image"),  # default: the region's PyTorch inference image
)
_STATES = {
    "InProgress": "running",
    "Completed": "completed",
    "Failed": "failed",
    "Stopping": "stopping",
    "Stopped": "stopped",
}
# GPUs per training instance type (AWS instance type documentation). Types of the m, c, r
# and t families have none; botocore's enum of TrainingInstanceType lists the rest.
GPU_INSTANCES = {
    **dict.fromkeys(("ml.p2.xlarge", "ml.p3.2xlarge", "ml.p5.4xlarge"), 1),
    "ml.p2.8xlarge": 8,
    "ml.p2.16xlarge": 16,
    "ml.p3.8xlarge": 4,
    **dict.fromkeys(("ml.p3.16xlarge", "ml.p3dn.24xlarge", "ml.p4d.24xlarge"), 8),
    **dict.fromkeys(("ml.p4de.24xlarge", "ml.p5.48xlarge", "ml.p5e.48xlarge"), 8),
    **dict.fromkeys(("ml.p5en.48xlarge", "ml.p6-b200.48xlarge", "ml.p6-b300.48xlarge"), 8),
    "ml.p6e-gb200.36xlarge": 4,
    **{f"ml.g4dn.{size}": 1 for size in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "16xlarge")},
    "ml.g4dn.12xlarge": 4,
    **{
        f"ml.{family}.{size}": n
        for family in ("g5", "g6", "g6e")
        for size, n in (
            ("xlarge", 1),
            ("2xlarge", 1),
            ("4xlarge", 1),
            ("8xlarge", 1),
            ("16xlarge", 1),
            ("12xlarge", 4),
            ("24xlarge", 4),
            ("48xlarge", 8),
        )
    },
    **{
        f"ml.g7e.{size}": n
        for size, n in (
            ("2xlarge", 1),
            ("4xlarge", 1),
            ("8xlarge", 1),
            ("12xlarge", 2),
            ("24xlarge", 4),
            ("48xlarge", 8),
        )
    },
}
_CPU_FAMILY = re.compile(r"^ml\.(m|c|r)\d+[a-z]*\.|^ml\.t\d\.")


@cache
def _botocore_model() -> Any:
    """botocore's SageMaker service model, loaded once (every plan reads it several times)."""
    import botocore.session

    return botocore.session.get_session().get_service_model("sagemaker")


@cache
def instance_gpus() -> dict[str, int]:
    """Training instance type -> GPUs, for every type botocore's model lists that we know."""
    enum = _botocore_model().shape_for("TrainingInstanceType").enum
    table = {name: 0 for name in enum if _CPU_FAMILY.match(name)}
    table.update(GPU_INSTANCES)
    return table


# ---- provider-strict validation --------------------------------------------------------


def _shape_violations(shape: Any, value: Any, path: str) -> Iterator[str]:
    """Everything in `value` that the botocore shape forbids: types, required and unknown
    members, string lengths, patterns (matched whole, as the service does) and enums, list
    and map sizes, number ranges."""
    import regex  # the model's patterns use Java's \\p{…} classes

    meta, kind = shape.metadata, shape.type_name
    lo, hi = meta.get("min"), meta.get("max")
    python_type = {"structure": dict, "list": list, "map": dict, "string": str}.get(kind)
    if python_type is not None and not isinstance(value, python_type):
        yield f"{path}: must be a {'object' if kind == 'structure' else kind}"
        return
    if kind in ("list", "map", "string") and (
        (lo is not None and len(value) < lo) or (hi is not None and len(value) > hi)
    ):
        unit = {"list": "items", "map": "entries", "string": "characters"}[kind]
        yield f"{path}: has {len(value)} {unit}, allowed {lo}..{hi}"
    if kind == "structure":
        for name in shape.required_members:
            if name not in value:
                yield f"{path}.{name}: required"
        for name, item in value.items():
            if name not in shape.members:
                yield f"{path}.{name}: unknown member"
            else:
                yield from _shape_violations(shape.members[name], item, f"{path}.{name}")
    elif kind == "list":
        for i, item in enumerate(value):
            yield from _shape_violations(shape.member, item, f"{path}[{i}]")
    elif kind == "map":
        for key, item in value.items():
            yield from _shape_violations(shape.key, key, f"{path} key {key!r}")
            yield from _shape_violations(shape.value, item, f"{path}[{key!r}]")
    elif kind == "string":
        pattern = meta.get("pattern")
        if pattern and not regex.fullmatch(pattern, value):
            yield f"{path}: {value[:80]!r} does not match the pattern {pattern}"
        if shape.enum and value not in shape.enum:
            yield f"{path}: {value!r} is not one of the allowed values"
    elif kind in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            yield f"{path}: must be an integer"
        elif (lo is not None and value < lo) or (hi is not None and value > hi):
            yield f"{path}: {value} is outside {lo}..{hi}"
    elif kind == "boolean" and not isinstance(value, bool):
        yield f"{path}: must be true or false"


def _rule_violations(request: Mapping[str, Any]) -> Iterator[str]:
    """Documented CreateTrainingJob rules that the model cannot express."""
    stopping = request.get("StoppingCondition", {})
    runtime, wait = stopping.get("MaxRuntimeInSeconds"), stopping.get("MaxWaitTimeInSeconds")
    spot = request.get("EnableManagedSpotTraining", False)
    if isinstance(runtime, int) and runtime > MAX_RUNTIME:
        yield f"StoppingCondition.MaxRuntimeInSeconds: {runtime} is more than 28 days"
    if wait is not None and not spot:
        yield "StoppingCondition.MaxWaitTimeInSeconds: only for managed spot training"
    if spot and wait is None:
        yield "StoppingCondition.MaxWaitTimeInSeconds: required with managed spot training"
    if isinstance(wait, int) and isinstance(runtime, int) and wait < runtime:
        yield "StoppingCondition.MaxWaitTimeInSeconds: must be at least MaxRuntimeInSeconds"
    resources = request.get("ResourceConfig", {})
    if spot and "KeepAlivePeriodInSeconds" in resources:
        yield "ResourceConfig.KeepAlivePeriodInSeconds: warm pools cannot be used with spot"
    if resources.get("InstanceCount", 1) < 1:
        yield "ResourceConfig.InstanceCount: at least 1"
    names = [c.get("ChannelName") for c in request.get("InputDataConfig", [])]
    for name in {n for n in names if names.count(n) > 1}:
        yield f"InputDataConfig: channel {name!r} appears twice"


def validate_request(request: Mapping[str, Any]) -> None:
    """Check a CreateTrainingJob request as strictly as SageMaker does (offline)."""
    shape = _botocore_model().operation_model("CreateTrainingJob").input_shape
    problems = [*_shape_violations(shape, request, "CreateTrainingJob"), *_rule_violations(request)]
    base.refuse_problems("SageMaker request", problems)


def pytorch_image(
    settings: TargetSettings, instance_type: str, scope: str, torch: str, python: str
) -> str:
    """The region's AWS PyTorch image for `scope` ("training" or "inference")."""
    import_sdk("sagemaker", "aws", "sagemaker.core")
    from sagemaker.core import image_uris

    region = settings["region"]
    try:
        return image_uris.retrieve(
            "pytorch",
            region=region,
            version=torch,
            py_version=python,
            instance_type=instance_type,
            image_scope=scope,
        )
    except ValueError as exc:
        key = "image" if scope == "training" else "inference_image"
        raise settings.fail(
            "region",
            f"inflame knows no PyTorch {scope} image for region {region!r} ({exc}). Check the "
            f"region, or set `{key}` to a {scope} image in that region.",
        ) from None


def checked_instance_type(settings: TargetSettings, key: str, shape: str) -> str:
    """`settings[key]`, which must be one of the instance types botocore's `shape` lists."""
    instance_type = settings[key]
    allowed = _botocore_model().shape_for(shape).enum
    if instance_type not in allowed:
        use = "training" if shape == "TrainingInstanceType" else "endpoint"
        raise settings.fail(
            key,
            f"{instance_type!r} is not a SageMaker {use} instance type."
            f"{did_you_mean(instance_type, allowed)}",
        )
    return instance_type


def validate_operation(operation: str, request: Mapping[str, Any]) -> None:
    """Check any SageMaker request against botocore's model of its operation, in full."""
    shape = _botocore_model().operation_model(operation).input_shape
    base.refuse_problems("SageMaker request", list(_shape_violations(shape, request, operation)))


CHECKS = (
    "botocore's model of CreateTrainingJob, in full: types, required members, lengths, "
    "patterns, enums, list and map sizes",
    "SageMaker's documented rules: spot wait vs runtime, 28-day limit, warm pools, channels",
    "the instance type's GPU count against compute.gpus_per_node",
    "the region's PyTorch training image (sagemaker-core's registry table)",
)


# ---- errors -----------------------------------------------------------------------------


def _error_table() -> ErrorTable:
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    transient_codes = {
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalServerError",
        "RequestTimeout",
        "SlowDown",
    }

    def explain(exc: BaseException) -> str | None:
        if isinstance(exc, NoCredentialsError):
            return (
                "no AWS credentials found. Configure them with `aws configure` (or `aws sso "
                "login`), or set AWS_PROFILE; `inflame submit --dry-run` needs none."
            )
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            hint = {
                "AccessDeniedException": " Check that your identity may call SageMaker and "
                "pass the job's role (iam:PassRole).",
                "ResourceLimitExceeded": " Ask AWS for a higher quota of this instance type "
                "(Service Quotas: training and endpoint usage are separate), or pick another type.",
            }.get(str(error.get("Code")), "")
            return f"AWS said {error.get('Code')}: {error.get('Message')}.{hint}"
        if isinstance(exc, BotoCoreError):
            return str(exc)
        return None

    def transient(exc: BaseException) -> bool:
        if isinstance(exc, (ConnectionError, ReadTimeoutError)):
            return True
        if isinstance(exc, ClientError):
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            return exc.response.get("Error", {}).get("Code") in transient_codes or status >= 500
        return False

    return ErrorTable(explain, transient)


def _sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


class SageMaker(Provider):
    name = "sagemaker"
    extra = "aws"
    capabilities = Capabilities(
        spot="managed spot, checkpoints synced to S3",
        logs="CloudWatch Logs (/aws/sagemaker/TrainingJobs)",
        data_schemes=("s3://",),
        input_name=r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}",  # also a folder name in the job
        input_name_rule="SageMaker channel names are 1-64 letters, digits, `.`, `-` or `_`, "
        "starting with a letter or digit.",
        upload_hint="aws s3 sync {path} s3://BUCKET/{name}/",
        reserved_inputs=(CODE_CHANNEL,),
    )

    def __init__(self) -> None:
        self.calls = Calls(_error_table)

    # ---- plan ---------------------------------------------------------------------------

    def default_image(self, settings: TargetSettings, region: str, instance_type: str) -> str:
        return pytorch_image(settings, instance_type, "training", IMAGE_TORCH, IMAGE_PYTHON)

    def plan(self, spec: JobSpec, bundle: Bundle) -> Plan:
        settings = TargetSettings(spec, self.name, SETTINGS)
        for module in ("botocore", "regex"):  # the model check needs them: say which extra
            import_sdk(self.name, self.extra, module)
        region, output = settings["region"], settings["output"].rstrip("/")
        instance_type = checked_instance_type(settings, "instance_type", "TrainingInstanceType")
        warnings = base.check_gpus(settings, "instance_type", instance_type, instance_gpus())
        image = settings["image"] or self.default_image(settings, region, instance_type)
        image_torch = "" if settings.given("image") else IMAGE_TORCH
        warnings += base.image_torch_warning(self.name, image, image_torch)

        name = base.unique_job_name(spec.job.name)
        code_uri = f"{output}/code/{bundle.sha256}.tar.gz"
        max_runtime = spec.compute.max_runtime_s or 24 * 3600
        if max_runtime > MAX_RUNTIME:
            raise InflameError(
                f"Invalid job spec, {spec.locate(('compute', 'max_runtime'))}: SageMaker runs a "
                f"job for at most 28 days; compute.max_runtime is {max_runtime // 86400} days."
            )
        stopping: dict[str, int] = {"MaxRuntimeInSeconds": max_runtime}
        if spec.compute.spot:
            stopping["MaxWaitTimeInSeconds"] = settings["max_wait"] or 2 * max_runtime
            if stopping["MaxWaitTimeInSeconds"] < max_runtime:
                raise settings.fail(
                    "max_wait",
                    f"`max_wait` ({settings['max_wait']} s) must be at least the maximum "
                    f"runtime ({max_runtime} s): it counts the wait for spot capacity too.",
                )
            if settings["keep_alive_seconds"] is not None:
                raise settings.fail(
                    "keep_alive_seconds", "warm pools cannot be used with spot training."
                )

        def channel(channel_name: str, uri: str) -> dict[str, Any]:
            return {
                "ChannelName": channel_name,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": uri,
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
                "InputMode": "File",
            }

        environment = base.job_environment(spec, self.name, image, image_torch)
        environment[BUNDLE_ENV] = f"{OPT_ML}/input/data/{CODE_CHANNEL}/{bundle.sha256}.tar.gz"
        request: dict[str, Any] = {
            "TrainingJobName": name,
            "RoleArn": settings["role"],
            "AlgorithmSpecification": {
                "TrainingImage": image,
                "TrainingInputMode": "File",
                "ContainerEntrypoint": ["/bin/sh", "-c"],
                "ContainerArguments": [base.bootstrap_command(spec)],
            },
            "InputDataConfig": [
                channel(CODE_CHANNEL, code_uri),
                # a prefix ending in / matches that folder only (not train_old/…)
                *(channel(n, item.value.rstrip("/") + "/") for n, item in spec.data.items()),
            ],
            "OutputDataConfig": {"S3OutputPath": f"{output}/jobs"},
            "ResourceConfig": {
                "InstanceType": instance_type,
                "InstanceCount": spec.compute.nodes,
                "VolumeSizeInGB": spec.compute.disk_gb or settings["volume_size"],
            },
            "StoppingCondition": stopping,
            "EnableManagedSpotTraining": spec.compute.spot,
            "CheckpointConfig": {
                "S3Uri": f"{output}/jobs/{name}/checkpoints",
                "LocalPath": f"{OPT_ML}/checkpoints",
            },
            "Environment": environment,
            "Tags": [
                {"Key": "inflame:job", "Value": spec.job.name},
                {"Key": "inflame:spec-sha256", "Value": spec.resolved_sha256[:32]},
                {"Key": "inflame:bundle-sha256", "Value": bundle.sha256[:32]},
            ],
        }
        if spec.tracking.tensorboard:  # SageMaker uploads the folder to S3 as the job runs
            request["TensorBoardOutputConfig"] = {
                "LocalPath": TENSORBOARD_PATH,
                "S3OutputPath": f"{output}/jobs/{name}/tensorboard",
            }
        if settings["keep_alive_seconds"] is not None:
            request["ResourceConfig"]["KeepAlivePeriodInSeconds"] = settings["keep_alive_seconds"]
        validate_request(request)
        return base.build_plan(
            self,
            spec,
            bundle,
            name,
            request,
            where={"region": region, "instance type": instance_type},
            image=image,
            image_torch=image_torch,
            outputs=f"{output}/jobs/{name}/output/model.tar.gz",
            locator={"region": region},
            uploads={code_uri: f"code bundle ({bundle.size} bytes)"},
            checks=CHECKS,
            endpoint=f"CreateTrainingJob at https://api.sagemaker.{region}.amazonaws.com",
            warnings=warnings,
        )

    # ---- submit and follow ----------------------------------------------------------------

    def session(self, locator: dict[str, Any]) -> Any:
        boto3 = import_sdk(self.name, self.extra, "boto3")
        return boto3.Session(region_name=locator["region"])

    def upload_once(self, s3: Any, uri: str, data: bytes, what: str = "code bundle") -> None:
        """Upload `data` (a code bundle, a model archive) unless an object with the same
        checksum is there already."""
        from botocore.exceptions import ClientError

        bucket, key = base.split_uri(uri)

        def stored_checksum() -> str | None:
            try:
                head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
            except ClientError as exc:
                if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                    return None
                raise
            return head.get("ChecksumSHA256")

        checksum = _sha256_b64(data)
        if self.calls.read(f"Checking the {what} at {uri}", stored_checksum) == checksum:
            return  # the same bytes, verified: not uploaded twice
        self.calls.run(
            f"Uploading the {what} to {uri}",
            s3.put_object,
            Bucket=bucket,
            Key=key,
            Body=data,
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=checksum,
        )

    def upload_folder(self, folder: Path, uri: str, locator: dict[str, Any]) -> int:
        s3 = self.session(locator).client("s3")
        return base.upload_tree(
            folder, uri, lambda name, to, data: self.upload_once(s3, to, data, f"file {name}")
        )

    def submit(self, plan: Plan) -> Submitted:
        session = self.session(plan.locator)
        s3 = session.client("s3")
        for uri in plan.uploads:
            self.upload_once(s3, uri, plan.bundle.data)
        self.calls.run(
            "Creating the SageMaker training job",
            session.client("sagemaker").create_training_job,
            **plan.request,
        )
        region = session.region_name
        return Submitted(
            provider_id=plan.job_name,
            console_url=f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}"
            f"#/jobs/{plan.job_name}",
        )

    def status(self, provider_id: str, locator: dict[str, Any]) -> JobState:
        client = self.session(locator).client("sagemaker")
        found = self.calls.read(
            "Reading the job status", client.describe_training_job, TrainingJobName=provider_id
        )
        provider_state = found["TrainingJobStatus"]
        secondary = found.get("SecondaryStatus", "")
        return JobState(
            state=_STATES.get(provider_state, "pending"),
            provider_state=f"{provider_state}/{secondary}" if secondary else provider_state,
            message=found.get("FailureReason", ""),
            model_uri=found.get("ModelArtifacts", {}).get("S3ModelArtifacts"),
        )

    def logs(self, provider_id: str, locator: dict[str, Any]) -> Iterator[str]:
        from botocore.exceptions import ClientError

        client = self.session(locator).client("logs")

        def stream_names() -> list[str]:
            pages = client.get_paginator("describe_log_streams").paginate(
                logGroupName=LOG_GROUP, logStreamNamePrefix=f"{provider_id}/"
            )
            try:
                return [s["logStreamName"] for page in pages for s in page["logStreams"]]
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                    return []  # no logs yet
                raise

        streams = self.calls.read("Listing the job's log streams", stream_names)
        for stream in sorted(streams):
            token = None
            while True:
                kwargs: dict[str, Any] = {
                    "logGroupName": LOG_GROUP,
                    "startFromHead": True,
                    "logStreamName": stream,
                }
                if token:
                    kwargs["nextToken"] = token
                page = self.calls.read("Reading the job's logs", client.get_log_events, **kwargs)
                for event in page.get("events", []):
                    yield event["message"]
                if not page.get("events") or page.get("nextForwardToken") == token:
                    break
                token = page.get("nextForwardToken")

    def cancel(self, provider_id: str, locator: dict[str, Any]) -> None:
        client = self.session(locator).client("sagemaker")
        self.calls.run(
            "Stopping the training job", client.stop_training_job, TrainingJobName=provider_id
        )

    def download(
        self, provider_id: str, locator: dict[str, Any], destination: Path, state: JobState
    ) -> Path:
        from inflame.packaging import safe_extract

        if not state.model_uri:
            raise InflameError(f"Job {provider_id} completed but reports no model artifact.")
        bucket, key = base.split_uri(state.model_uri)
        s3 = self.session(locator).client("s3")
        body = self.calls.read(
            f"Downloading {state.model_uri}",
            lambda: s3.get_object(Bucket=bucket, Key=key)["Body"].read(),
        )
        safe_extract(body, destination)
        return destination

    # ---- inside the job ---------------------------------------------------------------------

    def detect(self, env: Mapping[str, str]) -> bool:
        return "TRAINING_JOB_NAME" in env and "TRAINING_JOB_ARN" in env

    def job_paths(
        self, spec: JobSpec, env: Mapping[str, str], bound: BoundPaths | None
    ) -> JobPaths:
        """Channels at /opt/ml/input/data/<name>, the model folder /opt/ml/model (uploaded
        as model.tar.gz), checkpoints in /opt/ml/checkpoints (synced with S3)."""
        return JobPaths(
            platform=self.name,
            data={n: base.platform_path(env, f"{OPT_ML}/input/data/{n}") for n in spec.data},
            run_dir=base.platform_path(env, f"{OPT_ML}/model"),
            checkpoint_dir=base.platform_path(env, f"{OPT_ML}/checkpoints"),
            tensorboard_dir=base.platform_path(env, TENSORBOARD_PATH),
        )

    def cluster(self, env: Mapping[str, str]) -> Cluster:
        """From resourceconfig.json: hosts algo-1…algo-N (node rank = place in the sorted
        list, master = the first), and the network interface NCCL should use."""
        path = base.platform_path(env, f"{OPT_ML}/input/config/resourceconfig.json")
        try:
            config = json.loads(path.read_text())
            hosts, current = sorted(config["hosts"]), config["current_host"]
            return Cluster(
                nnodes=len(hosts),
                node_rank=hosts.index(current),
                master_addr=hosts[0],
                master_port=MASTER_PORT,
                network_interface=str(config.get("network_interface_name", "")),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InflameError(
                f"Cannot read SageMaker's cluster description {path}: {exc}."
            ) from None


TARGET = SageMaker()
