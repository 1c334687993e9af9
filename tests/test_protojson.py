"""`protojson.message_to_dict` prints exactly what `json_format.MessageToDict(message,
always_print_fields_with_no_presence=True)` prints — keys, key order, value types, and
the errors it raises — for every record type, and for a test schema exercising what
our records do not use (proto3 optional, other map keys, well-known types, proto2).

Dicts are compared with == and as `json.dumps` text: the text tells apart what == does
not (key order, -0.0 from 0.0, True from 1, 1.0 from 1).
"""

from __future__ import annotations

import json
import math
import random
import time

import orjson
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetwire.proto import (
    vehicle_data_pb2,
    vehicle_error_pb2,
    vehicle_metric_pb2,
)
from fleetwire.server.protojson import message_to_dict
from fleetwire.server.records import decode_record, to_dict, to_json
from fleetwire.sim.vehicle import DEFAULT_FIELDS, vehicle_payload
from protojson_cases import (
    DECODED_TYPES,
    RECORD_MESSAGES,
    SETTINGS,
    TIMESTAMP_MAX,
    TIMESTAMP_MIN,
    VALUE_MEMBERS,
    VIN,
    assert_same,
    messages,
    reference,
    values,
)


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
