"""The vehicles story: the operator configures a fleet and re-pushes the `ca` when the chain rotates.

Everything real but Tesla's cloud and the cluster: the operator under kopf against the
Kubernetes API emulator, pebble issuing the certificate (real HTTP-01), the Fleet API
simulator whose vehicles connect with the `ca` they were pushed, and a real
`TelemetryServer` serving the certificate from the operator's TLS Secret (its files
rewritten when the Secret changes, as the kubelet does for a mounted Secret, and
hot-reloaded by the server). The simulator maps the resource's hostname to the server's
loopback port.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures.tools import require
from conftest import PEBBLE, KopfRunnerFactory, LocalDns, Pebble, RunningServer, ServerFactory
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from kube import CONFIGMAPS, FTC, SECRETS, KubeApi, KubeClient, condition

from fleetwire.demo.secret_files import SecretFiles
from fleetwire.operator.clients.fleetapi import FleetApiClient
from fleetwire.operator.clients.kube import KubernetesApi, load_configuration
from fleetwire.operator.stores.secret_tokens import SecretTokenStore
from fleetwire.operator.commands.vehicles import format_table, read_vehicles
from fleetwire.operator.policies.vehicles import APPLIED, VehicleRecord, ca_fingerprint
from fleetwire.pki import load_bundle
from fleetwire.sim.fleet_pki import FleetPki
from fleetwire.sim.fleetapi import FleetApiSimulator

OPERATOR = "fleetwire.operator.handlers.resource"
NS = "default"
HOST = "telemetry.fleetwire.test"
APP_KEY = ec.generate_private_key(ec.SECP256R1())
FIELDS = {"VehicleSpeed": {"interval_seconds": 1}, "Soc": {"interval_seconds": 2}}
FAST = {  # the operator's vehicle cadences, shortened so the story takes seconds
    "FLEETWIRE_VEHICLES_POLL_FIRST": "0.3", "FLEETWIRE_VEHICLES_POLL_MOST": "2", "FLEETWIRE_VEHICLES_MEMBER_WAIT": "8",
    "FLEETWIRE_VEHICLES_ERRORS_FAST": "0.5", "FLEETWIRE_VEHICLES_ERROR_QUIET": "2.5",
    "FLEETWIRE_VEHICLES_RETRY_AFTER_FAILURE": "1", "FLEETWIRE_VEHICLES_RECHECK_EVERY": "60",
    "FLEETWIRE_VEHICLES_JITTER": "0", "FLEETWIRE_VEHICLES_CA_CHECK_SECONDS": "1",
}


def report(line: str) -> None:
    """Timings on the real stdout (kopf's runner swaps sys.stdout while an operator runs)."""
    print(line, file=sys.__stdout__, flush=True)


def vin(i: int) -> str:
    return f"5YJ3E7EB0NF{i:06d}"


def b64(value: str | bytes) -> str:
    return base64.b64encode(value if isinstance(value, bytes) else value.encode()).decode()


def secret(name: str, **data: str | bytes) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS},
            "data": {key.replace("_dash_", "-"): b64(value) for key, value in data.items()}}


async def fleet_api_secrets(kube: KubeClient, sim: FleetApiSimulator) -> dict[str, Any]:
    """Partner credentials, the user's refresh token and the app's key, as a user creates them;
    the `fleetApi` section that names them."""
    tokens = sim.issue_user_tokens()
    key_pem = APP_KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    await kube.create(secret("tesla-partner", client_id=sim.client_id,
                             client_secret=sim.apps[sim.client_id].client_secret, auth_url=sim.auth_url))
    await kube.create(secret("tesla-user", refresh_token=tokens["refresh_token"]))
    await kube.create(secret("tesla-app-key", **{"private-key.pem": key_pem}))
    return {"baseUrl": sim.base_url("na"), "partnerCredentialsSecretRef": {"name": "tesla-partner"},
            "userTokenSecretRef": {"name": "tesla-user"}, "signingKeySecretRef": {"name": "tesla-app-key"}}


