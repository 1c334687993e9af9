"""Admission as an API server does it, for the Kubernetes API emulator: pure functions.

A custom resource is checked against its CRD's `openAPIV3Schema` the way the API server
checks it: unknown fields pruned (refused with `fieldValidation=Strict`), defaults
applied, then the structural rules (type, required, enum, pattern, bounds, lengths, item
and property counts, `x-kubernetes-list-type: set|map` uniqueness, oneOf/anyOf/allOf/not)
and the `x-kubernetes-validations` CEL rules, evaluated with cel-python on values typed
by the schema (a `number` field is a double even when written as `1`), with `oldSelf` on
updates. A problem is a `Cause` (field path as the API server writes it:
`spec.fields[VehicleSpeed].interval_seconds`, `spec.vehicles[0]`; its reason; the message
after the path), and `invalid_status` turns causes into the 422 body the API server
answers with.

Built-in objects are checked with `kubernetes-validate` (the official OpenAPI schemas of
each Kubernetes release, strict: an unknown field is an error) for the oldest release the
chart supports and the newest one the library knows (`builtin_causes`).

Not emulated: CEL cost limits, `messageExpression` (the static message is used),
`x-kubernetes-embedded-resource` checks, formats other than the common ones, ratcheting.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from fleetwire.sim.admission.cause import (
    NEWEST_KUBERNETES,
    OLDEST_KUBERNETES,
    Cause,
    _child,
)
from fleetwire.sim.admission.pruning import apply_defaults, prune, schema_of
from fleetwire.sim.admission.structural import validate

__all__ = [
    "NEWEST_KUBERNETES",
    "OLDEST_KUBERNETES",
    "Cause",
    "admit",
    "apply_defaults",
    "builtin_causes",
    "invalid_status",
    "prune",
    "schema_of",
    "validate",
]


_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def admit(obj: Mapping[str, Any], crd: Mapping[str, Any], old: Mapping[str, Any] | None = None, *,
          strict: bool = False) -> tuple[dict[str, Any], list[Cause]]:
    """The object as the API server would store it (pruned, defaulted), and why it is refused.

    `strict` is `fieldValidation=Strict`: an unknown field is a cause instead of being pruned.
    """
    version = str(obj.get("apiVersion", "")).rpartition("/")[2]
    schema = schema_of(crd, version)
    name = str((obj.get("metadata") or {}).get("name", ""))
    causes: list[Cause] = []
    if name and (len(name) > 253 or not _DNS_SUBDOMAIN.match(name)):
        causes.append(Cause("metadata.name", "FieldValueInvalid", f"Invalid value: {json.dumps(name)}: a lowercase "
                            "RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and "
                            "must start and end with an alphanumeric character"))
    if schema is None:
        return dict(obj), causes
    unknown: list[str] = []
    stored = apply_defaults(prune(obj, schema, "", unknown), schema)
    if strict:
        causes += [Cause(path, "FieldValueInvalid", f'Invalid value: "{path.rsplit(".", 1)[-1]}": unknown field')
                   for path in unknown]
    causes += validate(stored, schema, "", old, has_old=old is not None)
    return stored, causes


def invalid_status(kind: str, group: str, name: str, causes: Sequence[Cause]) -> dict[str, Any]:
    """The API server's 422 body for `causes`."""
    qualified = f"{kind}.{group}" if group else kind
    listed = [str(c) for c in causes]
    detail = listed[0] if len(listed) == 1 else "[" + ", ".join(listed) + "]"
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": f'{qualified} "{name}" is invalid: {detail}', "reason": "Invalid",
            "details": {"name": name, "group": group, "kind": kind,
                        "causes": [{"reason": c.reason, "message": c.message, "field": c.field} for c in causes]},
            "code": 422}


def builtin_causes(obj: Mapping[str, Any], versions: Sequence[str] = (OLDEST_KUBERNETES, NEWEST_KUBERNETES),
                   ) -> list[Cause]:
    """Why `obj`, a built-in kind, would be refused by the Kubernetes releases `versions`
    (official schemas, strict: unknown fields are errors)."""
    import kubernetes_validate

    causes: list[Cause] = []
    for version in dict.fromkeys(versions):
        try:
            kubernetes_validate.validate(dict(obj), version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            causes.append(Cause("apiVersion", "FieldValueNotSupported",
                                f"Unsupported value: {json.dumps(obj.get('apiVersion'))}: {obj.get('kind')} is not "
                                f"served by Kubernetes {version}"))
        except kubernetes_validate.ValidationError as exc:
            error = exc.caused_by if hasattr(exc, "caused_by") else exc
            where = list(getattr(error, "absolute_path", None) or getattr(error, "path", None) or [])
            field = ""
            for part in where:
                field = f"{field}[{part}]" if isinstance(part, int) else _child(field, str(part))
            message = str(getattr(error, "message", error)).splitlines()[0]
            causes.append(Cause(field, "FieldValueInvalid", f"Invalid value: {message} (Kubernetes {version})"))
    return causes
