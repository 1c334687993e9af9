"""The bound on TLS handshakes in progress: the decision alone, then a real server."""

from __future__ import annotations

import asyncio

import pytest
import uvloop
from conftest import ServerFactory
from e2e_car import Car
from fleetwire.server import accept_gate
from fleetwire.server.accept_gate import HandshakeGate

ASYNCIO_LOOP_FACTORY = uvloop.new_event_loop  # the loop `fleetwire serve` runs on


def test_accepting_pauses_at_the_limit_and_resumes_at_half() -> None:
    resumed: list[bool] = []
    gate = HandshakeGate(limit=4)
    for fd in range(10, 14):
        gate.started(fd)
    assert gate.room() == 0
    gate.resume = lambda: resumed.append(True)
    gate.ended(10)
    assert resumed == [] and gate.room() == 1  # 3 in progress: still above half
    gate.ended(99)  # not a handshake of this gate
    gate.ended(10)  # nor twice the same one
    assert resumed == [] and gate.room() == 1
    gate.ended(11)
    assert resumed == [True] and gate.resume is None and gate.room() == 2


def test_a_handshake_that_stalls_stops_counting() -> None:
    """Connections that send nothing cost no CPU: they must not hold the bound."""
    now = [100.0]
    resumed: list[bool] = []
    gate = HandshakeGate(limit=2, stall_seconds=2.0, clock=lambda: now[0])
    gate.started(10)
    now[0] += 1.0
    gate.started(11)
    assert gate.room() == 0
    gate.resume = lambda: resumed.append(True)
    gate.check()
    assert resumed == []
    now[0] += 1.0  # fd 10 has waited 2 s on its peer
    assert gate.room() == 1
    gate.check()
    assert resumed == [True]  # 1 of 2 in progress: at most half
    gate.ended(10)  # a forgotten handshake ending later changes nothing
    assert gate.room() == 1
    now[0] += 1.0
    assert gate.room() == 2


def test_a_check_that_comes_early_says_when_to_ask_again() -> None:
    """A loop's timer may fire a hair before the clock reaches the stall time: the pause
    must not then last until some handshake ends."""
    now = [100.0]
    resumed: list[bool] = []
    gate = HandshakeGate(limit=2, stall_seconds=2.0, clock=lambda: now[0])
    gate.started(10)
    gate.started(11)
    gate.resume = lambda: resumed.append(True)
    now[0] += 1.999
    again = gate.check()
    assert resumed == [] and again is not None and 0 < again <= 0.01
    now[0] += 0.01  # the next check, when it said
    assert gate.check() is None and resumed == [True]
    assert gate.check() is None  # not paused: nothing to ask


async def test_connections_that_never_handshake_keep_no_vehicle_out(
    running_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attacker filling the bound with silent connections delays a vehicle by the stall
    time at most, not by the handshake timeout."""
    monkeypatch.setattr(accept_gate, "MAX_HANDSHAKES_IN_PROGRESS", 2)
    monkeypatch.setattr(accept_gate, "STALL_SECONDS", 0.5)
    srv = await running_server()
    stalled = [await asyncio.open_connection("127.0.0.1", srv.ports.vehicles) for _ in range(4)]
    try:
        car = await asyncio.wait_for(Car.connect(srv), 5)
        try:
            await car.assert_alive()
        finally:
            await car.close()
    finally:
        for _, writer in stalled:
            writer.close()


async def test_a_vehicle_waits_while_the_bound_is_reached_then_streams(
    running_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two connections that never start their handshake fill a bound of two: a vehicle
    waits in the kernel's queue (not dropped, not refused) until one of them goes."""
    monkeypatch.setattr(accept_gate, "MAX_HANDSHAKES_IN_PROGRESS", 2)
    monkeypatch.setattr(accept_gate, "STALL_SECONDS", 30.0)
    srv = await running_server()
    stalled = [await asyncio.open_connection("127.0.0.1", srv.ports.vehicles) for _ in range(2)]
    gate = accept_gate.gate_of(srv.ports.vehicles)
    assert gate is not None
    for _ in range(50):
        if gate.room() == 0:
            break
        await asyncio.sleep(0.02)
    assert gate.room() == 0
    connecting = asyncio.ensure_future(Car.connect(srv))
    done, _ = await asyncio.wait([connecting], timeout=0.5)
    assert not done  # its handshake has not started
    for _, writer in stalled:
        writer.close()
    car = await asyncio.wait_for(connecting, 10)
    try:
        await car.assert_alive()
        assert gate.room() == 2  # the vehicle's handshake ended too
    finally:
        await car.close()


async def test_a_handshake_that_fails_as_it_is_accepted_is_counted(
    running_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection whose ClientHello and close wait in the kernel's queue fails inside the
    accept itself, before any transport exists to report it: it is still counted."""
    monkeypatch.setattr(accept_gate, "MAX_HANDSHAKES_IN_PROGRESS", 1)
    monkeypatch.setattr(accept_gate, "STALL_SECONDS", 30.0)
    srv = await running_server()
    gate = accept_gate.gate_of(srv.ports.vehicles)
    assert gate is not None
    _, stalled = await asyncio.open_connection("127.0.0.1", srv.ports.vehicles)
    for _ in range(50):
        if gate.room() == 0:
            break
        await asyncio.sleep(0.02)
    assert gate.room() == 0
    _, queued = await asyncio.open_connection("127.0.0.1", srv.ports.vehicles)  # waits in the kernel's queue
    queued.write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a truncated ClientHello, then EOF
    await queued.drain()
    queued.close()
    await asyncio.sleep(0.1)
    stalled.close()  # the stalled handshake ends: the queued connection is accepted with its bytes and EOF

    def failures() -> float:
        return srv.metric("fleetwire_tls_handshake_failures_total", reason="closed_before_handshake")

    for _ in range(100):
        if failures() >= 2:
            break
        await asyncio.sleep(0.02)
    assert failures() == 2
    assert gate.in_progress == {}
