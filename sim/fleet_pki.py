"""A test fleet's PKI: a made-up vehicle root and issuing CA, a server CA and certificate, as files.

A test double, not part of the package's face: the tests, the simulators, the demo and the
benchmarks need a vehicle CA that the server trusts and a server certificate the vehicles
trust; `fleetwire.pki` holds the certificate builders it is made with.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fleetwire.pki import VEHICLE_ISSUER_CN, make_ca, make_server_cert, write_bundle, write_pem

__all__ = ["FleetPki", "make_test_fleet_pki"]


@dataclass(frozen=True)
class FleetPki:
    """Paths of a test fleet's PKI, as the server, the simulator and the demo read them."""

    directory: Path
    vehicle_root_cert: Path
    vehicle_ca_cert: Path  # the issuing CA, CN "Tesla Issuing CA"
    vehicle_ca_key: Path
    ca_file: Path  # the server's client-CA bundle: vehicle root and issuing CA
    server_ca_cert: Path  # what vehicles trust for the server
    server_cert: Path
    server_key: Path


def make_test_fleet_pki(
    directory: str | os.PathLike[str], hostnames: Sequence[str] = ("localhost", "127.0.0.1")
) -> FleetPki:
    """A complete local fleet PKI in `directory`.

    Vehicle side: a root and an issuing CA named like the vehicles' own ("Tesla Issuing
    CA"), so the server identifies the leaves it signs as `vehicle_device` by the same rule
    as real vehicles. Both CAs go into `ca_file`, so a vehicle presenting only its leaf
    verifies. Server side: a separate root and a server certificate for `hostnames`.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    vehicle_root = make_ca("Fleetwire Test Vehicle Root CA", path_length=1)
    vehicle_ca = make_ca(VEHICLE_ISSUER_CN, parent=vehicle_root, path_length=0)
    server_ca = make_ca("Fleetwire Test Server CA", path_length=0)
    server = make_server_cert(server_ca, hostnames)

    paths = FleetPki(
        directory=out,
        vehicle_root_cert=out / "vehicle-root-ca.pem",
        vehicle_ca_cert=out / "vehicle-ca.pem",
        vehicle_ca_key=out / "vehicle-ca.key",
        ca_file=out / "client-ca-bundle.pem",
        server_ca_cert=out / "server-ca.pem",
        server_cert=out / "server.pem",
        server_key=out / "server.key",
    )
    write_pem(paths.vehicle_root_cert, vehicle_root.cert_pem)
    write_bundle(vehicle_ca, paths.vehicle_ca_cert, paths.vehicle_ca_key)
    write_pem(paths.ca_file, vehicle_ca.cert_pem + vehicle_root.cert_pem)
    write_pem(paths.server_ca_cert, server_ca.cert_pem)
    write_bundle(server, paths.server_cert, paths.server_key)
    return paths
