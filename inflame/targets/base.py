"""What every provider shares: the plan and job-state types, the capability table, reading
`[targets.<name>]` with precise errors, the checks every plan runs (data inputs, GPUs per
machine), the command a job starts with, and the in-job types (paths, cluster).

Nothing here imports torch, a cloud SDK or any third-party package: provider modules build on
it inside cloud jobs, where only the training image's packages exist.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inflame.errors import InflameError, did_you_mean
from inflame.redact import redact

if TYPE_CHECKING:  # pragma: no cover
    from inflame.packaging import Bundle
    from inflame.spec import JobSpec

TERMINAL = ("completed", "failed", "stopped")
PLATFORM_ENV = "INFLAME_PLATFORM"
# Emulation only: a folder standing for `/` (tests run a job's real command under it).
PLATFORM_ROOT_ENV = "INFLAME_PLATFORM_ROOT"
BUNDLE_ENV = "INFLAME_BUNDLE"  # where the job finds its code bundle (an absolute path)
IMAGE_ENV, IMAGE_TORCH_ENV = "INFLAME_IMAGE", "INFLAME_IMAGE_TORCH"

# The container command of jobs that start from the bundle archive (SageMaker, Vertex AI).
# It stays well under SageMaker's 256 characters per argument: the real entry script is
# `entry.sh` inside the bundle. Values reach it only as environment variables.
BOOTSTRAP = (
    'set -e;W="$INFLAME_PLATFORM_ROOT/tmp/inflame";mkdir -p "$W";'
    'tar -xzf "$INFLAME_PLATFORM_ROOT$INFLAME_BUNDLE" -C "$W";exec bash "$W/entry.sh"'
)


@dataclass(frozen=True)
class Capabilities:
    """What a provider can do and accepts, as data checked in one place."""

    spot: str  # what `spot = true` becomes there
    logs: str  # where `inflame logs` reads from
    data_schemes: tuple[str, ...]  # URI schemes of [data] inputs
    input_name: str  # regex a [data] name must match (the provider's own rule)
    input_name_rule: str  # the same rule, in words
    upload_hint: str  # how to put local data there ({path} and {name} are filled in)
    reserved_inputs: tuple[str, ...] = ()  # names inflame itself uses there
    starts_processes: bool = False  # the platform starts one process per GPU itself
    multi_node: bool = True


@dataclass(frozen=True)
class Plan:
    """The exact request a provider would receive, built without credentials or network."""

    target: str
    job_name: str
    request: dict[str, Any]
    rendered: str  # the request as --dry-run shows it (secrets masked)
    summary: dict[str, str]
    bundle: Bundle
    spec_sha256: str
    locator: dict[str, Any]  # what finds the job again (region, workspace, project…)
    uploads: dict[str, str] = field(default_factory=dict)  # destination URI -> what
    checks: tuple[str, ...] = ()  # what the request was checked against
    endpoint: str = ""  # where the request would go
    warnings: tuple[str, ...] = ()
    secret_values: tuple[str, ...] = field(default=(), repr=False)
    # the SDK's own job object, where the provider's SDK sends one (not stored)
    payload: Any = field(default=None, repr=False, compare=False)

    @property
    def stored_request(self) -> dict[str, Any]:
        """The request as the ledger keeps it: no secret value in it."""
        return redact(self.request, self.secret_values)


@dataclass(frozen=True)
class JobState:
    state: str  # pending, running, stopping, completed, failed, stopped
    provider_state: str
    message: str = ""
    model_uri: str | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


@dataclass(frozen=True)
class Submitted:
    provider_id: str
    console_url: str


@dataclass(frozen=True)
class JobPaths:
    """Where a job's inputs and outputs are, inside the job."""

    platform: str
    data: dict[str, Path]
    run_dir: Path  # collected by the platform after the job (the model folder is inside)
    checkpoint_dir: Path  # survives restarts where the platform supports it
    tensorboard_dir: Path | None = None  # where the platform collects TensorBoard events


