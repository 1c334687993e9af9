"""Simulated vehicles stream through the real server (mTLS) into a real redis-server.

Acks wait for Redis to accept each PUBLISH (`reliable_ack_sources`); an independent
subscriber (PSUBSCRIBE, subscribed before the vehicles connect) must then have received
every acked record on the reference's channel `<namespace>_<record_type>_{<VIN>}` — and,
for vehicles with a subscriber set, on each of the set's channels — with a payload whose
`vin` is the certificate's.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import uvloop
from brokers.redis_server import RedisServer, redis_server_binary
from conftest import server_config_data, streaming_fleet
from fleetwire.sim.fleet_pki import FleetPki, make_test_fleet_pki
from fleetwire.proto import vehicle_alert_pb2, vehicle_data_pb2, vehicle_error_pb2
from fleetwire.server.app import TelemetryServer
from fleetwire.server.config import parse_config
from fleetwire.server.dispatchers.redis import subscriber_set
from fleetwire.sim.fleet import Fleet, issue_vehicle_certs, sim_vin
from test_redis_dispatcher import Subscriber

ASYNCIO_LOOP_FACTORY = uvloop.new_event_loop  # as `fleetwire serve` runs

SCHEMAS = {"V": vehicle_data_pb2.Payload, "alerts": vehicle_alert_pb2.VehicleAlerts,
           "errors": vehicle_error_pb2.VehicleErrors}
TYPES = tuple(SCHEMAS)

pytestmark = pytest.mark.skipif(redis_server_binary() is None, reason="redis-server is not installed")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.kill()


def acked_per_channel(fleet: Fleet) -> Counter[tuple[str, str]]:
    """(record type, VIN) → acked records (the vehicles sent V, alerts, errors in turn and
    the caller checks every sent record was acked)."""
    counts: Counter[tuple[str, str]] = Counter()
    for v in fleet.vehicles:
        for n in range(v.stats.sent):
            counts[(TYPES[n % len(TYPES)], v.vin)] += 1
    return counts


async def stream(tmp_path: Path, redis_server: RedisServer, vehicles: int, seconds: float,
                 **overrides: Any) -> tuple[Fleet, Any, TelemetryServer]:
    pki: FleetPki = make_test_fleet_pki(tmp_path / "pki")
    config, warnings = parse_config(
        server_config_data(pki, {
            "namespace": "fleet",
            "records": {t: ["redis"] for t in TYPES},
            "reliable_ack_sources": {t: "redis" for t in TYPES},
            "redis": {"addrs": [redis_server.addr], "publish_vin_topics": True, "subscriber_set_prefix": "subs",
                      "publish_timeout": 2_000_000_000},
            **overrides,
        }),
        pki.directory,
    )
    assert warnings == []
    async with streaming_fleet(config, pki, tmp_path, vehicles) as (server, fleet):
        await fleet.stream(rate=3.0, duration=seconds, record_types=TYPES)
        await fleet.drain(timeout=30)
        summary = fleet.summary()
    assert summary.sent >= vehicles * 3.0 * seconds * 0.8
    assert summary.errors == 0 and summary.pending == 0 and summary.acked == summary.sent
    return fleet, summary, server


async def test_every_acked_record_reaches_a_subscriber_on_the_reference_channels(
    tmp_path: Path, redis_server: RedisServer,
) -> None:
    client = aioredis.Redis.from_url(f"redis://{redis_server.addr}")
    leased = [sim_vin(i) for i in range(0, 50, 10)]  # 5 vehicles have an app subscribed to their V records
    now = int(time.time())
    for vin in leased:
        await client.zadd(subscriber_set("subs", "fleet", "V", vin), {f"app_{vin}": now + 600, "expired": now - 5})
    async with Subscriber(f"redis://{redis_server.addr}") as sub:
        fleet, _summary, server = await stream(tmp_path, redis_server, vehicles=50, seconds=3.0)
        acked = acked_per_channel(fleet)
        expected = sum(acked.values()) + sum(acked[("V", vin)] for vin in leased)
        await sub.wait_for(lambda: len(sub.received) >= expected, timeout=10)
    received: Counter[tuple[str, str]] = Counter()
    app: Counter[str] = Counter()
    for channel, payload in sub.received:
        if channel.startswith("app_"):
            vin = channel.removeprefix("app_")
            assert vehicle_data_pb2.Payload.FromString(payload).vin == vin
            app[vin] += 1
            continue
        namespace, record_type, braced = channel.split("_", 2)
        assert namespace == "fleet" and braced.startswith("{") and braced.endswith("}"), channel
        vin = braced[1:-1]
        assert SCHEMAS[record_type].FromString(payload).vin == vin  # the certificate's VIN
        received[(record_type, vin)] += 1
    missing = {key: n - received[key] for key, n in acked.items() if received[key] < n}
    assert missing == {}, f"acked but not received: {dict(list(missing.items())[:5])}"
    assert received == acked  # and nothing published twice
    assert app == {vin: acked[("V", vin)] for vin in leased}
    for vin in leased:
        assert await client.zrange(subscriber_set("subs", "fleet", "V", vin), 0, -1) == [f"app_{vin}".encode()]
    assert server.queues["redis"].dispatcher.unheard == 0
    await client.aclose()


async def test_transmit_decoded_records_publishes_protobuf_json(tmp_path: Path, redis_server: RedisServer) -> None:
    async with Subscriber(f"redis://{redis_server.addr}") as sub:
        _fleet, summary, _ = await stream(tmp_path, redis_server, vehicles=5, seconds=1.0,
                                         transmit_decoded_records=True)
        await sub.wait_for(lambda: len(sub.received) >= summary.acked, timeout=10)
    assert len(sub.received) == summary.acked
    for channel, payload in sub.received:
        body = json.loads(payload)
        assert channel.endswith("_{" + body["vin"] + "}")
        if channel.startswith("fleet_V_"):
            assert isinstance(body["data"][0]["key"], str) and "createdAt" in body


async def test_redis_killed_mid_stream_no_ack_until_it_is_back_and_every_acked_record_is_received(
    tmp_path: Path, redis_server: RedisServer,
) -> None:
    """redis-server is SIGKILLed while vehicles stream and started again on the same port;
    the subscriber reconnects by itself. No vehicle is acked while Redis is down; in the
    end every record is acked, and every acked record reached the subscriber except those
    Redis itself reported as heard by nobody (accepted before our subscriber was back:
    pub/sub keeps nothing), which the dispatcher counts."""
    pki: FleetPki = make_test_fleet_pki(tmp_path / "pki")
    config, _ = parse_config(
        server_config_data(pki, {
            "namespace": "fleet",
            "records": {"V": ["redis"]},
            "reliable_ack_sources": {"V": "redis"},
            "redis": {"addrs": [redis_server.addr], "publish_vin_topics": True},
        }),
        pki.directory,
    )
    server = TelemetryServer(config)
    ports = await server.start()
    async with Subscriber(f"redis://{redis_server.addr}") as sub:
        try:
            vins = [sim_vin(i) for i in range(30)]
            certs = issue_vehicle_certs(pki.vehicle_ca_cert, pki.vehicle_ca_key, vins, tmp_path / "vehicles")
            fleet = Fleet(f"wss://127.0.0.1:{ports.vehicles}/", pki.server_ca_cert, certs)
            assert await fleet.connect() == 30
            streaming = asyncio.ensure_future(fleet.stream(rate=4.0, duration=5.0))
            await asyncio.sleep(1.5)
            await asyncio.to_thread(redis_server.kill)
            await asyncio.sleep(0.2)  # replies Redis sent just before it died
            before = {v.vin: v.stats.acked for v in fleet.vehicles}
            await asyncio.sleep(1.5)
            assert {v.vin: v.stats.acked for v in fleet.vehicles} == before, "acked while Redis was down"
            assert fleet.summary().pending > 0
            await asyncio.to_thread(redis_server.start)
            await streaming
            await fleet.drain(timeout=30)
            summary = fleet.summary()
            await fleet.close()
            dispatcher = server.queues["redis"].dispatcher
            expected = summary.acked - dispatcher.unheard
            await sub.wait_for(lambda: len(sub.received) >= expected, timeout=10)
        finally:
            await server.stop()
    assert summary.errors == 0 and summary.pending == 0 and summary.acked == summary.sent
    assert sum(before.values()) > 0 and server.queues["redis"].failures >= 1
    received = Counter(channel for channel, _ in sub.received)
    acked = {f"fleet_V_{{{v.vin}}}": v.stats.acked for v in fleet.vehicles}
    short = sum(n - received[c] for c, n in acked.items() if received[c] < n)
    assert short <= dispatcher.unheard < 50, (short, dispatcher.unheard)