def ftc(name: str, certificate: dict[str, Any], vins: list[str], fleet_api: dict[str, Any],
        fields: dict[str, Any] = FIELDS) -> dict[str, Any]:
    return {"apiVersion": FTC.api_version, "kind": FTC.kind, "metadata": {"name": name, "namespace": NS},
            "spec": {"hostname": HOST, "certificate": certificate, "server": {"records": {"V": ["logger"]}},
                     "vehicles": vins, "fields": fields, "fleetApi": fleet_api}}


def vehicles_status(obj: dict[str, Any]) -> dict[str, Any]:
    return (obj.get("status") or {}).get("vehicles") or {}


async def table(kube_api: KubeApi, name: str) -> dict[str, VehicleRecord]:
    """The per-vehicle records as `fleetwire vehicles` reads them (the kubernetes client)."""
    records, _status = await asyncio.to_thread(read_vehicles, name, NS)
    return {r.vin: r for r in records}


async def eventually(check: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(every)


class MountedServer:
    """The server as its pod runs it: the TLS Secret's files in a directory (`SecretFiles`,
    rewritten whenever the Secret changes, as a kubelet does), reloaded by the server within 0.2 s."""

    def __init__(self, kube: KubeClient, secret_name: str, directory: Path) -> None:
        self.files = SecretFiles(lambda: kube.find(SECRETS, secret_name, NS), directory)
        self.server: RunningServer | None = None

    async def start(self, running_server: ServerFactory, fleet_pki: FleetPki, timeout: float) -> RunningServer:
        await eventually(self.files.sync, timeout, "the TLS Secret")
        self.server = await running_server({"tls": {"server_cert": str(self.files.cert),
                                                    "server_key": str(self.files.key),
                                                    "ca_file": str(fleet_pki.ca_file),
                                                    "reload_interval_seconds": 0.2}})
        self.files.follow()
        return self.server

    async def serving(self, ca_pem: str) -> bool:
        """A handshake as a vehicle trusting only `ca_pem` makes it: the server serves that chain."""
        assert self.server is not None
        context = ssl.create_default_context(cadata=ca_pem)
        context.load_cert_chain(*self.server.vehicle_cert("5YJ3PROBE00000000"))
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", self.server.ports.vehicles, ssl=context,
                                                           server_hostname=HOST)
        except ssl.SSLCertVerificationError:
            return False
        writer.close()
        return True

    async def stop(self) -> None:
        await self.files.stop()


# ======================================================================================
# Private CA: the kopf wiring, the records, the CLI, a rotation by replacing the CA
# ======================================================================================


