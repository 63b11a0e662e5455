"""The runtime contract: the `Context` an app gets inside any job.

An app never reads env vars or cloud paths itself; it asks the Context. A resolver per
platform fills the Context in (local today; SageMaker, Azure ML and Vertex AI add their own
resolvers without changing apps). Distributed rank fields come from torchrun's variables.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inflame.errors import InflameError, did_you_mean
from inflame.hashing import sha256_file
from inflame.performance import Performance

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from inflame.spec import JobSpec


class MissingDataInput(InflameError, KeyError):
    """The app asked for a data input the spec does not have (still a KeyError, so that
    `name in ctx.data` and `ctx.data.get(name)` work)."""

    def __str__(self) -> str:
        return str(self.args[0])


class DataInputs(Mapping[str, Path]):
    """Named local data directories. Asking for a missing name is a clear error."""

    def __init__(self, paths: Mapping[str, Path], where: str = "the job spec"):
        self._paths = dict(paths)
        self._where = where

    def __getitem__(self, name: str) -> Path:
        try:
            return self._paths[name]
        except KeyError:
            have = ", ".join(self._paths) or "none"
            raise MissingDataInput(
                f"The app needs data input `{name}`, but [data] in {self._where} has only: "
                f'{have}.{did_you_mean(name, self._paths)} Add `{name} = "PATH"` under [data] '
                f"or pass `--set data.{name}=PATH`."
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)

    def __repr__(self) -> str:
        return f"DataInputs({self._paths!r})"


class MetricsLog:
    """Append-only JSON-lines metrics file (written by the main process only), and the
    trackers each record is sent to after it is written (`sinks`, e.g. TensorBoard). A sink
    that fails is dropped with one warning and its error kept in `sink_errors`: a tracker
    never stops a run (`inflame runs sync` replays the file into it later)."""

    def __init__(self, path: Path | None, sinks: Sequence[Callable[..., None]] = ()):
        self.path = path
        self.sinks = list(sinks)
        self.sink_errors: dict[str, str] = {}

    def append(self, record: Mapping[str, Any]) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=False) + "\n")
            handle.flush()
        for sink in list(self.sinks):
            try:
                sink(record)
            except Exception as exc:  # a tracker's failure must not fail the run
                self._drop(sink, exc)

    def _drop(self, sink: Callable[..., None], exc: Exception) -> None:
        self.sinks.remove(sink)
        with contextlib.suppress(Exception):  # release what it holds; it is broken already
            getattr(sink, "close", lambda: None)()
        name = getattr(sink, "name", type(sink).__name__)
        self.sink_errors[name] = f"{type(exc).__name__}: {exc}"
        run = self.path.parent if self.path is not None else "RUN"
        print(
            f"warning: {name} tracking stopped ({self.sink_errors[name]}); the run "
            f"goes on. `inflame runs sync {run}` replays its metrics later.",
            file=sys.stderr,
        )

    def draws_previews(self) -> bool:
        return any(hasattr(sink, "preview") for sink in self.sinks)

    def preview(self, model: Any, inputs: Any) -> None:
        """Give sample inputs and the model to the sinks that draw them (TensorBoard's
        images and graph); a sink that fails here is dropped, as in `append`."""
        for sink in list(self.sinks):
            draw = getattr(sink, "preview", None)
            if draw is None:
                continue
            try:
                draw(model, inputs)
            except Exception as exc:
                self._drop(sink, exc)

    def tracking(self) -> dict[str, Any]:
        """For the manifest: each tracker's destination, or its error and the way to replay."""
        found: dict[str, Any] = {}
        for sink in self.sinks:
            describe = getattr(sink, "describe", None)
            found[getattr(sink, "name", type(sink).__name__)] = describe() if describe else {}
        for name, error in self.sink_errors.items():
            run = self.path.parent if self.path is not None else "RUN"
            found[name] = {"error": error, "sync": f"inflame runs sync {run}"}
        return found

    def close(self) -> None:
        """Close the sinks (flushes their files)."""
        for sink in self.sinks:
            close = getattr(sink, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as exc:  # as in append
                    name = getattr(sink, "name", type(sink).__name__)
                    self.sink_errors[name] = f"{type(exc).__name__}: {exc}"

    def read(self) -> list[dict[str, Any]]:
        if self.path is None or not self.path.exists():
            return []
        records = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a kill: dropped on the next truncate
        return records

    def keep_through_epoch(self, done: int) -> None:
        """Keep the records logged up to the end of epoch `done` (0: none), as a resume from
        its checkpoint must: what came after (a later epoch, the test score of a run stopped
        before it saved its model) is logged again."""
        if self.path is None or not self.path.exists():
            return
        records = self.read()
        end = 0
        for i, record in enumerate(records):
            epoch = record.get("epoch")
            if isinstance(epoch, int) and epoch <= done:
                end = i + 1
        kept = records[:end]
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        os.replace(tmp, self.path)


@dataclass
class Context:
    """What an app sees inside any job, wherever it runs."""

    job_name: str
    data: DataInputs
    output_dir: Path
    checkpoint_dir: Path
    hparams: Mapping[str, Any]
    seed: int
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    platform: str = "local"
    spec_dir: Path | None = None
    run_dir: Path | None = None
    bad_images: str = "error"
    metrics: MetricsLog = field(default_factory=lambda: MetricsLog(None))
    recorded_inputs: dict[str, dict[str, str]] = field(default_factory=dict)
    performance: Performance = field(default_factory=Performance)  # [compute] speed switches
    records: dict[str, Any] = field(default_factory=dict)  # for the manifest (see `record`)
    # a warm start (`inflame train --init-from RUN`): the parent run's model folder, set only
    # while the run has no checkpoint of its own; apps load it with inflame.vision.warm_start
    init_from: Path | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        """The accelerator for this process (cuda:LOCAL_RANK when available), else CPU."""
        import torch

        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank % torch.cuda.device_count())
        return torch.device("cpu")

    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        """Record one metric value (main process only)."""
        record: dict[str, Any] = {} if step is None else {"step": step}
        record[name] = value
        if self.is_main:
            self.metrics.append(record)

    def log_metrics(self, values: Mapping[str, Any], *, epoch: int | None = None) -> None:
        """Record several values as one line, e.g. one line per epoch (main process only)."""
        record: dict[str, Any] = {} if epoch is None else {"epoch": epoch}
        record.update(values)
        if self.is_main:
            self.metrics.append(record)

    def resolve_path(self, value: str | Path) -> Path:
        """A path from a hyperparameter, relative to the spec's folder unless absolute."""
        path = Path(value).expanduser()
        if path.is_absolute() or self.spec_dir is None:
            return path
        return (self.spec_dir / path).resolve()

    def record(self, key: str, value: Any) -> None:
        """Put a JSON value into the run's manifest (e.g. which fast paths ran)."""
        self.records[key] = value

    def record_input(self, name: str, path: str | Path) -> str:
        """Hash an extra input (e.g. a local weights file) into the run's manifest."""
        digest = sha256_file(path)
        self.recorded_inputs[name] = {"path": str(path), "sha256": digest}
        return digest


