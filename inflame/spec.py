"""The TOML job spec: load, apply `--set` overrides, validate, and expose typed objects.

Every error names the file (and line, where it can be found) or the `--set` it came from,
the key path, and how to fix it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inflame import tomlfile
from inflame.errors import SpecError, did_you_mean
from inflame.hparams import unusable_number
from inflame.performance import KEYS as PERFORMANCE_KEYS
from inflame.performance import Performance, parse_performance
from inflame.redact import redact_url_password
from inflame.sweep.space import SweepSection, parse_sweep
from inflame.targets import PROVIDERS, data_schemes
from inflame.tracking.mlflow_runs import absolute_uri

SECTIONS = ("job", "data", "hyperparameters", "compute", "targets", "tracking", "sweep")
TRACKING_KEYS = ("tensorboard", "mlflow", "mlflow_experiment")
JOB_KEYS = ("name", "app", "seed", "description", "bad_images")
COMPUTE_KEYS = ("gpus_per_node", "nodes", "spot", "max_runtime", "disk_gb", *PERFORMANCE_KEYS)
KNOWN_TARGETS = ("local", *PROVIDERS)
BAD_IMAGE_POLICIES = ("error", "skip")

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_ENV_RE = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DURATION_RE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


@dataclass(frozen=True)
class JobSection:
    name: str
    app: str
    seed: int = 0
    description: str = ""
    bad_images: str = "error"


@dataclass(frozen=True)
class DataInput:
    """One named input: a local directory (resolved, absolute) or a cloud URI kept as written."""

    name: str
    value: str

    @property
    def is_local(self) -> bool:
        return not self.value.startswith(data_schemes())

    @property
    def path(self) -> Path:
        if not self.is_local:
            raise ValueError(f"data input {self.name} is a URI, not a local path: {self.value}")
        return Path(self.value)


@dataclass(frozen=True)
class ComputeSection:
    gpus_per_node: int = 1
    nodes: int = 1
    spot: bool = False
    max_runtime_s: int | None = None
    disk_gb: int | None = None
    performance: Performance = field(default_factory=Performance)


@dataclass(frozen=True)
class TrackingSection:
    """Where a run's metrics go besides metrics.jsonl."""

    tensorboard: bool = False
    mlflow: str | None = None  # a tracking URI: sqlite:///path (relative paths resolved), http…
    mlflow_experiment: str | None = None  # default: the job's name

    def changed(self) -> dict[str, Any]:
        out: dict[str, Any] = {"tensorboard": True} if self.tensorboard else {}
        if self.mlflow:
            out["mlflow"] = self.mlflow
        if self.mlflow_experiment:
            out["mlflow_experiment"] = self.mlflow_experiment
        return out


