"""What the protojson tests share: the record types, json_format as the reference, and
hypothesis strategies building messages from descriptors.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from fleetwire.proto import (
    vehicle_alert_pb2,
    vehicle_connectivity_pb2,
    vehicle_data_pb2,
    vehicle_error_pb2,
    vehicle_metric_pb2,
)
from fleetwire.server.protojson import message_to_dict
from fleetwire.server.records import MILLISECONDS_THRESHOLD


VIN = "5YJ3E1EA7KF000001"
RECORD_MESSAGES: list[type[Message]] = [
    vehicle_data_pb2.Payload,
    vehicle_alert_pb2.VehicleAlerts,
    vehicle_error_pb2.VehicleErrors,
    vehicle_connectivity_pb2.VehicleConnectivity,
    vehicle_metric_pb2.VehicleMetrics,
]
DECODED_TYPES = {
    "V": vehicle_data_pb2.Payload,
    "alerts": vehicle_alert_pb2.VehicleAlerts,
    "errors": vehicle_error_pb2.VehicleErrors,
    "connectivity": vehicle_connectivity_pb2.VehicleConnectivity,
}
VALUE_MEMBERS = [field.name for field in vehicle_data_pb2.Value.DESCRIPTOR.oneofs_by_name["value"].fields]

TIMESTAMP_MIN = -62135596800
TIMESTAMP_MAX = 253402300799
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT32 = (0, 2**32 - 1)
UINT64 = (0, 2**64 - 1)
_T = FieldDescriptor
INT_RANGES = {
    _T.TYPE_INT32: INT32,
    _T.TYPE_SINT32: INT32,
    _T.TYPE_SFIXED32: INT32,
    _T.TYPE_INT64: INT64,
    _T.TYPE_SINT64: INT64,
    _T.TYPE_SFIXED64: INT64,
    _T.TYPE_UINT32: UINT32,
    _T.TYPE_FIXED32: UINT32,
    _T.TYPE_UINT64: UINT64,
    _T.TYPE_FIXED64: UINT64,
}
MAX_DEPTH = 3


# --- comparison -----------------------------------------------------------------------------------


def reference(message: Message) -> Any:
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def assert_same(message: Message) -> None:
    """Same dict, same text — or the same exception with the same message."""
    try:
        expected = reference(message)
    except Exception as exc:  # what json_format raises, message_to_dict must raise alike
        with pytest.raises(Exception) as raised:
            message_to_dict(message)
        assert type(raised.value) is type(exc)
        assert str(raised.value) == str(exc)
        return
    got = message_to_dict(message)
    assert got == expected
    assert json.dumps(got) == json.dumps(expected)


# --- messages from descriptors ----------------------------------------------------------------------


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def floats(width: int) -> st.SearchStrategy[float]:
    special = st.sampled_from([0.0, -0.0, math.nan, math.inf, -math.inf, 1e-05, 1e16, -1.5])
    return st.one_of(special, st.floats(width=width))


def timestamps(draw: st.DrawFn, target: Message) -> None:
    """Mostly valid, at each fraction json_format prints differently; now and then out of
    range, which json_format refuses; now and then milliseconds, which alerts rewrite."""
    choice = draw(st.integers(0, 9))
    if choice == 0:
        target.seconds = draw(st.integers(*INT64))
        target.nanos = draw(st.integers(*INT32))
        return
    if choice == 1:
        target.seconds = draw(st.integers(MILLISECONDS_THRESHOLD, 2**62))
    else:
        target.seconds = draw(st.integers(TIMESTAMP_MIN, TIMESTAMP_MAX))
    scale = draw(st.sampled_from([0, 1_000_000, 1_000, 1]))
    target.nanos = draw(st.integers(0, 999_999_999 // scale)) * scale if scale else 0


def durations(draw: st.DrawFn, target: Message) -> None:
    target.seconds = draw(st.integers(-315_576_000_000, 315_576_000_000))
    nanos = draw(st.integers(0, 999_999_999))
    target.nanos = -nanos if target.seconds < 0 else nanos


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.text() | floats(64),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children, max_size=3),
    max_leaves=6,
)


def fill_known(draw: st.DrawFn, target: Message) -> bool:
    """Fill a well-known type that needs more than its fields' types allow; False if not one."""
    name = target.DESCRIPTOR.full_name
    if name == "google.protobuf.Timestamp":
        timestamps(draw, target)
    elif name == "google.protobuf.Duration":
        durations(draw, target)
    elif name == "google.protobuf.FieldMask":
        target.paths.extend(draw(st.lists(st.from_regex(r"[a-z]{1,5}(_[a-z]{1,5}){0,2}", fullmatch=True), max_size=3)))
    elif name == "google.protobuf.Struct":
        target.update(draw(st.dictionaries(st.text(), JSON_VALUES, max_size=3)))
    elif name == "google.protobuf.ListValue":
        target.extend(draw(st.lists(JSON_VALUES, max_size=3)))
    elif name == "google.protobuf.Value":
        holder = message_factory.GetMessageClass(target.DESCRIPTOR.file.pool.FindMessageTypeByName(
            "google.protobuf.ListValue"
        ))()
        holder.append(draw(JSON_VALUES))
        target.CopyFrom(holder.values[0])
    elif name == "google.protobuf.Any":
        if draw(st.booleans()):
            target.Pack(draw(messages(vehicle_data_pb2.Datum.DESCRIPTOR)))
    else:
        return False
    return True


