"""Simulated vehicles configured through the Fleet API simulator, streaming to the real server.

A config push is the only thing that tells a vehicle where to connect and what to trust:
with the right `ca` the vehicles stream into a real `TelemetryServer`; with a wrong one
they report `cloud_manager_error` and send nothing, and they recover once the right `ca`
is pushed again. The config's hostname is a real-looking name mapped to loopback, so the
vehicles check the certificate's SAN against it as cars do.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import uvloop
from conftest import RunningServer, ServerFactory, free_port
from cryptography.hazmat.primitives.asymmetric import ec
from fleetwire.operator.clients.fleetapi import FleetApiClient
from fleetwire.operator.clients.fleetapi_types import Tokens
from fleetwire.operator.stores.tokens import MemoryTokenStore
from fleetwire.proto.ss256 import sign_telemetry_config
from fleetwire.pki import Bundle, load_bundle, make_ca, make_server_cert, write_bundle
from fleetwire.sim.fleet_pki import FleetPki
from fleetwire.proto import vehicle_data_pb2
from fleetwire.sim.fleetapi import BLACKHOLE, FleetApiSimulator

ASYNCIO_LOOP_FACTORY = uvloop.new_event_loop  # the loop `fleetwire serve` and `fleet-api-sim` run on

APP_KEY = ec.generate_private_key(ec.SECP256R1())
HOSTNAME = "telemetry.example.com"
VINS = ["5YJ3E1EA7KF100001", "5YJ3E1EA7KF100002", "5YJ3E1EA7KF100003"]
FIELDS = {"VehicleSpeed": {"interval_seconds": 1}, "Soc": {"interval_seconds": 2}, "Gear": {"interval_seconds": 1}}


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def server_tls(pki: FleetPki, ca: Bundle, *, cn_only: bool = False, name: str = "server") -> dict[str, Any]:
    """A `tls` section for a server whose certificate names HOSTNAME, issued by `ca`."""
    leaf = make_server_cert(ca, [HOSTNAME], cn_only=cn_only)
    cert, key = write_bundle(leaf, pki.directory / f"{name}.pem", pki.directory / f"{name}.key")
    return {"tls": {"server_cert": str(cert), "server_key": str(key), "ca_file": str(pki.ca_file)}}


@pytest.fixture
def server_ca() -> Bundle:
    return make_ca("Example Telemetry CA")


@pytest_asyncio.fixture
async def server(running_server: ServerFactory, fleet_pki: FleetPki, server_ca: Bundle) -> RunningServer:
    return await running_server(server_tls(fleet_pki, server_ca))


@pytest_asyncio.fixture
async def sim(server: RunningServer, fleet_pki: FleetPki) -> AsyncIterator[FleetApiSimulator]:
    simulator = FleetApiSimulator(
        vehicle_ca=load_bundle(fleet_pki.vehicle_ca_cert, fleet_pki.vehicle_ca_key),
        public_key=APP_KEY.public_key(),
        hosts={HOSTNAME: ("127.0.0.1", server.ports.vehicles)},
        time_scale=0.05, connect_timeout=1.0, reconnect_delay=(0.05, 0.2),
    )
    for vin in VINS:
        simulator.add_vehicle(vin)
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest_asyncio.fixture
async def api(sim: FleetApiSimulator) -> AsyncIterator[FleetApiClient]:
    issued = sim.issue_user_tokens()
    store = MemoryTokenStore(Tokens(issued["access_token"], issued["refresh_token"], time.time() + 3600))
    async with FleetApiClient(client_id=sim.client_id, client_secret=sim.apps[sim.client_id].client_secret,
                              token_store=store, base_url=sim.base_url(), auth_url=sim.auth_url) as client:
        yield client


def vehicle_config(ca: Bundle | str, port: int = 443, **changes: Any) -> dict[str, Any]:
    pem = ca if isinstance(ca, str) else ca.cert_pem.decode()
    return {"hostname": HOSTNAME, "port": port, "ca": pem, "fields": FIELDS, "alert_types": ["service"], **changes}


async def push(api: FleetApiClient, config: dict[str, Any], vins: list[str] = VINS) -> None:
    result = await api.push_config_jws(vins, sign_telemetry_config(APP_KEY, config))
    assert (result.updated_vehicles, result.skipped) == (len(vins), {})


def streamed(server: RunningServer, vin: str) -> list[Any]:
    return [r for r in server.recorder.of_type("V") if r.vin == vin]


async def test_vehicles_stream_after_a_push_with_the_right_ca(
    server: RunningServer, sim: FleetApiSimulator, api: FleetApiClient, server_ca: Bundle
) -> None:
    await push(api, vehicle_config(server_ca))
    for vin in VINS:
        await eventually(lambda vin=vin: sim.vehicle(vin).stats.acked >= 5, what=f"{vin} to be acked")
        assert sim.vehicle(vin).connected
    assert await api.telemetry_errors() == [] and sim.errors == []
    for vin in VINS:
        records = streamed(server, vin)
        assert len(records) >= 5
        names = {vehicle_data_pb2.Field.Name(d.key) for r in records for d in r.message.data}
        assert names == set(FIELDS)  # Soc (every 2 intervals) arrives too, in fewer records
        soc = sum(1 for r in records for d in r.message.data if vehicle_data_pb2.Field.Name(d.key) == "Soc")
        assert soc < len(records)
    stats = sim.vehicle(VINS[0]).stats
    assert stats.errors == 0 and stats.acked <= stats.sent


async def test_a_wrong_ca_is_a_cloud_manager_error_and_nothing_streams_until_it_is_fixed(
    server: RunningServer, sim: FleetApiSimulator, api: FleetApiClient, server_ca: Bundle
) -> None:
    await push(api, vehicle_config(make_ca("Some Other CA")))
    await eventually(lambda: {e["vin"] for e in sim.errors} == set(VINS), what="an error from every vehicle")
    await asyncio.sleep(0.5)  # several retries
    errors = await api.telemetry_errors()
    assert {(e.error_name, e.error) for e in errors} == {
        ("cloud_manager_error", "x509: certificate signed by unknown authority")}
    assert {e.hostname for e in errors} == {HOSTNAME} and {e.port for e in errors} == {443}
    assert server.recorder.of_type("V") == []
    for vin in VINS:
        vehicle = sim.vehicle(vin)
        assert not vehicle.connected and vehicle.stats.sent == 0 and vehicle.connects == 0
        assert (await api.get_config(vin)).synced  # the API says all is well

    await push(api, vehicle_config(server_ca))  # the fix: the right ca, pushed again
    for vin in VINS:
        await eventually(lambda vin=vin: sim.vehicle(vin).stats.acked >= 3, what=f"{vin} to recover")
        assert streamed(server, vin)


async def test_a_new_ca_makes_connected_vehicles_reconnect(
    server: RunningServer, sim: FleetApiSimulator, api: FleetApiClient, server_ca: Bundle
) -> None:
    vin = VINS[0]
    await push(api, vehicle_config(server_ca), [vin])
    await eventually(lambda: sim.vehicle(vin).stats.acked >= 2, what="streaming")
    assert sim.vehicle(vin).connects == 1

    # A rotation pushed ahead of time: a bundle with the next CA too; still trusted, new connection.
    bundle = server_ca.cert_pem.decode() + make_ca("Next Telemetry CA").cert_pem.decode()
    await push(api, vehicle_config(bundle), [vin])
    await eventually(lambda: sim.vehicle(vin).connects == 2 and sim.vehicle(vin).connected, what="a reconnect")
    acked = sim.vehicle(vin).stats.acked
    await eventually(lambda: sim.vehicle(vin).stats.acked > acked + 2, what="streaming on the new connection")

    # A ca that no longer holds the server's issuer: the connection is dropped and refused.
    await push(api, vehicle_config(make_ca("Unrelated CA")), [vin])
    await eventually(lambda: not sim.vehicle(vin).connected and bool(sim.vehicle(vin).errors), what="a refusal")
    assert sim.vehicle(vin).errors[0]["error"] == "x509: certificate signed by unknown authority"

    assert await api.delete_config(vin) == 1  # deleting stops the vehicle for good
    await asyncio.sleep(0.3)
    sent = sim.vehicle(vin).stats.sent
    await asyncio.sleep(0.3)
    assert sim.vehicle(vin).stats.sent == sent and not sim.vehicle(vin).connected


async def test_cn_only_certificate_wrong_name_blackhole_and_refused_port(
    running_server: ServerFactory, fleet_pki: FleetPki, server_ca: Bundle, server: RunningServer,
    sim: FleetApiSimulator, api: FleetApiClient,
) -> None:
    legacy = await running_server(server_tls(fleet_pki, server_ca, cn_only=True, name="cn-only"))
    sim.set_host(f"{HOSTNAME}:8443", ("127.0.0.1", legacy.ports.vehicles))
    sim.set_host(f"{HOSTNAME}:9443", BLACKHOLE)
    sim.connect_timeout = 0.2
    closed = free_port()  # nobody listens there
    sim.set_host(f"{HOSTNAME}:7443", ("127.0.0.1", closed))
    await push(api, vehicle_config(server_ca, port=8443), [VINS[0]])
    await push(api, vehicle_config(server_ca, port=9443), [VINS[1]])
    await push(api, vehicle_config(server_ca, port=7443), [VINS[2]])
    other = "5YJ3E1EA7KF100004"
    sim.add_vehicle(other)
    sim.set_host("other.example.com", ("127.0.0.1", server.ports.vehicles))
    await push(api, vehicle_config(server_ca, hostname="other.example.com"), [other])  # SAN names HOSTNAME only
    await eventually(lambda: all(sim.vehicle(v).errors for v in [*VINS, other]), what="an error per vehicle")
    by_vin = {e.vin: e.error for e in await api.telemetry_errors()}
    assert by_vin[VINS[0]] == "x509: certificate relies on legacy Common Name field, use SANs instead"
    assert by_vin[VINS[1]] == f"dial tcp {HOSTNAME}:9443: i/o timeout"
    assert by_vin[VINS[2]] == f"dial tcp 127.0.0.1:{closed}: connect: connection refused"
    assert legacy.recorder.records == []
    assert by_vin[other] == f"x509: certificate is valid for {HOSTNAME}, not other.example.com"
    assert server.recorder.records == []


async def test_a_config_with_a_string_port_is_refused_by_the_vehicle(
    sim: FleetApiSimulator, api: FleetApiClient, server_ca: Bundle
) -> None:
    await push(api, vehicle_config(server_ca, port="443"), [VINS[0]])  # type: ignore[arg-type]
    errors = await api.telemetry_errors()
    assert [e.error_name for e in errors] == ["config_manager_error"]
    assert "cannot unmarshal str" in errors[0].error
    await asyncio.sleep(0.2)
    assert not sim.vehicle(VINS[0]).connected and sim.vehicle(VINS[0]).stats.sent == 0


async def test_ten_thousand_vehicles_fit_and_streaming_is_capped() -> None:
    """Capacity: 10,000 vehicles configured through one push, a few of them streaming."""
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    sim = FleetApiSimulator(public_key=APP_KEY.public_key(), max_streaming=5,
                            hosts={HOSTNAME: BLACKHOLE}, connect_timeout=5.0)
    vins = [f"5YJ3SIM{i:010d}" for i in range(10_000)]
    for vin in vins:
        sim.add_vehicle(vin)
    await sim.start()
    try:
        issued = sim.issue_user_tokens()
        store = MemoryTokenStore(Tokens(issued["access_token"], issued["refresh_token"], time.time() + 3600))
        async with FleetApiClient(client_id=sim.client_id, token_store=store, base_url=sim.base_url(),
                                  auth_url=sim.auth_url) as client:
            started = time.perf_counter()
            result = await client.push_config_jws(vins, sign_telemetry_config(APP_KEY, vehicle_config(make_ca("x"))))
            push_seconds = time.perf_counter() - started
        assert result.updated_vehicles == 10_000
        assert len(sim._streamers) == 5 and sim.unsimulated == 9_995
        after = tracemalloc.take_snapshot()
        used = sum(s.size_diff for s in after.compare_to(before, "filename"))
        per_vehicle = used / 10_000
        print(f"10,000 configured vehicles: {used / 1e6:.1f} MB traced ({per_vehicle:.0f} B each); "
              f"push of 10,000 VINs took {push_seconds:.2f} s")
        assert per_vehicle < 2_000
    finally:
        tracemalloc.stop()
        await sim.stop()



async def test_the_fleet_api_sim_command(tmp_path: Path) -> None:
    """`fleetwire fleet-api-sim` serves the API and hands over working credentials (mode 0600)."""
    credentials = tmp_path / "credentials.json"
    command = [str(Path(sys.executable).parent / "fleetwire"), "fleet-api-sim", "--vehicles", "2",
               "--sync-delay", "0", "--credentials-out", str(credentials)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)  # type: ignore[union-attr]
        urls = json.loads(line)
        assert stat.S_IMODE(os.stat(credentials).st_mode) == 0o600
        data = json.loads(credentials.read_text())
        assert data["base_urls"] == urls["base_urls"] and len(data["vins"]) == 2
        store = MemoryTokenStore(Tokens(data["access_token"], data["refresh_token"], data["expires_at"]))
        async with FleetApiClient(client_id=data["client_id"], client_secret=data["client_secret"], token_store=store,
                                  base_url=data["base_urls"]["eu"], auth_url=data["auth_url"]) as client:
            status = await client.fleet_status(data["vins"])  # 421 from eu, answered by na
            assert status.key_paired_vins == data["vins"] and client.base_url == data["base_urls"]["na"]
            assert await client.telemetry_errors() == []
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = await asyncio.to_thread(proc.communicate, timeout=20)
    assert proc.returncode == 0, err