async def test_private_ca_fleet_is_configured_and_follows_a_replaced_ca(
    kopf_runner: KopfRunnerFactory, kube: KubeClient, kube_api: KubeApi, monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in {**FAST, "FLEETWIRE_RECONCILE_SECONDS": "1"}.items():
        monkeypatch.setenv(key, value)
    sim = FleetApiSimulator(public_key=APP_KEY.public_key(), sync_delay=0.3, max_streaming=0)
    vins = [vin(i) for i in range(12)]
    sim.add_vehicle(vins[0], firmware="2026.32.1")  # the only one new enough for GpsAccuracyMeters
    for v in vins[1:10]:
        sim.add_vehicle(v)
    sim.add_vehicle(vins[10], key_paired=False)
    sim.add_vehicle(vins[11], firmware="2024.14.3")
    await sim.start()
    try:
        fleet_api = await fleet_api_secrets(kube, sim)
        first_refresh = base64.b64decode((await kube.get(SECRETS, "tesla-user", NS))["data"]["refresh_token"]).decode()
        operator = kopf_runner(OPERATOR)
        await kube.create(ftc("fleet", {"privateCA": {}}, vins, fleet_api,
                              {**FIELDS, "GpsAccuracyMeters": {"interval_seconds": 5}}))
        done = await kube.wait_for(FTC, "fleet", NS, lambda o: vehicles_status(o).get("applied") == 10
                                   and vehicles_status(o).get("pushed") == 0, timeout=30, what="10 applied")
        found = condition(done, "VehiclesConfigured")
        assert found is not None and (found["status"], found["reason"]) == ("True", "VehiclesSkipped")
        assert found["message"] == ("10 of 12 applied; 2 skipped: missing_key (1), unsupported_firmware (1); "
                                    "9 on firmware too old to send GpsAccuracyMeters")
        # Firmware 2025.20.1 (fleet_status) never sends field 260: said per vehicle and counted.
        assert vehicles_status(done)["fieldsTooNew"] == 9
        tls = await kube.get(SECRETS, "fleet-tls", NS)
        ca = base64.b64decode(tls["data"]["ca.crt"]).decode()
        assert vehicles_status(done)["caFingerprint"] == ca_fingerprint(ca)
        assert vehicles_status(done)["records"] == ["fleet-vehicles-0"]
        shard = await kube.get(CONFIGMAPS, "fleet-vehicles-0", NS)
        assert sorted(shard["data"]) == sorted(vins)
        assert shard["metadata"]["ownerReferences"][0]["uid"] == done["metadata"]["uid"]
        assert all(sim.vehicle(v).config()["ca"] == ca for v in vins[:10])  # type: ignore[index]
        # The user's refresh token was used once and the new pair written back: the stored refresh
        # token is the one that works now (the first one is spent).
        user = await kube.get(SECRETS, "tesla-user", NS)
        stored = {key: base64.b64decode(value).decode() for key, value in user["data"].items()}
        assert stored["refresh_token"] != first_refresh and float(stored["expires_at"]) > time.time()
        # Another client sharing the Secret (as a second operator replica would) renews through it too.
        sim.expire_access_tokens()
        store_api = KubernetesApi(load_configuration())
        async with FleetApiClient(client_id=sim.client_id, base_url=sim.base_url("na"), auth_url=sim.auth_url,
                                  token_store=SecretTokenStore(store_api, NS, "tesla-user")) as client:
            assert (await client.get_config(vins[0])).synced
        await store_api.close()

        # Replacing the private CA is a new chain the vehicles' ca refuses: it is staged, every vehicle
        # gets a ca accepting both chains, and once they all hold it the new certificate is promoted.
        await kube.delete(SECRETS, "fleet-ca", NS)

        def promoted(o: dict[str, Any]) -> bool:
            found = condition(o, "CertificateRotating")
            return found is not None and found["status"] == "False" and found["reason"] == "VehiclesReady"

        rotated = await kube.wait_for(FTC, "fleet", NS, promoted, timeout=30, what="promotion")
        new_ca = base64.b64decode((await kube.get(SECRETS, "fleet-tls", NS))["data"]["ca.crt"]).decode()
        assert new_ca != ca
        for v in vins[:10]:
            held_ca = sim.vehicle(v).config()["ca"]  # type: ignore[index]
            assert ca in held_ca and new_ca in held_ca  # the old root leaves at a later push (the exp lease)
        await kube.wait_for(FTC, "fleet", NS, lambda o: vehicles_status(o).get("caFingerprint") == ca_fingerprint(
            new_ca) and vehicles_status(o).get("applied") == 10, timeout=15, what="applied with the new ca")
        reasons = [e.get("reason") for e in await kube.events(NS, "fleet")]
        assert {"CertificateStaged", "VehiclesRepushed", "CertificatePromoted"} <= set(reasons)
        assert "next" not in rotated["status"]["certificate"]

        # `fleetwire vehicles` prints the table from the ConfigMaps.
        result = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-P", "-m", "fleetwire.cli", "vehicles", "fleet", "-n", NS],
            capture_output=True, text=True, timeout=60, env={**os.environ, "KUBECONFIG": str(kube_api.kubeconfig)})
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0].split() == ["VIN", "STATE", "FIRMWARE", "REASON", "LAST", "PUSH", "(UTC)", "CA", "FIELDS",
                                    "TOO", "NEW", "LAST", "ERROR"]
        assert lines[1].split()[:4] == [vins[10], "skipped", "2025.20.1", "missing_key:"]
        assert lines[2].split()[:4] == [vins[11], "skipped", "2024.14.3", "unsupported_firmware:"]
        rows = {line.split()[0]: line.split() for line in lines[3:13]}
        assert rows[vins[0]][1:3] == ["applied", "2026.32.1"] and rows[vins[0]][-2:] == ["-", "-"]
        assert all(rows[v][2] == "2025.20.1" and rows[v][-2:] == ["GpsAccuracyMeters", "-"] for v in vins[1:10])
        assert "12 vehicles: 0 pending, 0 pushed, 10 applied, 2 skipped, 0 failing" in result.stdout
        assert "9 vehicles on firmware too old to send some configured fields (FIELDS TOO NEW)" in result.stdout
        assert "VehiclesConfigured=True (VehiclesSkipped)" in result.stdout

        # No token, secret or key in the operator's log, the events, the status or the records.
        secrets = [first_refresh, *stored.values(), sim.apps[sim.client_id].client_secret,
                   APP_KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()).decode().splitlines()[1]]
        seen = "\n".join(operator.logs) + json.dumps(await kube.events(NS, "fleet")) + json.dumps(
            await kube.get(FTC, "fleet", NS)) + json.dumps(await kube.get(CONFIGMAPS, "fleet-vehicles-0", NS))
        assert not [s for s in secrets if len(s) > 8 and s in seen]

        # A restarted operator reads the records back from the ConfigMaps: nothing is pushed again.
        before = vehicles_status(await kube.get(FTC, "fleet", NS))
        pushes = sim.requests.get(("/api/1/vehicles/fleet_telemetry_config_jws", 200), 0)
        await asyncio.to_thread(operator.stop)
        restarted = kopf_runner(OPERATOR)
        await restarted.logged("Fleet API at")
        await asyncio.sleep(2)
        assert vehicles_status(await kube.get(FTC, "fleet", NS)) == before
        assert sim.requests.get(("/api/1/vehicles/fleet_telemetry_config_jws", 200), 0) == pushes

        # A new field in the spec is a new desired config: pushed at once, without waiting for a timer.
        # Dropping the field that was too new clears every vehicle's flag.
        await kube.patch(FTC, "fleet", {"spec": {"fields": {**FIELDS, "Gear": {"interval_seconds": 5},
                                                            "GpsAccuracyMeters": None}}}, NS)
        await eventually(lambda: _async(all("Gear" in (sim.vehicle(v).config() or {}).get("fields", {})
                                            for v in vins[:10])), 15, "the new field on every vehicle")
        await kube.wait_for(FTC, "fleet", NS, lambda o: vehicles_status(o).get("applied") == 10
                            and vehicles_status(o).get("fieldsTooNew") == 0, timeout=15, what="no field too new")
    finally:
        await sim.stop()


