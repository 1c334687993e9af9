"""The vehicle port's TLS transports: no certificate decoded that nobody reads, no per-connection
memory BIOs, and the peer certificate still there for whoever asks."""

from __future__ import annotations

import ssl
from typing import Any

import pytest
import uvloop
from conftest import RunningServer, ServerFactory
from e2e_car import Car

ASYNCIO_LOOP_FACTORY = uvloop.new_event_loop  # the loop `fleetwire serve` runs on


def _transports(srv: RunningServer) -> list[Any]:
    """The server's accepted TLS transports (aiofastnet keeps them in a weak set)."""
    return [t for server in srv.server._vehicle_servers for t in getattr(server, "_clients", ())]


async def test_a_handshake_decodes_no_certificate_through_a_file(
    running_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[str] = []
    original = ssl._ssl._test_decode_cert  # type: ignore[attr-defined]

    def counting(path: str) -> Any:
        decoded.append(path)
        return original(path)

    monkeypatch.setattr(ssl._ssl, "_test_decode_cert", counting)  # type: ignore[attr-defined]
    srv = await running_server()
    car = await Car.connect(srv)
    try:
        await car.assert_alive()
        assert srv.metric("fleetwire_connections_active") == 1
        assert decoded == []  # identity came from the verified leaf's DER
        (transport,) = _transports(srv)
        peercert = transport.get_extra_info("peercert")
        # Whoever reads it still gets Python's form of the vehicle's certificate.
        assert ((("commonName", car.vin),),) == peercert["subject"]
        assert len(decoded) == 1
        assert dict(peercert) == transport.get_extra_info("ssl_object").getpeercert()
    finally:
        await car.close()


async def test_openssl_reads_the_socket_itself(running_server: ServerFactory) -> None:
    """No memory BIOs: aiofastnet would give each connection two 257 KB buffers."""
    srv = await running_server()
    car = await Car.connect(srv)
    try:
        await car.assert_alive()
        (transport,) = _transports(srv)
        assert transport.get_extra_info("ssl_incoming_use_membio") is False
        assert transport.get_extra_info("ssl_outgoing_use_membio") is False
    finally:
        await car.close()


async def test_the_upgrade_headers_are_not_kept_once_copied(running_server: ServerFactory) -> None:
    """picows keeps the upgrade request and response for the connection's lifetime; the
    listener keeps only the header values it needs."""
    srv = await running_server()
    car = await Car.connect(srv, headers={"Version": "2026.2.1", "X-Network-Interface": "cellular"})
    try:
        await car.assert_alive()
        (transport,) = _transports(srv)
        protocol = transport.get_protocol()
        ws = protocol.transport
        assert len(ws.request.headers) == 0
        assert len(ws.response.headers) == 0
        peer = protocol.listener._peer
        assert (peer.client_version, peer.network_interface) == ("2026.2.1", "cellular")
    finally:
        await car.close()
