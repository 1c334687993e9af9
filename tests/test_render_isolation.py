"""How records are rendered for backends: an acked record is never lost because of another
record, numbers the schema does not know yet are kept, and the logger shows the data.

Every dispatcher's encoder is exercised here without a broker: the logger's lines,
the MQTT messages, and `Record.json()` (what JSON backends send).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from fleetwire.proto import (
    vehicle_alert_pb2,
    vehicle_connectivity_pb2,
    vehicle_data_pb2,
    vehicle_error_pb2,
)
from fleetwire.server.config import parse_config
from fleetwire.server.dispatchers import logger as logger_module
from fleetwire.server.dispatch import DispatchError
from fleetwire.server.dispatch_queue import DispatchQueue
from fleetwire.server.records import Record, render_problems
from fleetwire.server.dispatchers.logger import LoggerDispatcher
from fleetwire.server.mqtt_layout import mqtt_messages
from fleetwire.server.metrics import ServerMetrics
from fleetwire.server.records import decode_record, field_name
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protojson_cases import VALUE_MEMBERS, messages, values

VIN = "5YJ3E1EA7KF000001"
OTHER_VIN = "5YJ3E1EA7KF000002"
T0 = 1_700_000_000  # 2023-11-14T22:13:20Z
PAST_9999 = 253402300800  # 10000-01-01T00:00:00Z: protobuf-JSON has no text for it
# Numbers no schema of ours uses, so they stay unknown as the schema grows.
UNKNOWN_FIELD = 300
UNKNOWN_VARIANT = 61
RECORD_TYPES: dict[str, type[Message]] = {
    "V": vehicle_data_pb2.Payload,
    "alerts": vehicle_alert_pb2.VehicleAlerts,
    "errors": vehicle_error_pb2.VehicleErrors,
    "connectivity": vehicle_connectivity_pb2.VehicleConnectivity,
}


# --- wire-level helpers: what a newer vehicle sends ---------------------------------------------


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def length_delimited(number: int, body: bytes) -> bytes:
    return tag(number, 2) + varint(len(body)) + body


def datum_bytes(key: int, value: bytes) -> bytes:
    """A `Datum` with a raw `Value` (which may hold a variant newer than the schema)."""
    return (tag(1, 0) + varint(key) if key else b"") + length_delimited(2, value)


def unknown_variant(number: int, wire_type: int, content: int | bytes) -> bytes:
    if wire_type == 0:
        assert isinstance(content, int)
        return tag(number, 0) + varint(content)
    if wire_type == 5:
        assert isinstance(content, int)
        return tag(number, 5) + struct.pack("<I", content)
    if wire_type == 1:
        assert isinstance(content, int)
        return tag(number, 1) + struct.pack("<Q", content)
    assert isinstance(content, bytes)
    return length_delimited(number, content)


# --- records -------------------------------------------------------------------------------------


def record(record_type: str, message: Message, txid: str = "tx", vin: str = VIN) -> Record:
    return Record(record_type, vin, "vehicle_device", txid, "conn-1", message.SerializeToString(), message,
                  float(T0), float(T0) + 0.25)


def vehicle(vin: str = VIN, txid: str = "tx", seconds: int = T0) -> Record:
    message = vehicle_data_pb2.Payload(vin=vin)
    message.created_at.seconds = seconds
    message.data.add(key=vehicle_data_pb2.VehicleSpeed).value.float_value = 12.3
    message.data.add(key=vehicle_data_pb2.Gear).value.shift_state_value = vehicle_data_pb2.ShiftStateD
    location = message.data.add(key=vehicle_data_pb2.Location).value.location_value
    location.latitude, location.longitude = 37.41, -122.14
    message.data.add(key=vehicle_data_pb2.Odometer).value.long_value = 12_345
    return record("V", message, txid, vin)


def newer_vehicle() -> Record:
    """A V record from firmware newer than the schema: an unknown field number with a known
    variant, and a known field with an unknown variant."""
    raw = vehicle_data_pb2.Payload(vin=VIN, created_at={"seconds": T0}).SerializeToString()
    known_value = vehicle_data_pb2.Value(float_value=1.5).SerializeToString()
    raw += length_delimited(1, datum_bytes(UNKNOWN_FIELD, known_value))
    raw += length_delimited(1, datum_bytes(vehicle_data_pb2.Gear, unknown_variant(UNKNOWN_VARIANT, 0, 3)))
    message, payload = decode_record("V", raw, VIN)
    return Record("V", VIN, "vehicle_device", "tx-new", "conn-1", payload, message, float(T0), float(T0))


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().split("\n") if line]


def unrenderable(record_type: str, dispatcher: str) -> int:
    return render_problems.counts[(record_type, dispatcher)]


# --- 1. an acked record is never lost because of another record ---------------------------------


@pytest.mark.parametrize("verbose", [False, True])
async def test_logger_writes_the_whole_batch_around_a_record_it_cannot_render(verbose: bool) -> None:
    stream = io.StringIO()
    logger = LoggerDispatcher(stream, include_data=True, verbose=verbose)
    before = unrenderable("V", "logger")
    batch = [vehicle(txid="a"), vehicle(OTHER_VIN, txid="bad", seconds=PAST_9999), vehicle(txid="c")]
    await logger.publish(batch)
    written = lines(stream)
    assert [line["txid"] for line in written] == ["a", "bad", "c"]
    assert written[1]["data"]["CreatedAt"] == {"seconds": str(PAST_9999), "nanos": 0}  # printed raw
    speed = written[1]["data"]["VehicleSpeed"]
    assert speed == ({"floatValue": 12.3} if verbose else 12.3)  # the rest of it as usual
    assert written[0]["data"]["CreatedAt"] == "2023-11-14T22:13:20Z"
    assert unrenderable("V", "logger") == before + 1


async def test_one_vehicles_bad_timestamp_costs_no_other_vehicle_its_acked_records() -> None:
    """The issue's case: through the queue, as the server runs it, every waiter is confirmed."""
    stream = io.StringIO()
    queue = DispatchQueue(LoggerDispatcher(stream, include_data=True), maxsize=100, batch_size=10)
    loop = asyncio.get_running_loop()
    batch = [vehicle(txid="a"), vehicle(OTHER_VIN, txid="bad", seconds=PAST_9999), vehicle(txid="c")]
    waiters = [loop.create_future() for _ in batch]
    for rec, waiter in zip(batch, waiters, strict=True):
        queue.offer(rec, waiter)
    await queue.start()
    assert await asyncio.wait_for(asyncio.gather(*waiters, return_exceptions=True), 5) == [None, None, None]
    assert [line["txid"] for line in lines(stream)] == ["a", "bad", "c"]
    assert queue.dropped == 0
    await queue.close()


