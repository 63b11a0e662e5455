"""The [sweep] table of a job spec: what to optimise, how to search, and the search space.

```toml
[sweep]
metric = "val_accuracy"        # a number each trial's run reports (default val_accuracy)
direction = "maximize"         # default: minimize for metrics named *loss*, else maximize
sampler = "tpe"                # tpe, random or grid
trials = 20
pruner = "median"              # median or none
pruner_startup_trials = 5      # trials that finish before any is pruned
pruner_warmup_epochs = 1       # epochs every trial runs before it can be pruned

[sweep.hyperparameters]
learning_rate = { log_uniform = [1e-4, 1e-1] }
batch_size = { choice = [16, 32] }
epochs = { int = [1, 4] }
dropout = { uniform = [0.0, 0.5], step = 0.1 }
```

No Optuna here: the spec parser validates the table without it (`inflame.sweep.study`
turns it into an Optuna study).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from inflame.errors import did_you_mean

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "none")
DIRECTIONS = ("maximize", "minimize")
KEYS = (
    "metric",
    "direction",
    "sampler",
    "trials",
    "pruner",
    "pruner_startup_trials",
    "pruner_warmup_epochs",
    "hyperparameters",
)
RANGES = ("uniform", "log_uniform", "int", "log_int")
KINDS = (*RANGES, "choice")
MAX_GRID = 10_000  # a grid larger than this is a typo, not a plan

Fail = Callable[[Sequence[str], str], Exception]


@dataclass(frozen=True)
class Distribution:
    """One hyperparameter's search space: a range (`low`, `high`, optional `step`) or a
    list of `choices`."""

    kind: str
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    @property
    def is_int(self) -> bool:
        return self.kind in ("int", "log_int")

    @property
    def is_log(self) -> bool:
        return self.kind in ("log_uniform", "log_int")

    def grid(self) -> list[Any] | None:
        """Every value a grid search tries, or None when the space is not finite."""
        if self.kind == "choice":
            return list(self.choices)
        if self.is_log or (self.kind == "uniform" and self.step is None):
            return None
        assert self.low is not None and self.high is not None
        step = self.step or 1
        count = math.floor((self.high - self.low) / step + 1e-9) + 1
        if self.is_int:
            return [int(self.low + i * step) for i in range(count)]
        return [round(self.low + i * step, 12) for i in range(count)]

    def endpoints(self) -> list[Any]:
        """The values to check against the app's declaration: the choices, or low and high."""
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]

    def describe(self) -> str:
        if self.kind == "choice":
            return "choice of " + ", ".join(repr(c) for c in self.choices)
        step = f" step {self.step}" if self.step is not None else ""
        return f"{self.kind} [{self.low}, {self.high}]{step}"


@dataclass(frozen=True)
class SweepSection:
    metric: str = "val_accuracy"
    direction: str = "maximize"
    sampler: str = "tpe"
    trials: int = 20
    pruner: str = "median"
    pruner_startup_trials: int = 5
    pruner_warmup_epochs: int = 1
    hyperparameters: dict[str, Distribution] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """As plain data (what identifies a sweep, with the spec it runs)."""
        return {
            "metric": self.metric,
            "direction": self.direction,
            "sampler": self.sampler,
            "pruner": self.pruner,
            "pruner_startup_trials": self.pruner_startup_trials,
            "pruner_warmup_epochs": self.pruner_warmup_epochs,
            "hyperparameters": {
                name: {
                    "kind": d.kind,
                    "low": d.low,
                    "high": d.high,
                    "step": d.step,
                    "choices": list(d.choices),
                }
                for name, d in self.hyperparameters.items()
            },
        }

    def grid_size(self) -> int | None:
        """How many points the grid holds (None when a space is not finite)."""
        size = 1
        for dist in self.hyperparameters.values():
            values = dist.grid()
            if values is None:
                return None
            size *= len(values)
        return size


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _word(raw: Mapping[str, Any], key: str, default: str, allowed: Sequence[str], fail: Fail):
    value = raw.get(key, default)
    if not isinstance(value, str) or value not in allowed:
        raise fail(
            ("sweep", key),
            f"`sweep.{key}` must be one of {', '.join(repr(a) for a in allowed)}, "
            f"got {value!r}.{did_you_mean(str(value), allowed)}",
        )
    return value


def _count(raw: Mapping[str, Any], key: str, default: int, low: int, fail: Fail) -> int:
    value = raw.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= 1_000_000:
        raise fail(
            ("sweep", key),
            f"`sweep.{key}` must be a whole number from {low} to 1000000, got {value!r}.",
        )
    return value


