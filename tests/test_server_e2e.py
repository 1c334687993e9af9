"""The ingest server end to end: real mTLS on loopback, real WebSocket clients.

Vehicles are `websockets` clients that send hand-made frames (`Car`) or the simulator's
picows clients (`SimulatedVehicle`); what the server dispatched is read from a recording
dispatcher, and its counters from its Prometheus registry. After every bad frame the
same connection must still carry a valid record to its ack.

Here: who may connect, bad frames, side ports, any frame's one reply; policies, acks,
dispatch, certificates and connectivity: test_server_e2e_streaming.py.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import uvloop
from conftest import RunningServer, ServerFactory, free_port
from fleetwire.pki import make_ca, make_vehicle_cert, write_bundle
from fleetwire.sim.fleet_pki import FleetPki
from fleetwire.proto import vehicle_data_pb2
from fleetwire.proto.envelope_codec import encode_ack, encode_stream
from fleetwire.sim.vehicle import client_context
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidMessage

ASYNCIO_LOOP_FACTORY = uvloop.new_event_loop  # the loop `fleetwire serve` runs on
from e2e_car import (
    Car,
    INCORRECT_FORMAT,
    OTHER_VIN,
    REPLY_TIMEOUT,
    VIN,
    v_payload,
)


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
