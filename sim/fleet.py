"""A fleet of simulated vehicles: certificates, connections, streaming, a tally."""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fleetwire.pki import load_bundle, make_vehicle_cert, write_bundle
from fleetwire.sim.vehicle import DEFAULT_FIELDS, SimulatedVehicle, client_context


def sim_vin(i: int) -> str:
    """A 17-character VIN-shaped id, unique per index."""
    return f"5YJ3SIM{i:010d}"


def issue_vehicle_certs(
    ca_cert: Path, ca_key: Path, vins: Sequence[str], directory: Path
) -> dict[str, tuple[Path, Path]]:
    """One client certificate per VIN, signed by the vehicle CA, as PEM files."""
    ca = load_bundle(ca_cert, ca_key)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for vin in vins:
        cert, key = directory / f"{vin}.pem", directory / f"{vin}.key"
        if not cert.exists():
            write_bundle(make_vehicle_cert(ca, vin), cert, key)
        paths[vin] = (cert, key)
    return paths


@dataclass
class FleetSummary:
    vehicles: int
    connected: int
    sent: int
    acked: int
    errors: int
    pending: int
    error_texts: dict[str, int]
    ack_p50_ms: float | None
    ack_p99_ms: float | None

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


class Fleet:
    """N vehicles against one server URL; with `urls`, vehicle i starts on the i-th (in
    turn) and moves to the next when its server goes away (`stream(reconnect=True)`)."""

    def __init__(
        self,
        url: str,
        server_ca_file: Path,
        certs: dict[str, tuple[Path, Path]],
        *,
        fields: Sequence[str] = DEFAULT_FIELDS,
        urls: Sequence[str] = (),
        keep_acked: bool = False,
    ) -> None:
        ring = tuple(urls) or (url,)
        self.vehicles = []
        for i, (vin, (cert, key)) in enumerate(certs.items()):
            mine = ring[i % len(ring):] + ring[:i % len(ring)]
            self.vehicles.append(SimulatedVehicle(vin, mine[0], client_context(cert, key, server_ca_file),
                                                  fields=fields, urls=mine,
                                                  keep_acked=keep_acked))

    async def connect(self, concurrency: int = 50) -> int:
        """Connect every vehicle; returns how many made it (failures are left unconnected)."""
        gate = asyncio.Semaphore(concurrency)

        async def one(vehicle: SimulatedVehicle) -> bool:
            async with gate:
                try:
                    await vehicle.connect()
                    return True
                except (OSError, asyncio.TimeoutError, Exception):  # a refused car is data, not a crash
                    return False

        results = await asyncio.gather(*(one(v) for v in self.vehicles))
        return sum(results)

    async def stream(
        self, *, rate: float, duration: float, record_types: Sequence[str] = ("V",), reconnect: bool = False,
    ) -> None:
        await asyncio.gather(*(
            v.stream(rate=rate, duration=duration, record_types=record_types, reconnect=reconnect)
            for v in self.vehicles if v.connected
        ))

    async def drain(self, timeout: float = 10.0) -> None:
        await asyncio.gather(*(v.drain(timeout) for v in self.vehicles if v.connected))

    async def close(self) -> None:
        await asyncio.gather(*(v.close() for v in self.vehicles))

    def summary(self) -> FleetSummary:
        latencies = sorted(lat for v in self.vehicles for lat in v.stats.ack_latencies)
        texts: dict[str, int] = {}
        for v in self.vehicles:
            for text, n in v.stats.error_texts.items():
                texts[text] = texts.get(text, 0) + n
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000 if latencies else None
        return FleetSummary(
            vehicles=len(self.vehicles),
            connected=sum(v.connected for v in self.vehicles),
            sent=sum(v.stats.sent for v in self.vehicles),
            acked=sum(v.stats.acked for v in self.vehicles),
            errors=sum(v.stats.errors for v in self.vehicles),
            pending=sum(len(v.pending) for v in self.vehicles),
            error_texts=texts,
            ack_p50_ms=statistics.median(latencies) * 1000 if latencies else None,
            ack_p99_ms=p99,
        )
