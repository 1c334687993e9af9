"""`protojson.message_to_dict` prints exactly what `json_format.MessageToDict(message,
always_print_fields_with_no_presence=True)` prints — keys, key order, value types, and
the errors it raises — for every record type, and for a test schema exercising what
our records do not use (proto3 optional, other map keys, well-known types, proto2).

Dicts are compared with == and as `json.dumps` text: the text tells apart what == does
not (key order, -0.0 from 0.0, True from 1, 1.0 from 1).
"""

from __future__ import annotations

import importlib.resources
import json
import math
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from grpc_tools import protoc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetwire.proto import (
    vehicle_alert_pb2,
    vehicle_connectivity_pb2,
    vehicle_data_pb2,
    vehicle_error_pb2,
    vehicle_metric_pb2,
)
from fleetwire.server.protojson import message_to_dict
from fleetwire.server.protojson_render import render
from fleetwire.server.records import MILLISECONDS_THRESHOLD, decode_record, to_dict, to_json
from fleetwire.sim.vehicle import DEFAULT_FIELDS, vehicle_payload

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

TEST_PROTO = """
syntax = "proto3";
package protojson_test;

import "google/protobuf/any.proto";
import "google/protobuf/duration.proto";
import "google/protobuf/field_mask.proto";
import "google/protobuf/struct.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";

enum Color {
  option allow_alias = true;
  COLOR_UNSPECIFIED = 0;
  RED = 1;
  SCARLET = 1;
  GREEN = 2;
}

// Declared out of number order: unset fields follow the set ones in declaration order.
message Scalars {
  string text = 9;
  int32 i32 = 1;
  int64 i64 = 2;
  uint32 u32 = 3;
  uint64 u64 = 4;
  sint32 s32 = 5;
  sint64 s64 = 6;
  fixed32 f32 = 7;
  fixed64 f64 = 8;
  sfixed32 sf32 = 10;
  sfixed64 sf64 = 11;
  float fl = 12;
  double db = 13;
  bool flag = 14;
  bytes blob = 15;
  Color color = 16;
  optional int32 maybe = 17;
  optional string maybe_text = 18;
  optional Color maybe_color = 19;
  optional double maybe_double = 26;
  repeated int64 many = 20;
  repeated Color colors = 21;
  repeated float floats = 22;
  repeated bytes blobs = 23;
  int32 from = 24;
  string named = 25 [json_name = "customName"];
}

message Tree {
  string name = 1;
  repeated Tree children = 2;
  Tree parent = 3;
  map<int32, Tree> by_id = 4;
  oneof choice {
    Tree left = 5;
    Scalars right = 6;
  }
  Scalars scalars = 7;
}

// A oneof whose members' numbers straddle another field's.
message Interleaved {
  int32 a = 1;
  oneof pick {
    string b = 2;
    int32 d = 4;
  }
  int32 c = 3;
}

message Maps {
  map<string, string> ss = 1;
  map<int32, string> is = 2;
  map<int64, double> id = 3;
  map<bool, bytes> bb = 4;
  map<uint64, Scalars> um = 5;
  map<string, Color> sc = 6;
  map<sint32, google.protobuf.Timestamp> st = 7;
  map<string, float> sf = 8;
}

message Known {
  google.protobuf.Timestamp at = 1;
  google.protobuf.Duration took = 2;
  google.protobuf.FieldMask mask = 3;
  google.protobuf.Struct struct = 4;
  google.protobuf.Value value = 5;
  google.protobuf.ListValue list = 6;
  google.protobuf.Any any = 7;
  google.protobuf.Int64Value i64 = 8;
  google.protobuf.FloatValue fl = 9;
  google.protobuf.BytesValue blob = 10;
  google.protobuf.StringValue text = 11;
  google.protobuf.BoolValue flag = 12;
  repeated google.protobuf.Timestamp times = 13;
  oneof when {
    google.protobuf.Timestamp stamp = 14;
    google.protobuf.Duration span = 15;
  }
  Scalars scalars = 16;
}
"""

TEST_PROTO2 = """
syntax = "proto2";
package protojson_test2;

enum Closed {
  ZERO = 0;
  ONE = 1;
}

message Legacy {
  optional int32 n = 1 [default = 7];
  optional string s = 2 [default = "x"];
  required bool r = 3;
  optional Closed closed = 4;
  repeated Closed closeds = 5;
  optional group Item = 6 {
    optional int32 id = 7;
  }
  repeated int32 nums = 8;
  optional Plain plain = 9;
  extensions 100 to 199;
}

message Plain {
  optional double x = 1;
  repeated string names = 2;
}

extend Legacy {
  optional string note = 100;
  repeated int32 tags = 101;
  optional Legacy child = 102;
}
"""


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


