"""Azure ML request bodies checked against Azure ML's published REST model, as azure-ai-ml
compiles it (`azure.ai.ml._restclient.arm_ml_service.models`, generated from the TypeSpec
of the Microsoft.MachineLearningServices API): each model field is a `rest_field` with its
wire name, its visibility ("create" when a request may set it) and a type annotation; a
polymorphic base keeps `__mapping__` from its discriminator's values to its subclasses.

These models are generated for api-version 2025-12-01 (`MODEL_VERSION`, the newest that
azure-ai-ml 1.35 carries), while MLClient sends a command job (`PUT jobs/{name}`) with
api-version 2025-01-01-preview, an online endpoint with 2022-02-01-preview and an online
deployment with 2023-04-01-preview (`API_VERSIONS`): the check is against the newest published
model, not the exact version on the wire (a member or an enum value added after the version
sent would pass it). The models' own shape (`_visibility`, `__mapping__`) is azure-ai-ml's
internal API: a shape this module does not know is an error that says so, never a pass.

Checked, recursively: unknown members, JSON types (object, array, string, integer, number,
boolean, ISO 8601 durations and date-times), required members, read-only members, the values
of enums (open enums included: only the published values) and of discriminators, each
object checked as the subclass its discriminator names. Not checked: string patterns and
lengths and number ranges, which the generated models do not carry; the hand-written rules
in inflame/targets/azure.py and inflame/deploy/azure.py cover the ones inflame relies on;
nor members typed `Any` (a job's `resources.properties` values).
"""

from __future__ import annotations

import enum
import functools
import typing
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from inflame.errors import InflameError

# what azure-ai-ml sends each body with (MLClient: JobOperations for a command job,
# OnlineEndpointOperations, OnlineDeploymentOperations)
MODEL_VERSION = "2025-12-01"  # what the generated models describe (their client's default)
API_VERSIONS = {
    "JobBase": "2025-01-01-preview",
    "OnlineEndpoint": "2022-02-01-preview",
    "OnlineDeployment": "2023-04-01-preview",
}


def model_violations(model: str, body: Any) -> list[str]:
    """Everything in `body`, a REST request body (wire names: `{"properties": {...}}`),
    that Azure ML's published model `model` ("JobBase", "OnlineEndpoint",
    "OnlineDeployment", ...) forbids."""
    try:
        return list(_object_violations(getattr(_models(), model), body, ""))
    except (ImportError, AttributeError) as exc:  # azure-ai-ml's internal models moved
        raise InflameError(
            f"Cannot check the Azure ML {model} request against azure-ai-ml's REST models "
            f"({exc}): this version of azure-ai-ml lays them out differently. Use azure-ai-ml "
            "1.35 (`pip install 'azure-ai-ml>=1.35,<1.36'`), or report it."
        ) from None


def refuse_body(what: str, model: str, body: Any, rules: Callable[[], Iterable[str]]) -> None:
    """Refuse `body` (an InflameError listing every problem) when the published `model`
    or the documented `rules` forbid it. The rules read a body of the model's shape: when
    they trip over a malformed one, the model's problems already say why."""
    from inflame.targets.base import refuse_problems

    problems = model_violations(model, body)
    try:
        found = list(rules())
    except (AttributeError, TypeError, ValueError):
        if not problems:
            raise
        found = []
    refuse_problems(what, list(dict.fromkeys(problems + found)))


def _models() -> Any:
    from azure.ai.ml._restclient.arm_ml_service import models

    return models


@functools.cache
def _fields(cls: type) -> dict[str, tuple[Any, Any]]:
    """The model's fields by wire name: (rest field, type annotation), subclasses winning."""
    from azure.ai.ml._restclient.arm_ml_service._utils.model_base import _RestField

    models = _models()
    hints = typing.get_type_hints(cls, globalns={**vars(models._models), "_models": models})
    fields: dict[str, tuple[Any, Any]] = {}
    for klass in reversed(cls.__mro__):
        for attr, field in vars(klass).items():
            if isinstance(field, _RestField) and not attr.startswith("_"):
                fields[field._rest_name_input or attr] = (field, hints[attr])
    return fields


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _writable(field: Any) -> bool:
    """Whether a create request may set the field (its visibility includes "create")."""
    return field._visibility is None or "create" in field._visibility


def _is_optional(hint: Any) -> bool:
    return typing.get_origin(hint) is typing.Union and type(None) in typing.get_args(hint)


