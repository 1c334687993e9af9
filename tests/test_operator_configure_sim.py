"""The vehicle reconciler against the Fleet API simulator over HTTP, its settings and pacing,
and the Kubernetes stores of its records (split from test_operator_configure.py)."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from fleetwire.operator.reconcilers.vehicle_pass import PassResult
from fleetwire.operator.environment import VehicleSettings as Settings
from fleetwire.operator.reconcilers.vehicles import VehicleReconciler
from fleetwire.operator.clients.fleetapi import FleetApiClient
from fleetwire.operator.clients.fleetapi_types import Tokens
from fleetwire.operator.stores.records import MemoryRecordStore
from fleetwire.operator.stores.tokens import MemoryTokenStore
from fleetwire.operator.policies.vehicles import (
    APPLIED, pushed,
)
from fleetwire.pki import make_ca, make_server_cert
from fleetwire.sim.fleetapi import FleetApiSimulator

from test_operator_configure import CA_A, CA_B, FAST, KEY, T0, fleet, reconciler, spec_for, vin

# --------------------------------------------------------------------------------------
# Against the Fleet API simulator, over HTTP
# --------------------------------------------------------------------------------------


async def test_against_the_simulator_with_skips_and_a_rotation() -> None:
    sim = FleetApiSimulator(public_key=KEY.public_key(), sync_delay=0.5, max_streaming=0)
    vins = [vin(i) for i in range(30)]
    for v in vins:
        sim.add_vehicle(v)
    sim.add_vehicle(vin(30), key_paired=False)
    sim.add_vehicle(vin(31), firmware="2024.20.9")
    sim.add_vehicle(vin(32), slots_used=3)
    everyone = [*vins, vin(30), vin(31), vin(32)]
    await sim.start()
    try:
        tokens = sim.issue_user_tokens()
        client = FleetApiClient(client_id=sim.client_id, client_secret=sim.apps[sim.client_id].client_secret,
                                token_store=MemoryTokenStore(Tokens(tokens["access_token"], tokens["refresh_token"])),
                                base_url=sim.base_url("na"), auth_url=sim.auth_url)
        settings = Settings(poll_first=0.2, poll_most=2.0, errors_fast=0.5, push_batch=10, jitter=0.0)
        rec = VehicleReconciler(client, MemoryRecordStore("fleet"), signing_key=KEY, settings=settings)
        spec = spec_for(everyone)

        async def until_settled(ca: str) -> PassResult:
            for _ in range(200):
                result = await rec.reconcile(spec, ca)
                if result.counts["pending"] == result.counts["pushed"] == 0:
                    return result
                await asyncio.sleep(result.next_in)
            raise AssertionError(f"not settled: {result}")

        result = await until_settled(CA_A)
        assert result.counts == {"pending": 0, "pushed": 0, "applied": 30, "skipped": 3, "failing": 0}
        assert {rec.records[v].skip for v in (vin(30), vin(31), vin(32))} == {
            "missing_key", "unsupported_firmware", "max_configs"}
        assert all(sim.vehicle(v).config()["ca"] == CA_A for v in vins)  # type: ignore[index]
        result = await until_settled(CA_B)
        assert result.counts["applied"] == 30
        assert all(sim.vehicle(v).config()["ca"] == CA_B for v in vins)  # type: ignore[index]
        await client.close()
    finally:
        await sim.stop()


def test_settings_from_the_environment() -> None:
    settings = Settings.from_env({"FLEETWIRE_VEHICLES_PUSH_BATCH": "50", "FLEETWIRE_VEHICLES_POLL_FIRST": "0.5",
                                  "FLEETWIRE_VEHICLES_RATE": "0", "FLEETWIRE_VEHICLES_JITTER": "0", "OTHER": "x"})
    assert (settings.push_batch, settings.poll_first, settings.rate, settings.jitter) == (50, 0.5, 0.0, 0.0)
    with pytest.raises(ValueError, match="FLEETWIRE_VEHICLES_CONCURRENCY: expected a positive int"):
        Settings.from_env({"FLEETWIRE_VEHICLES_CONCURRENCY": "0"})
    with pytest.raises(ValueError, match="FLEETWIRE_VEHICLES_POLL_MOST"):
        Settings.from_env({"FLEETWIRE_VEHICLES_POLL_MOST": "soon"})


async def test_calls_are_paced_under_a_rate() -> None:
    clock, api, vins = fleet(30)
    rec = reconciler(api, clock, settings=Settings(**{**FAST.__dict__, "rate": 200.0, "status_batch": 1}))
    started = asyncio.get_running_loop().time()
    await rec.reconcile(spec_for(vins), CA_A)  # 30 fleet_status calls and one push
    assert asyncio.get_running_loop().time() - started >= 30 / 200.0


async def test_the_simulator_limits_each_vehicle_and_the_client_waits() -> None:
    sim = FleetApiSimulator(public_key=KEY.public_key(), vehicle_rate_limit=(1, 2.0), max_streaming=0)
    sim.add_vehicle(vin(0))
    await sim.start()
    try:
        tokens = sim.issue_user_tokens()
        async with FleetApiClient(client_id=sim.client_id, base_url=sim.base_url("na"), auth_url=sim.auth_url,
                                  token_store=MemoryTokenStore(Tokens(tokens["access_token"],
                                                                      tokens["refresh_token"]))) as client:
            for _ in range(2):
                await client.get_config(vin(0))  # the second waits out a 429's Retry-After
        assert sim.requests[("/api/1/vehicles/{vin}/fleet_telemetry_config", 429)] >= 1
    finally:
        await sim.stop()


async def _sim_reconciler(sim: FleetApiSimulator, *, signing_key: ec.EllipticCurvePrivateKey | None,
                          **client: Any) -> VehicleReconciler:
    tokens = sim.issue_user_tokens()
    api = FleetApiClient(client_id=sim.client_id, client_secret=sim.apps[sim.client_id].client_secret,
                         token_store=MemoryTokenStore(Tokens(tokens["access_token"], tokens["refresh_token"])),
                         base_url=sim.base_url("na"), auth_url=sim.auth_url, **client)
    settings = Settings(poll_first=0.1, poll_most=1.0, errors_fast=0.2, jitter=0.0)
    return VehicleReconciler(api, MemoryRecordStore("fleet"), signing_key=signing_key, settings=settings)


async def _settled(rec: VehicleReconciler, spec: Any, ca: str, done: Any) -> PassResult:
    for _ in range(100):
        result = await rec.reconcile(spec, ca)
        if done(result):
            return result
        await asyncio.sleep(result.next_in)
    raise AssertionError(f"not settled: {result}")


async def test_a_config_signed_by_the_wrong_key_is_a_config_manager_error() -> None:
    sim = FleetApiSimulator(public_key=KEY.public_key(), sync_delay=0.2, max_streaming=0)
    vins = [vin(i) for i in range(3)]
    for v in vins:
        sim.add_vehicle(v)
    await sim.start()
    try:
        rec = await _sim_reconciler(sim, signing_key=ec.generate_private_key(ec.SECP256R1()))
        result = await _settled(rec, spec_for(vins), CA_A, lambda r: r.counts["failing"] == 3)
        assert result.condition.message == "0 of 3 applied; 3 failing: config_manager_error"
        assert "InvalidSignature: unknown issuer" in rec.records[vins[0]].last_error
        await rec.api.close()  # type: ignore[attr-defined]
    finally:
        await sim.stop()


async def test_unsigned_configs_go_through_the_proxy_which_signs_them() -> None:
    proxy_ca = make_ca("Proxy CA")
    sim = FleetApiSimulator(public_key=KEY.public_key(), sync_delay=0.2, max_streaming=0,
                            proxy_tls=make_server_cert(proxy_ca, ["127.0.0.1"]), proxy_key=KEY)
    vins = [vin(i) for i in range(3)]
    for v in vins:
        sim.add_vehicle(v)
    await sim.start()
    try:
        proxy_ssl = ssl.create_default_context(cadata=proxy_ca.cert_pem.decode())
        rec = await _sim_reconciler(sim, signing_key=None, proxy_url=sim.proxy_url, proxy_ssl=proxy_ssl)
        await _settled(rec, spec_for(vins), CA_A, lambda r: r.counts["applied"] == 3)
        assert sim.requests[("/api/1/vehicles/fleet_telemetry_config", 200)] == 1  # one batch, through the proxy
        assert all(sim.vehicle(v).config()["ca"] == CA_A for v in vins)  # type: ignore[index]
        await rec.api.close()  # type: ignore[attr-defined]
    finally:
        await sim.stop()


# --------------------------------------------------------------------------------------
# The Kubernetes stores, against the API emulator
# --------------------------------------------------------------------------------------


async def test_records_in_configmaps_and_tokens_in_a_secret(kube_api: Any, kube: Any) -> None:
    from kube import CONFIGMAPS, SECRETS

    from fleetwire.operator.resource.builders import Owner
    from fleetwire.operator.clients.fleetapi_errors import TokenStoreError
    from fleetwire.operator.clients.kube import KubernetesApi, load_configuration
    from fleetwire.operator.stores.configmap_records import ConfigMapRecordStore
    from fleetwire.operator.stores.secret_tokens import SecretTokenStore

    owner_obj = await kube.create({"apiVersion": "fleetwire.io/v1alpha1", "kind": "FleetTelemetryConfig",
                                   "metadata": {"name": "fleet", "namespace": "default"},
                                   "spec": {"hostname": "t.example.com", "certificate": {"privateCA": {}}}})
    api = KubernetesApi(load_configuration())
    try:
        store = ConfigMapRecordStore(api, Owner.of(owner_obj), shard_size=500)
        records = {vin(i): pushed(None, vin(i), {"hostname": "h"}, CA_A, T0, skip=None) for i in range(1200)}
        await store.save(records, set(records))
        assert store.names == ["fleet-vehicles-0", "fleet-vehicles-1", "fleet-vehicles-2"]
        shard = await kube.get(CONFIGMAPS, "fleet-vehicles-2", "default")
        assert len(shard["data"]) == 200
        assert shard["metadata"]["ownerReferences"][0]["uid"] == owner_obj["metadata"]["uid"]
        changed = replace(records[vin(7)], state=APPLIED, reason="streaming config applied")
        records[vin(7)] = changed
        await store.save(records, {vin(7)})
        again = ConfigMapRecordStore(api, Owner.of(owner_obj), shard_size=500)
        assert (await again.load()) == records
        del records[vin(1199)], records[vin(1198)]
        for i in range(800, 1198):
            del records[vin(i)]
        await again.save(records, set())
        assert again.names == ["fleet-vehicles-0", "fleet-vehicles-1"]
        assert await kube.find(CONFIGMAPS, "fleet-vehicles-2", "default") is None
        assert len((await kube.get(CONFIGMAPS, "fleet-vehicles-1", "default"))["data"]) == 300

        tokens = SecretTokenStore(api, "default", "tesla-user")
        with pytest.raises(TokenStoreError, match="does not exist"):
            await tokens.load()
        await kube.create({"apiVersion": "v1", "kind": "Secret",
                           "metadata": {"name": "tesla-user", "namespace": "default"},
                           "data": {"refresh_token": "cjE=", "note": "a2VlcA=="}})
        first = await tokens.load()
        assert (first.refresh_token, first.access_token) == ("r1", "") and first.expired()  # refresh before use
        await tokens.save(Tokens("a2", "r2", T0))
        assert await tokens.load() == Tokens("a2", "r2", T0)
        assert (await kube.get(SECRETS, "tesla-user", "default"))["data"]["note"] == "a2VlcA=="  # other keys kept
        assert "r2" not in repr(tokens) and "r2" not in repr(await tokens.load())
    finally:
        await api.close()
