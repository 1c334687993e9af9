"""Simulated vehicles stream through the real server (mTLS) into a real nats-server.

Acks wait for JetStream (`reliable_ack_sources`), so every acked record must be in the
stream: an independent consumer reads the stream and finds each one on
`<namespace>.<VIN>.data`, with the reference's metadata as headers and the record as
payload (VIN from the vehicle's certificate). A second test kills the server mid-stream.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
import uvloop
from brokers.nats_server import NatsServer, nats_server_binary
from conftest import server_config_data
from fleetwire.proto import vehicle_data_pb2
from fleetwire.server.app import TelemetryServer
from fleetwire.server.config import parse_config
from fleetwire.server.dispatchers.nats import NatsDispatcher
from fleetwire.proto.envelope_codec import decode_reply
from fleetwire.sim.fleet import Fleet, issue_vehicle_certs, sim_vin
from fleetwire.sim.vehicle import SimulatedVehicle

from fleetwire.sim.fleet_pki import FleetPki, make_test_fleet_pki

ASYNCIO_LOOP_FACTORY = uvloop.new_event_loop  # the loop `fleetwire serve` runs on

NAMESPACE = "tesla_telemetry"
FIELDS = ("VehicleSpeed", "Odometer", "Location", "Gear", "Soc")

pytestmark = pytest.mark.skipif(nats_server_binary() is None, reason="nats-server is not installed")


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats").start()
    yield server
    server.kill()


def track_acks(vehicle: SimulatedVehicle) -> set[str]:
    """The txids the server acked to `vehicle` (the simulator only counts them)."""
    acked: set[str] = set()
    original = vehicle._reply

    def reply(data: bytes) -> None:
        before = vehicle.stats.acked
        original(data)
        if vehicle.stats.acked > before:
            acked.add(decode_reply(data).txid.decode())

    vehicle._reply = reply  # type: ignore[method-assign]
    return acked


async def read_stream(url: str, stream: str, subjects: str) -> list[Any]:
    """Every message of `stream`, read by a consumer of its own."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        total = (await js.stream_info(stream)).state.messages
        sub = await js.pull_subscribe(subjects, stream=stream)
        messages: list[Any] = []
        while len(messages) < total:
            for msg in await sub.fetch(batch=1000, timeout=5):
                messages.append(msg)
                await msg.ack()
        return messages
    finally:
        await nc.close()


def make_config(pki: FleetPki, url: str, **nats_settings: Any) -> Any:
    config, warnings = parse_config(
        server_config_data(pki, {
            "namespace": NAMESPACE,
            "records": {"V": ["nats"]},
            "reliable_ack_sources": {"V": "nats"},
            "nats": {"url": url, "name": "fleetwire-test", **nats_settings},
        }),
        pki.directory,
    )
    assert warnings == []
    return config


def check_delivered(messages: list[Any], acked: dict[str, set[str]], decoded: bool = False) -> None:
    """Every acked record is in `messages` once at least, on its VIN's subject, with its
    metadata and its payload."""
    found: dict[tuple[str, str], Any] = {}
    for msg in messages:
        found.setdefault((msg.headers["vin"], msg.headers["txid"]), msg)
    missing = [(vin, txid) for vin, txids in acked.items() for txid in txids if (vin, txid) not in found]
    assert missing == [], f"{len(missing)} acked record(s) not in the stream, e.g. {missing[:3]}"
    for (vin, txid), msg in found.items():
        assert msg.subject == f"{NAMESPACE}.{vin}.data"
        h = msg.headers
        assert h["txtype"] == "V" and h["timestamp"] == "0" and h["version"] == "0"
        assert h["receivedat"].isdigit() and len(h["receivedat"]) == 13  # milliseconds
        assert h.get("device_client_version") == "1.0.0"  # the Version header the vehicle sent
        assert h["Nats-Msg-Id"] == f"{vin}:V:{txid}"
        if decoded:
            body = json.loads(msg.data)
            assert body["vin"] == vin and {d["key"] for d in body["data"]} == set(FIELDS)
        else:
            payload = vehicle_data_pb2.Payload.FromString(msg.data)
            assert payload.vin == vin
            assert {vehicle_data_pb2.Field.Name(d.key) for d in payload.data} == set(FIELDS)