def test_protobuf_payload_of_an_unrenderable_record_is_forwarded() -> None:
    """Protobuf has no range for a Timestamp: backends that forward protobuf get the record
    as the vehicle sent it (VIN stamped), whatever JSON makes of it."""
    sent = vehicle(seconds=PAST_9999).message
    sent.data[0].value.double_value = math.nan
    raw = sent.SerializeToString()
    _, payload = decode_record("V", raw, VIN)
    assert payload is raw
    _, payload = decode_record("V", raw, OTHER_VIN)
    again = vehicle_data_pb2.Payload.FromString(payload)
    assert again.created_at.seconds == PAST_9999 and math.isnan(again.data[0].value.double_value)
    assert again.vin == OTHER_VIN


@pytest.mark.parametrize(("seconds", "nanos"), [(PAST_9999, 0), (-62135596801, 0), (T0, -1), (T0, 10**9)])
def test_record_json_prints_a_timestamp_out_of_range_raw(seconds: int, nanos: int) -> None:
    message = vehicle_error_pb2.VehicleErrors(vin=VIN)
    error = message.errors.add(name="uds", body="b")
    error.created_at.seconds, error.created_at.nanos = seconds, nanos
    rec = record("errors", message)
    before = unrenderable("errors", "kafka")
    data = json.loads(rec.json("kafka"))
    assert data["errors"][0]["createdAt"] == {"seconds": str(seconds), "nanos": nanos}
    assert data["errors"][0]["name"] == "uds" and data["vin"] == VIN
    rec.json("kafka")  # asked again (a retried batch): counted once
    assert unrenderable("errors", "kafka") == before + 1