@pytest.fixture(scope="module")
def test_pool(tmp_path_factory: pytest.TempPathFactory) -> descriptor_pool.DescriptorPool:
    """The test schemas compiled by protoc into a pool of their own."""
    work: Path = tmp_path_factory.mktemp("protojson")
    (work / "protojson_test.proto").write_text(TEST_PROTO)
    (work / "protojson_test2.proto").write_text(TEST_PROTO2)
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    out = work / "set.binpb"
    status = protoc.main([
        "protoc", f"-I{work}", f"-I{well_known}", "--include_imports", f"--descriptor_set_out={out}",
        "protojson_test.proto", "protojson_test2.proto",
    ])
    assert status == 0
    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file:
        pool.Add(file)
    return pool


TEST_TYPES = [
    "protojson_test.Scalars",
    "protojson_test.Tree",
    "protojson_test.Interleaved",
    "protojson_test.Maps",
    "protojson_test.Known",
    "protojson_test2.Legacy",
]

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- the record types --------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", RECORD_MESSAGES, ids=lambda cls: cls.DESCRIPTOR.name)
@SETTINGS
@given(data=st.data())
def test_records_match_json_format(cls: type[Message], data: st.DataObject) -> None:
    assert_same(data.draw(messages(cls.DESCRIPTOR)))


@pytest.mark.parametrize("member", VALUE_MEMBERS)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_every_value_member_matches(member: str, data: st.DataObject) -> None:
    value = data.draw(values(member))
    assert_same(value)
    payload = vehicle_data_pb2.Payload(vin=VIN, data=[vehicle_data_pb2.Datum(key=8, value=value)])
    assert_same(payload)


@pytest.mark.parametrize("record_type", list(DECODED_TYPES))
@SETTINGS
@given(data=st.data())
def test_decoded_records_match(record_type: str, data: st.DataObject) -> None:
    """What `decode_record` hands the dispatchers, transforms applied (locations parsed,
    milliseconds turned to seconds, the certificate's VIN stamped)."""
    sent = data.draw(messages(DECODED_TYPES[record_type].DESCRIPTOR))
    message, _ = decode_record(record_type, sent.SerializeToString(), VIN)
    assert_same(message)


def test_empty_records() -> None:
    for cls in RECORD_MESSAGES:
        assert_same(cls())
    assert message_to_dict(vehicle_data_pb2.Payload()) == {"data": [], "vin": "", "isResend": False}


def test_simulated_vehicle_payloads() -> None:
    rng = random.Random(7)
    for _ in range(20):
        raw = vehicle_payload(VIN, DEFAULT_FIELDS, rng, time.time() + rng.uniform(-1e6, 1e6))
        message, _ = decode_record("V", raw, VIN)
        assert_same(message)


def test_fixed_payload() -> None:
    payload = vehicle_data_pb2.Payload(vin=VIN, is_resend=True)
    payload.created_at.seconds = 1_732_240_000
    payload.created_at.nanos = 120_000_000
    payload.data.add(key=vehicle_data_pb2.Gear, value=vehicle_data_pb2.Value(shift_state_value=vehicle_data_pb2.ShiftStateD))
    payload.data.add(key=vehicle_data_pb2.Odometer, value=vehicle_data_pb2.Value(long_value=-(2**63)))
    payload.data.add(key=vehicle_data_pb2.Soc, value=vehicle_data_pb2.Value(float_value=0.1))
    payload.data.add(key=vehicle_data_pb2.VehicleSpeed, value=vehicle_data_pb2.Value(double_value=-0.0))
    payload.data.add(key=vehicle_data_pb2.Location).value.location_value.SetInParent()
    payload.data.add(value=vehicle_data_pb2.Value(charging_value=999))  # unknown enum number
    payload.data.add(key=vehicle_data_pb2.InsideTemp)  # no value
    payload.data.add(key=vehicle_data_pb2.OutsideTemp, value=vehicle_data_pb2.Value(double_value=math.nan))
    payload.data.add(key=vehicle_data_pb2.VehicleName, value=vehicle_data_pb2.Value(string_value="Ünïcødé 🚗"))
    assert_same(payload)
    assert message_to_dict(payload) == {
        "data": [
            {"key": "Gear", "value": {"shiftStateValue": "ShiftStateD"}},
            {"key": "Odometer", "value": {"longValue": "-9223372036854775808"}},
            {"key": "Soc", "value": {"floatValue": 0.1}},
            {"key": "VehicleSpeed", "value": {"doubleValue": -0.0}},
            {"key": "Location", "value": {"locationValue": {"latitude": 0.0, "longitude": 0.0}}},
            {"value": {"chargingValue": 999}, "key": "Unknown"},
            {"key": "InsideTemp"},
            {"key": "OutsideTemp", "value": {"doubleValue": "NaN"}},
            {"key": "VehicleName", "value": {"stringValue": "Ünïcødé 🚗"}},
        ],
        "createdAt": "2024-11-22T01:46:40.120Z",
        "vin": VIN,
        "isResend": True,
    }


