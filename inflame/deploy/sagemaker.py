"""SageMaker real-time endpoints: CreateModel (the region's PyTorch inference image, the
model archive in S3, inflame's handler), CreateEndpointConfig and CreateEndpoint, each
checked against botocore's model of the operation before anything is sent."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from inflame.deploy.archive import build_archive
from inflame.deploy.plan import TOP_K_ENV, Created, DeployPlan, finished_run, roll_back
from inflame.targets import base
from inflame.targets.sdk import import_sdk

HANDLER = Path(__file__).with_name("sagemaker_inference.py")
MODEL_DIR = "/opt/ml/model"  # where SageMaker unpacks the archive
INFERENCE_TORCH, INFERENCE_PYTHON = "2.6", "py312"  # the newest sagemaker-core's table lists
CHECKS = (
    "botocore's models of CreateModel, CreateEndpointConfig and CreateEndpoint, in full",
    "the endpoint instance type against SageMaker's ProductionVariantInstanceType list",
    "the region's PyTorch inference image (sagemaker-core's registry table)",
)
_STATES = {
    "Creating": "creating",
    "Updating": "updating",
    "SystemUpdating": "updating",
    "RollingBack": "updating",
    "InService": "in_service",
    "OutOfService": "out_of_service",
    "Deleting": "deleting",
    "Failed": "failed",
    "UpdateRollbackFailed": "failed",
}


class SageMakerEndpoints:
    name = "sagemaker"

    def __init__(self) -> None:
        from inflame.targets.sagemaker import SageMaker

        self.provider = SageMaker()  # its session, S3 upload and error translation

    def plan(self, run_dir: Path, overrides: list[str]) -> DeployPlan:
        from inflame.targets.sagemaker import (
            SETTINGS,
            checked_instance_type,
            pytorch_image,
            validate_operation,
        )

        manifest, spec = finished_run(run_dir, overrides)
        settings = base.TargetSettings(spec, self.name, SETTINGS)
        for module in ("botocore", "regex"):
            import_sdk(self.name, "aws", module)
        region, output = settings["region"], settings["output"].rstrip("/")
        instance_type = checked_instance_type(
            settings, "endpoint_instance_type", "ProductionVariantInstanceType"
        )
        image = settings["inference_image"] or pytorch_image(
            settings, instance_type, "inference", INFERENCE_TORCH, INFERENCE_PYTHON
        )
        archive = build_archive(run_dir, HANDLER, "code/inference.py", "code")
        archive_uri = f"{output}/models/{archive.sha256}/model.tar.gz"
        name = endpoint_name(spec.job.name)
        tags = [
            {"Key": "inflame:job", "Value": spec.job.name},
            {"Key": "inflame:weights-sha256", "Value": str(manifest.get("weights_sha256"))[:32]},
        ]
        requests: list[tuple[str, dict[str, Any]]] = [
            (
                "CreateModel",
                {
                    "ModelName": name,
                    "PrimaryContainer": {
                        "Image": image,
                        "ModelDataUrl": archive_uri,
                        "Environment": {
                            "SAGEMAKER_PROGRAM": "inference.py",
                            "SAGEMAKER_SUBMIT_DIRECTORY": f"{MODEL_DIR}/code",
                            "SAGEMAKER_REGION": region,
                            "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
                            TOP_K_ENV: str(settings["endpoint_top_k"]),
                        },
                    },
                    "ExecutionRoleArn": settings["role"],
                    "Tags": tags,
                },
            ),
            (
                "CreateEndpointConfig",
                {
                    "EndpointConfigName": name,
                    "ProductionVariants": [
                        {
                            "VariantName": "AllTraffic",
                            "ModelName": name,
                            "InitialInstanceCount": settings["endpoint_instances"],
                            "InstanceType": instance_type,
                            "InitialVariantWeight": 1.0,
                        }
                    ],
                    "Tags": tags,
                },
            ),
            ("CreateEndpoint", {"EndpointName": name, "EndpointConfigName": name, "Tags": tags}),
        ]
        for operation, request in requests:
            validate_operation(operation, request)
        return DeployPlan(
            target=self.name,
            name=name,
            run_dir=run_dir,
            weights_sha256=manifest.get("weights_sha256"),
            archive=archive,
            archive_uri=archive_uri,
            requests=requests,
            locator={"region": region, "name": name},
            where={"region": region, "instance type": instance_type, "image": image},
            checks=CHECKS,
        )

    def create(self, plan: DeployPlan) -> Created:
        """Upload the archive (unless the same bytes are there), then create the model, the
        endpoint config and the endpoint; a failure deletes what this call created."""
        session = self.provider.session(plan.locator)
        self.provider.upload_once(
            session.client("s3"), plan.archive_uri, plan.archive.data, what="model archive"
        )
        client = session.client("sagemaker")
        created: list[str] = []
        calls = {
            "CreateModel": (client.create_model, "Creating the SageMaker model"),
            "CreateEndpointConfig": (
                client.create_endpoint_config,
                "Creating the endpoint configuration",
            ),
            "CreateEndpoint": (client.create_endpoint, "Creating the endpoint"),
        }
        try:
            for operation, request in plan.requests:
                call, what = calls[operation]
                self.provider.calls.run(what, call, **request)
                created.append(operation)
        except BaseException:
            roll_back(lambda: self._delete(client, plan.name, created), plan.name)
            raise
        region = plan.locator["region"]
        return Created(
            f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}"
            f"#/endpoints/{plan.name}"
        )

    def status(self, record: Any) -> tuple[str, str]:
        from botocore.exceptions import ClientError

        client = self.provider.session(record.locator).client("sagemaker")

        def describe() -> dict[str, Any] | None:
            try:
                return client.describe_endpoint(EndpointName=record.name)
            except ClientError as exc:
                if "Could not find" in str(exc) or "not found" in str(exc).lower():
                    return None
                raise

        found = self.provider.calls.read("Reading the endpoint's status", describe)
        if found is None:
            return "deleted", "the endpoint no longer exists"
        state = found.get("EndpointStatus", "")
        return _STATES.get(state, state.lower()), found.get("FailureReason", "")

    def delete(self, record: Any) -> None:
        client = self.provider.session(record.locator).client("sagemaker")
        self._delete(client, record.name, ["CreateModel", "CreateEndpointConfig", "CreateEndpoint"])

    def _delete(self, client: Any, name: str, created: list[str]) -> None:
        """Delete what `created` names, newest first; what is already gone is fine."""
        from botocore.exceptions import ClientError

        deletions = {
            "CreateEndpoint": (client.delete_endpoint, {"EndpointName": name}),
            "CreateEndpointConfig": (client.delete_endpoint_config, {"EndpointConfigName": name}),
            "CreateModel": (client.delete_model, {"ModelName": name}),
        }
        for operation in reversed(created):
            call, request = deletions[operation]

            def attempt(call: Any = call, request: dict[str, Any] = request) -> None:
                try:
                    call(**request)
                except ClientError as exc:
                    if not re.search(r"could not find|not found|does not exist", str(exc), re.I):
                        raise

            self.provider.calls.read(f"Deleting {name} ({operation[6:]})", attempt)


def endpoint_name(job: str) -> str:
    """A unique endpoint name: letters, digits and hyphens, at most 63 characters."""
    return base.unique_job_name(job, limit=63)