async def test_logger_non_v_record_with_a_bad_timestamp_keeps_its_batch() -> None:
    bad = vehicle_alert_pb2.VehicleAlerts(vin=VIN)
    bad.alerts.add(name="a").started_at.seconds = PAST_9999
    stream = io.StringIO()
    await LoggerDispatcher(stream, include_data=True).publish([record("alerts", bad, "bad"), vehicle(txid="ok")])
    written = lines(stream)
    assert [line["txid"] for line in written] == ["bad", "ok"]
    assert written[0]["data"]["alerts"][0]["startedAt"] == {"seconds": str(PAST_9999), "nanos": 0}


def test_mqtt_prints_a_timestamp_out_of_range_raw_and_counts_it() -> None:
    message = vehicle_error_pb2.VehicleErrors(vin=VIN)
    message.errors.add(name="e", body="b").created_at.seconds = PAST_9999
    problems: list[str] = []
    [(topic, payload)] = mqtt_messages(record("errors", message), "fleet", problems)
    assert topic == f"fleet/{VIN}/errors/e"
    assert json.loads(payload)["CreatedAt"] == {"nanos": 0, "seconds": str(PAST_9999)}
    assert problems


class Picky:
    """A backend whose encoder raises on one record (a bug, or a record it cannot take)."""

    name = "picky"

    def __init__(self) -> None:
        self.stored: list[str] = []

    async def start(self) -> None:
        return None

    async def publish(self, batch: Sequence[Record]) -> None:
        if any(r.txid == "bad" for r in batch):
            raise ValueError("cannot encode")
        self.stored.extend(r.txid for r in batch)

    async def close(self) -> None:
        return None


async def test_queue_publishes_the_rest_of_a_batch_whose_encoding_raised() -> None:
    backend = Picky()
    queue = DispatchQueue(backend, maxsize=100, batch_size=10)
    loop = asyncio.get_running_loop()
    txids = ["a", "b", "bad", "c"]
    waiters = [loop.create_future() for _ in txids]
    before = unrenderable("V", "picky")
    for txid, waiter in zip(txids, waiters, strict=True):
        queue.offer(vehicle(txid=txid), waiter)
    await queue.start()
    results = await asyncio.wait_for(asyncio.gather(*waiters, return_exceptions=True), 5)
    assert backend.stored == ["a", "b", "c"]
    assert [r is None for r in results] == [True, True, False, True]
    assert isinstance(results[2], DispatchError)
    assert queue.published == 3 and queue.dropped == 1
    assert unrenderable("V", "picky") == before + 1
    await queue.close()


def test_unrenderable_records_are_a_metric() -> None:
    rec = vehicle(seconds=PAST_9999)
    render_problems.report("testing", rec, ["createdAt: out of range"])
    metrics = ServerMetrics()
    value = metrics.registry.get_sample_value(
        "fleetwire_records_unrenderable_total", {"record_type": "V", "dispatcher": "testing"}
    )
    assert value == render_problems.counts[("V", "testing")] >= 1


def test_problems_are_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger="fleetwire.dispatch")
    for n in range(5):
        render_problems.report("once-per-interval", vehicle(txid=f"t{n}"), ["createdAt: out of range"])
    logged = [r for r in caplog.records if "once-per-interval" in r.getMessage()]
    assert len(logged) == 1
    assert "fleetwire_records_unrenderable_total" in logged[0].getMessage()


