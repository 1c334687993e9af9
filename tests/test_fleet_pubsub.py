"""Simulated vehicles stream through the real server (mTLS) into Pub/Sub — the in-process
Publisher stand-in, reached through PUBSUB_EMULATOR_HOST as the real emulator is.

Every record type's ack waits for Pub/Sub's message id (`reliable_ack_sources`); every
transaction a vehicle sent must then be found on its topic `<namespace>_<record_type>`,
with the reference's metadata as attributes and the certificate's VIN in the payload. A
second test makes the service fail (UNAVAILABLE) mid-stream: no ack while it does, and
every record acked afterwards arrives.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import uvloop
from brokers.pubsub import PubsubStandIn
from conftest import server_config_data
from fleetwire.sim.fleet_pki import FleetPki, make_test_fleet_pki
from fleetwire.proto import vehicle_alert_pb2, vehicle_data_pb2, vehicle_error_pb2
from fleetwire.server.app import TelemetryServer
from fleetwire.server.config import parse_config
from fleetwire.sim.fleet import Fleet, issue_vehicle_certs, sim_vin

ASYNCIO_LOOP_FACTORY = uvloop.new_event_loop  # as `fleetwire serve` runs

PROJECT = "fleet-project"
VEHICLES = 100
TYPES = ("V", "alerts", "errors")
SCHEMAS = {"V": vehicle_data_pb2.Payload, "alerts": vehicle_alert_pb2.VehicleAlerts,
           "errors": vehicle_error_pb2.VehicleErrors}


@pytest.fixture
def standin() -> Iterator[PubsubStandIn]:
    server = PubsubStandIn().start()
    yield server
    server.stop()


async def start_server(tmp_path: Path, standin: PubsubStandIn, types: tuple[str, ...]) -> tuple[TelemetryServer, Fleet]:
    pki: FleetPki = make_test_fleet_pki(tmp_path / "pki")
    config, warnings = parse_config(
        server_config_data(pki, {
            "namespace": "fleet",
            "records": {t: ["pubsub"] for t in types},
            "reliable_ack_sources": {t: "pubsub" for t in types},
            "pubsub": {"gcp_project_id": PROJECT},
        }),
        pki.directory,
        env={"PUBSUB_EMULATOR_HOST": standin.host},
    )
    assert warnings == []
    server = TelemetryServer(config)
    ports = await server.start()
    vins = [sim_vin(i) for i in range(VEHICLES)]
    certs = issue_vehicle_certs(pki.vehicle_ca_cert, pki.vehicle_ca_key, vins, tmp_path / "vehicles")
    fleet = Fleet(f"wss://127.0.0.1:{ports.vehicles}/", pki.server_ca_cert, certs)
    assert await fleet.connect() == VEHICLES
    return server, fleet


def sent_txids(fleet: Fleet) -> set[tuple[str, str]]:
    """(VIN, txid) of every record the vehicles sent: txids are `<VIN>-<n>`, n from 1."""
    return {(v.vin, f"{v.vin}-{n}") for v in fleet.vehicles for n in range(1, v.stats.sent + 1)}


async def test_every_acked_record_on_its_topic_with_the_reference_attributes(
    tmp_path: Path, standin: PubsubStandIn
) -> None:
    server, fleet = await start_server(tmp_path, standin, TYPES)
    started = time.time()
    try:
        await fleet.stream(rate=3.0, duration=3.0, record_types=TYPES)
        await fleet.drain(timeout=30)
        summary = fleet.summary()
        await fleet.close()
    finally:
        await server.stop()
    assert summary.errors == 0 and summary.pending == 0 and summary.acked == summary.sent >= VEHICLES * 6

    assert set(standin.topics) == {f"projects/{PROJECT}/topics/fleet_{t}" for t in TYPES}  # created at start
    found: dict[tuple[str, str], Any] = {}
    for topic, message in standin.all_messages():
        record_type = topic.rsplit("/", 1)[1].removeprefix("fleet_")
        attributes = dict(message.attributes)
        assert attributes["txtype"] == record_type
        assert SCHEMAS[record_type].FromString(message.data).vin == attributes["vin"]  # the certificate's VIN
        assert attributes["timestamp"] == "0" and attributes["version"] == "0"
        # the vehicle's Version header, once the server hands it to records
        assert attributes["device_client_version"] == "1.0.0"  # the Version header the vehicle sent
        assert started * 1000 - 1000 <= int(attributes["receivedat"]) <= time.time() * 1000
        found[(attributes["vin"], attributes["txid"])] = message
    expected = sent_txids(fleet)
    missing = expected - set(found)
    assert not missing, f"{len(missing)} acked records not in Pub/Sub, e.g. {sorted(missing)[:3]}"
    assert len(standin.all_messages()) == summary.acked  # nothing published twice
    assert sum(server.metrics.records[t] for t in TYPES) == summary.acked


async def test_service_unavailable_mid_stream_no_ack_then_every_acked_record_arrives(
    tmp_path: Path, standin: PubsubStandIn
) -> None:
    server, fleet = await start_server(tmp_path, standin, ("V",))
    try:
        streaming = asyncio.ensure_future(fleet.stream(rate=4.0, duration=5.0))
        await asyncio.sleep(1.0)
        standin.fail(grpc.StatusCode.UNAVAILABLE)
        await asyncio.sleep(0.3)  # acks of Publish calls answered before the outage
        acked_at_outage = fleet.summary().acked
        await asyncio.sleep(2.0)
        during = fleet.summary()
        assert during.acked == acked_at_outage, "acked while Pub/Sub was unavailable"
        assert during.pending > 0
        standin.fail(None)
        await streaming
        await fleet.drain(timeout=40)
        summary = fleet.summary()
        await fleet.close()
    finally:
        await server.stop()
    assert summary.errors == 0 and summary.pending == 0 and summary.acked == summary.sent
    found = {(dict(m.attributes)["vin"], dict(m.attributes)["txid"]) for _, m in standin.all_messages()}
    missing = sent_txids(fleet) - found
    assert not missing, f"{len(missing)} acked records not in Pub/Sub, e.g. {sorted(missing)[:3]}"
