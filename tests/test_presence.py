"""Several sockets per VIN: a server-made id per socket, unambiguous connectivity records,
online on the first socket and offline on the last, VINs counted without a VIN label."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import uvloop
from conftest import RunningServer, ServerFactory
from fleetwire.proto import vehicle_connectivity_pb2
from fleetwire.server.records import Record
from fleetwire.server.presence import Presence
from fleetwire.server.records import connectivity_record, decode_record
from fleetwire.sim.vehicle import client_context
from google.protobuf.internal.decoder import _DecodeVarint
from tesla_protocol.telemetry import vehicle_connectivity_pb2 as tesla_connectivity
from websockets.asyncio.client import ClientConnection, connect

ASYNCIO_LOOP_FACTORY = uvloop.new_event_loop

VIN = "5YJ3E1EA7KF000001"
OTHER_VIN = "5YJ3E1EA7KF000002"
CONNECTED, DISCONNECTED = tesla_connectivity.CONNECTED, tesla_connectivity.DISCONNECTED
UNCHANGED, ONLINE, OFFLINE = 0, 1, 2


# -- the tracker ---------------------------------------------------------------------------


def test_a_vin_is_online_from_its_first_socket_to_its_last() -> None:
    presence = Presence()
    assert presence.opened(VIN) == 1  # online
    assert presence.opened(VIN) == 2
    assert presence.opened(OTHER_VIN) == 1
    assert (len(presence), presence.total, presence.sockets(VIN)) == (2, 3, 2)
    assert presence.closed(VIN) == 1  # still online
    assert presence.closed(VIN) == 0  # offline
    assert (len(presence), presence.total, presence.sockets(VIN)) == (1, 1, 0)
    assert presence.closed(VIN) == 0  # an unmatched close changes nothing
    assert (len(presence), presence.total) == (1, 1)
    assert presence.closed(OTHER_VIN) == 0
    assert (len(presence), presence.total) == (0, 0)


# -- the record ------------------------------------------------------------------------------


# fleetwire's fields of VehicleConnectivity, far above Tesla's five.
TXID, PRESENCE, CONNECTIONS = 1001, 1002, 1003


def extension(payload: bytes) -> dict[int, Any]:
    """Fields above Tesla's five, read off the wire whatever schema the reader has."""
    fields: dict[int, Any] = {}
    pos = 0
    while pos < len(payload):
        key, pos = _DecodeVarint(payload, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = _DecodeVarint(payload, pos)
        elif wire_type == 2:
            length, pos = _DecodeVarint(payload, pos)
            value, pos = payload[pos:pos + length], pos + length
        else:
            raise AssertionError(f"unexpected wire type {wire_type}")
        if number > 5:
            fields[number] = value.decode() if isinstance(value, bytes) else value
    return fields


def test_the_record_extends_teslas_schema_without_breaking_its_readers() -> None:
    raw = connectivity_record(VIN, "server-id", "DISCONNECTED", "wifi", 1.5, vehicle_txid="car-txid", vin_connections=0)
    tesla = tesla_connectivity.VehicleConnectivity.FromString(raw)  # Tesla's own generated module
    assert (tesla.vin, tesla.connection_id, tesla.status, tesla.network_interface) == (
        VIN, "server-id", DISCONNECTED, "wifi"
    )
    assert extension(raw) == {TXID: "car-txid", PRESENCE: OFFLINE}  # no socket left: field 8 is 0, not sent
    assert decode_record("connectivity", raw, VIN)[1] is raw  # dispatched as made

    first = connectivity_record(VIN, "a", "CONNECTED", "", 1.0, vehicle_txid="t", vin_connections=1)
    second = connectivity_record(VIN, "b", "CONNECTED", "", 1.0, vin_connections=2)
    one_left = connectivity_record(VIN, "b", "DISCONNECTED", "", 1.0, vin_connections=1)
    assert extension(first) == {TXID: "t", PRESENCE: ONLINE, CONNECTIONS: 1}
    assert extension(second) == {CONNECTIONS: 2}  # presence unchanged: field 7 is 0
    assert extension(one_left) == {CONNECTIONS: 1}
    # Without the new arguments the record is exactly Tesla's five fields.
    plain = connectivity_record(VIN, "a", "CONNECTED", "wifi", 1.0)
    assert extension(plain) == {}
    assert plain == tesla_connectivity.VehicleConnectivity.FromString(plain).SerializeToString()


# -- end to end ---------------------------------------------------------------------------------


async def _socket(srv: RunningServer, vin: str, headers: dict[str, str]) -> ClientConnection:
    cert, key = srv.vehicle_cert(vin)
    return await connect(
        srv.url, ssl=client_context(cert, key, srv.pki.server_ca_cert), compression=None,
        additional_headers=headers, proxy=None, open_timeout=5, close_timeout=1, ping_interval=None,
    )


def _read(record: Record) -> tuple[str, int, str, dict[int, Any]]:
    message = vehicle_connectivity_pb2.VehicleConnectivity.FromString(record.payload)
    return message.connection_id, message.status, message.network_interface, extension(record.payload)


async def _until(srv: RunningServer, sockets: float, vins: float) -> None:
    deadline = time.monotonic() + 5
    while (srv.metric("fleetwire_connections_active"), srv.metric("fleetwire_connected_vins")) != (sockets, vins):
        assert time.monotonic() < deadline, (srv.metric("fleetwire_connections_active"), sockets, vins)
        await asyncio.sleep(0.02)


async def test_wifi_and_cellular_sockets_of_one_vin_with_a_colliding_txid(
    running_server: ServerFactory, tmp_path: Path
) -> None:
    srv = await running_server({"records": {"V": ["logger"], "connectivity": ["logger"]}})
    txid = str(uuid.uuid4())  # both sockets send the same X-TXID
    wifi = await _socket(srv, VIN, {"X-TXID": txid, "X-Network-Interface": "wifi", "Version": "1.3.0"})
    [up_wifi] = await srv.recorder.wait_for(1, "connectivity")
    cellular = await _socket(srv, VIN, {"X-TXID": txid, "X-Network-Interface": "cellular"})
    _, up_cellular = await srv.recorder.wait_for(2, "connectivity")
    await _until(srv, sockets=2, vins=1)

    wifi_id, cellular_id = up_wifi.connection_id, up_cellular.connection_id
    assert wifi_id != cellular_id and txid not in (wifi_id, cellular_id)  # ids are the server's own
    uuid.UUID(wifi_id), uuid.UUID(cellular_id)
    assert _read(up_wifi) == (wifi_id, CONNECTED, "wifi", {TXID: txid, PRESENCE: ONLINE, CONNECTIONS: 1})
    assert _read(up_cellular) == (cellular_id, CONNECTED, "cellular", {TXID: txid, CONNECTIONS: 2})
    assert up_wifi.txid == up_cellular.txid == txid  # the vehicle's X-TXID, beside the server's id
    assert (up_wifi.client_version, up_cellular.client_version) == ("1.3.0", "")  # the Version header

    await wifi.close()
    await srv.recorder.wait_for(3, "connectivity")
    await _until(srv, sockets=1, vins=1)  # the VIN is still online
    await cellular.close()
    records = await srv.recorder.wait_for(4, "connectivity")
    await _until(srv, sockets=0, vins=0)
    down_wifi, down_cellular = records[2:]
    assert _read(down_wifi) == (wifi_id, DISCONNECTED, "wifi", {TXID: txid, CONNECTIONS: 1})
    assert _read(down_cellular) == (cellular_id, DISCONNECTED, "cellular", {TXID: txid, PRESENCE: OFFLINE})

    # Tesla's own schema still reads every record: the extension is skipped, not an error.
    for record in records:
        tesla = tesla_connectivity.VehicleConnectivity.FromString(record.payload)
        assert tesla.vin == VIN and tesla.connection_id == record.connection_id

    # No metric is labelled by VIN.
    for family in srv.server.metrics.registry.collect():
        for sample in family.samples:
            assert VIN not in sample.labels.values(), sample


async def test_sockets_of_different_vins_and_a_socket_without_txid(running_server: ServerFactory) -> None:
    srv = await running_server({"records": {"V": ["logger"], "connectivity": ["logger"]}})
    huge = await _socket(srv, VIN, {"X-TXID": "x" * 5000})
    [record] = await srv.recorder.wait_for(1, "connectivity")
    assert record.txid == "x" * 128 and extension(record.payload)[TXID] == "x" * 128  # a header is bounded
    await huge.close()
    await srv.recorder.wait_for(2, "connectivity")
    srv.recorder.records.clear()
    first = await _socket(srv, VIN, {})
    second = await _socket(srv, OTHER_VIN, {})
    third = await _socket(srv, VIN, {})
    await _until(srv, sockets=3, vins=2)
    records = await srv.recorder.wait_for(3, "connectivity")
    assert [r.txid for r in records] == ["", "", ""]  # no X-TXID: nothing beside the server's id
    assert [extension(r.payload).get(PRESENCE, UNCHANGED) for r in records] == [ONLINE, ONLINE, UNCHANGED]
    for ws in (first, second, third):
        await ws.close()
    await _until(srv, sockets=0, vins=0)
    records = await srv.recorder.wait_for(6, "connectivity")
    offline = [r.vin for r in records[3:] if extension(r.payload).get(PRESENCE) == OFFLINE]
    assert sorted(offline) == [VIN, OTHER_VIN]
