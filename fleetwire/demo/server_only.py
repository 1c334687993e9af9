"""`fleetwire demo --server-only` (and the fallback without kmock or bubblewrap): the ingest path
alone, with a throwaway PKI, a few streaming vehicles and an impostor the server must refuse."""

from __future__ import annotations

import asyncio
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

from fleetwire.pki import Bundle, make_ca, make_vehicle_cert, write_bundle
from fleetwire.sim.fleet_pki import make_test_fleet_pki
from fleetwire.server.app import TelemetryServer
from fleetwire.server.config import parse_config
from fleetwire.sim.fleet import Fleet, issue_vehicle_certs, sim_vin
from fleetwire.sim.vehicle import SimulatedVehicle, client_context
from fleetwire.demo.printing import DemoLogger

RECORD_TYPES = ("V", "V", "alerts", "V", "errors")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_server_demo(
    *, vehicles: int = 5, seconds: float = 4.0, rate: float = 2.0, out: TextIO = sys.stdout, workdir: Path | None = None
) -> bool:
    directory = workdir or Path(tempfile.mkdtemp(prefix="fleetwire-demo-"))
    print(f"fleetwire demo: throwaway PKI and logs in {directory}", file=out)
    pki = make_test_fleet_pki(directory / "pki")
    # A CA the server trusts that is not a vehicle CA (say, a company's internal CA):
    # TLS accepts its leaves, the identity rules must not.
    rogue_ca = make_ca("Corporate Issuing CA")
    with pki.ca_file.open("ab") as bundle:
        bundle.write(rogue_ca.cert_pem)
    config, _warnings = parse_config(
        {
            "host": "127.0.0.1",
            "port": free_port(),
            "status_port": free_port(),
            "namespace": "demo",
            "tls": {"server_cert": str(pki.server_cert), "server_key": str(pki.server_key), "ca_file": str(pki.ca_file)},
            "records": {"V": ["logger"], "alerts": ["logger"], "errors": ["logger"], "connectivity": ["logger"]},
            "logger": {"verbose": True},
        },
        directory,
    )
    log_path = directory / "records.jsonl"
    with log_path.open("w") as log_file:
        logger = DemoLogger(log_file, out, limit=40)
        server = TelemetryServer(config, dispatchers={"logger": logger})
        ports = await server.start()
        url = f"wss://127.0.0.1:{ports.vehicles}/"
        print(f"server: {url} (status on :{ports.status})", file=out)

        certs = issue_vehicle_certs(
            pki.vehicle_ca_cert, pki.vehicle_ca_key, [sim_vin(i) for i in range(vehicles)], directory / "vehicles"
        )
        fleet = Fleet(url, pki.server_ca_cert, certs)
        connected = await fleet.connect()
        impostor = await _impostor(rogue_ca, url, pki.server_ca_cert, directory)
        print(f"{connected} vehicles connected; streaming for {seconds:g} s at {rate:g} records/s each", file=out)
        started = time.monotonic()
        await fleet.stream(rate=rate, duration=seconds, record_types=RECORD_TYPES)
        await fleet.drain(timeout=10)
        elapsed = time.monotonic() - started
        await fleet.close()
        await asyncio.sleep(0.2)  # let the disconnect records reach the dispatcher
        await server.stop()

    summary = fleet.summary()
    refused = server.metrics.registry.get_sample_value(
        "fleetwire_connections_refused_total", {"reason": "unknown_issuer"}
    ) or 0
    print("\nsummary", file=out)
    rows = [
        ("vehicles connected", f"{connected} of {summary.vehicles}"),
        ("impostor refused", "yes" if (impostor and refused >= 1) else "NO"),
        ("records sent", str(summary.sent)),
        ("acks received", str(summary.acked)),
        ("error replies", str(summary.errors)),
        ("unanswered", str(summary.pending)),
        ("dispatched by type", ", ".join(f"{k}={v}" for k, v in sorted(logger.by_type.items()))),
        ("ack latency p50/p99", f"{summary.ack_p50_ms or 0:.2f} / {summary.ack_p99_ms or 0:.2f} ms"),
        ("records per second", f"{summary.acked / elapsed:.0f}"),
        ("log file", str(log_path)),
    ]
    for name, value in rows:
        print(f"  {name:<22} {value}", file=out)
    ok = (
        connected == vehicles
        and summary.sent > 0
        and summary.acked == summary.sent
        and summary.errors == 0
        and impostor
        and refused >= 1
    )
    print("\nresult: " + ("every record acknowledged, impostor refused" if ok else "FAILED"), file=out)
    return ok


async def _impostor(rogue_ca: Bundle, url: str, server_ca: Path, directory: Path) -> bool:
    """A client whose certificate verifies but whose issuer is not a vehicle CA.

    Trust alone is not enough: the issuer's name must be one of the vehicle CAs, so the
    server closes the connection (1008) without reading a record.
    """
    cert, key = directory / "impostor.pem", directory / "impostor.key"
    write_bundle(make_vehicle_cert(rogue_ca, "5YJ3IMPOSTOR00000"), cert, key)
    vehicle = SimulatedVehicle("5YJ3IMPOSTOR00000", url, client_context(cert, key, server_ca))
    try:
        await vehicle.connect()
    except Exception:
        return True
    await asyncio.sleep(0.3)
    refused = not vehicle.connected
    await vehicle.close()
    return refused
