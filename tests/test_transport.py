"""Socket-free pieces of the transport: which certificate identifies the vehicle, frame headers."""

from __future__ import annotations

import asyncio
import ssl
from types import SimpleNamespace

from fleetwire.pki import make_ca, make_vehicle_cert
from fleetwire.server.transport import _frame_header, verified_leaf


class _ChainObject:
    """An SSL object that exposes the verified chain (aiofastnet, Python >= 3.13)."""

    def __init__(self, chain: list[object], peer: bytes) -> None:
        self._chain = chain
        self._peer = peer

    def get_verified_chain(self) -> list[object]:
        return self._chain

    def getpeercert(self, binary_form: bool = False) -> bytes:
        return self._peer


class _PemCert:
    """What Python 3.13's verified chain holds: certificates that serialize to PEM."""

    def __init__(self, der: bytes) -> None:
        self._der = der

    def public_bytes(self) -> str:
        return ssl.DER_cert_to_PEM_cert(self._der)


def test_identity_comes_from_the_verified_chain_not_from_what_the_peer_sent() -> None:
    ca = make_ca("Tesla Issuing CA")
    leaf = make_vehicle_cert(ca, "5YJ3E1EA7KF000001").cert_der
    forged = make_vehicle_cert(make_ca("Tesla Issuing CA"), "5YJ3E1EA7KF999999").cert_der
    assert verified_leaf(_ChainObject([leaf, ca.cert_der], peer=forged)) == leaf
    assert verified_leaf(_ChainObject([_PemCert(leaf), _PemCert(ca.cert_der)], peer=forged)) == leaf
    assert verified_leaf(_ChainObject([], peer=forged)) is None
    assert verified_leaf(None) is None


def test_frame_headers_follow_rfc6455_length_encoding() -> None:
    assert _frame_header(5) == b"\x82\x05"
    assert _frame_header(125) == b"\x82\x7d"
    assert _frame_header(126) == b"\x82\x7e\x00\x7e"
    assert _frame_header(70000) == b"\x82\x7f" + (70000).to_bytes(8, "big")


class _Underlying:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)


class _WsTransport:
    def __init__(self) -> None:
        self.underlying_transport = _Underlying()


async def test_acks_confirmed_together_go_out_in_one_write() -> None:
    """Reliable acks arrive outside a read, one per record a batch confirmed: each as a TLS
    write of its own would cost a system call and an encryption per record."""
    from fleetwire.server.session import Peer
    from fleetwire.server.transport import VehicleListener

    listener = VehicleListener(SimpleNamespace(unflushed=[]), Peer("c"))  # type: ignore[arg-type]
    ws = _WsTransport()
    listener._transport = ws  # type: ignore[assignment]
    for n in range(5):
        listener.send(b"ack-%d" % n)
    assert ws.underlying_transport.writes == []  # not yet: the loop's turn is not over
    await asyncio.sleep(0)
    assert ws.underlying_transport.writes == [b"".join(_frame_header(5) + b"ack-%d" % n for n in range(5))]
    listener.send(b"later")
    await asyncio.sleep(0)
    assert len(ws.underlying_transport.writes) == 2


async def test_acks_to_many_connections_in_one_turn_take_one_loop_callback() -> None:
    """A confirmed batch acks records of many vehicles: each gets its one write, and the
    loop is asked once for all of them (asking it costs a getpid system call)."""
    from fleetwire.server.session import Peer
    from fleetwire.server.transport import VehicleListener

    state = SimpleNamespace(unflushed=[])
    listeners = [VehicleListener(state, Peer(f"c{n}")) for n in range(3)]  # type: ignore[arg-type]
    for listener in listeners:
        listener._transport = _WsTransport()  # type: ignore[assignment]
    loop = asyncio.get_running_loop()
    scheduled = []
    call_soon = loop.call_soon
    loop.call_soon = lambda *args, **kw: scheduled.append(args) or call_soon(*args, **kw)  # type: ignore[method-assign]
    try:
        for n in range(2):
            for listener in listeners:
                listener.send(b"ack-%d" % n)
    finally:
        loop.call_soon = call_soon  # type: ignore[method-assign]
    assert len(scheduled) == 1
    await asyncio.sleep(0)
    for listener in listeners:
        writes = listener._transport.underlying_transport.writes  # type: ignore[union-attr]
        assert writes == [_frame_header(5) + b"ack-0" + _frame_header(5) + b"ack-1"]
    assert state.unflushed == []
