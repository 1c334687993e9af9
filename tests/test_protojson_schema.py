"""`protojson` on the test schema (what records do not use), and `render`, which never raises:
what json_format refuses it prints raw, naming each such value.
"""

from __future__ import annotations

import importlib.resources
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message
from grpc_tools import protoc
from hypothesis import given
from hypothesis import strategies as st

from fleetwire.proto import (
    vehicle_data_pb2,
    vehicle_error_pb2,
)
from fleetwire.server.protojson import message_to_dict
from fleetwire.server.protojson_render import render
from protojson_cases import (
    RECORD_MESSAGES,
    SETTINGS,
    TIMESTAMP_MAX,
    TIMESTAMP_MIN,
    VIN,
    assert_same,
    messages,
    reference,
)


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
