"""Hyperparameters that an app declares: name, type, default and help.

An app lists them in a module-level `HPARAMS` sequence; inflame checks the spec's
[hyperparameters] against it, so a typo or a wrong type is a spec error, not a crash
in the middle of training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from inflame.errors import SpecError, did_you_mean

_TYPE_NAMES = {bool: "bool", int: "int", float: "float", str: "str", list: "list"}
MAX_INT = 2**53  # larger integers lose precision in JSON and floats; no count is that large


@dataclass(frozen=True)
class HParam:
    """One declared hyperparameter.

    `type` is a type or a tuple of types (`(bool, str)` accepts either). Ints are accepted
    where a float is declared. `choices` restricts the value; `check` may raise ValueError
    with a message for further validation (e.g. "must be positive"). `file=True`: a text
    value is a local file, relative to the spec's folder (`ctx.resolve_path` finds it); a
    cloud job gets a copy of it in its code bundle.
    """

    name: str
    type: type | tuple[type, ...]
    default: Any
    help: str = ""
    choices: Sequence[Any] | None = None
    check: Callable[[Any], None] | None = None
    file: bool = False

    @property
    def types(self) -> tuple[type, ...]:
        return self.type if isinstance(self.type, tuple) else (self.type,)

    @property
    def type_name(self) -> str:
        return " | ".join(_TYPE_NAMES.get(t, t.__name__) for t in self.types)

    def coerce(self, value: Any) -> Any:
        """Return the value as the declared type, or raise ValueError saying why not."""
        for kind in self.types:
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
                break
            if isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool):
                break
        else:
            got = _TYPE_NAMES.get(type(value), type(value).__name__)
            raise ValueError(f"must be of type {self.type_name}, got {got} {value!r}")
        problem = unusable_number(value)
        if problem:
            raise ValueError(problem)
        if self.choices is not None and value not in self.choices:
            options = ", ".join(repr(c) for c in self.choices)
            raise ValueError(f"must be one of {options}, got {value!r}")
        if self.check is not None:
            self.check(value)
        return value


def unusable_number(value: Any) -> str | None:
    """Why no run could use this number (NaN or infinite, which every comparison lets
    through, or an integer beyond MAX_INT), as "must be …"/"is …"; None when it is fine."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value!r}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        return f"is {value}, beyond what any run can use (at most {MAX_INT})"
    return None


def between(low: float, high: float) -> Callable[[float], None]:
    """A `check` for HParam: low <= value <= high."""

    def check(value: float) -> None:
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, got {value!r}")

    return check


def check_declarations(declared: Sequence[HParam], where: str) -> None:
    """An app's own HPARAMS must be sound: unique names, and defaults its declarations
    accept (None is allowed: "not set"). Raises SpecError naming the app file."""
    seen: set[str] = set()
    for param in declared:
        if param.name in seen:
            raise SpecError(f"App {where}: hyperparameter `{param.name}` is declared twice.")
        seen.add(param.name)
        if param.default is None:
            continue
        try:
            param.coerce(param.default)
        except ValueError as exc:
            raise SpecError(
                f"App {where}: the default of hyperparameter `{param.name}` {exc}. Fix its "
                "HParam declaration."
            ) from None


def positive(value: float) -> None:
    """A `check` for HParam: the value must be > 0."""
    if value <= 0:
        raise ValueError(f"must be positive, got {value!r}")


def non_negative(value: float) -> None:
    """A `check` for HParam: the value must be >= 0."""
    if value < 0:
        raise ValueError(f"must be zero or more, got {value!r}")


def resolve_hparams(
    declared: Sequence[HParam],
    given: Mapping[str, Any],
    *,
    app_name: str,
    locate: Callable[[tuple[str, ...]], str],
) -> dict[str, Any]:
    """Check `given` against `declared`; return every declared value (defaults filled in),
    in declaration order. `locate(key_path)` says where a key came from, for errors."""
    by_name = {p.name: p for p in declared}
    for name in given:
        if name not in by_name:
            known = ", ".join(by_name) or "(none)"
            raise SpecError(
                f"Invalid job spec, {locate(('hyperparameters', name))}: unknown hyperparameter "
                f"`{name}` for app `{app_name}`.{did_you_mean(name, by_name)} "
                f"Known hyperparameters: {known} (see `inflame train SPEC --help-app`)."
            )
    resolved: dict[str, Any] = {}
    for param in declared:
        if param.name not in given:
            resolved[param.name] = param.default
            continue
        try:
            resolved[param.name] = param.coerce(given[param.name])
        except ValueError as exc:
            raise SpecError(
                f"Invalid job spec, {locate(('hyperparameters', param.name))}: hyperparameter "
                f"`{param.name}` {exc}. {param.help}".rstrip()
            ) from None
    return resolved
