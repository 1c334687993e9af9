"""Record decoding: transforms, VIN stamping, the unchanged fast path, and hostile input."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetwire.proto import (
    vehicle_alert_pb2,
    vehicle_connectivity_pb2,
    vehicle_data_pb2,
    vehicle_error_pb2,
)
from fleetwire.server import records
from fleetwire.server.records import LOCATION_FIELDS, RecordError, connectivity_record, decode_record, fixed_point, parse_location, to_dict, to_json
from fleetwire.proto.record_types import RECORD_TYPES

VIN = "5YJ3E1EA7KF000001"
FORGED = "5YJ3E1EA7KF999999"
Field = vehicle_data_pb2.Field


def payload(*data: tuple[str, str, object], vin: str = VIN) -> vehicle_data_pb2.Payload:
    message = vehicle_data_pb2.Payload(vin=vin)
    message.created_at.FromSeconds(1_732_240_000)
    for key, variant, value in data:
        datum = message.data.add(key=Field.Value(key))
        if variant == "location_value":
            datum.value.location_value.latitude, datum.value.location_value.longitude = value  # type: ignore[misc]
        else:
            setattr(datum.value, variant, value)
    return message


def typical() -> vehicle_data_pb2.Payload:
    return payload(
        ("VehicleSpeed", "double_value", 65.5),
        ("Odometer", "double_value", 12345.6),
        ("Soc", "double_value", 80.125),
        ("Gear", "shift_state_value", vehicle_data_pb2.ShiftStateD),
        ("ChargeState", "charging_value", vehicle_data_pb2.ChargeStateCharging),
        ("Version", "string_value", "2024.44.25.5 7ba94a5e0c"),
        ("VehicleName", "string_value", "Blue Falcon"),
        ("GpsHeading", "double_value", 271.25),
        ("Locked", "boolean_value", True),
        ("Location", "location_value", (37.412374, -122.145867)),
    )


# --- the record types ----------------------------------------------------------------------


def test_record_types() -> None:
    assert dict(RECORD_TYPES) == {
        "V": vehicle_data_pb2.Payload,
        "alerts": vehicle_alert_pb2.VehicleAlerts,
        "errors": vehicle_error_pb2.VehicleErrors,
        "connectivity": vehicle_connectivity_pb2.VehicleConnectivity,
    }


def test_unknown_record_type() -> None:
    with pytest.raises(RecordError, match="no schema for record type 'metrics'") as caught:
        decode_record("metrics", b"", VIN)
    assert caught.value.reason == "record_type"


def test_location_fields() -> None:
    assert LOCATION_FIELDS == {Field.Location, Field.OriginLocation, Field.DestinationLocation}


# --- unchanged records keep their bytes ------------------------------------------------------


def test_unchanged_payload_returns_the_same_bytes_object() -> None:
    raw = typical().SerializeToString()
    message, out = decode_record("V", raw, VIN)
    assert out is raw
    assert message == typical()
    assert not records._may_transform(raw)


@pytest.mark.parametrize(
    "record_type,message",
    [
        ("alerts", vehicle_alert_pb2.VehicleAlerts(vin=VIN, alerts=[vehicle_alert_pb2.VehicleAlert(name="a")])),
        ("errors", vehicle_error_pb2.VehicleErrors(vin=VIN, errors=[vehicle_error_pb2.VehicleError(name="e")])),
        ("connectivity", vehicle_connectivity_pb2.VehicleConnectivity(vin=VIN, connection_id="c")),
    ],
)
def test_unchanged_other_records_return_the_same_bytes_object(record_type: str, message: object) -> None:
    raw = message.SerializeToString()  # type: ignore[attr-defined]
    decoded, out = decode_record(record_type, raw, VIN)
    assert out is raw
    assert decoded == message


# --- the certificate's VIN wins --------------------------------------------------------------


@pytest.mark.parametrize(
    "record_type,message",
    [
        ("V", payload(("Soc", "double_value", 50.0), vin=FORGED)),
        ("alerts", vehicle_alert_pb2.VehicleAlerts(vin=FORGED, alerts=[vehicle_alert_pb2.VehicleAlert(name="a")])),
        ("errors", vehicle_error_pb2.VehicleErrors(vin=FORGED)),
        ("connectivity", vehicle_connectivity_pb2.VehicleConnectivity(vin=FORGED, connection_id="c")),
        ("V", vehicle_data_pb2.Payload()),
    ],
)
def test_forged_vin_is_overwritten(record_type: str, message: object) -> None:
    raw = message.SerializeToString()  # type: ignore[attr-defined]
    decoded, out = decode_record(record_type, raw, VIN)
    assert decoded.vin == VIN
    again = RECORD_TYPES[record_type].FromString(out)
    assert again.vin == VIN
    assert again == decoded
    assert FORGED.encode() not in out


# --- V transforms ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [
        ("(37.412374 N, 122.145867 W)", (37.412374, -122.145867)),
        ("(33.8688 S, 151.2093 E)", (-33.8688, 151.2093)),
        ("(0.0 N, 0.0 E)", (0.0, 0.0)),
        ("( 90 S,180 W )", (-90.0, -180.0)),
        ("(3.7e1 N, 1.22e2 W)", (37.0, -122.0)),
        ("(.5 N, 1. E)", (0.5, 1.0)),
    ],
)
def test_parse_location(text: str, expected: tuple[float, float]) -> None:
    assert parse_location(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "37.4 N, 122.1 W", "(37.4 X, 122.1 W)", "(37.4 N, 122.1 N)", "(-37.4 S, 122.1 W)",
     "(91 N, 0 E)", "(0 N, 181 E)", "(1e999 N, 0 E)", "(37.4 N , 122.1 W)", "(37.4 N, 122.1 W) tail", "(N, W)"],
)
def test_parse_location_rejects(text: str) -> None:
    assert parse_location(text) is None


@pytest.mark.parametrize("key", ["Location", "OriginLocation", "DestinationLocation"])
def test_location_string_becomes_location_value(key: str) -> None:
    raw = payload(("Soc", "double_value", 1.0), (key, "string_value", "(37.412374 N, 122.145867 W)")).SerializeToString()
    message, out = decode_record("V", raw, VIN)
    value = message.data[1].value
    assert value.WhichOneof("value") == "location_value"
    assert (value.location_value.latitude, value.location_value.longitude) == (37.412374, -122.145867)
    assert out != raw
    assert vehicle_data_pb2.Payload.FromString(out) == message


def test_location_at_origin_is_still_a_location_value() -> None:
    raw = payload(("Location", "string_value", "(0 N, 0 E)")).SerializeToString()
    message, out = decode_record("V", raw, VIN)
    assert vehicle_data_pb2.Payload.FromString(out).data[0].value.WhichOneof("value") == "location_value"


def test_location_string_on_other_field_stays_a_string() -> None:
    raw = payload(("VehicleName", "string_value", "(37.412374 N, 122.145867 W)")).SerializeToString()
    message, out = decode_record("V", raw, VIN)
    assert message.data[0].value.string_value == "(37.412374 N, 122.145867 W)"
    assert out is raw


def test_unparseable_location_stays_a_string() -> None:
    raw = payload(("Location", "string_value", "(somewhere N, nowhere W)")).SerializeToString()
    message, out = decode_record("V", raw, VIN)
    assert message.data[0].value.string_value == "(somewhere N, nowhere W)"
    assert out is raw


@pytest.mark.parametrize(
    "text,expected",
    [
        ("1.2e-05", "0.00001"),
        ("3E+10", "30000000000.00000"),
        ("-4.5e3", "-4500.00000"),
        ("+.5e1", "5.00000"),
        ("7.e0", "7.00000"),
        ("1e-7", "0.00000"),
        ("2.5E-1", "0.25000"),
    ],
)
def test_fixed_point(text: str, expected: str) -> None:
    assert fixed_point(text) == expected


@pytest.mark.parametrize(
    "text", ["", "1.5", "42", "1234e5", "deadbeef", "e-5", "1.2e", "1e999", " 1.2e-05", "2024.44.25.5 7ba94a5e0c", "١.٢e5"]
)
def test_fixed_point_leaves_other_strings(text: str) -> None:
    assert fixed_point(text) is None


def test_scientific_string_rewritten_in_payload() -> None:
    raw = payload(
        ("PackCurrent", "string_value", "1.2e-05"),
        ("PackVoltage", "string_value", "3E+10"),
        ("VehicleName", "string_value", "Model 3"),
    ).SerializeToString()
    message, out = decode_record("V", raw, VIN)
    assert [d.value.string_value for d in message.data] == ["0.00001", "30000000000.00000", "Model 3"]
    assert vehicle_data_pb2.Payload.FromString(out) == message


def test_transform_and_vin_together() -> None:
    raw = payload(("Location", "string_value", "(1 S, 2 W)"), vin=FORGED).SerializeToString()
    message, out = decode_record("V", raw, VIN)
    again = vehicle_data_pb2.Payload.FromString(out)
    assert again.vin == VIN
    assert (again.data[0].value.location_value.latitude, again.data[0].value.location_value.longitude) == (-1.0, -2.0)


# --- alerts ----------------------------------------------------------------------------------


def test_alert_timestamps_in_milliseconds_are_converted() -> None:
    alerts = vehicle_alert_pb2.VehicleAlerts(vin=VIN)
    first = alerts.alerts.add(name="ChargePort_Fault", audiences=[vehicle_alert_pb2.Customer])
    first.started_at.seconds = 1_732_240_000_123
    first.ended_at.seconds = 1_732_240_100_999
    second = alerts.alerts.add(name="BMS_w035")
    second.started_at.seconds = 1_732_240_000
    second.started_at.nanos = 5
    raw = alerts.SerializeToString()
    message, out = decode_record("alerts", raw, VIN)
    assert (message.alerts[0].started_at.seconds, message.alerts[0].started_at.nanos) == (1_732_240_000, 123_000_000)
    assert (message.alerts[0].ended_at.seconds, message.alerts[0].ended_at.nanos) == (1_732_240_100, 999_000_000)
    assert (message.alerts[1].started_at.seconds, message.alerts[1].started_at.nanos) == (1_732_240_000, 5)
    assert not message.alerts[1].HasField("ended_at")
    assert vehicle_alert_pb2.VehicleAlerts.FromString(out) == message


@pytest.mark.parametrize("seconds,converted", [(315_575_999_999, False), (315_576_000_000, True)])
def test_alert_millisecond_threshold(seconds: int, converted: bool) -> None:
    alerts = vehicle_alert_pb2.VehicleAlerts(vin=VIN)
    alerts.alerts.add(name="x").started_at.seconds = seconds
    raw = alerts.SerializeToString()
    message, out = decode_record("alerts", raw, VIN)
    assert message.alerts[0].started_at.seconds == (seconds // 1000 if converted else seconds)
    assert (out is raw) is not converted


# --- errors and corrupt input ----------------------------------------------------------------


def _vin_tag(record_type: str) -> bytes:
    return bytes([RECORD_TYPES[record_type].DESCRIPTOR.fields_by_name["vin"].number << 3 | 2])


@pytest.mark.parametrize("record_type", list(RECORD_TYPES))
@pytest.mark.parametrize(
    "corrupt",
    [
        lambda rt: b"\x0a\xff",
        lambda rt: _vin_tag(rt) + b"\x05ab",
        lambda rt: _vin_tag(rt) + b"\x02\xff\xfe",
        lambda rt: b"\xff" * 11,
        lambda rt: b"\x0f",
    ],
    ids=["truncated-length", "short-string", "invalid-utf8-vin", "overlong-varint", "bad-wire-type"],
)
def test_corrupt_protobuf_is_a_record_error(record_type: str, corrupt: Callable[[str], bytes]) -> None:
    raw = corrupt(record_type)
    with pytest.raises(RecordError) as caught:
        decode_record(record_type, raw, VIN)
    assert caught.value.reason == "protobuf"
    assert record_type in str(caught.value)


@pytest.mark.parametrize("record_type", list(RECORD_TYPES))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.binary(max_size=300))
def test_random_bytes_raise_only_record_error(record_type: str, raw: bytes) -> None:
    try:
        message, out = decode_record(record_type, raw, VIN)
    except RecordError as exc:
        assert exc.reason == "protobuf"
        return
    assert message.vin == VIN
    assert RECORD_TYPES[record_type].FromString(out) == message


_strings = st.one_of(
    st.text(max_size=30),
    st.from_regex(records._SCIENTIFIC, fullmatch=True),
    st.from_regex(records._LOCATION, fullmatch=True),
    st.builds(
        "({:.6f} {}, {:.6f} {})".format,
        st.floats(0, 90), st.sampled_from("NS"), st.floats(0, 180), st.sampled_from("EW"),
    ),
)
_datum = st.tuples(
    st.sampled_from(["Location", "OriginLocation", "DestinationLocation", "VehicleName", "PackCurrent"]),
    st.one_of(
        st.tuples(st.just("string_value"), _strings),
        st.tuples(st.just("double_value"), st.floats(allow_nan=False)),
        st.tuples(st.just("int_value"), st.integers(-(2**31), 2**31 - 1)),
    ),
).map(lambda t: (t[0], t[1][0], t[1][1]))


@settings(max_examples=300, deadline=None)
@given(data=st.lists(_datum, max_size=8), vin=st.sampled_from([VIN, FORGED, ""]))
def test_generated_payloads_decode_consistently(data: list[tuple[str, str, object]], vin: str) -> None:
    raw = payload(*data, vin=vin).SerializeToString()
    message, out = decode_record("V", raw, VIN)
    assert message.vin == VIN
    assert vehicle_data_pb2.Payload.FromString(out) == message
    for datum in message.data:
        value = datum.value
        if value.WhichOneof("value") == "string_value":
            assert fixed_point(value.string_value) in (None, value.string_value)
            if datum.key in LOCATION_FIELDS:
                assert parse_location(value.string_value) is None
    # The transforms are idempotent: a decoded record passes through untouched.
    again, out_again = decode_record("V", out, VIN)
    assert out_again is out
    assert again == message


@given(st.one_of(st.from_regex(records._SCIENTIFIC, fullmatch=True), st.from_regex(records._LOCATION, fullmatch=True)))
def test_byte_prefilter_never_misses_a_transform(text: str) -> None:
    assert records._may_transform(text.encode())


# --- connectivity -----------------------------------------------------------------------------


def test_connectivity_record() -> None:
    raw = connectivity_record(VIN, "0f2b7c1e-1c8d-4a53-9d0e-3c3b5e0f8a11", "CONNECTED", "wifi", 1_732_240_000.25)
    message = vehicle_connectivity_pb2.VehicleConnectivity.FromString(raw)
    assert message.vin == VIN
    assert message.connection_id == "0f2b7c1e-1c8d-4a53-9d0e-3c3b5e0f8a11"
    assert message.status == vehicle_connectivity_pb2.CONNECTED
    assert message.network_interface == "wifi"
    assert (message.created_at.seconds, message.created_at.nanos) == (1_732_240_000, 250_000_000)
    decoded, out = decode_record("connectivity", raw, VIN)
    assert out is raw
    closed = vehicle_connectivity_pb2.VehicleConnectivity.FromString(
        connectivity_record(VIN, "c", "DISCONNECTED", "", 0.0)
    )
    assert closed.status == vehicle_connectivity_pb2.DISCONNECTED
    assert closed.HasField("created_at")
    rounded_up = vehicle_connectivity_pb2.VehicleConnectivity.FromString(
        connectivity_record(VIN, "c", "CONNECTED", "", 1.9999999999)
    )
    assert (rounded_up.created_at.seconds, rounded_up.created_at.nanos) == (2, 0)


def test_connectivity_record_rejects_other_status() -> None:
    with pytest.raises(ValueError, match="CONNECTED or DISCONNECTED"):
        connectivity_record(VIN, "c", "UNKNOWN", "wifi", 0.0)  # type: ignore[arg-type]


# --- JSON ----------------------------------------------------------------------------------------


def test_to_json_is_compact_camel_case_with_enum_names() -> None:
    message = payload(
        ("Gear", "shift_state_value", vehicle_data_pb2.ShiftStateD),
        ("Odometer", "long_value", 2**40),
        ("Location", "location_value", (37.5, -122.25)),
    )
    raw = to_json(message)
    assert b" " not in raw
    decoded = json.loads(raw)
    assert decoded == to_dict(message)
    assert decoded["vin"] == VIN
    assert decoded["isResend"] is False
    assert decoded["createdAt"] == "2024-11-22T01:46:40Z"
    assert decoded["data"][0] == {"key": "Gear", "value": {"shiftStateValue": "ShiftStateD"}}
    assert decoded["data"][1] == {"key": "Odometer", "value": {"longValue": str(2**40)}}
    assert decoded["data"][2]["value"] == {"locationValue": {"latitude": 37.5, "longitude": -122.25}}


def test_to_json_other_records() -> None:
    errors = vehicle_error_pb2.VehicleErrors(vin=VIN)
    errors.errors.add(name="uds", tags={"ecu": "VCFRONT"}, body="ü")
    decoded = json.loads(to_json(errors))
    assert decoded["errors"][0]["tags"] == {"ecu": "VCFRONT"}
    assert "ü".encode() in to_json(errors)
    connectivity = vehicle_connectivity_pb2.VehicleConnectivity.FromString(
        connectivity_record(VIN, "c", "CONNECTED", "cellular", 1.5)
    )
    assert to_dict(connectivity) == {
        "vin": VIN,
        "connectionId": "c",
        "status": "CONNECTED",
        "createdAt": "1970-01-01T00:00:01.500Z",
        "networkInterface": "cellular",
        "vehicleTxid": "",
        "presence": "PRESENCE_UNCHANGED",
        "vinConnections": 0,
    }
