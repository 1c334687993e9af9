"""Protobuf-JSON that never fails: `message_to_dict`, and what it refuses printed raw.

`render` never raises: what json_format refuses (a timestamp past year 9999, nanos out
of range, a closed enum's unknown number) is printed raw, and reported, so one bad
value costs neither its record nor its batch.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from fleetwire.server.protojson import converter_for, single_converter
from fleetwire.server.protojson_values import (
    DELEGATED,
    TIMESTAMP,
    TO_JSON_STRING,
    is_map,
    map_key,
    unknown_member_key,
    raw_timestamp,
    unknown_value,
)

__all__ = ["render"]


def _where(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _scalar(field: FieldDescriptor, value: Any, path: str, problems: list[str]) -> Any:
    convert = single_converter(field, {})
    if convert is None:
        return value
    try:
        return convert(value)
    except Exception as exc:  # a closed enum's unknown number: printed as the number
        problems.append(f"{path}: {exc}")
        return value


def _lenient_value(field: FieldDescriptor, value: Any, path: str, problems: list[str]) -> Any:
    if field.message_type is None:
        return _scalar(field, value, path, problems)
    return _lenient(value, path, problems)


def _lenient(message: Message, path: str, problems: list[str]) -> Any:
    """`message_to_dict`, descending only into what it refuses, printing that raw."""
    try:
        return converter_for(message.DESCRIPTOR)(message)
    except Exception as exc:
        failure = exc
    descriptor = message.DESCRIPTOR
    if descriptor.full_name == TIMESTAMP:
        problems.append(f"{path or descriptor.name}: {failure}")
        return raw_timestamp(message)
    if descriptor.full_name in TO_JSON_STRING or descriptor.full_name in DELEGATED:
        problems.append(f"{path or descriptor.name}: {failure}")  # then printed as a plain message
    js: dict[str, Any] = {}
    for field, value in message.ListFields():
        name = f"[{field.full_name}]" if field.is_extension else field.json_name
        where = _where(path, name)
        if is_map(field):
            value_field = field.message_type.fields_by_name["value"]
            js[name] = {
                map_key(key): _lenient_value(value_field, value[key], f"{where}[{key!r}]", problems) for key in value
            }
        elif field.is_repeated:
            js[name] = [_lenient_value(field, item, f"{where}[{i}]", problems) for i, item in enumerate(value)]
        else:
            js[name] = _lenient_value(field, value, where, problems)
    for field in descriptor.fields:
        if field.has_presence or field.json_name in js:
            continue
        if is_map(field):
            js[field.json_name] = {}
        elif field.is_repeated:
            js[field.json_name] = []
        else:
            js[field.json_name] = _scalar(field, field.default_value, _where(path, field.json_name), problems)
    oneofs = descriptor.oneofs
    if len(oneofs) == 1 and len(oneofs[0].fields) == len(descriptor.fields) and not js:
        unknown = unknown_value(message)
        if unknown is not None:
            js[unknown_member_key(oneofs[0])] = unknown
    return js


def render(message: Message) -> tuple[Any, list[str]]:
    """`message_to_dict(message)` and [] — or, for a message it refuses, what could be
    printed, with what could not printed raw (a timestamp as `raw_timestamp`, a closed
    enum's number as itself), and one problem per such value ("createdAt: …")."""
    problems: list[str] = []
    try:
        return converter_for(message.DESCRIPTOR)(message), problems
    except Exception:
        pass
    try:
        return _lenient(message, "", problems), problems
    except Exception as exc:  # nothing printable at all: say so rather than fail the batch
        problems.append(f"{message.DESCRIPTOR.full_name}: {type(exc).__name__}: {exc}")
        return {}, problems