def scalars(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind in INT_RANGES:
        low, high = INT_RANGES[kind]
        return st.one_of(st.sampled_from([low, high, 0, 1]), st.integers(low, high))
    if kind == _T.TYPE_DOUBLE:
        return floats(64)
    if kind == _T.TYPE_FLOAT:
        return floats(32)
    if kind == _T.TYPE_BOOL:
        return st.booleans()
    if kind == _T.TYPE_STRING:
        return st.text()
    if kind == _T.TYPE_BYTES:
        return st.binary(max_size=12)
    if kind == _T.TYPE_ENUM:
        numbers = [value.number for value in field.enum_type.values]
        if field.enum_type.is_closed:
            return st.sampled_from(numbers)
        return st.one_of(st.sampled_from(numbers), st.integers(*INT32))  # unknown numbers too
    raise AssertionError(f"no strategy for {field.full_name}")


def set_value(draw: st.DrawFn, target: Message, field: FieldDescriptor, depth: int) -> None:
    """Give one field of `target` a drawn value (an extension if `field` is one)."""
    holder: Any = target.Extensions if field.is_extension else None
    if _is_map(field):
        entries = getattr(target, field.name)
        key_field = field.message_type.fields_by_name["key"]
        value_field = field.message_type.fields_by_name["value"]
        for key in draw(st.lists(scalars(key_field), max_size=3, unique=True)):
            if value_field.message_type is None:
                entries[key] = draw(scalars(value_field))
            else:
                fill(draw, entries[key], depth + 1)
    elif field.is_repeated:
        container = holder[field] if holder is not None else getattr(target, field.name)
        if field.message_type is None:
            container.extend(draw(st.lists(scalars(field), max_size=3)))
        else:
            for _ in range(draw(st.integers(0, 3))):
                fill(draw, container.add(), depth + 1)
    elif field.message_type is not None:
        child = holder[field] if holder is not None else getattr(target, field.name)
        child.SetInParent()  # present even when left empty
        fill(draw, child, depth + 1)
    elif holder is not None:
        holder[field] = draw(scalars(field))
    else:
        setattr(target, field.name, draw(scalars(field)))


def fill(draw: st.DrawFn, target: Message, depth: int = 0) -> None:
    """Set a drawn subset of `target`'s fields: at most one member per oneof, nested
    messages until MAX_DEPTH, extensions where the type has them."""
    if fill_known(draw, target):
        return
    descriptor: Descriptor = target.DESCRIPTOR
    deep = depth >= MAX_DEPTH
    for oneof in descriptor.oneofs:
        members = [field for field in oneof.fields if not (deep and field.message_type is not None)]
        chosen = draw(st.one_of(st.none(), st.sampled_from(members))) if members else None
        if chosen is not None:
            set_value(draw, target, chosen, depth)
    candidates = [field for field in descriptor.fields if field.containing_oneof is None]
    if descriptor.is_extendable:
        candidates += target.DESCRIPTOR.file.pool.FindAllExtensions(descriptor)
    for field in candidates:
        if deep and field.message_type is not None and not field.is_required:
            continue
        if field.is_required or draw(st.booleans()):
            set_value(draw, target, field, depth)


@st.composite
def messages(draw: st.DrawFn, descriptor: Descriptor) -> Message:
    message = message_factory.GetMessageClass(descriptor)()
    fill(draw, message)
    return message


@st.composite
def values(draw: st.DrawFn, member: str) -> vehicle_data_pb2.Value:
    """A Value with this oneof member set."""
    value = vehicle_data_pb2.Value()
    set_value(draw, value, vehicle_data_pb2.Value.DESCRIPTOR.fields_by_name[member], 0)
    return value


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
