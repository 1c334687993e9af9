"""A rolling restart under load loses no acked record.

Two `fleetwire serve` processes (replicas A and B, one port each) store V and alerts
records in a real nats-server's JetStream; V acks wait for it (`reliable_ack_sources`),
alerts are acked on receipt, so a replica must publish them before it exits. Vehicles
know both URLs, stream all along, and on a 1001 (or a dropped socket) reconnect to the
other replica and resend what was not acked, as cars do. Replica A gets SIGTERM, a new A
starts on its port, then B, then A, then B. At the end every acked record is in the
stream, every record sent was acked in the end, each vehicle was told 1001 and streamed
after the last restart, and each SIGTERMed process exited 0 within its drain budget.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvloop
from brokers.nats_server import NatsServer, nats_server_binary
from conftest import server_config_data
from fleetwire.server.drain import DRAIN_ENV
from fleetwire.sim.fleet import Fleet, issue_vehicle_certs, sim_vin
from fleetwire.sim.fleet_pki import FleetPki, make_test_fleet_pki
from test_fleet_nats import read_stream

ASYNCIO_LOOP_FACTORY = uvloop.new_event_loop

NAMESPACE = "tesla_telemetry"
BUDGET = 6.0  # FLEETWIRE_DRAIN_SECONDS of each replica
GOING_AWAY = 1001
TYPES = ("V", "V", "V", "alerts")

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(nats_server_binary() is None, reason="nats-server is not installed")]


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats").start()
    yield server
    server.kill()


class Replica:
    """One `fleetwire serve` process on a fixed vehicles port, restartable."""

    def __init__(self, name: str, pki: FleetPki, nats_url: str, directory: Path) -> None:
        data = server_config_data(pki, {
            "namespace": NAMESPACE,
            "records": {"V": ["nats"], "alerts": ["nats"]},
            "reliable_ack_sources": {"V": "nats"},  # alerts are acked on receipt: the queue must flush them
            "nats": {"url": nats_url, "name": f"fleetwire-{name}"},
        })
        self.name = name
        self.port, self.status_port = data["port"], data["status_port"]
        self.config = directory / f"{name}.json"
        self.config.write_text(json.dumps(data))
        self.log = directory / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.exits: list[tuple[int, float]] = []  # (return code, seconds from SIGTERM to exit)

    @property
    def url(self) -> str:
        return f"wss://127.0.0.1:{self.port}/"

    def start(self, timeout: float = 30.0) -> None:
        env = {**os.environ, DRAIN_ENV: str(BUDGET)}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-P", "-m", "fleetwire.cli", "serve", "--config",
                                          str(self.config)], stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while self.ready() != 200:
            assert self.proc.poll() is None, f"{self.name} exited at start:\n{self.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"{self.name} not ready within {timeout} s"
            time.sleep(0.05)

    def ready(self) -> int | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.status_port}/readyz", timeout=1) as reply:
                return reply.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None

    def terminate(self) -> None:
        """SIGTERM, then wait for the exit (SIGKILL, failing the story, past the grace)."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(BUDGET + 10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.exits.append((code, time.monotonic() - started))
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


async def test_a_rolling_restart_under_load_loses_no_acked_record(tmp_path: Path, nats_server: NatsServer) -> None:
    vehicles, rate = 16, 20.0
    pki = make_test_fleet_pki(tmp_path / "pki")
    a, b = (Replica(n, pki, nats_server.url, tmp_path) for n in ("a", "b"))
    await asyncio.gather(asyncio.to_thread(a.start), asyncio.to_thread(b.start))
    try:
        vins = [sim_vin(i) for i in range(vehicles)]
        certs = issue_vehicle_certs(pki.vehicle_ca_cert, pki.vehicle_ca_key, vins, tmp_path / "vehicles")
        fleet = Fleet(a.url, pki.server_ca_cert, certs, urls=(a.url, b.url), keep_acked=True)  # half on each
        cars = fleet.vehicles
        await asyncio.gather(*(car.connect() for car in cars))
        streaming = asyncio.gather(*(car.stream(rate=rate, duration=600, reconnect=True, record_types=TYPES)
                                     for car in cars))

        await asyncio.sleep(1.5)
        for replica in (a, b, a, b):  # each replaced in turn, the other carrying the fleet meanwhile
            await asyncio.to_thread(replica.terminate)
            await asyncio.to_thread(replica.start)
            await asyncio.sleep(1.5)
        acked_at_last_restart = {car.vin: car.stats.acked for car in cars}
        await asyncio.sleep(1.5)
        streaming.cancel()
        await asyncio.gather(streaming, return_exceptions=True)
        # Whoever was between replicas when streaming stopped gets back and resends.
        assert all(await asyncio.gather(*(car.reconnect() for car in cars if not car.connected)))
        drained = await asyncio.gather(*(car.drain(30) for car in cars))
        for car in cars:
            await car.close()
    finally:
        for replica in (a, b):
            await asyncio.to_thread(replica.kill)

    messages = await read_stream(nats_server.url, NAMESPACE, f"{NAMESPACE}.>")
    stored = {(m.headers["vin"], m.headers["txid"]) for m in messages}
    acked = {(car.vin, txid.decode()) for car in cars for txid in car.acked_txids or ()}
    missing = acked - stored
    assert not missing, f"{len(missing)} acked record(s) not in JetStream, e.g. {sorted(missing)[:3]}"
    # Nothing was lost on the vehicles' side either: whatever they sent was acked in the end.
    assert all(drained) and sum(len(car.pending) for car in cars) == 0
    assert sum(car.stats.errors for car in cars) == 0
    sent_txids = {(car.vin, f"{car.vin}-{n}") for car in cars for n in range(1, car._seq + 1)}
    assert acked == sent_txids
    # Each replica drained: exit 0 within its budget (the grace period's SIGKILL never came).
    for code, seconds in a.exits + b.exits:
        assert code == 0 and seconds < BUDGET + 3, (a.exits, b.exits)
    for car in cars:
        assert car.stats.close_codes.get(GOING_AWAY, 0) >= 2, (car.vin, car.stats.close_codes)
        assert car.stats.reconnects >= 2
        assert car.stats.acked > acked_at_last_restart[car.vin] + 5  # streaming after the last restart
    assert len(acked) > vehicles * rate * 6 * 0.5
