"""CEL rules (`x-kubernetes-validations`), evaluated with cel-python on values typed by the schema,
with `oldSelf` on updates."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

from fleetwire.sim.admission.cause import Cause, _show


@functools.lru_cache(maxsize=512)
def _program(rule: str) -> Any:
    import celpy

    environment = celpy.Environment()
    return environment.program(environment.compile(rule))


def _to_cel(value: Any, schema: Mapping[str, Any] | None) -> Any:
    """A JSON value as CEL sees it in Kubernetes: typed by its schema."""
    from celpy import celtypes

    schema = schema or {}
    if value is None:
        return None
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, (int, float)):
        if schema.get("type") == "number" or isinstance(value, float) and not schema.get("type") == "integer":
            return celtypes.DoubleType(value)
        return celtypes.IntType(int(value))
    if isinstance(value, str):
        return celtypes.StringType(value)
    if isinstance(value, list):
        items = schema.get("items") if isinstance(schema.get("items"), Mapping) else None
        return celtypes.ListType([_to_cel(item, items) for item in value])
    if isinstance(value, Mapping):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties") if isinstance(schema.get("additionalProperties"), Mapping) else None
        return celtypes.MapType({celtypes.StringType(k): _to_cel(v, props.get(k, extra)) for k, v in value.items()})
    return value


def _cel(value: Any, schema: Mapping[str, Any], path: str, old: Any, has_old: bool) -> list[Cause]:
    import celpy

    rules = schema.get("x-kubernetes-validations") or []
    causes = []
    for rule in rules:
        text = rule["rule"]
        transition = re.search(r"\boldSelf\b", text) is not None
        if transition and not has_old:
            continue  # transition rules apply to updates of a value that existed before
        activation = {"self": _to_cel(value, schema)}
        if transition:
            activation["oldSelf"] = _to_cel(old, schema)
        field = path
        if rule.get("fieldPath"):
            field = path + str(rule["fieldPath"])
        try:
            result = _program(text).evaluate(activation)
        except celpy.CELEvalError as exc:
            causes.append(Cause(field, "FieldValueInvalid", f"Invalid value: {_show(value)}: rule evaluation error: "
                                                            f"{exc.args[0] if exc.args else exc}"))
            continue
        if isinstance(result, celpy.CELEvalError):
            causes.append(Cause(field, "FieldValueInvalid", f"Invalid value: {_show(value)}: rule evaluation error: "
                                                            f"{result.args[0] if result.args else result}"))
        elif not bool(result):
            message = rule.get("message") or f"failed rule: {text}"
            reason = {"FieldValueForbidden": "FieldValueForbidden", "FieldValueRequired": "FieldValueRequired",
                      "FieldValueDuplicate": "FieldValueDuplicate"}.get(str(rule.get("reason")), "FieldValueInvalid")
            prefix = {"FieldValueForbidden": "Forbidden", "FieldValueRequired": "Required value",
                      "FieldValueDuplicate": "Duplicate value"}.get(reason)
            causes.append(Cause(field, reason, f"{prefix}: {message}" if prefix else
                                f"Invalid value: {_show(value)}: {message}"))
    return causes
