"""AWS SageMaker through boto3: CreateTrainingJob, DescribeTrainingJob, StopTrainingJob and
CloudWatch Logs.

The v3 `sagemaker` SDK's ModelTrainer calls AWS just to be constructed, uploads on dry-run and
weighs about 1 GB; boto3 gives an exact, offline dry-run (validated by botocore's own model of
CreateTrainingJob) and a light install.

The job: the code bundle is uploaded once per content hash to
`<output>/code/<sha256>.tar.gz` and mounted as the `code` channel; each [data] input is an S3
channel of the same name; the container unpacks the bundle, installs the small runtime
requirements and runs `python -m inflame.job spec.toml`. The run directory (manifest,
metrics, model) is /opt/ml/model, which SageMaker uploads as model.tar.gz; checkpoints in
/opt/ml/checkpoints are synced to `<output>/<job>/checkpoints`, so a restarted spot job resumes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from inflame.errors import InflameError
from inflame.packaging import Bundle, safe_extract
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
    "role",
    "region",
    "instance_type",
    "output",
    "image",
    "max_wait",
    "volume_size",
    "keep_alive_seconds",
)
DEFAULT_IMAGE = "763104351884.dkr.ecr.{region}.amazonaws.com/pytorch-training:2.5-gpu-py311"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
_ROLE_RE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/\S+$")
_STATES = {
    "InProgress": "running",
    "Completed": "completed",
    "Failed": "failed",
    "Stopping": "stopping",
    "Stopped": "stopped",
}

ENTRY_SCRIPT = """\
set -euo pipefail
CODE="${SM_CHANNEL_CODE:-/opt/ml/input/data/code}"
WORK="${INFLAME_WORKDIR:-/tmp/inflame}"
mkdir -p "$WORK" && tar -xzf "$CODE"/*.tar.gz -C "$WORK" && cd "$WORK"
python -m pip install --quiet --disable-pip-version-check -r requirements.txt
PYTHONPATH="$WORK/vendor${PYTHONPATH:+:$PYTHONPATH}" exec python -m inflame.job spec.toml
"""


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://") :].partition("/")
    return bucket, key


def validate_request(request: dict[str, Any]) -> None:
    """Check the request against botocore's model of CreateTrainingJob (offline)."""
    import botocore.session
    from botocore.validate import ParamValidator

    model = botocore.session.get_session().get_service_model("sagemaker")
    shape = model.operation_model("CreateTrainingJob").input_shape
    report = ParamValidator().validate(request, shape)
    if report.has_errors():
        raise InflameError(f"The SageMaker request is invalid: {report.generate_report()}")


class SageMakerTarget:
    name = "sagemaker"
    extra = "aws"

    def _boto3(self) -> Any:
        try:
            import boto3
        except ImportError as exc:
            raise missing_sdk(self.name, self.extra, exc) from None
        return boto3

    def plan(self, spec: JobSpec, bundle: Bundle) -> Plan:
        settings = TargetSettings(spec, self.name)
        settings.check_known(KEYS)
        role = settings.get(
            "role", required=True, example='"arn:aws:iam::123456789012:role/inflame-sagemaker"'
        )
        if not _ROLE_RE.match(role):
            raise settings.fail(
                "role",
                f"`role` must be an IAM role ARN like "
                f"arn:aws:iam::123456789012:role/NAME, got {role!r}. "
                "infra/aws creates one.",
            )
        region = settings.get("region", required=True, example='"us-east-1"')
        output = settings.get("output", required=True, example='"s3://my-bucket/inflame"')
        if not output.startswith("s3://") or not _split_s3(output)[0]:
            raise settings.fail(
                "output",
                f"`output` must be an S3 prefix like s3://my-bucket/inflame, got {output!r}.",
            )
        output = output.rstrip("/")
        instance_type = settings.get("instance_type", "ml.g5.xlarge")
        image = settings.get("image", DEFAULT_IMAGE.format(region=region))
        channels = []
        for name, item in spec.data.items():
            if not item.value.startswith("s3://"):
                raise InflameError(
                    f"Invalid job spec, {spec.locate(('data', name))}: SageMaker reads data from "
                    f"S3, but data input `{name}` is {item.value}. Upload it (e.g. `aws s3 sync "
                    f"{item.value} s3://BUCKET/{name}`) and pass `--set data.{name}=s3://…`."
                )
            channels.append(
                {
                    "ChannelName": name,
                    "DataSource": {
                        "S3DataSource": {
                            "S3DataType": "S3Prefix",
                            "S3Uri": item.value,
                            "S3DataDistributionType": "FullyReplicated",
                        }
                    },
                    "InputMode": "File",
                }
            )
        name = unique_job_name(spec.job.name)
        code_uri = f"{output}/code/{bundle.sha256}.tar.gz"
        max_runtime = spec.compute.max_runtime_s or 24 * 3600
        stopping: dict[str, int] = {"MaxRuntimeInSeconds": max_runtime}
        if spec.compute.spot:
            stopping["MaxWaitTimeInSeconds"] = settings.get("max_wait", 2 * max_runtime, kind=int)
        request: dict[str, Any] = {
            "TrainingJobName": name,
            "RoleArn": role,
            "AlgorithmSpecification": {
                "TrainingImage": image,
                "TrainingInputMode": "File",
                "ContainerEntrypoint": ["/bin/bash", "-c"],
                "ContainerArguments": [ENTRY_SCRIPT.rstrip("\n") + launch_args(spec) + "\n"],
            },
            "InputDataConfig": [
                {
                    "ChannelName": "code",
                    "DataSource": {
                        "S3DataSource": {
                            "S3DataType": "S3Prefix",
                            "S3Uri": code_uri,
                            "S3DataDistributionType": "FullyReplicated",
                        }
                    },
                    "InputMode": "File",
                },
                *channels,
            ],
            "OutputDataConfig": {"S3OutputPath": f"{output}/jobs"},
            "ResourceConfig": {
                "InstanceType": instance_type,
                "InstanceCount": spec.compute.nodes,
                "VolumeSizeInGB": spec.compute.disk_gb or settings.get("volume_size", 50, kind=int),
            },
            "StoppingCondition": stopping,
            "EnableManagedSpotTraining": spec.compute.spot,
            "CheckpointConfig": {
                "S3Uri": f"{output}/jobs/{name}/checkpoints",
                "LocalPath": "/opt/ml/checkpoints",
            },
            "Environment": {
                "INFLAME_PLATFORM": "sagemaker",
                "INFLAME_CHECKPOINT_DIR": "/opt/ml/checkpoints",
                "PYTHONUNBUFFERED": "1",
            },
            "Tags": [
                {"Key": "inflame:job", "Value": spec.job.name},
                {"Key": "inflame:spec-sha256", "Value": spec.resolved_sha256[:32]},
                {"Key": "inflame:bundle-sha256", "Value": bundle.sha256[:32]},
            ],
        }
        if "keep_alive_seconds" in settings.table:
            request["ResourceConfig"]["KeepAlivePeriodInSeconds"] = settings.get(
                "keep_alive_seconds", kind=int
            )
        validate_request(request)
        summary = plan_summary(
            self.name,
            name,
            spec,
            bundle,
            where={"region": region, "instance type": instance_type},
            image=image,
            spot="managed spot, checkpoints synced to S3",
            outputs=f"{output}/jobs/{name}/output/model.tar.gz",
        )
        return Plan(
            target=self.name,
            job_name=name,
            request=request,
            rendered=json.dumps(request, indent=2),
            summary=summary,
            bundle=bundle,
            spec_sha256=spec.resolved_sha256,
            locator={"region": region},
            uploads={code_uri: f"code bundle ({bundle.size} bytes)"},
        )

    def _session(self, locator: dict[str, Any]) -> Any:
        return self._boto3().Session(region_name=locator["region"])

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            return fn(**kwargs)
        except NoCredentialsError:
            raise InflameError(
                f"{what}: no AWS credentials found. Configure them with `aws configure` (or "
                "`aws sso login`), or set AWS_PROFILE; `inflame submit --dry-run` needs none."
            ) from None
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise InflameError(
                f"{what}: AWS said {error.get('Code')}: {error.get('Message')}"
            ) from None
        except BotoCoreError as exc:
            raise InflameError(f"{what}: {exc}") from None

    def submit(self, plan: Plan) -> Submitted:
        from botocore.exceptions import BotoCoreError, ClientError

        session = self._session(plan.locator)
        s3 = session.client("s3")
        for uri in plan.uploads:
            bucket, key = _split_s3(uri)
            try:
                s3.head_object(Bucket=bucket, Key=key)  # same hash: already there
            except (BotoCoreError, ClientError):  # absent (or unreadable): upload it
                self._call(
                    f"Uploading the code bundle to {uri}",
                    s3.put_object,
                    Bucket=bucket,
                    Key=key,
                    Body=plan.bundle.data,
                )
        sagemaker = session.client("sagemaker")
        self._call(
            "Creating the SageMaker training job", sagemaker.create_training_job, **plan.request
        )
        region = session.region_name
        return Submitted(
            provider_id=plan.job_name,
            console_url=f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}"
            f"#/jobs/{plan.job_name}",
        )

    def status(self, provider_id: str, locator: dict[str, Any]) -> JobState:
        client = self._session(locator).client("sagemaker")
        found = self._call(
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
        client = self._session(locator).client("logs")
        try:
            streams = self._call(
                "Listing the job's log streams",
                client.describe_log_streams,
                logGroupName=LOG_GROUP,
                logStreamNamePrefix=f"{provider_id}/",
            )
        except InflameError as exc:
            if "ResourceNotFoundException" in str(exc):
                return  # no logs yet
            raise
        for stream in sorted(streams.get("logStreams", []), key=lambda s: s["logStreamName"]):
            token = None
            while True:
                kwargs: dict[str, Any] = {
                    "logGroupName": LOG_GROUP,
                    "startFromHead": True,
                    "logStreamName": stream["logStreamName"],
                }
                if token:
                    kwargs["nextToken"] = token
                page = self._call("Reading the job's logs", client.get_log_events, **kwargs)
                for event in page.get("events", []):
                    yield event["message"]
                if not page.get("events") or page.get("nextForwardToken") == token:
                    break
                token = page.get("nextForwardToken")

    def cancel(self, provider_id: str, locator: dict[str, Any]) -> None:
        client = self._session(locator).client("sagemaker")
        self._call(
            "Stopping the training job", client.stop_training_job, TrainingJobName=provider_id
        )

    def download(
        self, provider_id: str, locator: dict[str, Any], destination: Path, state: JobState
    ) -> Path:
        if not state.model_uri:
            raise InflameError(f"Job {provider_id} completed but reports no model artifact.")
        bucket, key = _split_s3(state.model_uri)
        s3 = self._session(locator).client("s3")
        body = self._call(f"Downloading {state.model_uri}", s3.get_object, Bucket=bucket, Key=key)[
            "Body"
        ].read()
        safe_extract(body, destination)
        return destination


TARGET = SageMakerTarget()