@dataclass(frozen=True)
class BoundPaths:
    """Paths the platform put on the job's command line (Azure ML binds inputs and outputs
    as `${{inputs.x}}` / `${{outputs.y}}` arguments)."""

    data: dict[str, Path]
    run_dir: Path
    checkpoint_dir: Path


@dataclass(frozen=True)
class Cluster:
    """The nodes of a job, as torchrun needs them."""

    nnodes: int
    node_rank: int
    master_addr: str
    master_port: int
    network_interface: str = ""  # for NCCL_SOCKET_IFNAME, where the platform names it


def split_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/key` or `gs://bucket/key` -> (bucket, key)."""
    bucket, _, key = uri.partition("://")[2].partition("/")
    return bucket, key


ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # a valid environment variable name


def same_torch(a: str, b: str) -> bool:
    """Whether two torch versions share major.minor (`2.8.0+cu126` and `2.8` do)."""
    return a.split("+")[0].split(".")[:2] == b.split("+")[0].split(".")[:2]


def platform_path(env: Mapping[str, str], path: str) -> Path:
    """An absolute path of the platform (`/opt/ml/…`, `/gcs/…`), under the emulation root
    when one is set."""
    return Path(env.get(PLATFORM_ROOT_ENV, "") + path)


@dataclass(frozen=True)
class Setting:
    """One key of `[targets.<name>]`: its type, default, and the rule its value follows."""

    key: str
    default: Any = None
    required: bool = False
    kind: type = str
    example: str = ""
    pattern: str | None = None  # matched against the whole value
    rule: str = ""  # the pattern, in words
    minimum: int | None = None  # for numbers
    maximum: int | None = None


class TargetSettings:
    """`[targets.<name>]`, read against the provider's declared settings: unknown keys,
    missing required keys, wrong types and values that break a rule are errors that name the
    spec file, the line, the key path and the fix."""

    def __init__(self, spec: JobSpec, target: str, declared: tuple[Setting, ...]):
        self.spec, self.target = spec, target
        table = spec.targets.get(target)
        if table is None:
            raise InflameError(
                f"Invalid job spec {spec.path}: no [targets.{target}] table. Add "
                f"one with the settings the {target} target needs (see README, "
                f"'Run it on your cloud'), or give them with `--set targets.{target}.KEY=VALUE`."
            )
        self.table = table
        known = tuple(item.key for item in declared)
        for key in table:
            if key not in known:
                raise self.fail(
                    key,
                    f"unknown key `targets.{target}.{key}`."
                    f"{did_you_mean(key, known)} Known keys: {', '.join(known)}.",
                )
        self.values = {item.key: self._read(item) for item in declared}

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def given(self, key: str) -> bool:
        """Whether the spec sets `key` (rather than leaving it to its default)."""
        return key in self.table

    def fail(self, key: str, message: str) -> InflameError:
        return InflameError(
            f"Invalid job spec, {self.spec.locate(('targets', self.target, key))}: {message}"
        )

    def _read(self, item: Setting) -> Any:
        where = f"targets.{self.target}.{item.key}"
        if item.key not in self.table:
            if item.required:
                raise self.fail(
                    item.key,
                    f"missing required key `{where}`. Add `{item.key} = {item.example}` "
                    f"under [targets.{self.target}], or give it with `--set {where}=…`.",
                )
            return item.default
        value = self.table[item.key]
        if not isinstance(value, item.kind) or (item.kind is int and isinstance(value, bool)):
            raise self.fail(item.key, f"`{where}` must be {item.kind.__name__}, got {value!r}.")
        if item.pattern is not None and not re.fullmatch(item.pattern, value):
            example = f" For example: {item.example}." if item.example else ""
            raise self.fail(item.key, f"`{where}` = {value!r} is not valid: {item.rule}{example}")
        low = -float("inf") if item.minimum is None else item.minimum
        high = float("inf") if item.maximum is None else item.maximum
        if item.kind is int and not low <= value <= high:
            if item.maximum is None:
                bounds = f"at least {item.minimum}"
            elif item.minimum is None:
                bounds = f"at most {item.maximum}"
            else:
                bounds = f"between {item.minimum} and {item.maximum}"
            raise self.fail(item.key, f"`{where}` must be {bounds}, got {value}.")
        return value


