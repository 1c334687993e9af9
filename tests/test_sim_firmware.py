"""Simulated vehicles send only the fields their firmware has, as cars do.

A vehicle on 2025.20.1 configured with GpsAccuracyMeters (field 260, firmware 2026.32) takes
the config and streams the rest; the field never arrives. That is what the operator's
fields-too-new flag explains, so the simulator must behave the same way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from conftest import ServerFactory
from cryptography.hazmat.primitives.asymmetric import ec

from fleetwire.operator.clients.fleetapi import FleetApiClient
from fleetwire.operator.clients.fleetapi_types import Tokens
from fleetwire.operator.stores.tokens import MemoryTokenStore
from fleetwire.proto.ss256 import sign_telemetry_config
from fleetwire.pki import load_bundle, make_ca, make_server_cert, write_bundle
from fleetwire.sim.fleet_pki import FleetPki
from fleetwire.proto import vehicle_data_pb2
from fleetwire.sim.fleetapi import FleetApiSimulator

APP_KEY = ec.generate_private_key(ec.SECP256R1())
HOSTNAME = "telemetry.example.com"
OLD, NEW = "5YJ3E1EA7KF200001", "5YJ3E1EA7KF200002"


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_a_field_newer_than_the_firmware_never_arrives(running_server: ServerFactory,
                                                             fleet_pki: FleetPki) -> None:
    ca = make_ca("Example Telemetry CA")
    cert, key = write_bundle(make_server_cert(ca, [HOSTNAME]), fleet_pki.directory / "s.pem",
                             fleet_pki.directory / "s.key")
    server = await running_server({"tls": {"server_cert": str(cert), "server_key": str(key),
                                           "ca_file": str(fleet_pki.ca_file)}})
    sim = FleetApiSimulator(vehicle_ca=load_bundle(fleet_pki.vehicle_ca_cert, fleet_pki.vehicle_ca_key),
                            public_key=APP_KEY.public_key(), hosts={HOSTNAME: ("127.0.0.1", server.ports.vehicles)},
                            time_scale=0.05, connect_timeout=1.0, reconnect_delay=(0.05, 0.2))
    sim.add_vehicle(OLD, firmware="2025.20.1")
    sim.add_vehicle(NEW, firmware="2026.32.1 abc")
    await sim.start()
    try:
        issued = sim.issue_user_tokens()
        store = MemoryTokenStore(Tokens(issued["access_token"], issued["refresh_token"], time.time() + 3600))
        async with FleetApiClient(client_id=sim.client_id, client_secret=sim.apps[sim.client_id].client_secret,
                                  token_store=store, base_url=sim.base_url(), auth_url=sim.auth_url) as api:
            config = {"hostname": HOSTNAME, "port": 443, "ca": ca.cert_pem.decode(),
                      "fields": {"VehicleSpeed": {"interval_seconds": 1}, "GpsAccuracyMeters": {"interval_seconds": 1}}}
            result = await api.push_config_jws([OLD, NEW], sign_telemetry_config(APP_KEY, config))
            assert result.skipped == {}  # the config is taken: only the field is missing
        await eventually(lambda: sim.vehicle(OLD).stats.acked >= 5 and sim.vehicle(NEW).stats.acked >= 5,
                         "both vehicles streaming")

        def names(vin: str) -> set[str]:
            return {vehicle_data_pb2.Field.Name(d.key) for r in server.recorder.of_type("V") if r.vin == vin
                    for d in r.message.data}

        assert names(OLD) == {"VehicleSpeed"}
        assert names(NEW) == {"VehicleSpeed", "GpsAccuracyMeters"}
    finally:
        await sim.stop()
