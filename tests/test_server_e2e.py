"""The ingest server end to end: real mTLS on loopback, real WebSocket clients.

Vehicles are `websockets` clients that send hand-made frames (`Car`) or the simulator's
picows clients (`SimulatedVehicle`); what the server dispatched is read from a recording
dispatcher, and its counters from its Prometheus registry. After every bad frame the
same connection must still carry a valid record to its ack.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import uvloop
from conftest import RunningServer, ServerFactory, free_port
from cryptography import x509
from fleetwire.pki import Bundle, make_ca, make_server_cert, make_vehicle_cert, write_bundle, write_pem
from fleetwire.sim.fleet_pki import FleetPki
from fleetwire.proto import vehicle_connectivity_pb2, vehicle_data_pb2
from fleetwire.proto.envelope_codec import Reply, decode_reply, encode_ack, encode_stream
from fleetwire.sim.vehicle import SimulatedVehicle, client_context
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidMessage

ASYNCIO_LOOP_FACTORY = uvloop.new_event_loop  # the loop `fleetwire serve` runs on

VIN = "5YJ3E1EA7KF000001"
OTHER_VIN = "5YJ3E1EA7KF000002"
INCORRECT_FORMAT = b"incorrect message format"
REPLY_TIMEOUT = 5.0


def v_payload(vin: str = VIN, speed: float = 42.5) -> bytes:
    payload = vehicle_data_pb2.Payload(vin=vin)
    payload.created_at.FromSeconds(int(time.time()))
    payload.data.add(key=vehicle_data_pb2.VehicleSpeed).value.double_value = speed
    return payload.SerializeToString()


class Car:
    """A vehicle on a `websockets` connection that sends any frame and reads replies."""

    def __init__(self, ws: ClientConnection, vin: str) -> None:
        self.ws = ws
        self.vin = vin
        self._seq = 0

    @classmethod
    async def connect(
        cls, srv: RunningServer, vin: str = VIN, *, cert: tuple[Path, Path] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Car:
        cert_file, key_file = cert or srv.vehicle_cert(vin)
        ws = await connect(
            srv.url, ssl=client_context(cert_file, key_file, srv.pki.server_ca_cert), compression=None,
            additional_headers=dict(headers or {}), proxy=None, max_size=None, ping_interval=None,
            open_timeout=REPLY_TIMEOUT, close_timeout=1,
        )
        return cls(ws, vin)

    def txid(self) -> bytes:
        self._seq += 1
        return f"{self.vin}-{self._seq}".encode()

    def frame(
        self, topic: str = "V", payload: bytes | None = None, *, txid: bytes | None = None, sender_id: bytes = b""
    ) -> tuple[bytes, bytes]:
        """A stream envelope as vehicles send it, and its txid."""
        txid = txid or self.txid()
        data = encode_stream(
            txid, topic.encode(), v_payload(self.vin) if payload is None else payload,
            created_at=int(time.time()), sender_id=sender_id, device_type=b"vehicle_device",
        )
        return data, txid

    async def send(self, data: bytes | str) -> None:
        await self.ws.send(data)

    async def reply(self, timeout: float = REPLY_TIMEOUT) -> Reply:
        data = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(data, bytes), f"text reply {data!r}"
        return decode_reply(data)

    async def exchange(self, data: bytes) -> Reply:
        await self.send(data)
        return await self.reply()

    async def record(self, topic: str = "V", payload: bytes | None = None, **kwargs: Any) -> tuple[Reply, bytes]:
        data, txid = self.frame(topic, payload, **kwargs)
        return await self.exchange(data), txid

    async def assert_alive(self) -> None:
        """A valid record still gets its ack on this connection."""
        reply, txid = await self.record()
        assert (reply.kind, reply.txid, reply.topic) == ("ack", txid, b"V")

    async def assert_silent(self, wait: float = 0.3) -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(self.ws.recv(), wait)

    async def closed_with(self) -> tuple[int, str]:
        """Wait for the server to end the connection; its close code and reason."""
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(self.ws.recv(), REPLY_TIMEOUT)
        rcvd = closed.value.rcvd
        assert rcvd is not None, "the server closed without a close frame"
        return rcvd.code, rcvd.reason

    async def close(self) -> None:
        await self.ws.close()


@pytest_asyncio.fixture
async def srv(running_server: ServerFactory) -> RunningServer:
    """A server with the default configuration (V, alerts, errors to the recorder)."""
    return await running_server()


@pytest_asyncio.fixture
async def car(srv: RunningServer) -> AsyncIterator[Car]:
    c = await Car.connect(srv)
    yield c
    await c.close()


# -- who may connect ------------------------------------------------------------------


TLS_VERSIONS = pytest.mark.parametrize("tls", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=lambda v: v.name)


async def assert_handshake_fails(srv: RunningServer, ctx: ssl.SSLContext, tls: ssl.TLSVersion) -> None:
    """The server drops the connection over the client certificate before any HTTP
    response (in TLS 1.3 the client only learns it after its side of the handshake)."""
    ctx.minimum_version = ctx.maximum_version = tls
    with pytest.raises((ssl.SSLError, ConnectionError, InvalidMessage)):
        await connect(srv.url, ssl=ctx, compression=None, proxy=None, open_timeout=REPLY_TIMEOUT)
    assert srv.metric("fleetwire_connections_active") == 0
    assert srv.metric("fleetwire_connections_total", client_type="vehicle_device") == 0


@TLS_VERSIONS
async def test_no_client_certificate_fails_the_handshake(srv: RunningServer, tls: ssl.TLSVersion) -> None:
    await assert_handshake_fails(srv, ssl.create_default_context(cafile=str(srv.pki.server_ca_cert)), tls)
    car = await Car.connect(srv)  # the server is unharmed
    await car.assert_alive()


@TLS_VERSIONS
async def test_certificate_from_an_unknown_ca_fails_the_handshake(
    srv: RunningServer, tmp_path: Path, tls: ssl.TLSVersion
) -> None:
    impostor_ca = make_ca("Tesla Issuing CA")  # the right name, but not a CA the server trusts
    cert, key = write_bundle(make_vehicle_cert(impostor_ca, VIN), tmp_path / "v.pem", tmp_path / "v.key")
    await assert_handshake_fails(srv, client_context(cert, key, srv.pki.server_ca_cert), tls)
    assert srv.recorder.records == []
    car = await Car.connect(srv)
    await car.assert_alive()


async def test_trusted_but_non_tesla_issuer_is_refused_with_1008(
    running_server: ServerFactory, fleet_pki: FleetPki, tmp_path: Path
) -> None:
    other = make_ca("Example Corp Issuing CA")  # trusted by the server, but not a vehicle issuer
    with fleet_pki.ca_file.open("ab") as bundle:
        bundle.write(other.cert_pem)
    srv = await running_server()
    cert = write_bundle(make_vehicle_cert(other, VIN), tmp_path / "v.pem", tmp_path / "v.key")
    refused = await Car.connect(srv, cert=cert)
    assert await refused.closed_with() == (1008, "unknown_issuer")
    assert srv.metric("fleetwire_connections_refused_total", reason="unknown_issuer") == 1
    assert srv.metric("fleetwire_connections_active") == 0
    car = await Car.connect(srv)
    await car.assert_alive()
    assert {r.vin for r in await srv.recorder.wait_for(1)} == {VIN}


async def test_vin_in_the_payload_is_replaced_by_the_certificate_vin(srv: RunningServer, car: Car) -> None:
    reply, txid = await car.record("V", v_payload(vin="FORGEDVIN00000000"))
    assert reply.kind == "ack"
    [record] = await srv.recorder.wait_for(1, "V")
    assert record.vin == VIN and record.txid == txid.decode()
    assert record.message.vin == VIN
    assert vehicle_data_pb2.Payload.FromString(record.payload).vin == VIN
    assert record.client_type == "vehicle_device"


# -- bad frames -------------------------------------------------------------------------


async def test_text_frame_ends_the_connection_with_1003(srv: RunningServer, car: Car) -> None:
    await car.assert_alive()
    await car.send("hello")
    code, _reason = await car.closed_with()
    assert code == 1003
    assert srv.metric("fleetwire_errors_total", reason="text_frame") == 1


async def test_permessage_deflate_offered_by_the_vehicle_is_declined(srv: RunningServer) -> None:
    """Vehicles drop a server that accepts compression: the 101 names no extension."""
    cert, key = srv.vehicle_cert(VIN)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", srv.ports.vehicles, ssl=client_context(cert, key, srv.pki.server_ca_cert),
        server_hostname="localhost",
    )
    writer.write(
        b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate\r\nUser-Agent: Hermes/1.3.0\r\n\r\n"
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REPLY_TIMEOUT)
    writer.close()
    status, *lines = head.decode("latin-1").split("\r\n")
    assert status.startswith("HTTP/1.1 101 ")
    headers = {line.split(":", 1)[0].strip().lower() for line in lines if ":" in line}
    assert "upgrade" in headers and "sec-websocket-extensions" not in headers

    offered = await connect(
        srv.url, ssl=client_context(cert, key, srv.pki.server_ca_cert), compression="deflate",
        proxy=None, open_timeout=REPLY_TIMEOUT, close_timeout=1,
    )
    assert offered.protocol.extensions == []
    car = Car(offered, VIN)
    await car.assert_alive()
    await car.close()


async def test_oversize_message_gets_an_error_and_the_connection_survives(srv: RunningServer, car: Car) -> None:
    data, txid = car.frame("V", b"\0" * 1_000_001)
    assert len(data) > 1_000_000
    reply = await car.exchange(data)
    assert (reply.kind, reply.topic, reply.text) == ("error", b"", INCORRECT_FORMAT)
    assert reply.txid == txid
    assert srv.metric("fleetwire_errors_total", reason="oversize") == 1
    await car.assert_alive()
    [record] = await srv.recorder.wait_for(1, "V")
    assert record.txid != txid.decode()


def _bad_frames() -> dict[str, tuple[bytes, bytes, str]]:
    """name → (frame, txid the error must echo, reason counted)."""
    valid = encode_stream(b"tx-bad", b"V", v_payload(), created_at=1)
    return {
        "random bytes": (random.Random(7).randbytes(64), b"", "envelope"),
        "empty message": (b"", b"", "envelope"),
        "envelope cut in its tables": (valid[: len(valid) // 2], b"", "envelope"),
        "envelope cut in its vectors": (valid[:-1], b"tx-bad", "envelope"),
        "corrupt protobuf": (encode_stream(b"tx-bad", b"V", b"\x0a\xff\x01"), b"tx-bad", "protobuf"),
        "not a stream": (encode_ack(b"tx-bad", b"V"), b"tx-bad", "not_stream"),
    }


@pytest.mark.parametrize("name", list(_bad_frames()))
async def test_bad_frame_gets_an_error_and_the_connection_survives(srv: RunningServer, car: Car, name: str) -> None:
    data, txid, reason = _bad_frames()[name]
    reply = await car.exchange(data)
    assert (reply.kind, reply.txid, reply.topic, reply.text) == ("error", txid, b"", INCORRECT_FORMAT)
    assert srv.metric("fleetwire_errors_total", reason=reason) == 1
    await car.assert_alive()
    records = await srv.recorder.wait_for(1, "V")
    assert len(records) == 1  # only the valid record was dispatched


async def test_unrouted_topic_is_acked_and_not_dispatched(running_server: ServerFactory) -> None:
    srv = await running_server({"records": {"V": ["logger"]}})
    car = await Car.connect(srv)
    reply, txid = await car.record("alerts", b"")
    assert (reply.kind, reply.txid, reply.topic) == ("ack", txid, b"alerts")
    reply, txid = await car.record("unheard_of", b"\xff\xff")
    assert (reply.kind, reply.txid, reply.topic) == ("ack", txid, b"unheard_of")
    assert srv.metric("fleetwire_records_unrouted_total", record_type="alerts") == 1
    assert srv.metric("fleetwire_records_unrouted_total", record_type="other") == 1  # not "unheard_of"
    await car.assert_alive()
    records = await srv.recorder.wait_for(1)
    assert [r.record_type for r in records] == ["V"]


async def test_sender_id_mismatch_on_an_unrouted_topic_is_an_error(srv: RunningServer, car: Car) -> None:
    reply, txid = await car.record("unheard_of", b"", sender_id=f"vehicle_device.{OTHER_VIN}".encode())
    assert (reply.kind, reply.txid, reply.topic) == ("error", txid, b"")
    assert reply.text == b"sender id does not match the client certificate"
    assert srv.metric("fleetwire_errors_total", reason="sender_mismatch") == 1
    for sender in (f"vehicle_device.{VIN}".encode(), VIN.encode()):
        reply, txid = await car.record("unheard_of", b"", sender_id=sender)
        assert (reply.kind, reply.txid) == ("ack", txid)
    await car.assert_alive()


# -- side ports -------------------------------------------------------------------------


async def http_get(port: int, path: str, ssl_context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ssl_context, server_hostname="127.0.0.1" if ssl_context else None
    )
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REPLY_TIMEOUT)
        length = next(
            (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
            None,
        )
        body = await asyncio.wait_for(reader.readexactly(length) if length is not None else reader.read(), REPLY_TIMEOUT)
        return int(head.split(b" ", 2)[1]), body
    finally:
        writer.close()


async def test_status_and_metrics_endpoints(running_server: ServerFactory) -> None:
    srv = await running_server({"monitoring": {"prometheus_metrics_port": free_port(),
                                               "prometheus_metrics_host": "127.0.0.1"}})
    car = await Car.connect(srv)
    await car.assert_alive()
    cert, key = srv.vehicle_cert(OTHER_VIN)
    assert await http_get(srv.ports.vehicles, "/status", client_context(cert, key, srv.pki.server_ca_cert)) == (
        200, b"mtls ok"
    )
    assert srv.ports.status is not None and srv.ports.metrics is not None
    status, _ = await http_get(srv.ports.status, "/")
    assert status == 200
    url = f"http://127.0.0.1:{srv.ports.metrics}/metrics"
    text = (await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=REPLY_TIMEOUT).read())).decode()
    assert 'fleetwire_records_total{record_type="V"} 1.0' in text
    await car.assert_alive()


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


# -- property: any binary frame gets exactly one reply ----------------------------------------


@pytest_asyncio.fixture
async def fuzz_car(running_server: ServerFactory) -> AsyncIterator[Car]:
    srv = await running_server()
    c = await Car.connect(srv)
    yield c
    await c.close()


def _mutations(frame: bytes) -> st.SearchStrategy[bytes]:
    """A valid frame with a few bytes overwritten, or cut short."""
    flips = st.lists(st.tuples(st.integers(0, len(frame) - 1), st.integers(0, 255)), min_size=1, max_size=4)

    def flip(changes: list[tuple[int, int]]) -> bytes:
        data = bytearray(frame)
        for at, value in changes:
            data[at] = value
        return bytes(data)

    return st.one_of(flips.map(flip), st.integers(0, len(frame)).map(lambda n: frame[:n]))


FUZZ_FRAME = encode_stream(b"fuzz", b"V", v_payload(), created_at=1_700_000_000, sender_id=b"x")


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=512), _mutations(FUZZ_FRAME)))
async def test_any_binary_frame_gets_exactly_one_reply(fuzz_car: Car, data: bytes) -> None:
    await fuzz_car.send(data)
    sentinel, txid = fuzz_car.frame("V")
    await fuzz_car.send(sentinel)
    replies = [await fuzz_car.reply()]
    while not (replies[-1].kind == "ack" and replies[-1].txid == txid):
        replies.append(await fuzz_car.reply())
    assert len(replies) == 2, replies
