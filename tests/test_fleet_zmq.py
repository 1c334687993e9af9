"""Simulated vehicles stream through the real server (mTLS) onto its ZMQ socket.

V records are acked on the zmq dispatcher's confirmation (`reliable_ack_sources`), so an
independent SUB socket, connected before the vehicles, must receive every acked record:
the topic frame `<namespace>_V` and the record as the vehicle sent it (VIN from its
certificate). A second test adds CURVE: only the allowed client key receives anything.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import uvloop
import zmq
import zmq.asyncio
from conftest import free_port, server_config_data
from fleetwire.proto import vehicle_data_pb2
from fleetwire.server.app import TelemetryServer
from fleetwire.server.config import parse_config
from fleetwire.server.dispatchers.zmq import ZmqDispatcher
from fleetwire.proto.envelope_codec import decode_frame, decode_reply
from fleetwire.sim.fleet import Fleet, issue_vehicle_certs, sim_vin
from fleetwire.sim.vehicle import SimulatedVehicle

from fleetwire.sim.fleet_pki import make_test_fleet_pki

ASYNCIO_LOOP_FACTORY = uvloop.new_event_loop  # the loop `fleetwire serve` runs on

NAMESPACE = "tesla_telemetry"
FIELDS = ("VehicleSpeed", "Odometer", "Location", "Gear", "Soc")


def track(vehicle: SimulatedVehicle) -> tuple[dict[bytes, bytes], set[bytes]]:
    """The payload sent under each txid, and the txids the server acked."""
    sent: dict[bytes, bytes] = {}
    acked: set[bytes] = set()
    send_frame, reply = vehicle.send_frame, vehicle._reply

    def on_send(frame: bytes, txid: bytes) -> None:
        sent[txid] = decode_frame(frame).payload
        send_frame(frame, txid)

    def on_reply(data: bytes) -> None:
        before = vehicle.stats.acked
        reply(data)
        if vehicle.stats.acked > before:
            acked.add(decode_reply(data).txid)

    vehicle.send_frame = on_send  # type: ignore[method-assign]
    vehicle._reply = on_reply  # type: ignore[method-assign]
    return sent, acked


def canonical(payload: bytes) -> bytes:
    return vehicle_data_pb2.Payload.FromString(payload).SerializeToString(deterministic=True)


class Sub:
    def __init__(self, addr: str, **curve: bytes) -> None:
        self.context = zmq.asyncio.Context()
        self.socket = self.context.socket(zmq.SUB)
        self.socket.rcvhwm = 0  # unlimited: this test counts, it must not push back
        for option, value in curve.items():
            setattr(self.socket, option, value)
        self.socket.connect(addr)
        self.socket.subscribe(f"{NAMESPACE}_".encode())
        self.messages: list[list[bytes]] = []
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        while True:
            self.messages.append(await self.socket.recv_multipart())

    async def settle(self, count: int, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    def close(self) -> None:
        self.task.cancel()
        self.socket.close(0)
        self.context.term()


async def stream(tmp_path: Path, zmq_section: dict[str, Any], subs: list[Sub], vehicles: int, rate: float,
                 seconds: float) -> tuple[Any, dict[str, tuple[dict[bytes, bytes], set[bytes]]], ZmqDispatcher]:
    pki = make_test_fleet_pki(tmp_path / "pki")
    config, warnings = parse_config(server_config_data(pki, {
        "namespace": NAMESPACE,
        "records": {"V": ["zmq"]},
        "reliable_ack_sources": {"V": "zmq"},
        "zmq": zmq_section,
    }), pki.directory)
    assert warnings == []
    server = TelemetryServer(config)
    ports = await server.start()
    dispatcher = server.queues["zmq"].dispatcher
    assert isinstance(dispatcher, ZmqDispatcher)
    try:
        deadline = time.monotonic() + 5
        while not dispatcher.subscriptions.wanted(f"{NAMESPACE}_V".encode()):
            assert time.monotonic() < deadline, "no subscriber got in"
            await asyncio.sleep(0.02)
        vins = [sim_vin(i) for i in range(vehicles)]
        certs = issue_vehicle_certs(pki.vehicle_ca_cert, pki.vehicle_ca_key, vins, tmp_path / "vehicles")
        fleet = Fleet(f"wss://127.0.0.1:{ports.vehicles}/", pki.server_ca_cert, certs, fields=FIELDS)
        tracked = {v.vin: track(v) for v in fleet.vehicles}
        assert await fleet.connect() == vehicles
        await fleet.stream(rate=rate, duration=seconds)
        await fleet.drain(timeout=30)
        summary = fleet.summary()
        await fleet.close()
        for sub in subs:
            await sub.settle(summary.acked, timeout=3)
    finally:
        await server.stop()
    return summary, tracked, dispatcher


def check(messages: list[list[bytes]], tracked: dict[str, tuple[dict[bytes, bytes], set[bytes]]]) -> None:
    """Every acked record arrived, once, under `<namespace>_V`, as the vehicle sent it."""
    assert {m[0] for m in messages} == {f"{NAMESPACE}_V".encode()} and all(len(m) == 2 for m in messages)
    received = Counter(canonical(m[1]) for m in messages)
    missing = []
    for vin, (sent, acked) in tracked.items():
        for txid in acked:
            payload = canonical(sent[txid])
            if received[payload] < 1:
                missing.append((vin, txid))
            assert vehicle_data_pb2.Payload.FromString(payload).vin == vin
    assert missing == [], f"{len(missing)} acked record(s) not received, e.g. {missing[:3]}"
    assert sum(received.values()) == sum(len(a) for _, a in tracked.values())


@pytest.mark.slow
async def test_vehicles_every_acked_record_reaches_the_subscriber(tmp_path: Path) -> None:
    addr = f"tcp://127.0.0.1:{free_port()}"
    sub = Sub(addr)
    try:
        summary, tracked, dispatcher = await stream(tmp_path, {"addr": addr}, [sub], vehicles=50, rate=5.0,
                                                    seconds=3.0)
        messages = list(sub.messages)
    finally:
        sub.close()
    assert summary.sent >= 50 * 5.0 * 3.0 * 0.8
    assert summary.errors == 0 and summary.pending == 0 and summary.acked == summary.sent
    check(messages, tracked)
    assert dispatcher.messages_published == summary.acked and dispatcher.unsubscribed == 0


@pytest.mark.slow
async def test_curve_only_the_allowed_key_receives(tmp_path: Path) -> None:
    server_public, server_secret = zmq.curve_keypair()
    client_public, client_secret = zmq.curve_keypair()
    stranger_public, stranger_secret = zmq.curve_keypair()
    key_file, allowed_file = tmp_path / "server-key.json", tmp_path / "allowed.json"
    key_file.write_text(json.dumps({"secret": server_secret.decode(), "public": server_public.decode()}))
    allowed_file.write_text(json.dumps([client_public.decode()]))
    addr = f"tcp://127.0.0.1:{free_port()}"
    allowed = Sub(addr, curve_serverkey=server_public, curve_publickey=client_public, curve_secretkey=client_secret)
    stranger = Sub(addr, curve_serverkey=server_public, curve_publickey=stranger_public,
                   curve_secretkey=stranger_secret)
    try:
        summary, tracked, _ = await stream(
            tmp_path, {"addr": addr, "server_key_json_path": str(key_file),
                       "allowed_public_keys_json_path": str(allowed_file), "verbose": True},
            [allowed], vehicles=10, rate=5.0, seconds=2.0)
        messages, refused = list(allowed.messages), list(stranger.messages)
    finally:
        allowed.close()
        stranger.close()
    assert summary.errors == 0 and summary.pending == 0 and summary.acked == summary.sent > 0
    check(messages, tracked)
    assert refused == []
