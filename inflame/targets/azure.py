"""Azure ML through azure-ai-ml: a CommandJob, submitted with MLClient.

The code bundle is unpacked into a content-addressed folder
(`$INFLAME_HOME/bundles/<sha256>/`) that becomes the job's `code`; Azure ML hashes it and
skips the upload when that code is already registered. Each [data] input is a `uri_folder`
input mounted read-only; the run directory and the checkpoints are `uri_folder` outputs,
the checkpoints at a fixed datastore path per job so that a rerun resumes. Paths reach the
job through the command line (`${{inputs.train}}`, `${{outputs.run}}`), which
`python -m inflame.job` reads.
"""

from __future__ import annotations

import logging
import re
import tempfile
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
    processes_per_node,
    unique_job_name,
)

KEYS = (
    "subscription_id",
    "resource_group",
    "workspace",
    "compute",
    "environment",
    "experiment",
    "datastore",
)
DEFAULT_ENVIRONMENT = "azureml:AzureML-acpt-pytorch-2.2-cuda12.1@latest"
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
_GUID_RE = re.compile(r"^[0-9a-fA-F-]{36}$")


def stage_bundle(bundle: Bundle) -> Path:
    """The bundle unpacked at `$INFLAME_HOME/bundles/<sha256>` (reused when present)."""
    from inflame.ledger import inflame_home

    folder = inflame_home() / "bundles" / bundle.sha256
    if not folder.is_dir():
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder.parent))
        safe_extract(bundle.data, staging)
        staging.rename(folder)
    return folder


def job_command(data_names: list[str], launch: str = "") -> str:
    """Azure ML runs this in every process (with a PyTorch distribution, G per node), so
    the install step takes a lock."""
    bind = " ".join(f"--data {name}=${{{{inputs.{name}}}}}" for name in data_names)
    return (
        "flock /tmp/inflame-pip.lock python -m pip install --quiet --disable-pip-version-check "
        "-r requirements.txt && "
        'PYTHONPATH="$PWD/vendor${PYTHONPATH:+:$PYTHONPATH}" python -m inflame.job spec.toml '
        f"--platform azure {bind} --run-dir ${{{{outputs.run}}}} "
        f"--checkpoint-dir ${{{{outputs.checkpoints}}}}{launch}"
    )


