"""Pruning and defaulting: unknown fields dropped (or named, for `fieldValidation=Strict`), the
schema's defaults applied."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from fleetwire.sim.admission.cause import _child, _key


def schema_of(crd: Mapping[str, Any], version: str) -> Mapping[str, Any] | None:
    for entry in (crd.get("spec") or {}).get("versions") or []:
        if entry.get("name") == version:
            return ((entry.get("schema") or {}).get("openAPIV3Schema")) or None
    return None


def prune(value: Any, schema: Mapping[str, Any], path: str = "", unknown: list[str] | None = None,
          root: bool = True) -> Any:
    """`value` without the fields the schema does not declare (their paths added to `unknown`)."""
    if schema.get("x-kubernetes-preserve-unknown-fields") and "properties" not in schema and \
            not isinstance(schema.get("additionalProperties"), Mapping):
        return value
    if isinstance(value, Mapping):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        result = {}
        for key, item in value.items():
            if root and key in ("apiVersion", "kind", "metadata"):
                result[key] = item
            elif key in props:
                result[key] = prune(item, props[key], _child(path, key), unknown, False)
            elif isinstance(extra, Mapping):
                result[key] = prune(item, extra, _key(path, key), unknown, False)
            elif extra is True or schema.get("x-kubernetes-preserve-unknown-fields"):
                result[key] = item
            elif unknown is not None:
                unknown.append(_child(path, key))
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [prune(item, schema["items"], f"{path}[{i}]", unknown, False) for i, item in enumerate(value)]
    return value


def apply_defaults(value: Any, schema: Mapping[str, Any]) -> Any:
    """`value` with the schema's defaults filled in where a field is absent (objects that exist only)."""
    if isinstance(value, Mapping):
        result = dict(value)
        for key, sub in (schema.get("properties") or {}).items():
            if key not in result and "default" in sub:
                result[key] = copy.deepcopy(sub["default"])
            if key in result:
                result[key] = apply_defaults(result[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping):
            for key in result:
                if key not in (schema.get("properties") or {}):
                    result[key] = apply_defaults(result[key], extra)
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [apply_defaults(item, schema["items"]) for item in value]
    return value