# --- 7. numbers the schema does not know yet are kept --------------------------------------------


def test_protobuf_payload_is_forwarded_byte_for_byte() -> None:
    rec = newer_vehicle()
    raw = rec.payload
    message, payload = decode_record("V", raw, VIN)
    assert payload is raw  # nothing to change: the very bytes the vehicle sent
    _, payload = decode_record("V", raw, OTHER_VIN)  # VIN stamped: re-encoded, unknowns kept
    again = vehicle_data_pb2.Payload.FromString(payload)
    assert again.vin == OTHER_VIN
    assert again.data[0].key == UNKNOWN_FIELD
    [field] = list(UnknownFieldSet(again.data[1].value))
    assert (field.field_number, field.wire_type, field.data) == (UNKNOWN_VARIANT, 0, 3)


def test_record_json_names_an_unknown_variant_and_keeps_the_number_of_an_unknown_field() -> None:
    data = json.loads(newer_vehicle().json())
    assert data["data"][0] == {"key": UNKNOWN_FIELD, "value": {"floatValue": 1.5}}
    assert data["data"][1] == {
        "key": "Gear", "value": {"unknownValue": {"number": UNKNOWN_VARIANT, "wireType": "varint", "value": 3}}
    }


@pytest.mark.parametrize(
    ("wire_type", "content", "shown"),
    [
        (0, 2**64 - 1, {"wireType": "varint", "value": 2**64 - 1}),
        (5, 0x41480000, {"wireType": "fixed32", "value": 0x41480000, "float": 12.5}),
        (1, 0x7FF0000000000000, {"wireType": "fixed64", "value": 0x7FF0000000000000, "double": "Infinity"}),
        (2, b"\x08\x01", {"wireType": "bytes", "value": base64.b64encode(b"\x08\x01").decode()}),
    ],
)
def test_unknown_variant_of_every_wire_type(wire_type: int, content: int | bytes, shown: dict[str, Any]) -> None:
    raw = length_delimited(1, datum_bytes(vehicle_data_pb2.Soc, unknown_variant(UNKNOWN_VARIANT, wire_type, content)))
    message, payload = decode_record("V", raw, "")
    expected = {"number": UNKNOWN_VARIANT, **shown}
    rec = Record("V", "", "vehicle_device", "tx", "c", payload, message, 0.0, 0.0)
    assert json.loads(rec.json())["data"][0]["value"] == {"unknownValue": expected}
    stream = io.StringIO()
    asyncio.run(LoggerDispatcher(stream).publish([rec]))
    assert lines(stream)[0]["data"]["Soc"] == expected
    [(topic, body)] = mqtt_messages(rec, "fleet")
    assert topic == "fleet/v/Soc" or topic.endswith("/v/Soc")
    assert json.loads(body) == expected


async def test_logger_names_unknown_fields_and_shows_unknown_variants() -> None:
    for verbose in (False, True):
        stream = io.StringIO()
        await LoggerDispatcher(stream, verbose=verbose).publish([newer_vehicle()])
        data = lines(stream)[0]["data"]
        unknown = {"number": UNKNOWN_VARIANT, "wireType": "varint", "value": 3}
        if verbose:
            assert data[f"UnknownField_{UNKNOWN_FIELD}"] == {"floatValue": 1.5}
            assert data["Gear"] == {"unknownValue": unknown}
        else:
            assert data[f"UnknownField_{UNKNOWN_FIELD}"] == 1.5
            assert data["Gear"] == unknown


def test_mqtt_topic_of_an_unknown_field_and_value_of_an_unknown_variant() -> None:
    messages_ = dict(mqtt_messages(newer_vehicle(), "fleet"))
    assert json.loads(messages_[f"fleet/{VIN}/v/UnknownField_{UNKNOWN_FIELD}"]) == 1.5
    assert json.loads(messages_[f"fleet/{VIN}/v/Gear"]) == {
        "number": UNKNOWN_VARIANT, "value": 3, "wireType": "varint"
    }