@pytest.mark.parametrize(
    ("seconds", "nanos", "text"),
    [
        (0, 0, "1970-01-01T00:00:00Z"),
        (0, 1_000_000, "1970-01-01T00:00:00.001Z"),
        (0, 1_000, "1970-01-01T00:00:00.000001Z"),
        (0, 1, "1970-01-01T00:00:00.000000001Z"),
        (-1, 999_999_999, "1969-12-31T23:59:59.999999999Z"),
        (TIMESTAMP_MIN, 0, "0001-01-01T00:00:00Z"),
        (TIMESTAMP_MAX, 999_999_999, "9999-12-31T23:59:59.999999999Z"),
    ],
)
def test_timestamps(seconds: int, nanos: int, text: str) -> None:
    errors = vehicle_error_pb2.VehicleErrors()
    errors.created_at.seconds, errors.created_at.nanos = seconds, nanos
    assert_same(errors)
    assert message_to_dict(errors)["createdAt"] == text
    assert message_to_dict(errors.created_at) == text


@pytest.mark.parametrize(("seconds", "nanos"), [(TIMESTAMP_MAX + 1, 0), (TIMESTAMP_MIN - 1, 0), (0, -1), (0, 10**9)])
def test_invalid_timestamps_raise_as_json_format(seconds: int, nanos: int) -> None:
    errors = vehicle_error_pb2.VehicleErrors()
    errors.errors.add().created_at.seconds = seconds
    errors.errors[0].created_at.nanos = nanos
    with pytest.raises(json_format.SerializeToJsonError, match="Failed to serialize created_at field"):
        message_to_dict(errors)
    assert_same(errors)
    with pytest.raises(ValueError, match="Timestamp is not valid"):
        message_to_dict(errors.errors[0].created_at)


def test_float32_shortest() -> None:
    for number in [0.1, 1 / 3, 3.4028234663852886e38, 1.401298464324817e-45, 16777217.0, 0.3, -2.5e-7]:
        assert_same(vehicle_data_pb2.Value(float_value=number))


def test_map_tags() -> None:
    error = vehicle_error_pb2.VehicleError(name="uds", tags={"ecu": "VCFRONT", "ü": "", "": "x"})
    assert_same(vehicle_error_pb2.VehicleErrors(errors=[error]))
    metric = vehicle_metric_pb2.Metric(name="m", tags={"b": "1", "a": "2"}, value=math.inf)
    assert_same(vehicle_metric_pb2.VehicleMetrics(metrics=[metric]))


def test_fresh_lists_and_dicts() -> None:
    """Defaults are new objects each time: a caller may change what it gets."""
    first = message_to_dict(vehicle_error_pb2.VehicleError())
    first["tags"]["x"] = "y"
    assert message_to_dict(vehicle_error_pb2.VehicleError())["tags"] == {}
    first = message_to_dict(vehicle_data_pb2.Payload())
    first["data"].append(1)
    assert message_to_dict(vehicle_data_pb2.Payload())["data"] == []


# --- to_dict and to_json ----------------------------------------------------------------------------


@SETTINGS
@given(data=st.data())
def test_to_json_is_json_format_compact(data: st.DataObject) -> None:
    """The same JSON as `json.dumps` of MessageToDict's dict, compact and UTF-8; numbers
    equal, though orjson spells a few small floats in fixed point."""
    message = data.draw(messages(vehicle_data_pb2.Payload.DESCRIPTOR))
    try:
        expected = reference(message)
    except json_format.SerializeToJsonError:
        with pytest.raises(json_format.SerializeToJsonError):
            to_json(message)
        return
    raw = to_json(message)
    assert to_dict(message) == expected
    assert json.dumps(json.loads(raw)) == json.dumps(expected)
    assert raw == orjson.dumps(expected)


# --- the test schema: what records do not use -------------------------------------------------------


@pytest.mark.parametrize("name", TEST_TYPES)
@SETTINGS
@given(data=st.data())
def test_schema_features_match(test_pool: descriptor_pool.DescriptorPool, name: str, data: st.DataObject) -> None:
    assert_same(data.draw(messages(test_pool.FindMessageTypeByName(name))))


