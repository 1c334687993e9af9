"""The logger dispatcher: one JSON line per record with its decoded data, one write and one flush per batch."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
from fleetwire.proto import vehicle_connectivity_pb2, vehicle_data_pb2
from fleetwire.server.config import parse_config
from fleetwire.server.dispatchers import logger as logger_module
from fleetwire.server.dispatch import Dispatcher, DispatchError
from fleetwire.server.records import Record
from fleetwire.server.dispatchers.logger import LoggerDispatcher
from fleetwire.server.records import to_dict

VIN = "5YJ3E1EA7KF000001"


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.flushes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)

    def flush(self) -> None:
        self.flushes += 1


def vehicle_record(n: int) -> Record:
    message = vehicle_data_pb2.Payload(vin=VIN)
    message.created_at.seconds = 1_700_000_000 + n
    datum = message.data.add(key=vehicle_data_pb2.VehicleSpeed)
    datum.value.float_value = 12.5 + n
    loc = message.data.add(key=vehicle_data_pb2.Location)
    loc.value.location_value.latitude = 37.41
    loc.value.location_value.longitude = -122.14
    gear = message.data.add(key=vehicle_data_pb2.Gear)
    gear.value.shift_state_value = vehicle_data_pb2.ShiftStateD
    payload = message.SerializeToString()
    return Record("V", VIN, "vehicle_device", f"tx-{n}", "conn-1", payload, message,
                  1_700_000_000.0 + n, 1_700_000_000.25 + n)


def connectivity_record() -> Record:
    message = vehicle_connectivity_pb2.VehicleConnectivity(
        vin=VIN, connection_id="conn-1", status=vehicle_connectivity_pb2.CONNECTED, network_interface="wifi"
    )
    return Record("connectivity", VIN, "vehicle_device", "", "conn-1", message.SerializeToString(), message,
                  1.0, 1.0)


def test_is_a_dispatcher() -> None:
    assert isinstance(LoggerDispatcher(io.StringIO()), Dispatcher)


async def test_one_line_per_record_one_write_per_batch() -> None:
    stream = CountingStream()
    dispatcher = LoggerDispatcher(stream)
    await dispatcher.start()
    batch = [vehicle_record(n) for n in range(5)] + [connectivity_record()]
    await dispatcher.publish(batch)
    assert (stream.writes, stream.flushes) == (1, 1)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 6
    first = json.loads(lines[0])
    assert first == {
        "msg": "record_payload", "record_type": "V", "vin": VIN, "txid": "tx-0", "client_type": "vehicle_device",
        "created_at": 1_700_000_000.0, "received_at": 1_700_000_000.25, "size": len(batch[0].payload),
        "data": {
            "Vin": VIN, "CreatedAt": "2023-11-14T22:13:20Z", "VehicleSpeed": 12.5,
            "Location": {"latitude": 37.41, "longitude": -122.14}, "Gear": "ShiftStateD",
        },
    }
    assert json.loads(lines[5])["record_type"] == "connectivity"
    await dispatcher.close()


async def test_sizes_only_when_asked() -> None:
    stream = io.StringIO()
    await LoggerDispatcher(stream, include_data=False).publish([vehicle_record(0)])
    assert "data" not in json.loads(stream.getvalue())


async def test_other_records_carry_their_protobuf_json() -> None:
    stream = io.StringIO()
    dispatcher = LoggerDispatcher(stream)
    record = connectivity_record()
    await dispatcher.publish([vehicle_record(1), record])
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2  # the data stays on its record's line
    data = json.loads(lines[1])["data"]
    assert data == to_dict(record.message)
    assert data["status"] == "CONNECTED" and data["connectionId"] == "conn-1"  # camelCase, enum names


async def test_verbose_labels_values_with_their_types() -> None:
    stream = io.StringIO()
    await LoggerDispatcher(stream, verbose=True).publish([vehicle_record(0)])
    data = json.loads(stream.getvalue())["data"]
    assert data["VehicleSpeed"] == {"floatValue": 12.5}
    assert data["Location"] == {"locationValue": {"latitude": 37.41, "longitude": -122.14}}
    assert data["Gear"] == {"shiftStateValue": "ShiftStateD"}


async def test_failed_write_is_a_dispatch_error() -> None:
    stream = io.StringIO()
    stream.close()
    with pytest.raises(DispatchError):
        await LoggerDispatcher(stream).publish([vehicle_record(0)])


@pytest.mark.parametrize(
    ("extra", "verbose"),
    [({}, False), ({"logger": {"verbose": True}}, True), ({"transmit_decoded_records": True}, False)],
)
def test_create_follows_the_config(tmp_path: Path, extra: dict[str, object], verbose: bool) -> None:
    for name in ("c.pem", "k.pem"):
        (tmp_path / name).write_text("x")
    data = {"tls": {"server_cert": "c.pem", "server_key": "k.pem"}, "records": {"V": ["logger"]}, **extra}
    config, _ = parse_config(data, tmp_path)
    dispatcher = logger_module.create(config)
    assert dispatcher.include_data is True  # the data always, as the reference's logger
    assert dispatcher.verbose is verbose


def _value(fill: Callable[[vehicle_data_pb2.Value], None]) -> vehicle_data_pb2.Value:
    value = vehicle_data_pb2.Value()
    fill(value)
    return value


@pytest.mark.parametrize(
    ("fill", "shown", "labelled"),
    [
        (lambda v: setattr(v, "string_value", "on"), "on", {"stringValue": "on"}),
        (lambda v: setattr(v, "int_value", -3), -3, {"intValue": -3}),
        (lambda v: setattr(v, "long_value", 2**40), 2**40, {"longValue": 2**40}),
        (lambda v: setattr(v, "float_value", 0.1), 0.1, {"floatValue": 0.1}),  # float32, shortest
        (lambda v: setattr(v, "double_value", math.inf), "Infinity", {"doubleValue": "Infinity"}),
        (lambda v: setattr(v, "double_value", math.nan), "NaN", {"doubleValue": "NaN"}),
        (lambda v: setattr(v, "boolean_value", True), True, {"booleanValue": True}),
        (lambda v: setattr(v, "invalid", True), "<invalid>", {"invalid": True}),
        (lambda v: setattr(v, "charging_value", 999), 999, {"chargingValue": 999}),  # a newer enum number
        (lambda v: v.time_value.MergeFrom(vehicle_data_pb2.Time(hour=7, minute=5)), "07:05:00",
         {"timeValue": "07:05:00"}),
        (lambda v: v.tire_location_value.MergeFrom(vehicle_data_pb2.TireLocation(front_left=True)),
         {"FrontLeft": True, "FrontRight": False, "RearLeft": False, "RearRight": False},
         {"tireLocationValue": {"FrontLeft": True, "FrontRight": False, "RearLeft": False, "RearRight": False}}),
        (lambda v: v.tire_location_value.MergeFrom(vehicle_data_pb2.TireLocation(semi_rear_axle_left=True)),
         {"FrontLeft": False, "FrontRight": False, "RearLeft": False, "RearRight": False, "SemiRearAxleLeft": True},
         None),
        (lambda v: None, None, None),  # a datum without a value
    ],
)
async def test_value_shapes(fill: Callable[[vehicle_data_pb2.Value], None], shown: object, labelled: object) -> None:
    message = vehicle_data_pb2.Payload(vin=VIN)
    datum = message.data.add(key=vehicle_data_pb2.Soc)
    datum.value.CopyFrom(_value(fill))
    if datum.value.ByteSize() == 0:
        datum.ClearField("value")
    record = Record("V", VIN, "vehicle_device", "t", "c", message.SerializeToString(), message, 0.0, 0.0)
    for verbose, expected in ((False, shown), (True, labelled if labelled is not None else shown)):
        if verbose and labelled is None and shown is not None:
            continue
        stream = io.StringIO()
        await LoggerDispatcher(stream, verbose=verbose).publish([record])
        assert json.loads(stream.getvalue())["data"]["Soc"] == expected