# ======================================================================================
# The story: pebble, the real server, 50 vehicles, a chain rotation healed without a human
# ======================================================================================


@pytest.fixture
def acme(tmp_path: Path, local_dns: LocalDns) -> Iterator[Pebble]:
    """A pebble of its own (the story restarts it) whose leaves live 60 s: renewal falls due
    40 s after issuance, so the restart's new chain arrives within seconds, and leaves the
    vehicles 20 s to take a ca for both chains before the current certificate expires."""
    require(PEBBLE, "pebble")
    (tmp_path / "pebble").mkdir()
    server = Pebble(PEBBLE, tmp_path / "pebble", local_dns.port, certificate_validity=60)
    server.start()
    yield server
    server.stop()


@pytest.mark.slow
async def test_story_fifty_vehicles_stream_and_a_new_chain_is_pushed_without_a_human(
    kopf_runner: KopfRunnerFactory, kube: KubeClient, kube_api: KubeApi, monkeypatch: pytest.MonkeyPatch,
    running_server: ServerFactory, fleet_pki: FleetPki, acme: Pebble, tmp_path: Path,
) -> None:
    for key, value in {**FAST, "FLEETWIRE_RECONCILE_SECONDS": "1",
                       "FLEETWIRE_IMAGE": "ghcr.io/fleetwire/fleetwire:test",
                       "FLEETWIRE_ACME_CA_BUNDLE": acme.ca_file, "FLEETWIRE_ACME_ROOTS_URL": acme.management,
                       "FLEETWIRE_ACME_HTTP01_PORT": str(acme.http_port)}.items():
        monkeypatch.setenv(key, value)
    sim = FleetApiSimulator(vehicle_ca=load_bundle(fleet_pki.vehicle_ca_cert, fleet_pki.vehicle_ca_key),
                            public_key=APP_KEY.public_key(), sync_delay=4.0, time_scale=0.05,
                            connect_timeout=1.0, reconnect_delay=(0.1, 0.5))
    vins = [vin(i) for i in range(50)]
    unpaired, old_firmware, full = vins[45:48], vins[48], vins[49]
    healthy = vins[:45]
    for v in vins:
        sim.add_vehicle(v, key_paired=v not in unpaired, firmware="2024.20.1" if v == old_firmware else "2025.20.1",
                        slots_used=3 if v == full else 0)
    server_dir = tmp_path / "server-tls"
    server_dir.mkdir()
    mounted = MountedServer(kube, "fleet-tls", server_dir)
    await sim.start()
    try:
        fleet_api = await fleet_api_secrets(kube, sim)
        await kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fleet-vehicle-ca",
                                                                                "namespace": NS},
                           "data": {"ca.crt": Path(fleet_pki.ca_file).read_text()}})
        kopf_runner(OPERATOR)
        started = time.monotonic()
        await kube.create(ftc("fleet", {"acme": {"directoryUrl": acme.directory, "email": "ops@fleetwire.test"},
                                        "rotation": {"safetyMargin": "1s"}}, vins, fleet_api))
        server = await mounted.start(running_server, fleet_pki, timeout=40)
        issued = time.monotonic() - started
        sim.set_host(HOST, ("127.0.0.1", server.ports.vehicles))

        # 1. The healthy vehicles are applied and streaming; the others say why not.
        obj = await kube.wait_for(FTC, "fleet", NS, lambda o: vehicles_status(o).get("applied") == 45
                                  and vehicles_status(o).get("skipped") == 5, timeout=60, what="45 applied")
        applied = time.monotonic() - started
        found = condition(obj, "VehiclesConfigured")
        assert found is not None and found["message"] == (
            "45 of 50 applied; 5 skipped: missing_key (3), unsupported_firmware (1), max_configs (1)")
        records = await table(kube_api, "fleet")
        assert {v: records[v].skip for v in vins[45:]} == {
            **{v: "missing_key" for v in unpaired}, old_firmware: "unsupported_firmware", full: "max_configs"}
        assert "tesla.com/_ak" in records[unpaired[0]].reason and "slot" in records[full].reason
        first_ca = base64.b64decode((await kube.get(SECRETS, "fleet-tls", NS))["data"]["ca.crt"]).decode()
        await eventually(lambda: _all_streaming(sim, healthy), 30, "every healthy vehicle streaming")
        streaming = time.monotonic() - started
        acked_before = {v: sim.vehicle(v).stats.acked for v in healthy}
        assert all(sim.vehicle(v).stats.acked == 0 for v in vins[45:])
        assert {r.vin for r in server.recorder.of_type("V")} >= set(healthy)
        report(format_table(list(records.values()), obj["status"]).split("\n\n")[-1])

        # 2. Pebble restarts with a new root and intermediate; the next renewal brings the new chain,
        # which the vehicles' ca refuses: it is staged while the server keeps the current one.
        acme.restart()
        rotation_started = time.monotonic()
        tls_before = sim.tls.count

        async def staged_chain() -> str | None:
            found = await kube.find(SECRETS, "fleet-tls-next", NS)
            return base64.b64decode(found["data"]["ca.crt"]).decode() if found else None

        new_ca = await eventually(staged_chain, 80, "a certificate from the new chain, staged")
        renewed = time.monotonic() - rotation_started
        assert await mounted.serving(first_ca) and not await mounted.serving(new_ca)  # make before break
        # Vehicles that reconnect while it is staged (a sleep, a tunnel) meet the current chain.
        gap = healthy[:10]
        assert sim.reconnect(gap) == len(gap)

        # 3. Every vehicle is sent a ca accepting both; once all hold it, the new certificate is promoted.
        def promoted(o: dict[str, Any]) -> bool:
            found = condition(o, "CertificateRotating")
            return found is not None and found["status"] == "False"

        done = condition(await kube.wait_for(FTC, "fleet", NS, promoted, timeout=40, what="promotion"),
                         "CertificateRotating")
        assert done is not None and done["reason"] == "VehiclesReady", done  # not the deadline
        repushed = time.monotonic() - rotation_started
        await eventually(lambda: mounted.serving(new_ca), 10, "the server serving the new chain")
        assert sim.reconnect(gap) == len(gap)  # and after the switch they are accepted too
        healed = await kube.wait_for(FTC, "fleet", NS, lambda o: vehicles_status(o).get("caFingerprint")
                                     == ca_fingerprint(new_ca) and vehicles_status(o).get("applied") == 45
                                     and vehicles_status(o).get("failing") == 0, timeout=40, what="applied")
        assert all(new_ca in sim.vehicle(v).config()["ca"] and first_ca in sim.vehicle(v).config()["ca"]  # type: ignore[index]
                   for v in healthy)
        records = await table(kube_api, "fleet")
        assert all(records[v].state == APPLIED and not records[v].last_error for v in healthy)
        await eventually(lambda: _streaming_again(sim, acked_before), 30, "every healthy vehicle streaming again")
        recovered = time.monotonic() - rotation_started
        seen_errors = sim.tls.count - tls_before
        assert seen_errors == 0, sim.tls.failures  # no vehicle noticed
        assert all(sim.vehicle(v).stats.acked == 0 for v in vins[45:])
        reasons = [e.get("reason") for e in await kube.events(NS, "fleet")]
        assert {"CertificateStaged", "VehiclesRepushed", "CertificatePromoted"} <= set(reasons)
        assert _chain_fp(new_ca) != _chain_fp(first_ca)
        report(f"vehicles story: certificate after {issued:.1f} s, 45 applied after {applied:.1f} s, streaming "
               f"after {streaming:.1f} s; pebble restarted: new chain staged after {renewed:.1f} s, promoted after "
               f"{repushed:.1f} s with {seen_errors} TLS failures, all streaming again after "
               f"{recovered:.1f} s; {sum(sim.vehicle(v).stats.acked for v in healthy)} records acked; "
               f"{mounted.files.changes} certificate(s) served")
        report(format_table(list(records.values()), healed["status"]).split("\n\n")[-1])
    finally:
        await mounted.stop()
        await sim.stop()


