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

import copy
import functools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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


# ======================================================================================
# Paths and values as the API server prints them
# ======================================================================================


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


# ======================================================================================
# Pruning and defaulting
# ======================================================================================


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


# ======================================================================================
# Structural validation
# ======================================================================================


def validate(value: Any, schema: Mapping[str, Any], path: str = "", old: Any = None, *,
             has_old: bool = False, root: bool = True) -> list[Cause]:
    """Every problem of `value` under `schema`, CEL rules included (`old` for transition rules)."""
    causes = _structural(value, schema, path, root)
    if causes:
        return causes  # the API server evaluates CEL rules only on values of the right shape
    for name, sub, child, old_child, has in _children(value, schema, path, old, has_old, root):
        causes += validate(child, sub, name, old_child, has_old=has, root=False)
    if not causes:
        causes += _cel(value, schema, path, old, has_old)
    return causes


def _children(value: Any, schema: Mapping[str, Any], path: str, old: Any, has_old: bool, root: bool,
              ) -> list[tuple[str, Mapping[str, Any], Any, Any, bool]]:
    found = []
    if isinstance(value, Mapping):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        old_map = old if isinstance(old, Mapping) else {}
        for key, item in value.items():
            if root and key in ("apiVersion", "kind", "metadata"):
                continue
            sub = props.get(key) or (extra if isinstance(extra, Mapping) else None)
            if sub is not None:
                name = _child(path, key) if key in props else _key(path, key)
                found.append((name, sub, item, old_map.get(key), has_old and key in old_map))
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        keys = schema.get("x-kubernetes-list-map-keys") or []
        olds = {}
        if isinstance(old, list) and schema.get("x-kubernetes-list-type") == "map" and keys:
            olds = {tuple(o.get(k) for k in keys): o for o in old if isinstance(o, Mapping)}
        for i, item in enumerate(value):
            key = tuple(item.get(k) for k in keys) if isinstance(item, Mapping) and keys else None
            found.append((f"{path}[{i}]", schema["items"], item, olds.get(key) if key else None,
                          has_old and key in olds))
    return found


