"""`fleetwire demo`: the whole ingest path on loopback, with nothing to configure.

A throwaway PKI, the server on free loopback ports, a handful of simulated vehicles
streaming for a few seconds (plus one impostor whose certificate is not from a vehicle
CA), the decoded records as they arrive, and a summary. Exits 0 when every record a
vehicle sent was acknowledged and the impostor was refused.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from fleetwire.pki import Bundle, make_ca, make_test_fleet_pki, make_vehicle_cert, write_bundle
from fleetwire.server.app import TelemetryServer
from fleetwire.server.config import parse_config
from fleetwire.server.dispatchers.base import Record
from fleetwire.server.dispatchers.logger import LoggerDispatcher
from fleetwire.server.records import to_dict
from fleetwire.sim.fleet import Fleet, issue_vehicle_certs, sim_vin
from fleetwire.sim.vehicle import SimulatedVehicle, client_context

RECORD_TYPES = ("V", "V", "alerts", "V", "errors")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _short(value: Any) -> str:
    if isinstance(value, dict):
        if "latitude" in value:
            return f"{value['latitude']:.4f},{value['longitude']:.4f}"
        return ",".join(f"{k}={_short(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def describe(record: Record) -> str:
    """One readable line per record: what a person wants to see scroll by."""
    data = to_dict(record.message)
    if record.record_type == "V":
        parts = []
        for datum in data.get("data", []):
            value = datum.get("value", {})
            shown = _short(next(iter(value.values()))) if value else "-"
            parts.append(f"{datum.get('key')}={shown}")
        body = " ".join(parts)
    elif record.record_type == "alerts":
        body = " ".join(a.get("name", "?") for a in data.get("alerts", []))
    elif record.record_type == "errors":
        body = " ".join(f"{e.get('name')}: {e.get('body', '')}" for e in data.get("errors", []))
    else:
        body = f"{data.get('status')} via {data.get('networkInterface') or '?'} ({data.get('connectionId')})"
    return f"  {record.record_type:<12} {record.vin}  {body}"


class DemoLogger(LoggerDispatcher):
    """The real logger dispatcher (JSON lines to a file), echoing a readable line per record."""

    def __init__(self, stream: TextIO, console: TextIO, limit: int) -> None:
        super().__init__(stream, include_data=True)
        self._console = console
        self._limit = limit
        self.shown = 0
        self.by_type: dict[str, int] = {}

    async def publish(self, batch: Sequence[Record]) -> None:
        await super().publish(batch)
        for record in batch:
            self.by_type[record.record_type] = self.by_type.get(record.record_type, 0) + 1
            if self.shown < self._limit:
                line = describe(record)
                print(line if len(line) <= 160 else line[:157] + "...", file=self._console)
                self.shown += 1
                if self.shown == self._limit:
                    print("  ... (the rest goes to the log file only)", file=self._console)


async def run_demo(
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