class AzureMLTarget:
    name = "azure"
    extra = "azure"

    def _sdk(self) -> Any:
        try:
            import azure.ai.ml as ml
            import azure.ai.ml.entities as entities
        except ImportError as exc:
            raise missing_sdk(self.name, self.extra, exc) from None
        for noisy in ("azure.ai.ml", "azure.core.pipeline.policies.http_logging_policy"):
            logging.getLogger(noisy).setLevel(logging.ERROR)  # "experimental class" chatter
        return ml, entities

    def plan(self, spec: JobSpec, bundle: Bundle) -> Plan:
        settings = TargetSettings(spec, self.name)
        settings.check_known(KEYS)
        subscription = settings.get(
            "subscription_id", required=True, example='"00000000-0000-0000-0000-000000000000"'
        )
        if not _GUID_RE.match(subscription):
            raise settings.fail(
                "subscription_id",
                "`subscription_id` must be a GUID like "
                f"00000000-0000-0000-0000-000000000000, got {subscription!r}.",
            )
        resource_group = settings.get("resource_group", required=True, example='"my-rg"')
        workspace = settings.get("workspace", required=True, example='"my-workspace"')
        compute = settings.get("compute", required=True, example='"gpu-cluster"')
        environment = settings.get("environment", DEFAULT_ENVIRONMENT)
        datastore = settings.get("datastore", "workspaceblobstore")
        for name, item in spec.data.items():
            if not item.value.startswith(("azureml://", "https://")):
                raise InflameError(
                    f"Invalid job spec, {spec.locate(('data', name))}: Azure ML reads data from "
                    f"a datastore (azureml://datastores/NAME/paths/…) or blob storage "
                    f"(https://ACCOUNT.blob.core.windows.net/…), but `{name}` is {item.value}. "
                    f"Upload it (e.g. `az storage blob upload-batch`) and pass "
                    f"`--set data.{name}=azureml://…`."
                )
        ml, entities = self._sdk()
        name = unique_job_name(spec.job.name, r"[^a-zA-Z0-9_-]+")
        job = entities.CommandJob(
            name=name,
            display_name=spec.job.name,
            experiment_name=settings.get("experiment", spec.job.name),
            description=spec.job.description or None,
            code=str(stage_bundle(bundle)),
            command=job_command(list(spec.data), launch_args(spec)),
            environment=environment,
            compute=compute,
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
            environment_variables={"INFLAME_PLATFORM": "azure", "PYTHONUNBUFFERED": "1"},
            resources=entities.JobResourceConfiguration(instance_count=spec.compute.nodes),
            limits=entities.CommandJobLimits(timeout=spec.compute.max_runtime_s)
            if spec.compute.max_runtime_s
            else None,
            tags={
                "inflame:job": spec.job.name,
                "inflame:spec-sha256": spec.resolved_sha256,
                "inflame:bundle-sha256": bundle.sha256,
            },
        )
        if spec.compute.nodes * processes_per_node(spec) > 1:  # Azure starts every process
            job.distribution = ml.PyTorchDistribution(
                process_count_per_instance=processes_per_node(spec)
            )
        if spec.compute.spot:
            job.queue_settings = entities.QueueSettings(job_tier="spot")
        rendered = self._dump(job)
        summary = plan_summary(
            self.name,
            name,
            spec,
            bundle,
            where={"workspace": f"{subscription}/{resource_group}/{workspace}", "compute": compute},
            image=environment,
            spot="job tier spot",
            outputs=f"azureml://datastores/{datastore}/paths/{RUN_PREFIX.format(job=name)}",
        )
        import yaml

        return Plan(
            target=self.name,
            job_name=name,
            request=yaml.safe_load(rendered),
            rendered=rendered,
            summary=summary,
            bundle=bundle,
            spec_sha256=spec.resolved_sha256,
            locator={
                "subscription_id": subscription,
                "resource_group": resource_group,
                "workspace": workspace,
                "datastore": datastore,
            },
        )

    def _dump(self, job: Any) -> str:
        """The job YAML, checked by loading it back with azure.ai.ml.load_job."""
        ml, _ = self._sdk()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "job.yml"
            job.dump(path)
            try:
                ml.load_job(source=path)
            except Exception as exc:
                raise InflameError(f"The Azure ML job does not validate: {exc}") from None
            return path.read_text(encoding="utf-8")

    def credential(self) -> Any:
        """The user's Azure credential (az login, managed identity, environment…)."""
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential()

    def client(self, locator: dict[str, Any]) -> Any:
        """An MLClient for the workspace, with the user's Azure credentials."""
        ml, _ = self._sdk()
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
        from azure.storage.blob import ContainerClient

        store = self._call(
            f"Reading datastore {datastore}", self.client(locator).datastores.get, datastore
        )
        account_url = f"{store.protocol or 'https'}://{store.account_name}.blob.{store.endpoint}"
        return ContainerClient(
            account_url, store.container_name, credential=self.credential(), **self.blob_options()
        )

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

        try:
            return fn(*args, **kwargs)
        except ClientAuthenticationError:
            raise InflameError(
                f"{what}: no usable Azure credentials. Run `az login` (or set "
                "AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET); "
                "`inflame submit --dry-run` needs none."
            ) from None
        except HttpResponseError as exc:
            raise InflameError(f"{what}: Azure said {exc.status_code}: {exc.message}") from None

    def submit(self, plan: Plan) -> Submitted:
        ml, _ = self._sdk()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "job.yml"
            path.write_text(plan.rendered, encoding="utf-8")
            job = ml.load_job(source=path)
        created = self._call(
            "Creating the Azure ML job", self.client(plan.locator).jobs.create_or_update, job
        )
        return Submitted(provider_id=created.name, console_url=created.studio_url or "")

    def status(self, provider_id: str, locator: dict[str, Any]) -> JobState:
        job = self._call("Reading the job status", self.client(locator).jobs.get, provider_id)
        provider_state = str(getattr(job.status, "value", job.status))
        return JobState(state=_STATES.get(provider_state, "pending"), provider_state=provider_state)

    def logs(self, provider_id: str, locator: dict[str, Any]) -> Iterator[str]:
        """The job's user logs (`user_logs/` in the workspace artifact store), file by file."""
        container = self.container(locator, LOGS_DATASTORE)
        prefix = LOGS_PREFIX.format(job=provider_id)
        names = sorted(
            blob.name
            for blob in self._call(
                "Listing the job's logs",
                lambda: list(container.list_blobs(name_starts_with=prefix)),
            )
        )
        for name in names:
            data = self._call(
                "Reading the job's logs", lambda n=name: container.download_blob(n).readall()
            )
            yield from data.decode("utf-8", errors="replace").splitlines()

    def cancel(self, provider_id: str, locator: dict[str, Any]) -> None:
        self._call("Cancelling the job", self.client(locator).jobs.begin_cancel, provider_id)

    def download(
        self, provider_id: str, locator: dict[str, Any], destination: Path, state: JobState
    ) -> Path:
        """Copy the job's `run` output (manifest, metrics, model) from its datastore path."""
        container = self.container(locator, locator.get("datastore", "workspaceblobstore"))
        prefix = RUN_PREFIX.format(job=provider_id)
        blobs = self._call(
            "Listing the job's run output",
            lambda: list(container.list_blobs(name_starts_with=prefix)),
        )
        for blob in blobs:
            relative = blob.name[len(prefix) :]
            if not relative or ".." in Path(relative).parts:
                continue
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            data = self._call(
                f"Downloading {blob.name}", lambda b=blob.name: container.download_blob(b).readall()
            )
            target.write_bytes(data)
        return destination


TARGET = AzureMLTarget()