def refuse_problems(what: str, problems: list[str]) -> None:
    """Raise one InflameError listing what a provider would reject in a request (if any)."""
    if problems:
        raise InflameError(
            f"The {what} would be rejected: {'; '.join(problems[:10])}. These fields come "
            "from the spec's [compute] and [targets] values; change the value behind them "
            "(inflame checks most values where they are written, so this is likely one it "
            "does not check yet: please report it)."
        )


def unique_job_name(job: str, disallowed: str = r"[^a-zA-Z0-9-]+", limit: int = 63) -> str:
    """`<job>-<YYYYmmdd-HHMMSS>-<6 random hex>`, at most `limit` characters: readable,
    sortable, and unique even for two submissions in the same second."""
    suffix = f"-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    base = re.sub(disallowed, "-", job).strip("-_")[: limit - len(suffix)].strip("-_") or "job"
    return base + suffix


def processes_per_node(spec: JobSpec) -> int:
    """One training process per GPU (one on a CPU-only node)."""
    return max(1, spec.compute.gpus_per_node)


def launch_args(spec: JobSpec) -> list[str]:
    """`inflame.job` arguments for a job of several processes (none for one)."""
    nodes, per_node = spec.compute.nodes, processes_per_node(spec)
    if nodes * per_node == 1:
        return []
    return ["--nnodes", str(nodes), "--nproc-per-node", str(per_node)]


def bootstrap_command(spec: JobSpec) -> str:
    """The shell command of a container that starts from the bundle archive."""
    return " ".join([BOOTSTRAP, *launch_args(spec)])


def check_capabilities(spec: JobSpec, provider: Provider) -> None:
    """What the spec asks of the provider, against its capability table, before any other
    work: several nodes, and every [data] input a URI it reads under a name it accepts."""
    target, caps = provider.name, provider.capabilities
    if spec.compute.nodes > 1 and not caps.multi_node:
        raise InflameError(
            f"Invalid job spec, {spec.locate(('compute', 'nodes'))}: {target} runs jobs on one "
            "node only. Set `nodes = 1`."
        )
    for name, item in spec.data.items():
        where = spec.locate(("data", name))
        if name in caps.reserved_inputs:
            raise InflameError(
                f"Invalid job spec, {where}: data input name `{name}` is used by inflame "
                f"itself on {target} ({', '.join(caps.reserved_inputs)} are reserved). "
                f"Rename the input, e.g. `{name}_data`."
            )
        if not re.fullmatch(caps.input_name, name):
            raise InflameError(
                f"Invalid job spec, {where}: data input name `{name}` is not valid on "
                f"{target}: {caps.input_name_rule} Rename the input."
            )
        if not item.value.startswith(caps.data_schemes):
            upload = caps.upload_hint.format(path=item.value, name=name)
            raise InflameError(
                f"Invalid job spec, {where}: {target} reads data from "
                f"{' or '.join(caps.data_schemes)} URIs, but data input `{name}` is "
                f"{item.value}. Upload it (e.g. `{upload}`) and pass `--set data.{name}=URI`."
            )


def check_gpus(
    settings: TargetSettings,
    key: str,
    machine: str,
    gpus: dict[str, int],
    *,
    family: str = "",
) -> list[str]:
    """Refuse a machine whose GPU count differs from `gpus_per_node` (NCCL would fail with
    "Duplicate GPU detected", or the provider would reject the job). Returns warnings for a
    machine the table does not know."""
    wanted = settings.spec.compute.gpus_per_node
    have = gpus.get(machine.lower())
    if have is None:
        return [
            f"inflame does not know how many GPUs {machine} has; make sure it has "
            f"{wanted} (compute.gpus_per_node)"
        ]
    if have == wanted:
        return []
    fits = sorted(
        (name for name, n in gpus.items() if n == wanted and name.startswith(family.lower())),
        key=lambda name: (len(name), name),
    )
    hint = f" Machines with {wanted} GPU(s): {', '.join(fits[:6])}." if fits else ""
    raise settings.fail(
        key,
        f"{machine} has {have} GPU(s) but compute.gpus_per_node is {wanted}. Set "
        f"`gpus_per_node = {have}`, or pick a {key.replace('_', ' ')} with {wanted} GPU(s).{hint}",
    )


