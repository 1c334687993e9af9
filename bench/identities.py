"""The benchmark's PKI: the test fleet's CAs and server certificate, one certificate per vehicle."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from fleetwire.sim.vehicle import client_context

from fleetwire.pki import load_bundle, make_vehicle_cert, write_bundle
from fleetwire.sim.fleet_pki import FleetPki, make_test_fleet_pki


@dataclass(frozen=True)
class BenchPki:
    fleet: FleetPki
    vehicles: list[tuple[str, Path, Path]]  # (VIN, certificate, key)


def vin(i: int) -> str:
    """A distinct 17-character VIN per simulated vehicle."""
    return f"5YJ3BENCH{i:08d}"


def make_pki(directory: Path, vehicles: int) -> BenchPki:
    """A fleet PKI with `vehicles` client certificates issued by the vehicle CA."""
    fleet = make_test_fleet_pki(directory)
    ca = load_bundle(fleet.vehicle_ca_cert, fleet.vehicle_ca_key)
    (directory / "vehicles").mkdir(exist_ok=True)
    issued = []
    for i in range(vehicles):
        cert, key = write_bundle(
            make_vehicle_cert(ca, vin(i)), directory / "vehicles" / f"{i}.pem", directory / "vehicles" / f"{i}.key"
        )
        issued.append((vin(i), cert, key))
    return BenchPki(fleet, issued)


def vehicle_contexts(pki: BenchPki) -> list[ssl.SSLContext]:
    """One client TLS context per vehicle, trusting the server CA as a vehicle does."""
    return [client_context(cert, key, pki.fleet.server_ca_cert) for _, cert, key in pki.vehicles]