@dataclass(frozen=True)
class JobSpec:
    """A validated job spec. Local paths are absolute; `hyperparameters` are as written
    until an app resolves them (see `with_hyperparameters`)."""

    path: Path
    job: JobSection
    data: dict[str, DataInput]
    hyperparameters: dict[str, Any]
    compute: ComputeSection
    targets: dict[str, dict[str, Any]]
    source_sha256: str
    tracking: TrackingSection = field(default_factory=TrackingSection)
    # [sweep]: how `inflame sweep` searches; not part of a run's identity (to_dict leaves it
    # out: each trial is a run of the spec with its hyperparameters set)
    sweep: SweepSection | None = None
    overridden: frozenset[str] = frozenset()
    source_text: str = field(default="", repr=False, compare=False)
    # `${env:…}` references: key path -> the template as written, and the variables' values
    env_refs: dict[tuple[Any, ...], str] = field(default_factory=dict, repr=False)
    env_values: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def folder(self) -> Path:
        return self.path.parent

    def __repr__(self) -> str:
        """The dataclass repr with the values of `${env:…}` references masked: a spec may be
        printed in a traceback or a debug log, and the resolved fields hold those values."""
        from inflame.redact import MASK

        shown = ", ".join(
            f"{item.name}={getattr(self, item.name)!r}"
            for item in dataclasses.fields(self)
            if item.repr
        )
        text = f"{type(self).__name__}({shown})"
        for value in sorted(filter(None, self.env_values.values()), key=len, reverse=True):
            text = text.replace(value, MASK).replace(repr(value)[1:-1], MASK)
        return text

    def locate(self, key_path: Sequence[str]) -> str:
        """Where a key came from: `--set a.b` or `file:line (a.b)`."""
        return _locate(self.path, self.source_text, self.overridden, tuple(key_path))

    def with_hyperparameters(self, resolved: Mapping[str, Any]) -> JobSpec:
        return dataclasses.replace(self, hyperparameters=dict(resolved))

    def to_dict(self, *, resolved: bool = False) -> dict[str, Any]:
        """The spec as plain data, as a run directory and a code bundle store it (spec.toml):
        local paths absolute, every hyperparameter present. Values that came from `${env:…}`
        in hyperparameters, targets and cloud data URIs are kept as their references, so the
        value of a variable used there (an API key, say) is never written down; [job] and
        [compute] values and local paths are stored resolved. `resolved=True` gives the values
        everywhere (for hashing and comparing, never for storing)."""
        job = {"name": self.job.name, "app": self.job.app, "seed": self.job.seed}
        if self.job.description:
            job["description"] = self.job.description
        if self.job.bad_images != "error":
            job["bad_images"] = self.job.bad_images
        compute: dict[str, Any] = {
            "gpus_per_node": self.compute.gpus_per_node,
            "nodes": self.compute.nodes,
            "spot": self.compute.spot,
        }
        if self.compute.max_runtime_s is not None:
            compute["max_runtime"] = f"{self.compute.max_runtime_s}s"
        if self.compute.disk_gb is not None:
            compute["disk_gb"] = self.compute.disk_gb
        compute.update(self.compute.performance.changed())  # defaults left out
        out: dict[str, Any] = {
            "job": job,
            "data": {name: item.value for name, item in self.data.items()},
            "hyperparameters": dict(self.hyperparameters),
            "compute": compute,
        }
        if self.targets:
            out["targets"] = {name: dict(table) for name, table in self.targets.items()}
        if self.tracking.changed():  # left out when off: older specs keep their hashes
            out["tracking"] = self.tracking.changed()
        if not resolved:
            for key_path, template in self.env_refs.items():
                _put_template(out, key_path, template)
        return out

    def to_toml(self) -> str:
        return tomlfile.dumps(self.to_dict())

    @property
    def referenced_env(self) -> dict[str, str]:
        """The variables the stored spec still references (and their values here): what a
        job needs in its environment to read its spec.toml as this spec."""
        stored = json.dumps(self.to_dict())
        return {
            name: value
            for name, value in self.env_values.items()
            if re.search(rf"\$\{{env:{re.escape(name)}(:-|\}})", stored)
        }

    @property
    def secret_values(self) -> tuple[str, ...]:
        """Values never to store or print: those of variables the stored spec keeps as
        references (hyperparameters, targets, cloud URIs, secret-named variables)."""
        return tuple(self.referenced_env.values())

    @property
    def stored_hyperparameters(self) -> dict[str, Any]:
        """The hyperparameters as stored in manifests: `${env:…}` values as references."""
        return self.to_dict()["hyperparameters"]

    @property
    def resolved_sha256(self) -> str:
        canonical = json.dumps(self.to_dict(resolved=True), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


_TEMPLATED_SECTIONS = ("hyperparameters", "targets", "data")


def _names_secret(template: str) -> bool:
    """Whether an `${env:…}` template reads a variable named like a secret (API_TOKEN…)."""
    from inflame.redact import looks_secret

    return any(looks_secret(name) for name, _ in _ENV_RE.findall(template))


def _put_template(tree: dict[str, Any], key_path: tuple[Any, ...], template: str) -> None:
    """Put an `${env:…}` template back at key_path, where the stored value is still the
    plain expansion (not for local data paths, which are stored resolved and absolute)."""
    if key_path[0] not in _TEMPLATED_SECTIONS and not _names_secret(template):
        return
    node: Any = tree
    for part in key_path[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return
    last = key_path[-1]
    try:
        current = node[last]
    except (KeyError, IndexError, TypeError):
        return
    if not isinstance(current, str):
        return
    if key_path[0] == "data" and not current.startswith(data_schemes()):
        return  # a local path: stored resolved, since it is resolved against the spec's folder
    node[last] = template


def _locate(path: Path, text: str, overridden: frozenset[str], key_path: tuple[Any, ...]) -> str:
    key_path = tuple(str(part) for part in key_path)
    dotted = ".".join(key_path)
    if dotted in overridden:
        return f"--set {dotted}"
    for depth in range(len(key_path), 0, -1):
        line = tomlfile.find_line(text, key_path[:depth]) if text else None
        if line is not None:
            return f"{path}:{line} ({dotted})" if dotted else f"{path}:{line}"
    return f"{path} ({dotted})" if dotted else str(path)


class _Checker:
    """Collects the file context so each check can raise a precise SpecError."""

    def __init__(self, path: Path, text: str, overridden: frozenset[str]):
        self.path, self.text, self.overridden = path, text, overridden

    def fail(self, key_path: Sequence[str], message: str) -> SpecError:
        where = _locate(self.path, self.text, self.overridden, tuple(key_path))
        return SpecError(f"Invalid job spec, {where}: {message}")

    def table(self, value: Any, key_path: Sequence[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(
                key_path,
                f"`{'.'.join(key_path)}` must be a table ([{'.'.join(key_path)}]), "
                f"not {_type_name(value)}.",
            )
        return value

    def unknown_keys(self, table: Mapping[str, Any], allowed: Sequence[str], key_path: tuple):
        for key in table:
            if key not in allowed:
                where = ".".join((*key_path, key))
                raise self.fail(
                    (*key_path, key),
                    f"unknown key `{where}`.{did_you_mean(key, allowed)} "
                    f"Allowed keys in [{'.'.join(key_path)}]: {', '.join(allowed)}.",
                )

    def typed(self, value: Any, kind: type | tuple[type, ...], key_path: Sequence[str], hint: str):
        ok = isinstance(value, kind) and not (isinstance(value, bool) and kind in (int, float))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not ok:
            raise self.fail(
                key_path,
                f"`{'.'.join(key_path)}` must be {hint}, got {_type_name(value)} {value!r}.",
            )
        problem = unusable_number(value)  # NaN passes every comparison (`nan < 0` is False)
        if problem:
            raise self.fail(key_path, f"`{'.'.join(key_path)}` {problem}.")
        return value


def _type_name(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a float",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def parse_duration(text: str | int) -> int:
    """`4h`, `90m`, `1h30m`, `45s`, `2d` or plain seconds -> seconds. Raises ValueError."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text <= 0:
            raise ValueError("a duration must be positive")
        return text
    match = _DURATION_RE.match(str(text).strip().lower())
    if not match or not any(match.groups()):
        raise ValueError(f"not a duration: {text!r}")
    d, h, m, s = (int(g) if g else 0 for g in match.groups())
    seconds = ((d * 24 + h) * 60 + m) * 60 + s
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """`section.key=value` -> (key path, typed value). Values are read as TOML when they
    parse (3, 0.1, true, "x", [1, 2]) and as plain strings otherwise."""
    if "=" not in text:
        raise SpecError(
            f"Invalid override `--set {text}`: expected `section.key=value`, "
            "for example `--set hyperparameters.epochs=3`."
        )
    key, _, raw = text.partition("=")
    key_path = tuple(part.strip() for part in key.strip().split("."))
    if len(key_path) < 2 or not all(key_path):
        raise SpecError(
            f"Invalid override `--set {text}`: the key must name a section and a key, "
            f"like `hyperparameters.epochs`, not `{key.strip()}`."
        )
    if key_path[0] not in SECTIONS:
        raise SpecError(
            f"Invalid override `--set {text}`: unknown section `{key_path[0]}`."
            f"{did_you_mean(key_path[0], SECTIONS)} Sections: {', '.join(SECTIONS)}."
        )
    raw = raw.strip()
    try:
        value = tomlfile.parse_value(raw)
    except ValueError:
        value = raw
    return key_path, value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> frozenset[str]:
    """Apply `--set` overrides in place; return the dotted key paths they set."""
    touched: set[str] = set()
    for text in overrides:
        key_path, value = parse_override(text)
        table = data
        for part in key_path[:-1]:
            child = table.setdefault(part, {})
            if not isinstance(child, dict):
                raise SpecError(
                    f"Invalid override `--set {text}`: `{part}` holds a value, not a table."
                )
            table = child
        table[key_path[-1]] = value
        touched.add(".".join(key_path))
    return frozenset(touched)


@dataclass
class _EnvUse:
    """What `${env:…}` expansion used: templates by key path, and the variables' values."""

    refs: dict[tuple[Any, ...], str] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)


def _expand_env(value: Any, key_path: tuple[Any, ...], check: _Checker, used: _EnvUse) -> Any:
    if isinstance(value, dict):
        return {k: _expand_env(v, (*key_path, k), check, used) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, (*key_path, i), check, used) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${env:" not in value:
        return value
    used.refs[key_path] = value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if os.environ.get(name):
            used.values[name] = os.environ[name]
            return os.environ[name]
        if default is not None:  # as the shell's ${X:-default}: unset or empty
            return default
        state = "is set but empty" if name in os.environ else "is not set"
        raise check.fail(
            key_path,
            f"environment variable `{name}` {state} (referenced as `${{env:{name}}}`). "
            f"Set it, or give a default with `${{env:{name}:-value}}`.",
        )

    return _ENV_RE.sub(substitute, value)


def read_spec_file(path: Path) -> tuple[str, dict[str, Any]]:
    """Read and parse a spec file; errors say which file and where."""
    if not path.exists():
        raise SpecError(
            f"Job spec not found: {path}. Check the path (it is relative to the current directory)."
        )
    if path.is_dir():
        raise SpecError(
            f"Job spec {path} is a directory; pass the TOML file inside it, "
            f"e.g. {path / 'job.toml'}."
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"Cannot read job spec {path}: {exc}.") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SpecError(
            f"Job spec {path} is not UTF-8 text: byte 0x{raw[exc.start]:02x} on line {line} "
            "(an editor saved it in another encoding, e.g. Latin-1). Save it as UTF-8."
        ) from None
    if text.startswith("\ufeff"):
        raise SpecError(
            f"Job spec {path} starts with a byte-order mark (BOM), which TOML does not allow. "
            "Save it as UTF-8 without BOM."
        )
    try:
        return text, tomlfile.loads(text)
    except tomlfile.TOMLDecodeError as exc:
        raise SpecError(
            f"Invalid TOML in job spec {path}: {exc}. Fix the syntax at that line and column."
        ) from None


def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> JobSpec:
    """Load, override and validate a job spec file."""
    path = Path(path)
    text, raw = read_spec_file(path)
    overridden = apply_overrides(raw, overrides)
    return validate_spec(
        raw, path=path.resolve(), text=text, overridden=overridden, display_path=path
    )


def validate_spec(
    raw: dict[str, Any],
    *,
    path: Path,
    text: str = "",
    overridden: frozenset[str] = frozenset(),
    display_path: Path | None = None,
) -> JobSpec:
    """Turn parsed TOML into a JobSpec, or raise a SpecError that points at the problem."""
    check = _Checker(display_path or path, text, overridden)
    check.unknown_keys(raw, SECTIONS, ())
    env = _EnvUse()
    raw = _expand_env(raw, (), check, env)
    folder = path.parent

    # [job]
    if "job" not in raw:
        raise check.fail(
            ("job",),
            "the spec has no [job] table. Add one with at least "
            '`name = "my-job"` and `app = "fowl_classifier"`.',
        )
    job_raw = check.table(raw["job"], ("job",))
    check.unknown_keys(job_raw, JOB_KEYS, ("job",))
    for required, example in (("name", '"my-job"'), ("app", '"fowl_classifier"')):
        if required not in job_raw:
            raise check.fail(
                ("job",),
                f"missing required key `job.{required}`. Add `{required} = {example}` to [job].",
            )
    name = check.typed(job_raw["name"], str, ("job", "name"), "a string")
    if not _NAME_RE.match(name):
        fixed = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-_")[:63] or "job"
        raise check.fail(
            ("job", "name"),
            f"job name {name!r} must be lowercase letters, digits, "
            f"`-` or `_` (at most 63, starting with a letter or digit; cloud job "
            f'names need it). Try `name = "{fixed}"`.',
        )
    app = check.typed(job_raw["app"], str, ("job", "app"), "a string (a model_zoo name or a path)")
    if not app.strip():
        raise check.fail(
            ("job", "app"),
            "`job.app` is empty. Name a model_zoo app such as "
            '"fowl_classifier", or a folder holding app.py.',
        )
    if _is_path_like(app):
        app = str((folder / Path(app).expanduser()).resolve())
    seed = check.typed(job_raw.get("seed", 0), int, ("job", "seed"), "an integer")
    if seed < 0:
        raise check.fail(("job", "seed"), f"`job.seed` must be 0 or more, got {seed}.")
    description = check.typed(
        job_raw.get("description", ""), str, ("job", "description"), "a string"
    )
    bad_images = check.typed(
        job_raw.get("bad_images", "error"), str, ("job", "bad_images"), "a string"
    )
    if bad_images not in BAD_IMAGE_POLICIES:
        raise check.fail(
            ("job", "bad_images"),
            f"`job.bad_images` must be one of {', '.join(BAD_IMAGE_POLICIES)}, got {bad_images!r}.",
        )
    job = JobSection(name=name, app=app, seed=seed, description=description, bad_images=bad_images)

    # [data]
    data: dict[str, DataInput] = {}
    for key, value in check.table(raw.get("data", {}), ("data",)).items():
        value = check.typed(value, str, ("data", key), "a string (a local path or a URI)")
        if not value.startswith(data_schemes()):
            local = (folder / Path(value).expanduser()).resolve()
            if not local.exists():
                raise check.fail(
                    ("data", key),
                    f"data input `{key}` points to {local}, which "
                    "does not exist. Fix the path (relative paths are relative to "
                    f"the spec's folder) or pass `--set data.{key}=PATH`.",
                )
            if not local.is_dir():
                raise check.fail(
                    ("data", key),
                    f"data input `{key}` points to {local}, which "
                    "is a file; it must be a directory (one folder per class for "
                    "image sets).",
                )
            value = str(local)
        data[key] = DataInput(name=key, value=value)

    # [hyperparameters]: free-form here; the app declares and checks them.
    hyperparameters = check.table(raw.get("hyperparameters", {}), ("hyperparameters",))

    # [compute]
    compute_raw = check.table(raw.get("compute", {}), ("compute",))
    check.unknown_keys(compute_raw, COMPUTE_KEYS, ("compute",))
    gpus = check.typed(
        compute_raw.get("gpus_per_node", 1), int, ("compute", "gpus_per_node"), "an integer"
    )
    nodes = check.typed(compute_raw.get("nodes", 1), int, ("compute", "nodes"), "an integer")
    for key, value, low in (("gpus_per_node", gpus, 0), ("nodes", nodes, 1)):
        if value < low:
            raise check.fail(
                ("compute", key), f"`compute.{key}` must be at least {low}, got {value}."
            )
    spot = check.typed(compute_raw.get("spot", False), bool, ("compute", "spot"), "true or false")
    max_runtime_s = None
    if "max_runtime" in compute_raw:
        try:
            max_runtime_s = parse_duration(compute_raw["max_runtime"])
        except ValueError:
            raise check.fail(
                ("compute", "max_runtime"),
                f"`compute.max_runtime` must be a "
                f'duration like "4h", "90m" or "1h30m", got '
                f"{compute_raw['max_runtime']!r}.",
            ) from None
    disk_gb = None
    if "disk_gb" in compute_raw:
        disk_gb = check.typed(compute_raw["disk_gb"], int, ("compute", "disk_gb"), "an integer")
        if disk_gb < 1:
            raise check.fail(
                ("compute", "disk_gb"), f"`compute.disk_gb` must be at least 1, got {disk_gb}."
            )
    performance = parse_performance(
        compute_raw, lambda key, message: check.fail(("compute", key), message)
    )
    compute = ComputeSection(gpus, nodes, spot, max_runtime_s, disk_gb, performance)

    # [targets.<name>]: the target adapters validate their own tables.
    targets: dict[str, dict[str, Any]] = {}
    for tname, table in check.table(raw.get("targets", {}), ("targets",)).items():
        if tname not in KNOWN_TARGETS:
            raise check.fail(
                ("targets", tname),
                f"unknown target `{tname}`."
                f"{did_you_mean(tname, KNOWN_TARGETS)} Targets: "
                f"{', '.join(KNOWN_TARGETS)}.",
            )
        targets[tname] = check.table(table, ("targets", tname))

    tracking_raw = check.table(raw.get("tracking", {}), ("tracking",))
    check.unknown_keys(tracking_raw, TRACKING_KEYS, ("tracking",))
    tracking = TrackingSection(
        tensorboard=check.typed(
            tracking_raw.get("tensorboard", False),
            bool,
            ("tracking", "tensorboard"),
            "true or false",
        ),
        mlflow=_mlflow_uri(tracking_raw, folder, check),
        mlflow_experiment=_mlflow_experiment(tracking_raw, check),
    )

    sweep = None
    if "sweep" in raw:
        sweep_raw = check.table(raw["sweep"], ("sweep",))
        sweep = parse_sweep(sweep_raw, check.fail)

    return JobSpec(
        path=path,
        job=job,
        data=data,
        hyperparameters=dict(hyperparameters),
        compute=compute,
        targets=targets,
        source_sha256=hashlib.sha256(text.encode()).hexdigest(),
        overridden=overridden,
        source_text=text,
        env_refs=env.refs,
        env_values=env.values,
        tracking=tracking,
        sweep=sweep,
    )


def _mlflow_uri(raw: Mapping[str, Any], folder: Path, check: _Checker) -> str | None:
    """`[tracking] mlflow`: a tracking URI; a relative SQLite file is the spec folder's."""
    if "mlflow" not in raw:
        return None
    uri = check.typed(raw["mlflow"], str, ("tracking", "mlflow"), "a tracking URI (a string)")
    if not re.match(r"^(sqlite|postgresql|mysql|mssql|https?|databricks|file)(\+\w+)?:", uri):
        raise check.fail(
            ("tracking", "mlflow"),
            f"`tracking.mlflow` must be an MLflow tracking URI such as "
            f'"sqlite:///mlflow.db" (a file beside the spec) or "http://mlflow.example:5000", '
            f"got {uri!r}.",
        )
    if redact_url_password(uri) != uri:
        raise check.fail(
            ("tracking", "mlflow"),
            "`tracking.mlflow` holds a password, which would be stored with every run. Give "
            "the credentials in MLflow's variables instead (MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN).",
        )
    return absolute_uri(uri, folder)


def _mlflow_experiment(raw: Mapping[str, Any], check: _Checker) -> str | None:
    if "mlflow_experiment" not in raw:
        return None
    name = check.typed(raw["mlflow_experiment"], str, ("tracking", "mlflow_experiment"), "a string")
    if not name.strip():
        raise check.fail(("tracking", "mlflow_experiment"), "`mlflow_experiment` is empty.")
    return name


def _is_path_like(app: str) -> bool:
    return app.startswith((".", "/", "~")) or "/" in app or "\\" in app or app.endswith(".py")