def test_distinct_unknown_fields_stay_distinct() -> None:
    raw = b"".join(
        length_delimited(1, datum_bytes(n, vehicle_data_pb2.Value(int_value=n).SerializeToString()))
        for n in (300, 301, 4000)
    )
    message, payload = decode_record("V", raw, VIN)
    rec = Record("V", VIN, "vehicle_device", "tx", "c", payload, message, 0.0, 0.0)
    topics = [topic for topic, _ in mqtt_messages(rec, "fleet")]
    assert topics == [f"fleet/{VIN}/v/UnknownField_{n}" for n in (300, 301, 4000)]
    stream = io.StringIO()
    asyncio.run(LoggerDispatcher(stream).publish([rec]))
    data = lines(stream)[0]["data"]
    assert [data[f"UnknownField_{n}"] for n in (300, 301, 4000)] == [300, 301, 4000]


# --- 10. the logger shows the data -----------------------------------------------------------------


def config(tmp_path: Path, **extra: object) -> Any:
    for name in ("c.pem", "k.pem"):
        (tmp_path / name).write_text("x")
    data = {"tls": {"server_cert": "c.pem", "server_key": "k.pem"}, "records": {"V": ["logger"]}, **extra}
    return parse_config(data, tmp_path)[0]


async def test_logger_prints_the_decoded_record_by_default(tmp_path: Path) -> None:
    logger = logger_module.create(config(tmp_path))
    stream = io.StringIO()
    logger._stream = stream
    await logger.publish([vehicle()])
    [line] = lines(stream)
    assert line["msg"] == "record_payload" and line["vin"] == VIN
    assert line["data"] == {
        "Vin": VIN,
        "CreatedAt": "2023-11-14T22:13:20Z",
        "VehicleSpeed": 12.3,  # a float32 printed as its shortest decimal
        "Gear": "ShiftStateD",
        "Location": {"latitude": 37.41, "longitude": -122.14},
        "Odometer": 12345,
    }


async def test_verbose_logger_labels_each_value_with_its_type(tmp_path: Path) -> None:
    logger = logger_module.create(config(tmp_path, logger={"verbose": True}))
    stream = io.StringIO()
    logger._stream = stream
    await logger.publish([vehicle()])
    data = lines(stream)[0]["data"]
    assert data["VehicleSpeed"] == {"floatValue": 12.3}
    assert data["Gear"] == {"shiftStateValue": "ShiftStateD"}
    assert data["Location"] == {"locationValue": {"latitude": 37.41, "longitude": -122.14}}
    assert data["Odometer"] == {"longValue": 12345}
    assert data["Vin"] == VIN  # not a value: never labelled


# --- the property: whatever a record holds, every encoder renders every record ---------------------


def newer_additions(draw: st.DrawFn) -> bytes:
    """Raw datums a newer vehicle may add: unknown field numbers, unknown variants of every
    wire type (numbers the schema leaves unused, or past its last), a Payload field past the schema."""
    out = b""
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.one_of(st.sampled_from([0, vehicle_data_pb2.Gear]), st.integers(300, 2**29 - 1)))
        number = draw(st.sampled_from([56, 58, 59, 61, 62, 100, 2**29 - 1]))
        wire_type = draw(st.sampled_from([0, 1, 2, 5]))
        if wire_type == 2:
            content: int | bytes = draw(st.binary(max_size=8))
        else:
            content = draw(st.integers(0, 2**64 - 1 if wire_type != 5 else 2**32 - 1))
        if draw(st.booleans()):
            value = unknown_variant(number, wire_type, content)
        else:
            value = vehicle_data_pb2.Value(double_value=draw(st.sampled_from([math.nan, math.inf, -0.0]))).SerializeToString()
        out += length_delimited(1, datum_bytes(key, value))
    if draw(st.booleans()):
        out += tag(300, 0) + varint(7)  # a Payload field past the schema
    return out