@pytest.mark.slow
async def test_vehicles_every_acked_record_is_in_the_stream(tmp_path: Path, nats_server: NatsServer) -> None:
    vehicles, rate, seconds = 50, 5.0, 3.0
    pki = make_test_fleet_pki(tmp_path / "pki")
    server = TelemetryServer(make_config(pki, nats_server.url))
    ports = await server.start()
    try:
        vins = [sim_vin(i) for i in range(vehicles)]
        certs = issue_vehicle_certs(pki.vehicle_ca_cert, pki.vehicle_ca_key, vins, tmp_path / "vehicles")
        fleet = Fleet(f"wss://127.0.0.1:{ports.vehicles}/", pki.server_ca_cert, certs, fields=FIELDS)
        acked = {v.vin: track_acks(v) for v in fleet.vehicles}
        assert await fleet.connect() == vehicles
        await fleet.stream(rate=rate, duration=seconds)
        await fleet.drain(timeout=30)
        summary = fleet.summary()
        await fleet.close()
        dispatcher = server.queues["nats"].dispatcher
    finally:
        await server.stop()

    assert summary.sent >= vehicles * rate * seconds * 0.8
    assert summary.errors == 0 and summary.pending == 0 and summary.acked == summary.sent
    assert sum(len(t) for t in acked.values()) == summary.acked
    messages = await read_stream(nats_server.url, NAMESPACE, f"{NAMESPACE}.>")
    check_delivered(messages, acked)
    assert len(messages) == summary.acked  # nothing twice, nothing unacked
    assert isinstance(dispatcher, NatsDispatcher) and dispatcher.created_stream


@pytest.mark.slow
async def test_server_killed_mid_stream_loses_no_acked_record(tmp_path: Path, nats_server: NatsServer) -> None:
    """nats-server is SIGKILLed while vehicles stream and started again on the same store:
    nothing is acked while it is away, and every record acked before or after is in the
    stream. The records are protobuf-JSON here (`transmit_decoded_records`)."""
    vehicles, rate, seconds = 20, 10.0, 6.0
    pki = make_test_fleet_pki(tmp_path / "pki")
    config = make_config(pki, nats_server.url, reconnect_initial_ms=50, reconnect_max_ms=500,
                         publish_timeout_ms=1000)
    config = dataclasses.replace(config, transmit_decoded_records=True)
    server = TelemetryServer(config)
    ports = await server.start()
    try:
        vins = [sim_vin(i) for i in range(vehicles)]
        certs = issue_vehicle_certs(pki.vehicle_ca_cert, pki.vehicle_ca_key, vins, tmp_path / "vehicles")
        fleet = Fleet(f"wss://127.0.0.1:{ports.vehicles}/", pki.server_ca_cert, certs, fields=FIELDS)
        acked = {v.vin: track_acks(v) for v in fleet.vehicles}
        assert await fleet.connect() == vehicles
        streaming = asyncio.ensure_future(fleet.stream(rate=rate, duration=seconds))
        await asyncio.sleep(2.0)
        await asyncio.to_thread(nats_server.kill)
        # An ack already on its way to a vehicle when the server died may land just after.
        await asyncio.sleep(0.3)
        before_outage = sum(len(t) for t in acked.values())
        await asyncio.sleep(1.5)
        during_outage = sum(len(t) for t in acked.values()) - before_outage
        await asyncio.to_thread(nats_server.start)
        await streaming
        await fleet.drain(timeout=30)
        summary = fleet.summary()
        await fleet.close()
        queue = server.queues["nats"]
        dispatcher = queue.dispatcher
    finally:
        await server.stop()

    assert isinstance(dispatcher, NatsDispatcher)
    assert queue.failures >= 1 and queue.dropped == 0 and dispatcher.connects >= 2
    assert before_outage > 0
    assert during_outage == 0
    assert summary.errors == 0 and summary.pending == 0 and summary.acked == summary.sent
    messages = await read_stream(nats_server.url, NAMESPACE, f"{NAMESPACE}.>")
    check_delivered(messages, acked, decoded=True)
