"""Records of late-2026 firmware read by name: fields 260-277, the new variants and enum values.

The records are built as a vehicle sends them, with the vehicles' own generated modules
(`tesla-protocol`), and decoded by ours: what backends see (protobuf-JSON and the MQTT
topics) must name every field, variant and enum value the schema now defines, where an
older schema printed the number 260, the number 8 or an empty object.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from tesla_protocol.telemetry import vehicle_data_pb2 as theirs

from fleetwire.proto import vehicle_data_pb2
from fleetwire.server.records import Record
from fleetwire.server.mqtt_layout import mqtt_messages
from fleetwire.server.records import to_json

VIN = "5YJ3E1EA7KF000001"
T0 = 1_790_000_000


def _decoded(fill: dict[str, Any]) -> vehicle_data_pb2.Payload:
    """A payload a vehicle sent (one datum per Field name → Value keyword), decoded by us."""
    payload = theirs.Payload(vin=VIN)
    payload.created_at.seconds = T0
    for field, value in fill.items():
        payload.data.add(key=theirs.Field.Value(field), value=theirs.Value(**value))
    return vehicle_data_pb2.Payload.FromString(payload.SerializeToString())


def _json_data(message: vehicle_data_pb2.Payload) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(to_json(message))["data"]
    return data


def _mqtt(message: vehicle_data_pb2.Payload) -> dict[str, Any]:
    record = Record("V", VIN, "vehicle_device", "tx", "conn-1", message.SerializeToString(), message,
                    float(T0), float(T0))
    return {topic: json.loads(body) for topic, body in mqtt_messages(record, "fleet")}


def test_field_260_prints_by_name_in_json_and_mqtt() -> None:
    message = _decoded({"GpsAccuracyMeters": {"double_value": 3.5}})
    assert _json_data(message) == [{"key": "GpsAccuracyMeters", "value": {"doubleValue": 3.5}}]
    assert _mqtt(message) == {f"fleet/{VIN}/v/GpsAccuracyMeters": 3.5}


@pytest.mark.parametrize("number", range(260, 278))
def test_every_new_field_prints_by_name(number: int) -> None:
    name = theirs.Field.Name(number)
    message = _decoded({name: {"int_value": number}})
    assert _json_data(message)[0]["key"] == name
    assert list(_mqtt(message)) == [f"fleet/{VIN}/v/{name}"]


def test_cybercab_prints_by_name() -> None:
    message = _decoded({"CarType": {"car_type_value": theirs.CarTypeCybercab}})
    assert _json_data(message) == [{"key": "CarType", "value": {"carTypeValue": "CarTypeCybercab"}}]
    assert _mqtt(message) == {f"fleet/{VIN}/v/CarType": "CarTypeCybercab"}


def test_automatic_emergency_braking_state_prints_its_enum_name() -> None:
    enabled = theirs.AutomaticEmergencyBrakingStateEnabled
    message = _decoded({"AutomaticEmergencyBrakingState": {"automatic_emergency_braking_state_value": enabled}})
    assert _json_data(message) == [{
        "key": "AutomaticEmergencyBrakingState",
        "value": {"automaticEmergencyBrakingStateValue": "AutomaticEmergencyBrakingStateEnabled"},
    }]
    assert _mqtt(message) == {
        f"fleet/{VIN}/v/AutomaticEmergencyBrakingState": "AutomaticEmergencyBrakingStateEnabled"}


@pytest.mark.parametrize(
    ("field", "variant", "number", "name"),
    [
        ("Cabin12vPortKeepOn", "cabin_port_keep_on_value", 2, "CabinPortKeepOnStateOn"),
        ("PowerTransferStatus", "power_transfer_status_value", 9, "PowerTransferStatusBlocked"),
        ("DriverSeatBelt", "buckle_status_value", 4, "BuckleStatusSNA"),
        ("CarType", "car_type_value", 7, "CarTypeSemiTruckV2"),
        ("DetailedChargeState", "detailed_charge_state_value", 7, "DetailedChargeStateCalibrating"),
    ],
)
def test_new_variants_and_enum_values_print_by_name(field: str, variant: str, number: int, name: str) -> None:
    message = _decoded({field: {variant: number}})
    camel = "".join(part.capitalize() if i else part for i, part in enumerate(variant.split("_")))
    assert _json_data(message) == [{"key": field, "value": {camel: name}}]
    assert _mqtt(message) == {f"fleet/{VIN}/v/{field}": name}