def _structural(value: Any, schema: Mapping[str, Any], path: str, root: bool) -> list[Cause]:
    shown = path or "<root>"
    type_ = schema.get("type")
    if type_ and not _is_type(value, type_, schema):
        if value is None:
            return [Cause(path, "FieldValueRequired", "Required value")]
        return [Cause(path, "FieldValueTypeInvalid", f"Invalid value: {_show(value)}: {shown} in body must be of "
                                                     f"type {type_}: \"{_type_name(value)}\"")]
    causes: list[Cause] = []
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(json.dumps(v) for v in schema["enum"])
        causes.append(Cause(path, "FieldValueNotSupported", f"Unsupported value: {_show(value)}: supported values: "
                                                            f"{supported}"))
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            causes.append(Cause(path, "FieldValueTooLong", f"Too long: may not be longer than {schema['maxLength']}"))
        if "minLength" in schema and len(value) < schema["minLength"]:
            causes.append(Cause(path, "FieldValueInvalid", f"Invalid value: {_show(value)}: {shown} in body should be "
                                                           f"at least {schema['minLength']} chars long"))
        if "pattern" in schema and re.search(schema["pattern"], value) is None:
            causes.append(Cause(path, "FieldValueInvalid", f"Invalid value: {_show(value)}: {shown} in body should "
                                                           f"match '{schema['pattern']}'"))
        fmt = schema.get("format")
        if fmt and not _format_ok(fmt, value):
            causes.append(Cause(path, "FieldValueInvalid", f"Invalid value: {_show(value)}: {shown} in body must be "
                                                           f"of type {fmt}: {_show(value)}"))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        for key, op, words in (("minimum", lambda a, b: a < b, "greater than or equal to"),
                               ("maximum", lambda a, b: a > b, "less than or equal to")):
            if key in schema:
                exclusive = schema.get(f"exclusive{key.capitalize()}")
                bound = schema[key]
                bad = (value <= bound if key == "minimum" else value >= bound) if exclusive is True else op(value, bound)
                if bad:
                    text = (words.replace(" or equal to", "") if exclusive is True else words)
                    causes.append(Cause(path, "FieldValueInvalid", f"Invalid value: {_show(value)}: {shown} in body "
                                                                   f"should be {text} {bound:g}"))
        if "multipleOf" in schema and value % schema["multipleOf"]:
            causes.append(Cause(path, "FieldValueInvalid", f"Invalid value: {_show(value)}: {shown} in body should "
                                                           f"be a multiple of {schema['multipleOf']:g}"))
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            causes.append(Cause(path, "FieldValueTooMany", f"Too many: {len(value)}: must have at most "
                                                           f"{schema['maxItems']} items"))
        if "minItems" in schema and len(value) < schema["minItems"]:
            causes.append(Cause(path, "FieldValueInvalid", f"Invalid value: {len(value)}: {shown} in body should "
                                                           f"have at least {schema['minItems']} items"))
        list_type = schema.get("x-kubernetes-list-type")
        if list_type == "set" or schema.get("uniqueItems"):
            seen: list[Any] = []
            for i, item in enumerate(value):
                if item in seen:
                    causes.append(Cause(f"{path}[{i}]", "FieldValueDuplicate", f"Duplicate value: {_show(item)}"))
                seen.append(item)
        if list_type == "map":
            keys = schema.get("x-kubernetes-list-map-keys") or []
            seen_keys: set[tuple[Any, ...]] = set()
            for i, item in enumerate(value):
                if isinstance(item, Mapping):
                    key = tuple(item.get(k) for k in keys)
                    if key in seen_keys:
                        shown_key = ", ".join(f'"{k}"={json.dumps(item.get(k))}' for k in keys)
                        causes.append(Cause(f"{path}[{i}]", "FieldValueDuplicate",
                                            f"Duplicate value: map[string]interface {{}}{{{shown_key}}}"))
                    seen_keys.add(key)
    if isinstance(value, Mapping):
        for name in schema.get("required") or []:
            if name not in value or (value[name] is None and not (schema.get("properties") or {}).get(
                    name, {}).get("nullable")):
                causes.append(Cause(_child(path, name), "FieldValueRequired", "Required value"))
        count = len([k for k in value if not (root and k in ("apiVersion", "kind", "metadata"))])
        if "maxProperties" in schema and count > schema["maxProperties"]:
            causes.append(Cause(path, "FieldValueTooMany", f"Too many: {count}: must have at most "
                                                           f"{schema['maxProperties']} items"))
        if "minProperties" in schema and count < schema["minProperties"]:
            causes.append(Cause(path, "FieldValueInvalid", f"Invalid value: {count}: {shown} in body should have at "
                                                           f"least {schema['minProperties']} properties"))
    for key in ("oneOf", "anyOf"):
        if key in schema:
            passing = sum(not _structural(value, {**sub, "type": sub.get("type", type_)}, path, root)
                          and not _nested_ok(value, sub, path, root) for sub in schema[key])
            if (key == "oneOf" and passing != 1) or (key == "anyOf" and passing == 0):
                which = "exactly one" if key == "oneOf" else "at least one"
                causes.append(Cause(path, "FieldValueInvalid", f"Invalid value: {_show(value)}: {shown} in body must "
                                                               f"validate {which} schema ({key})"))
    for sub in schema.get("allOf") or []:
        causes += _structural(value, {**sub, "type": sub.get("type", type_)}, path, root)
    if "not" in schema and not _structural(value, schema["not"], path, root):
        causes.append(Cause(path, "FieldValueInvalid", f"Invalid value: {_show(value)}: {shown} in body must not "
                                                       "validate the schema (not)"))
    return causes


def _nested_ok(value: Any, schema: Mapping[str, Any], path: str, root: bool) -> bool:
    """Whether the nested constraints of a oneOf/anyOf branch fail (True: they do)."""
    return any(_structural(child, sub, name, False) for name, sub, child, _old, _h in
               _children(value, schema, path, None, False, root))


_FORMATS = {
    "date-time": re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"),
    "date": re.compile(r"^\d{4}-\d{2}-\d{2}$"),
    "uri": re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S*$"),
    "email": re.compile(r"^[^@\s]+@[^@\s]+$"),
    "hostname": re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"),
}


def _format_ok(fmt: str, value: str) -> bool:
    pattern = _FORMATS.get(fmt)
    return pattern is None or pattern.match(value) is not None


# ======================================================================================
# CEL rules
# ======================================================================================


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


# ======================================================================================
# What the emulator calls
# ======================================================================================

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