def image_torch_warning(target: str, image: str, image_torch: str) -> list[str]:
    """A warning when the job's torch (major.minor) differs from this machine's."""
    from importlib import metadata

    try:
        local = metadata.version("torch")
    except metadata.PackageNotFoundError:
        return []
    if not image_torch or same_torch(local, image_torch):
        return []
    return [
        f"the {target} image has torch {image_torch} but this machine has torch {local}; "
        "results (and weights hashes) can differ between them. Set `image` to match, or "
        "accept the difference (the run manifest records both)"
    ]


# Variables a job's platform, image or inflame itself sets: a spec's `${env:…}` may not
# replace them inside the job.
RESERVED_ENV = re.compile(
    r"(PATH|HOME|USER|SHELL|PWD|HOSTNAME|TMPDIR|LANG|TZ|RANK|LOCAL_RANK|WORLD_SIZE|NODE_RANK"
    r"|MASTER_ADDR|MASTER_PORT|CLUSTER_SPEC|TF_CONFIG|TRAINING_JOB_NAME|TRAINING_JOB_ARN"
    r"|(LC|LD|PYTHON|INFLAME|CUDA|NCCL|NVIDIA|OMP|TORCH|AWS|SM|SAGEMAKER|AZUREML|AZURE|AIP"
    r"|CLOUD_ML|GOOGLE|GCE|PET|TORCHELASTIC)_\w*)"
)


def job_environment(spec: JobSpec, platform: str, image: str, image_torch: str) -> dict[str, str]:
    """The variables every job gets: the values of the `${env:…}` references its spec.toml
    keeps (the bundle holds only the references), then which platform it is and the image
    it asked for."""
    env = spec.referenced_env
    for name in env:
        if RESERVED_ENV.fullmatch(name):
            where = next(
                (spec.locate(path) for path, text in spec.env_refs.items() if name in text),
                str(spec.path),
            )
            raise InflameError(
                f"Invalid job spec, {where}: `${{env:{name}}}` would be passed to the job as "
                f"{name}, which the job's platform or inflame sets itself. Put the value in "
                "another variable (e.g. MY_" + name + ") and reference that."
            )
    return {
        **env,
        PLATFORM_ENV: platform,
        "PYTHONUNBUFFERED": "1",
        IMAGE_ENV: image,
        IMAGE_TORCH_ENV: image_torch,
    }


def plan_summary(
    target: str,
    name: str,
    spec: JobSpec,
    bundle: Bundle,
    *,
    where: dict[str, str],
    image: str,
    image_torch: str,
    spot: str,
    logs: str,
    outputs: str,
) -> dict[str, str]:
    """The --dry-run summary every target prints: where, what machine, what goes in and out."""
    return {
        "target": target,
        "job name": name,
        **where,
        "GPUs x nodes": f"{spec.compute.gpus_per_node} x {spec.compute.nodes}",
        "spot": f"yes ({spot})" if spec.compute.spot else "no",
        "image": f"{image} (torch {image_torch or 'unknown'})",
        "inputs": ", ".join(f"{n}={item.value}" for n, item in spec.data.items()) or "-",
        "outputs": outputs,
        "logs": logs,
        "code bundle": f"{bundle.size / 1024:.1f} KiB, sha256 {bundle.sha256}",
    }


