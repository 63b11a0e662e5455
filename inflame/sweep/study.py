"""The sweep's Optuna study: storage, sampler, pruner, and each trial's hyperparameters.

Optuna is imported here only, when a sweep runs (the `sweep` extra installs it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inflame.errors import InflameError
from inflame.redact import redact_url_password
from inflame.runlock import locked
from inflame.sweep.space import Distribution, SweepSection

if TYPE_CHECKING:
    import optuna

IDENTITY_ATTR = "inflame_sweep_sha256"  # the study's user attr: which spec and space it runs
STUDY_FILE = "study.db"


def import_optuna() -> Any:
    """Optuna, quiet (its INFO lines would drown the trials' own), or an error naming the
    extra to install."""
    try:
        import optuna
    except ImportError:
        raise InflameError(
            "`inflame sweep` needs Optuna, which is not installed. Install it with "
            "`pip install 'inflame[sweep]'` (or `pip install optuna`)."
        ) from None
    optuna.logging.set_verbosity(logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def default_storage(sweep_dir: Path) -> str:
    return f"sqlite:///{(sweep_dir / STUDY_FILE).absolute()}"


def identity(spec_dict: Mapping[str, Any], sweep: SweepSection) -> str:
    """sha256 of what a study's trials must share: the resolved spec and the search."""
    canonical = json.dumps(
        {"spec": spec_dict, "sweep": sweep.to_dict()}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def make_sampler(sweep: SweepSection, seed: int) -> Any:
    optuna = import_optuna()
    if sweep.sampler == "grid":
        space = {name: dist.grid() for name, dist in sweep.hyperparameters.items()}

        class Grid(optuna.samplers.GridSampler):  # type: ignore[misc]
            def after_trial(self, *args: Any, **kwargs: Any) -> None:
                """Optuna's calls `study.stop()` once the grid is done, which only works
                inside `optimize`; the sweep asks for no more trials than the grid holds."""

        return Grid(space, seed=seed)
    if sweep.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(sweep: SweepSection) -> Any:
    optuna = import_optuna()
    if sweep.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=sweep.pruner_startup_trials,
        n_warmup_steps=sweep.pruner_warmup_epochs,
    )


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL (None for any other database, or in memory)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url[len(prefix) :] in ("", ":memory:"):
        return None
    return Path(url[len(prefix) :].split("?", 1)[0])


@contextlib.contextmanager
def creation_lock(url: str) -> Iterator[None]:
    """Serialise opening a SQLite study between processes: Optuna creates its tables
    without a guard, so two sweeps starting together race ("table already exists")."""
    path = sqlite_file(url)
    if path is None:
        yield
        return
    lock = path.with_name(path.name + ".lock")
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(locked(lock))
        except OSError as exc:
            raise InflameError(
                f"Cannot lock the sweep's study: {lock}: {exc.strerror or exc}. The folder "
                "must be writable (choose another with --out or --storage)."
            ) from None
        yield


def rdb_storage(url: str) -> Any:
    """Optuna storage for `url`; SQLite waits for a lock (several sweeps may share it)."""
    if not url.startswith("sqlite"):
        return url
    optuna = import_optuna()
    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})


def open_study(
    storage: str, name: str, sweep: SweepSection, seed: int, sweep_id: str
) -> optuna.Study:
    """Create the study, or load it to continue; a study started from another spec or
    search space is refused (its trials would not be comparable)."""
    optuna = import_optuna()
    with creation_lock(storage):
        return _open_study(optuna, storage, name, sweep, seed, sweep_id)


def _open_study(
    optuna: Any, storage: str, name: str, sweep: SweepSection, seed: int, sweep_id: str
) -> optuna.Study:
    shown = redact_url_password(storage)
    try:
        study = optuna.create_study(
            storage=rdb_storage(storage),
            study_name=name,
            direction=sweep.direction,
            sampler=make_sampler(sweep, seed),
            pruner=make_pruner(sweep),
            load_if_exists=True,
        )
    except (ValueError, ImportError, optuna.exceptions.OptunaError) as exc:
        raise InflameError(f"Cannot open the sweep's study in {shown}: {exc}") from None
    except Exception as exc:  # sqlalchemy's errors: a bad URL, a driver not installed…
        if type(exc).__module__.startswith("sqlalchemy"):
            raise InflameError(
                f"Cannot open the sweep's storage {shown}: {str(exc).splitlines()[0]}"
            ) from None
        raise
    recorded = study.user_attrs.get(IDENTITY_ATTR)
    if recorded is None:
        study.set_user_attr(IDENTITY_ATTR, sweep_id)
    elif recorded != sweep_id:
        raise InflameError(
            f"The study `{name}` in {shown} was started from a different spec or search "
            "space, so its trials would not compare with new ones. Start a new sweep in "
            "another folder (--out DIR), or restore the spec it was started with."
        )
    if study.direction.name.lower() != sweep.direction:
        raise InflameError(
            f"The study `{name}` in {shown} {study.direction.name.lower()}s its metric, "
            f"but sweep.direction is {sweep.direction}."
        )
    return study


def suggest(trial: optuna.Trial, space: Mapping[str, Distribution]) -> dict[str, Any]:
    """The trial's value for every searched hyperparameter (stored in the study)."""
    values: dict[str, Any] = {}
    for name, dist in space.items():
        if dist.kind == "choice":
            values[name] = trial.suggest_categorical(name, list(dist.choices))
        elif dist.is_int:
            values[name] = trial.suggest_int(
                name, int(dist.low), int(dist.high), step=int(dist.step or 1), log=dist.is_log
            )
        else:
            values[name] = trial.suggest_float(
                name, float(dist.low), float(dist.high), step=dist.step, log=dist.is_log
            )
    return values


def format_override(name: str, value: Any) -> str:
    """`--set hyperparameters.NAME=VALUE` with the value in TOML syntax (strings quoted)."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = json.dumps(value)  # a TOML basic string
    else:
        text = repr(value)
    return f"hyperparameters.{name}={text}"
