"""Structural validation: type, required, enum, pattern, bounds, lengths, counts, list types,
oneOf/anyOf/allOf/not, formats; then each schema's CEL rules."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from fleetwire.sim.admission.cause import (
    Cause,
    _child,
    _is_type,
    _key,
    _show,
    _type_name,
)
from fleetwire.sim.admission.cel import _cel


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