def distributed_ranks(env: Mapping[str, str]) -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun-style variables; (0, 0, 1) without them."""

    def read(name: str, default: int) -> int:
        raw = env.get(name)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise InflameError(
                f"Environment variable {name}={raw!r} must be an integer "
                "(it is set by torchrun or the platform)."
            ) from None

    rank, local_rank, world_size = read("RANK", 0), read("LOCAL_RANK", 0), read("WORLD_SIZE", 1)
    if world_size < 1 or not 0 <= rank < world_size:
        raise InflameError(
            f"Inconsistent distributed environment: RANK={rank}, WORLD_SIZE={world_size}."
        )
    return rank, local_rank, world_size


def require_local_data(spec: JobSpec) -> None:
    """Local training reads local folders; a cloud URI in [data] is a spec error here."""
    for name, item in spec.data.items():
        if not item.is_local:
            raise InflameError(
                f"Invalid job spec, {spec.locate(('data', name))}: data input `{name}` is a "
                f"cloud URI ({item.value}); local training needs a local folder. Pass "
                f"`--set data.{name}=PATH`, or run it in the cloud with `inflame submit`."
            )


def metrics_log(
    spec: JobSpec,
    run_dir: Path,
    rank: int,
    env: Mapping[str, str],
    tensorboard_dir: Path | None = None,
) -> MetricsLog:
    """RUN/metrics.jsonl and the spec's trackers on the main process; nothing elsewhere.
    `tensorboard_dir`: where the job's platform collects TensorBoard events, if it does."""
    if rank != 0:
        return MetricsLog(None)
    sinks: list[Callable[..., None]] = []
    if spec.tracking.tensorboard:
        from inflame.tracking.tensorboard import TensorBoardLog, log_dir

        folder = str(tensorboard_dir) if tensorboard_dir else log_dir(run_dir, env)
        sinks.append(TensorBoardLog(folder))
    return MetricsLog(run_dir / "metrics.jsonl", sinks)


def require_trackers(spec: JobSpec) -> None:
    """A tracker the spec asks for must be installed here (checked before a local run)."""
    from importlib.util import find_spec

    if spec.tracking.tensorboard and find_spec("tensorboard") is None:
        raise InflameError(
            f"{spec.locate(('tracking', 'tensorboard'))} asks for TensorBoard, which is not "
            "installed. Install it (`pip install tensorboard`), or set `tensorboard = false`."
        )
    if spec.tracking.mlflow and find_spec("mlflow") is None:
        raise InflameError(
            f"{spec.locate(('tracking', 'mlflow'))} asks for MLflow, which is not installed. "
            "Install it (`pip install 'inflame[mlflow]'`), or remove `mlflow` from [tracking]."
        )


def parent_model(run_dir: Path, manifest: Mapping[str, Any] | None = None) -> Path | None:
    """The model folder a run warm-starts from (its manifest's `parent`), or None: no
    parent, or the run has a checkpoint of its own to resume from."""
    if manifest is None:
        from inflame.runs import MANIFEST

        path = run_dir / MANIFEST
        manifest = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    parent = manifest.get("parent")
    if not parent or any((run_dir / "checkpoints").glob("epoch-*.safetensors")):
        return None
    return Path(parent["run"]) / "model"


def local_context(
    spec: JobSpec,
    hparams: Mapping[str, Any],
    run_dir: Path,
    env: Mapping[str, str] | None = None,
) -> Context:
    """The Context for a local run: paths from the spec, outputs under the run directory."""
    env = os.environ if env is None else env
    rank, local_rank, world_size = distributed_ranks(env)
    require_local_data(spec)
    require_trackers(spec)
    return Context(
        job_name=spec.job.name,
        data=DataInputs({n: item.path for n, item in spec.data.items()}, where=str(spec.path)),
        output_dir=run_dir / "model",
        checkpoint_dir=run_dir / "checkpoints",
        hparams=dict(hparams),
        seed=spec.job.seed,
        rank=rank,
        local_rank=local_rank,
        world_size=world_size,
        platform="local",
        spec_dir=spec.folder,
        run_dir=run_dir,
        bad_images=spec.job.bad_images,
        metrics=metrics_log(spec, run_dir, rank, env),
        performance=spec.compute.performance,
        init_from=parent_model(run_dir),
    )