async def _async(value: Any) -> Any:
    return value


async def _all_streaming(sim: FleetApiSimulator, vins: list[str]) -> bool:
    return all(sim.vehicle(v).stats.acked > 0 for v in vins)


async def _streaming_again(sim: FleetApiSimulator, before: dict[str, int]) -> bool:
    return all(sim.vehicle(v).stats.acked > before[v] + 5 and sim.vehicle(v).connected for v in before)


def _chain_fp(ca_pem: str) -> str:
    from fleetwire.pki import chain_fingerprint

    return chain_fingerprint(ca_pem.encode())



# ======================================================================================
# A rotation that waits for parked cars, promoted at once by the annotation
# ======================================================================================


async def test_a_staged_certificate_waits_for_parked_cars_and_the_annotation_promotes_it(
    kopf_runner: KopfRunnerFactory, kube: KubeClient, kube_api: KubeApi, monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in {**FAST, "FLEETWIRE_RECONCILE_SECONDS": "1"}.items():
        monkeypatch.setenv(key, value)
    delays = iter([0.3] * 6)  # the first configuration syncs at once; after that the cars are parked
    sim = FleetApiSimulator(public_key=APP_KEY.public_key(), sync_delay=lambda vin: next(delays, 3600.0),
                            max_streaming=0)
    vins = [vin(i) for i in range(6)]
    for v in vins:
        sim.add_vehicle(v)
    await sim.start()
    try:
        fleet_api = await fleet_api_secrets(kube, sim)
        kopf_runner(OPERATOR)
        await kube.create(ftc("parked", {"privateCA": {}}, vins, fleet_api))
        await kube.wait_for(FTC, "parked", NS, lambda o: vehicles_status(o).get("applied") == 6, timeout=30,
                            what="6 applied")
        served = (await kube.get(SECRETS, "parked-tls", NS))["data"]["tls.crt"]
        await kube.delete(SECRETS, "parked-ca", NS)  # a new CA: the vehicles' ca refuses its chain

        def waiting(o: dict[str, Any]) -> bool:
            found = condition(o, "CertificateRotating")
            return found is not None and found["status"] == "True" and found["message"].startswith(
                "0 of 6 vehicles hold the next ca; promoting by ")

        staged = await kube.wait_for(FTC, "parked", NS, waiting, timeout=30, what="staged, the cars parked")
        upcoming = staged["status"]["certificate"]["next"]
        assert set(upcoming) >= {"fingerprint", "notAfter", "stagedAt", "promoteBy"}
        assert vehicles_status(staged)["next"]["behindCount"] == 6
        assert (await kube.get(SECRETS, "parked-tls", NS))["data"]["tls.crt"] == served  # still served
        await kube.patch(FTC, "parked", {"metadata": {"annotations": {"fleetwire.io/promote-next": "now"}}}, NS)

        def promoted(o: dict[str, Any]) -> bool:
            found = condition(o, "CertificateRotating")
            return found is not None and (found["status"], found["reason"]) == ("False", "PromoteRequested")

        done = await kube.wait_for(FTC, "parked", NS, promoted, timeout=20, what="promoted on request")
        assert (await kube.get(SECRETS, "parked-tls", NS))["data"]["tls.crt"] != served
        assert "fleetwire.io/promote-next" not in (done["metadata"].get("annotations") or {})
        events = [e for e in await kube.events(NS, "parked") if e.get("reason") == "CertificatePromoted"]
        assert events and events[-1]["type"] == "Warning" and vins[0] in events[-1]["message"]  # named, cut off
    finally:
        await sim.stop()


async def test_a_rotation_with_no_certificate_to_keep_switches_at_once_and_names_the_vehicles_cut_off(
    kopf_runner: KopfRunnerFactory, kube: KubeClient, kube_api: KubeApi, monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in {**FAST, "FLEETWIRE_RECONCILE_SECONDS": "1"}.items():
        monkeypatch.setenv(key, value)
    sim = FleetApiSimulator(public_key=APP_KEY.public_key(), sync_delay=0.3, max_streaming=0)
    vins = [vin(i) for i in range(4)]
    for v in vins:
        sim.add_vehicle(v)
    await sim.start()
    try:
        fleet_api = await fleet_api_secrets(kube, sim)
        kopf_runner(OPERATOR)
        await kube.create(ftc("lost", {"privateCA": {}}, vins, fleet_api))
        await kube.wait_for(FTC, "lost", NS, lambda o: vehicles_status(o).get("applied") == 4, timeout=30,
                            what="4 applied")
        old_ca = base64.b64decode((await kube.get(SECRETS, "lost-tls", NS))["data"]["ca.crt"]).decode()
        # The CA and the served certificate are both gone: nothing valid to keep serving.
        await kube.delete(SECRETS, "lost-ca", NS)
        await kube.delete(SECRETS, "lost-tls", NS)

        async def cut_off() -> list[dict[str, Any]]:
            return [e for e in await kube.events(NS, "lost") if e.get("reason") == "VehiclesCutOff"]

        (event, *_) = await eventually(cut_off, 30, "the VehiclesCutOff event")
        assert event["type"] == "Warning" and all(v in event["message"] for v in vins)
        assert await kube.find(SECRETS, "lost-tls-next", NS) is None  # switched at once, never staged
        new_ca = base64.b64decode((await kube.get(SECRETS, "lost-tls", NS))["data"]["ca.crt"]).decode()
        assert new_ca != old_ca
        await eventually(lambda: _async(all(sim.vehicle(v).config()["ca"] == new_ca for v in vins)),  # type: ignore[index]
                         15, "the new ca on every vehicle")
    finally:
        await sim.stop()