def _subclass(cls: type, value: dict[str, Any], path: str) -> tuple[type | None, list[str]]:
    """The subclass that `value`'s discriminators name (None, with the reason, when one is
    missing or names none)."""
    from azure.ai.ml._restclient.arm_ml_service._utils.model_base import _RestField

    while "__mapping__" in vars(cls):
        key = next(
            (
                field._rest_name_input or attr
                for attr, field in vars(cls).items()
                if isinstance(field, _RestField) and field._is_discriminator
            ),
            None,
        )
        if key is None:
            break
        if key not in value:
            return None, [f"{_join(path, key)}: required"]
        mapping: dict[str, type] = cls.__mapping__  # type: ignore[attr-defined]
        found = mapping.get(value[key]) if isinstance(value[key], str) else None
        if found is None:
            allowed = ", ".join(sorted(mapping))
            return None, [f"{_join(path, key)}: {value[key]!r} is not one of {allowed}"]
        cls = found
    return cls, []


def _object_violations(cls: type, value: Any, path: str) -> Iterator[str]:
    """Everything in `value` that the model class `cls` (or the subclass it names) forbids."""
    if not isinstance(value, dict):
        yield f"{path or 'body'}: must be an object ({cls.__name__})"
        return
    resolved, problems = _subclass(cls, value, path)
    yield from problems
    if resolved is None:
        return
    fields = _fields(resolved)
    for name, (field, hint) in fields.items():
        if _writable(field) and name not in value and not _is_optional(hint):
            yield f"{_join(path, name)}: required"
    for name, item in value.items():
        if name not in fields:
            yield f"{_join(path, name)}: unknown member of {resolved.__name__}"
        elif not _writable(fields[name][0]):
            yield f"{_join(path, name)}: read-only (Azure ML sets it)"
        else:
            yield from _violations(fields[name][1], item, _join(path, name))


def _violations(hint: Any, value: Any, path: str) -> Iterator[str]:
    """Everything in `value` that the type annotation `hint` forbids."""
    import datetime

    import isodate
    from azure.ai.ml._restclient.arm_ml_service._utils.model_base import Model

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if value is None:
        if not _is_optional(hint) and hint is not Any:
            yield f"{path}: must not be null"
        return
    if origin is typing.Union:
        options = [a for a in args if a is not type(None)]
        enums = [a for a in options if isinstance(a, type) and issubclass(a, enum.Enum)]
        if not enums:
            if len(options) != 1:  # Optional[X]: the generated models have no other unions
                raise InflameError(
                    f"{path}: azure-ai-ml's REST model has a union inflame cannot check "
                    f"({hint}). Use azure-ai-ml 1.35 (`pip install 'azure-ai-ml>=1.35,<1.36'`), "
                    "or report it."
                )
            yield from _violations(options[0], value, path)
            return
        allowed = [member.value for kind in enums for member in kind]
        if not isinstance(value, str):
            yield f"{path}: must be a string"
        elif value not in allowed:
            yield f"{path}: {value!r} is not one of {', '.join(allowed)}"
    elif origin is typing.Literal:
        allowed = [getattr(a, "value", a) for a in args]
        if value not in allowed:
            yield f"{path}: {value!r} is not one of {', '.join(map(str, allowed))}"
    elif origin is list:
        if not isinstance(value, list):
            yield f"{path}: must be a list"
            return
        for i, item in enumerate(value):
            yield from _violations(args[0], item, f"{path}[{i}]")
    elif origin is dict:
        if not isinstance(value, dict):
            yield f"{path}: must be an object"
            return
        for key, item in value.items():
            yield from _violations(args[1], item, f"{path}.{key}")
    elif isinstance(hint, type) and issubclass(hint, Model):
        yield from _object_violations(hint, value, path)
    elif hint is bool and not isinstance(value, bool):
        yield f"{path}: must be true or false"
    elif hint is int and (not isinstance(value, int) or isinstance(value, bool)):
        yield f"{path}: must be an integer"
    elif hint is float and (not isinstance(value, (int, float)) or isinstance(value, bool)):
        yield f"{path}: must be a number"
    elif hint is str and not isinstance(value, str):
        yield f"{path}: must be a string"
    elif hint in (datetime.timedelta, datetime.datetime):
        parse = isodate.parse_duration if hint is datetime.timedelta else isodate.parse_datetime
        kind = "duration" if hint is datetime.timedelta else "date-time"
        try:
            parse(value)
        except (isodate.ISO8601Error, TypeError, ValueError):
            yield f"{path}: {value!r} is not an ISO 8601 {kind}"