def parse_distribution(name: str, raw: Any, fail: Fail) -> Distribution:
    """One `name = { log_uniform = [a, b] }` entry of [sweep.hyperparameters]."""
    where = ("sweep", "hyperparameters", name)
    example = (
        f"`{name} = {{ log_uniform = [1e-4, 1e-1] }}`, `{{ choice = [16, 32] }}` or "
        "`{ int = [1, 4] }`"
    )
    if not isinstance(raw, dict):
        raise fail(
            where,
            f"`sweep.hyperparameters.{name}` must be a distribution like {example}, "
            f"got {raw!r}. (A fixed value belongs in [hyperparameters].)",
        )
    kinds = [k for k in raw if k in KINDS]
    extra = [k for k in raw if k not in (*KINDS, "step")]
    if extra:
        raise fail(
            (*where, extra[0]),
            f"unknown key `{extra[0]}` in `sweep.hyperparameters.{name}`."
            f"{did_you_mean(extra[0], (*KINDS, 'step'))} A distribution is one of "
            f"{', '.join(KINDS)} (ranges may add `step`).",
        )
    if len(kinds) != 1:
        raise fail(
            where,
            f"`sweep.hyperparameters.{name}` must name exactly one distribution "
            f"({', '.join(KINDS)}), got {len(kinds)}: write it like {example}.",
        )
    kind, value = kinds[0], raw[kinds[0]]
    if kind == "choice":
        if "step" in raw:
            raise fail((*where, "step"), "`step` applies to ranges, not to `choice`.")
        if not isinstance(value, list) or not value:
            raise fail(
                (*where, kind),
                f"`sweep.hyperparameters.{name}.choice` must be a non-empty list of "
                f"values, got {value!r}.",
            )
        if not all(isinstance(v, (str, int, float, bool)) for v in value):
            raise fail(
                (*where, kind),
                f"`sweep.hyperparameters.{name}.choice` may hold strings, numbers and "
                f"booleans only, got {value!r}.",
            )
        if any(isinstance(v, float) and not math.isfinite(v) for v in value):
            raise fail((*where, kind), f"`{name}.choice` holds a value that is not finite.")
        if len({(type(v), v) for v in value}) != len(value):
            raise fail((*where, kind), f"`{name}.choice` lists a value twice: {value!r}.")
        return Distribution(kind, choices=tuple(value))
    integer = kind in ("int", "log_int")
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(_number(v) for v in value)
        or (integer and not all(isinstance(v, int) for v in value))
        or not all(math.isfinite(v) for v in value)
    ):
        what = "two whole numbers" if integer else "two finite numbers"
        raise fail(
            (*where, kind),
            f"`sweep.hyperparameters.{name}.{kind}` must be [low, high], {what}, got {value!r}.",
        )
    low, high = value
    if not low < high:
        raise fail(
            (*where, kind),
            f"`sweep.hyperparameters.{name}.{kind}` must have low < high, got [{low}, {high}].",
        )
    if kind.startswith("log_") and low <= 0:
        raise fail(
            (*where, kind),
            f"`sweep.hyperparameters.{name}.{kind}` is a log scale: low must be above 0, "
            f"got {low}. Use `{kind.removeprefix('log_')}` for ranges that include 0.",
        )
    step = raw.get("step")
    if step is not None:
        if kind.startswith("log_"):
            raise fail((*where, "step"), f"`step` cannot be combined with `{kind}`.")
        if not _number(step) or (integer and not isinstance(step, int)) or not step > 0:
            raise fail(
                (*where, "step"),
                f"`sweep.hyperparameters.{name}.step` must be a positive "
                f"{'whole ' if integer else ''}number, got {step!r}.",
            )
        if not math.isfinite(step) or step > high - low:
            raise fail(
                (*where, "step"),
                f"`sweep.hyperparameters.{name}.step` {step} does not fit in [{low}, {high}].",
            )
    if kind == "uniform":
        low, high = float(low), float(high)
    return Distribution(kind, low=low, high=high, step=step)


def parse_sweep(raw: Mapping[str, Any], fail: Fail) -> SweepSection:
    """The [sweep] table, or the error `fail(key_path, message)` builds."""
    for key in raw:
        if key not in KEYS:
            raise fail(
                ("sweep", key),
                f"unknown key `sweep.{key}`.{did_you_mean(key, KEYS)} Allowed keys in "
                f"[sweep]: {', '.join(KEYS)}.",
            )
    metric = raw.get("metric", "val_accuracy")
    if not isinstance(metric, str) or not metric.strip():
        raise fail(
            ("sweep", "metric"),
            f"`sweep.metric` must name a metric the runs report, such as "
            f'"val_accuracy" or "val_loss", got {metric!r}.',
        )
    default_direction = "minimize" if "loss" in metric else "maximize"
    space_raw = raw.get("hyperparameters", {})
    if not isinstance(space_raw, dict):
        raise fail(
            ("sweep", "hyperparameters"),
            "`sweep.hyperparameters` must be a table: [sweep.hyperparameters] with one "
            "`name = { log_uniform = [1e-4, 1e-1] }` line per hyperparameter to search.",
        )
    space = {name: parse_distribution(name, value, fail) for name, value in space_raw.items()}
    section = SweepSection(
        metric=metric,
        direction=_word(raw, "direction", default_direction, DIRECTIONS, fail),
        sampler=_word(raw, "sampler", "tpe", SAMPLERS, fail),
        trials=_count(raw, "trials", 20, 1, fail),
        pruner=_word(raw, "pruner", "median", PRUNERS, fail),
        pruner_startup_trials=_count(raw, "pruner_startup_trials", 5, 0, fail),
        pruner_warmup_epochs=_count(raw, "pruner_warmup_epochs", 1, 0, fail),
        hyperparameters=space,
    )
    if section.sampler == "grid":
        infinite = [n for n, d in space.items() if d.grid() is None]
        if infinite:
            raise fail(
                ("sweep", "hyperparameters", infinite[0]),
                f"a grid search needs a finite set of values, but "
                f"`sweep.hyperparameters.{infinite[0]}` is {space[infinite[0]].describe()}. "
                "Use `choice = [...]`, an `int` range, or a `uniform` range with a `step`.",
            )
        size = section.grid_size() or 0
        if size > MAX_GRID:
            raise fail(
                ("sweep", "hyperparameters"),
                f"the grid holds {size} points (more than {MAX_GRID}); shrink the ranges "
                'or use sampler = "tpe".',
            )
    return section