@st.composite
def records(draw: st.DrawFn) -> Record:
    record_type = draw(st.sampled_from(list(RECORD_TYPES)))
    raw = draw(messages(RECORD_TYPES[record_type].DESCRIPTOR)).SerializeToString()
    if record_type == "V":
        raw += newer_additions(draw)
    message, payload = decode_record(record_type, raw, VIN)
    return Record(record_type, VIN, "vehicle_device", "generated", "c", payload, message, 0.0, 0.0)


ENCODERS = ["logger", "logger-verbose", "json", "mqtt"]


def encode(encoder: str, batch: list[Record]) -> list[Any]:
    """What each encoder makes of a batch, per record."""
    if encoder.startswith("logger"):
        stream = io.StringIO()
        asyncio.run(LoggerDispatcher(stream, verbose=encoder == "logger-verbose").publish(batch))
        return [orjson.loads(line) for line in stream.getvalue().split("\n") if line]  # not splitlines: U+0085 is a line end to it
    if encoder == "json":
        return [orjson.loads(rec.json("json")) for rec in batch]
    return [mqtt_messages(rec, "fleet") for rec in batch]


@pytest.mark.parametrize("encoder", ENCODERS)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(generated=records())
def test_no_record_costs_another_its_rendering(encoder: str, generated: Record) -> None:
    neighbours = [vehicle(txid="before"), vehicle(OTHER_VIN, txid="after")]
    alone = encode(encoder, neighbours)
    together = encode(encoder, [neighbours[0], generated, neighbours[1]])
    assert len(together) == 3
    assert [together[0], together[2]] == alone  # the neighbours exactly as without it
    if encoder.startswith("logger"):
        assert together[1]["txid"] == "generated" and "data" in together[1]
    if encoder == "mqtt" and generated.record_type == "V":
        names = {f"UnknownField_{d.key}" if d.key >= 300 else None for d in generated.message.data} - {None}
        topics = {topic.rsplit("/", 1)[1] for topic, _ in together[1]}
        assert names <= topics  # every unknown field number has its own topic
    if generated.record_type == "V":
        # The value of every datum with an unknown variant is carried, not an empty object.
        last: dict[str, Any] = {}
        for n, datum in enumerate(generated.message.data):
            if encoder == "json" and datum.value.WhichOneof("value") is None and len(UnknownFieldSet(datum.value)):
                assert "unknownValue" in together[1]["data"][n]["value"]
            last[field_name(datum.key)] = datum.value
        for name, value in last.items():
            if value.WhichOneof("value") is not None or not len(UnknownFieldSet(value)):
                continue
            if encoder == "mqtt":
                shown = json.loads(dict(together[1])[f"fleet/{VIN}/v/{name}"])
            elif encoder.startswith("logger"):
                shown = together[1]["data"][name]
                shown = shown["unknownValue"] if encoder == "logger-verbose" else shown
            else:
                continue
            assert set(shown) >= {"number", "wireType", "value"}


@pytest.mark.parametrize("member", VALUE_MEMBERS)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_value_variant_through_every_encoder(member: str, data: st.DataObject) -> None:
    message = vehicle_data_pb2.Payload(vin=VIN)
    message.data.add(key=vehicle_data_pb2.Soc).value.CopyFrom(data.draw(values(member)))
    generated = record("V", message, "generated")
    neighbours = [vehicle(txid="before"), vehicle(OTHER_VIN, txid="after")]
    for encoder in ENCODERS:
        together = encode(encoder, [neighbours[0], generated, neighbours[1]])
        assert [together[0], together[2]] == encode(encoder, neighbours)
        if encoder.startswith("logger"):
            assert "Soc" in together[1]["data"]
        elif encoder == "mqtt":
            assert [topic for topic, _ in together[1]] == [f"fleet/{VIN}/v/Soc"]