def test_schema_fixed(test_pool: descriptor_pool.DescriptorPool) -> None:
    def make(type_name: str, /, **fields: Any) -> Any:
        return message_factory.GetMessageClass(test_pool.FindMessageTypeByName(type_name))(**fields)

    scalars = make("protojson_test.Scalars", text="t", maybe=0, named="n", colors=[1, 2, 7], fl=-0.0)
    setattr(scalars, "from", 3)
    assert_same(scalars)
    keys = list(message_to_dict(scalars))
    assert keys[:6] == ["text", "fl", "maybe", "colors", "from", "customName"]  # set, by number
    assert keys[6:9] == ["i32", "i64", "u32"]  # unset, in declaration order
    interleaved = make("protojson_test.Interleaved", d=5, c=1)
    assert list(message_to_dict(interleaved)) == ["c", "d", "a"] == list(reference(interleaved))
    tree = make("protojson_test.Tree", name="root")
    tree.children.add(name="a").left.name = "deep"
    tree.by_id[-3].parent.right.u64 = 2**64 - 1
    assert_same(tree)
    known = make("protojson_test.Known")
    known.value.number_value = math.nan  # json_format refuses: a Value cannot hold NaN
    assert_same(known)
    legacy = make("protojson_test2.Legacy", r=True)
    legacy.Extensions[test_pool.FindExtensionByName("protojson_test2.note")] = "ext"
    assert_same(legacy)
    assert "[protojson_test2.note]" in message_to_dict(legacy)


def _all_message_types(pool_types: list[Descriptor]) -> Iterator[Descriptor]:
    seen: set[str] = set()
    stack = list(pool_types)
    while stack:
        descriptor = stack.pop()
        if descriptor.full_name in seen:
            continue
        seen.add(descriptor.full_name)
        yield descriptor
        stack.extend(field.message_type for field in descriptor.fields if field.message_type is not None)


def test_every_type_reachable_from_records_converts_empty() -> None:
    roots = [cls.DESCRIPTOR for cls in RECORD_MESSAGES]
    for descriptor in _all_message_types(roots):
        assert_same(message_factory.GetMessageClass(descriptor)())



# --- render: message_to_dict that never raises ------------------------------------------------------


def assert_renders(message: Message) -> None:
    """What json_format prints, render prints alike with no problem; what it refuses, render
    prints anyway, naming each value it printed raw."""
    try:
        expected = reference(message)
    except Exception:
        got, problems = render(message)
        assert problems
        json.dumps(got, allow_nan=False)  # plain JSON, whatever it holds
        return
    got, problems = render(message)
    assert problems == []
    assert json.dumps(got) == json.dumps(expected)


@pytest.mark.parametrize("cls", RECORD_MESSAGES, ids=lambda cls: cls.DESCRIPTOR.name)
@SETTINGS
@given(data=st.data())
def test_render_records(cls: type[Message], data: st.DataObject) -> None:
    assert_renders(data.draw(messages(cls.DESCRIPTOR)))


@pytest.mark.parametrize("name", TEST_TYPES)
@SETTINGS
@given(data=st.data())
def test_render_schema_features(test_pool: descriptor_pool.DescriptorPool, name: str, data: st.DataObject) -> None:
    assert_renders(data.draw(messages(test_pool.FindMessageTypeByName(name))))


def test_render_prints_refused_values_raw() -> None:
    errors = vehicle_error_pb2.VehicleErrors(vin=VIN)
    first = errors.errors.add(name="a")
    first.created_at.seconds = TIMESTAMP_MAX + 1
    errors.errors.add(name="b").created_at.seconds = 0
    got, problems = render(errors)
    assert got["errors"][0]["createdAt"] == {"seconds": str(TIMESTAMP_MAX + 1), "nanos": 0}
    assert got["errors"][0]["name"] == "a" and got["errors"][0]["tags"] == {}
    assert got["errors"][1] == message_to_dict(errors.errors[1])  # the rest as usual
    assert list(got) == list(message_to_dict(vehicle_error_pb2.VehicleErrors()))  # same keys, same order
    assert problems == [f"errors[0].createdAt: Timestamp is not valid: Seconds {TIMESTAMP_MAX + 1} must be in "
                        f"range [{TIMESTAMP_MIN}, {TIMESTAMP_MAX}]."]


def test_unknown_value_variant_is_printed_not_dropped() -> None:
    """The one deliberate difference from json_format: a Value of a variant newer than the
    schema (an unknown field of Value) shows it instead of {}."""
    value = vehicle_data_pb2.Value.FromString(b"\xe8\x03\x07")  # field 61, varint 7
    assert reference(value) == {}
    assert message_to_dict(value) == {"unknownValue": {"number": 61, "wireType": "varint", "value": 7}}
    known = vehicle_data_pb2.Value.FromString(vehicle_data_pb2.Value(int_value=1).SerializeToString() + b"\xe8\x03\x07")
    assert message_to_dict(known) == reference(known) == {"intValue": 1}  # a known member wins