def download_tree(
    destination: Path, prefix: str, names: Iterable[str], read: Callable[[str], bytes]
) -> int:
    """Copy the objects `names` (all starting with `prefix`) into `destination`, keeping
    their paths below the prefix; each path goes through `safe_join`, so an object name
    cannot place a file outside `destination`. Returns the number of files written."""
    from inflame.packaging import safe_join

    count = 0
    for name in names:
        relative = name[len(prefix) :]
        if not relative or relative.endswith("/"):
            continue  # the prefix itself, or a folder marker
        target = safe_join(destination, relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(read(name))
        count += 1
    return count


def upload_tree(folder: Path, uri: str, put: Callable[[str, str, bytes], None]) -> int:
    """Every file under `folder` (links followed, in name order) through `put(its posix
    path below folder, its destination URI, its bytes)`; returns the number of files."""
    if not folder.is_dir():
        raise InflameError(f"{folder}: no such folder to upload.")
    files = sorted(
        (path.relative_to(folder).as_posix(), path) for path in folder.rglob("*") if path.is_file()
    )
    for name, path in files:
        put(name, f"{uri.rstrip('/')}/{name}", path.read_bytes())
    return len(files)


def build_plan(
    provider: Provider,
    spec: JobSpec,
    bundle: Bundle,
    name: str,
    request: dict[str, Any],
    *,
    where: dict[str, str],
    image: str,
    image_torch: str,
    outputs: str,
    locator: dict[str, Any],
    checks: tuple[str, ...],
    endpoint: str,
    warnings: list[str],
    uploads: dict[str, str] | None = None,
    render: Callable[[dict[str, Any], tuple[str, ...]], str] | None = None,
    payload: Any = None,
) -> Plan:
    """A provider's Plan, with what every plan shares: the summary, the rendering for
    --dry-run (JSON unless `render` says otherwise) with the spec's `${env:…}` values masked."""
    secrets = tuple(spec.env_values.values())
    rendered = (
        render(request, secrets) if render else json.dumps(redact(request, secrets), indent=2)
    )
    return Plan(
        target=provider.name,
        job_name=name,
        request=request,
        rendered=rendered,
        summary=plan_summary(
            provider.name,
            name,
            spec,
            bundle,
            where=where,
            image=image,
            image_torch=image_torch,
            spot=provider.capabilities.spot,
            logs=provider.capabilities.logs,
            outputs=outputs,
        ),
        bundle=bundle,
        spec_sha256=spec.resolved_sha256,
        locator=locator,
        uploads=uploads or {},
        checks=checks,
        endpoint=endpoint,
        warnings=tuple(warnings),
        secret_values=secrets,
        payload=payload,
    )


class Provider:
    """The interface every provider module's `TARGET` implements."""

    name: str
    extra: str  # the pip extra that brings its SDK
    capabilities: Capabilities

    def plan(self, spec: JobSpec, bundle: Bundle) -> Plan:
        raise NotImplementedError

    def submit(self, plan: Plan) -> Submitted:
        raise NotImplementedError

    def status(self, provider_id: str, locator: dict[str, Any]) -> JobState:
        raise NotImplementedError

    def logs(self, provider_id: str, locator: dict[str, Any]) -> Iterator[str]:
        raise NotImplementedError

    def cancel(self, provider_id: str, locator: dict[str, Any]) -> None:
        raise NotImplementedError

    def download(
        self, provider_id: str, locator: dict[str, Any], destination: Path, state: JobState
    ) -> Path:
        raise NotImplementedError

    def check_upload_uri(self, uri: str, where: str) -> None:
        """Refuse (naming `where` the URI came from) a URI `upload_folder` cannot write to
        or a job of this provider cannot read."""
        schemes = self.capabilities.data_schemes
        if not uri.startswith(schemes):
            raise InflameError(
                f"{where} {uri}: {self.name} jobs read data from {' or '.join(schemes)} URIs; "
                "give a folder there that inflame may write to."
            )

    def upload_folder(self, folder: Path, uri: str, locator: dict[str, Any]) -> int:
        """Copy every file under `folder` to `uri/<its path>` in the provider's storage (a
        file already there with the same checksum is not sent again); returns the count."""
        raise NotImplementedError

    # inside the job
    def detect(self, env: Mapping[str, str]) -> bool:
        """Whether this process runs inside one of this provider's jobs."""
        raise NotImplementedError

    def job_paths(
        self, spec: JobSpec, env: Mapping[str, str], bound: BoundPaths | None
    ) -> JobPaths:
        raise NotImplementedError

    def cluster(self, env: Mapping[str, str]) -> Cluster:
        raise NotImplementedError
