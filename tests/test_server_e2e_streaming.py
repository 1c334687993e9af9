"""The ingest server end to end, streaming: rate and VIN policies, reliable acks and
back-pressure, certificate hot reload, connectivity records (real mTLS on loopback).
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import uvloop
from conftest import RunningServer, ServerFactory
from cryptography import x509
from fleetwire.pki import Bundle, make_ca, make_server_cert, write_bundle, write_pem
from fleetwire.sim.fleet_pki import FleetPki
from fleetwire.proto import vehicle_connectivity_pb2
from fleetwire.sim.vehicle import SimulatedVehicle, client_context

ASYNCIO_LOOP_FACTORY = uvloop.new_event_loop  # the loop `fleetwire serve` runs on
from e2e_car import (
    Car,
    OTHER_VIN,
    REPLY_TIMEOUT,
    VIN,
)


# -- policies -------------------------------------------------------------------------------


async def test_rate_limit_answers_with_an_error_then_recovers(running_server: ServerFactory) -> None:
    srv = await running_server({"rate_limit": {"enabled": True, "message_limit": 5, "message_interval_time": 1}})
    car = await Car.connect(srv)
    frames = [car.frame("V") for _ in range(6)]
    for data, _txid in frames:  # one burst, well inside the refill time of a token (0.2 s)
        await car.send(data)
    replies = [await car.reply() for _ in frames]
    assert [(r.kind, r.txid) for r in replies[:5]] == [("ack", txid) for _data, txid in frames[:5]]
    assert (replies[5].kind, replies[5].txid, replies[5].text) == ("error", frames[5][1], b"rate limit exceeded")
    assert srv.metric("fleetwire_errors_total", reason="rate_limited") == 1
    await asyncio.sleep(0.3)  # 5 per second: a token is back after 0.2 s
    await car.assert_alive()
    assert len(await srv.recorder.wait_for(6, "V")) == 6  # the refused record was not dispatched


async def test_vin_deny_list_refuses_with_1008(running_server: ServerFactory) -> None:
    srv = await running_server({"vins": {"deny": [OTHER_VIN]}})
    denied = await Car.connect(srv, OTHER_VIN)
    code, reason = await denied.closed_with()
    assert (code, reason) == (1008, "vin_not_allowed")
    assert srv.metric("fleetwire_connections_refused_total", reason="vin_not_allowed") == 1
    car = await Car.connect(srv, VIN)
    await car.assert_alive()


async def test_vin_allow_list_admits_only_its_vins(running_server: ServerFactory) -> None:
    srv = await running_server({"vins": {"allow": [VIN]}})
    car = await Car.connect(srv, VIN)
    await car.assert_alive()
    stranger = await Car.connect(srv, OTHER_VIN)
    assert await stranger.closed_with() == (1008, "vin_not_allowed")
    await car.assert_alive()
    assert {r.vin for r in srv.recorder.records} == {VIN}


# -- acks and dispatch ------------------------------------------------------------------------


async def test_reliable_ack_waits_for_the_dispatcher(running_server: ServerFactory) -> None:
    # The configuration file refuses the logger as a reliable source (it stores nothing);
    # the recorder standing in for it does store, so the routing is set on the parsed config.
    srv = await running_server(replace={"reliable_ack_sources": {"V": "logger"}})
    car = await Car.connect(srv)
    srv.recorder.hold()
    data, txid = car.frame("V")
    await car.send(data)
    await car.assert_silent(0.3)
    assert srv.recorder.publishing == 1 and srv.recorder.records == []
    srv.recorder.release()
    reply = await car.reply()
    assert (reply.kind, reply.txid) == ("ack", txid)
    assert [r.txid for r in srv.recorder.records] == [txid.decode()]
    await car.assert_alive()


async def test_back_pressure_pauses_the_vehicle_and_loses_nothing(running_server: ServerFactory) -> None:
    srv = await running_server({"dispatch": {"queue_size": 4, "batch_size": 2}})
    cert, key = srv.vehicle_cert(VIN)
    vehicle = SimulatedVehicle(VIN, srv.url, client_context(cert, key, srv.pki.server_ca_cert))
    await vehicle.connect()
    srv.recorder.hold()
    sent = [vehicle.send_record("V") for _ in range(60)]

    async def paused() -> None:
        while srv.metric("fleetwire_connections_paused") != 1:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(paused(), REPLY_TIMEOUT)
    await asyncio.sleep(0.1)
    assert vehicle.stats.acked < len(sent)  # reading stopped before the burst was through
    srv.recorder.release()
    assert await vehicle.drain(REPLY_TIMEOUT)
    assert (vehicle.stats.acked, vehicle.stats.errors) == (len(sent), 0)
    records = await srv.recorder.wait_for(len(sent), "V")
    assert [r.txid for r in records] == [t.decode() for t in sent]
    assert srv.metric("fleetwire_connections_paused") == 0
    assert srv.metric("fleetwire_dispatch_dropped_total", dispatcher="logger") == 0
    await vehicle.close()


async def test_many_vehicles_overflowing_a_lossless_queue_lose_nothing(running_server: ServerFactory) -> None:
    srv = await running_server({"dispatch": {"queue_size": 2, "batch_size": 1}})
    vehicles = []
    for i in range(10):
        vin = f"5YJ3E1EA7KF10000{i}"
        cert, key = srv.vehicle_cert(vin)
        vehicle = SimulatedVehicle(vin, srv.url, client_context(cert, key, srv.pki.server_ca_cert))
        await vehicle.connect()
        vehicles.append(vehicle)
    srv.recorder.hold()
    for vehicle in vehicles:  # each vehicle pauses after one record; together 5x the bound
        vehicle.send_record("V")
    await asyncio.sleep(0.2)
    srv.recorder.release()
    await asyncio.gather(*(v.drain(REPLY_TIMEOUT) for v in vehicles))
    await asyncio.sleep(0.1)
    acked = sum(v.stats.acked for v in vehicles)
    for vehicle in vehicles:
        await vehicle.close()
    assert acked == len(vehicles) == len(srv.recorder.of_type("V"))


# -- certificates -----------------------------------------------------------------------------


async def server_serial(srv: RunningServer, cert: tuple[Path, Path]) -> int:
    """The serial number of the certificate the server presents to a new connection."""
    ctx = client_context(cert[0], cert[1], srv.pki.server_ca_cert)
    _reader, writer = await asyncio.open_connection(
        "127.0.0.1", srv.ports.vehicles, ssl=ctx, server_hostname="127.0.0.1"
    )
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(True)
        return x509.load_der_x509_certificate(der).serial_number
    finally:
        writer.close()


async def renewable_server(
    running_server: ServerFactory, pki: FleetPki, reload_interval: float
) -> tuple[RunningServer, Bundle, Bundle]:
    """A server whose certificate comes from a CA the test holds the key of; returns it
    with its current certificate and a renewal (another serial, same CA) not yet on disk."""
    server_ca = make_ca("Fleetwire Test Server CA", path_length=0)
    write_pem(pki.server_ca_cert, server_ca.cert_pem)
    current = make_server_cert(server_ca, ["127.0.0.1"])
    write_bundle(current, pki.server_cert, pki.server_key)
    srv = await running_server({"tls": {
        "server_cert": str(pki.server_cert), "server_key": str(pki.server_key),
        "ca_file": str(pki.ca_file), "reload_interval_seconds": reload_interval,
    }})
    renewal = make_server_cert(server_ca, ["127.0.0.1"], days=180)
    assert renewal.cert.serial_number != current.cert.serial_number
    return srv, current, renewal


async def test_certificate_hot_reload_keeps_vehicles_streaming(
    running_server: ServerFactory, fleet_pki: FleetPki
) -> None:
    srv, current, renewal = await renewable_server(running_server, fleet_pki, 0.05)
    probe = srv.vehicle_cert(OTHER_VIN)
    assert await server_serial(srv, probe) == current.cert.serial_number
    car = await Car.connect(srv)
    await car.assert_alive()

    write_bundle(renewal, fleet_pki.server_cert, fleet_pki.server_key)

    async def reloaded() -> None:
        while srv.metric("fleetwire_certificate_reloads_total", outcome="reloaded") < 1:
            await car.assert_alive()  # the connected vehicle streams on throughout
            await asyncio.sleep(0.02)

    await asyncio.wait_for(reloaded(), REPLY_TIMEOUT)
    assert await server_serial(srv, probe) == renewal.cert.serial_number
    await car.assert_alive()
    newcomer = await Car.connect(srv, OTHER_VIN, cert=probe)
    await newcomer.assert_alive()


async def test_reload_interval_zero_turns_hot_reload_off(running_server: ServerFactory, fleet_pki: FleetPki) -> None:
    srv, current, renewal = await renewable_server(running_server, fleet_pki, 0)
    write_bundle(renewal, fleet_pki.server_cert, fleet_pki.server_key)
    await asyncio.sleep(0.2)
    assert await server_serial(srv, srv.vehicle_cert(OTHER_VIN)) == current.cert.serial_number
    assert srv.metric("fleetwire_certificate_reloads_total", outcome="reloaded") == 0


# -- connectivity ------------------------------------------------------------------------------


async def test_connectivity_records_on_connect_and_disconnect(running_server: ServerFactory) -> None:
    srv = await running_server({"records": {"V": ["logger"], "connectivity": ["logger"]}})
    txid = str(uuid.uuid4())
    car = await Car.connect(srv, headers={"X-TXID": txid, "X-Network-Interface": "cellular"})
    [connected] = await srv.recorder.wait_for(1, "connectivity")
    await car.assert_alive()
    await car.close()
    _, disconnected = await srv.recorder.wait_for(2, "connectivity")
    connection_id = connected.connection_id
    uuid.UUID(connection_id)  # the server's own id; the vehicle's X-TXID travels beside it
    assert connection_id != txid
    for record, status in ((connected, vehicle_connectivity_pb2.CONNECTED),
                           (disconnected, vehicle_connectivity_pb2.DISCONNECTED)):
        message = vehicle_connectivity_pb2.VehicleConnectivity.FromString(record.payload)
        assert (message.vin, message.connection_id, message.status, message.network_interface) == (
            VIN, connection_id, status, "cellular"
        )
        assert (record.connection_id, record.txid, record.vin) == (connection_id, txid, VIN)

    anonymous = await Car.connect(srv, OTHER_VIN)
    records = await srv.recorder.wait_for(3, "connectivity")
    uuid.UUID(records[2].connection_id)
    assert records[2].connection_id != connection_id and records[2].txid == ""  # no X-TXID sent
    # A vehicle cannot fake connectivity events: the topic is acked, never dispatched.
    reply, txid = await anonymous.record("connectivity", records[2].payload)
    assert (reply.kind, reply.txid) == ("ack", txid)
    await anonymous.assert_alive()
    assert len(srv.recorder.of_type("connectivity")) == 3
    await anonymous.close()
