"""200 simulated vehicles stream through the real server into a real mosquitto.

Acks wait for the broker (`reliable_ack_sources`), so every acked record must be found
on the broker: acked = delivered, with nothing unanswered and no error replies.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import aiomqtt
import pytest

from fleetwire.sim.fleet_pki import FleetPki, make_test_fleet_pki
from fleetwire.server.app import TelemetryServer
from fleetwire.server.config import parse_config
from fleetwire.sim.fleet import Fleet, issue_vehicle_certs, sim_vin

from conftest import Mosquitto, server_config_data

VEHICLES = 200
FIELDS = ("VehicleSpeed", "Odometer", "Location", "Gear", "Soc")
RATE = 2.0  # records per second per vehicle
SECONDS = 3.0


@pytest.mark.slow
async def test_200_vehicles_every_acked_record_reaches_the_broker(tmp_path: Path, mosquitto: Mosquitto) -> None:
    pki: FleetPki = make_test_fleet_pki(tmp_path / "pki")
    config, warnings = parse_config(
        server_config_data(
            pki,
            {
                "records": {"V": ["mqtt"]},
                "reliable_ack_sources": {"V": "mqtt"},
                "mqtt": {"broker": f"127.0.0.1:{mosquitto.port}", "topic_base": "fleet", "qos": 1},
            },
        ),
        pki.directory,
    )
    assert warnings == []
    server = TelemetryServer(config)
    delivered: Counter[tuple[str, str]] = Counter()

    async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="counter") as subscriber:
        await subscriber.subscribe("fleet/#", qos=1)

        async def count() -> None:
            async for message in subscriber.messages:
                _, vin, kind, field = message.topic.value.split("/", 3)
                assert kind == "v"
                delivered[(vin, field)] += 1

        counter = asyncio.create_task(count())
        ports = await server.start()
        try:
            vins = [sim_vin(i) for i in range(VEHICLES)]
            certs = issue_vehicle_certs(pki.vehicle_ca_cert, pki.vehicle_ca_key, vins, tmp_path / "vehicles")
            fleet = Fleet(f"wss://127.0.0.1:{ports.vehicles}/", pki.server_ca_cert, certs, fields=FIELDS)
            assert await fleet.connect() == VEHICLES
            await fleet.stream(rate=RATE, duration=SECONDS)
            await fleet.drain(timeout=30)
            summary = fleet.summary()
            # The broker has confirmed every acked record; give the subscriber time to read them.
            expected = {v.vin: v.stats.acked for v in fleet.vehicles}
            for _ in range(100):
                if all(delivered[(vin, f)] >= n for vin, n in expected.items() for f in FIELDS):
                    break
                await asyncio.sleep(0.1)
            await fleet.close()
        finally:
            await server.stop()
            counter.cancel()

    assert summary.sent >= VEHICLES * RATE * SECONDS * 0.8
    assert summary.errors == 0 and summary.pending == 0
    assert summary.acked == summary.sent
    missing = {
        (vin, field): n - delivered[(vin, field)]
        for vin, n in expected.items()
        for field in FIELDS
        if delivered[(vin, field)] < n
    }
    assert missing == {}, f"acked but not on the broker: {dict(list(missing.items())[:5])}"
    assert server.metrics.records["V"] == summary.acked
