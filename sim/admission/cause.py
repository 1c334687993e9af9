"""A problem as the API server reports it (`Cause`), paths and values as it prints them, and the
Kubernetes releases whose schemas built-in objects are checked against."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

OLDEST_KUBERNETES = "1.25.0"
"""The chart's `kubeVersion: >=1.25.0-0`."""


def _newest() -> str:
    try:
        import kubernetes_validate
    except ImportError:
        return OLDEST_KUBERNETES
    return str(kubernetes_validate.latest_version())


NEWEST_KUBERNETES = _newest()


@dataclass(frozen=True)
class Cause:
    """One reason an object is invalid, as `details.causes[]` carries it."""

    field: str
    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


def _child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _key(path: str, key: str) -> str:
    return f"{path}[{key}]"


def _show(value: Any) -> str:
    """A value as `Invalid value: ...` prints it: strings quoted, objects by their type."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return '"object"'
    if isinstance(value, list):
        return '"array"'
    if value is None:
        return '"null"'
    return json.dumps(value)


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return "null"


def _is_type(value: Any, type_: str, schema: Mapping[str, Any]) -> bool:
    if value is None:
        return bool(schema.get("nullable"))
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, (int, str)) and not isinstance(value, bool)
    if type_ == "integer":
        return isinstance(value, int) and not isinstance(value, bool) or (
            isinstance(value, float) and value.is_integer())
    if type_ == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return _type_name(value) == type_
