"""The vehicle reconciler: pre-flight, batched pushes, probes, errors, sharded records.

Most tests drive `VehicleReconciler` against `FakeFleetApi`, an in-memory Fleet API on a
manual clock (vehicles sync when the clock passes their sync time), so every call can be
counted; test_operator_configure_sim.py runs it against the Fleet API simulator over HTTP.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from fleetwire.operator.reconcilers.vehicle_pass import Inputs, NotReady, PassResult
from fleetwire.operator.environment import VehicleSettings as Settings
from fleetwire.operator.reconcilers.vehicles import VehicleReconciler
from fleetwire.operator.stores.records import (
    BUNDLES,
    MemoryRecordStore,
    decode_record,
    encode_record,
    shard_layout,
    shard_name,
)
from fleetwire.operator.clients.fleetapi_errors import FleetApiError, ServerError
from fleetwire.operator.clients.fleetapi_types import FleetStatus, PushResult, TelemetryError, VehicleConfigState, VehicleInfo
from fleetwire.proto.ss256 import public_point, verify_token
from fleetwire.operator.resource.spec_parse import parse_spec
from fleetwire.operator.policies.vehicles import (
    APPLIED, FAILING, PENDING, PUSHED, SKIPPED, VehicleRecord, ca_fingerprint, push_failed, pushed, with_error,
)
from fleetwire.pki import make_ca
from fleetwire.proto.catalog import FIELDS as FIELD_CATALOG

KEY = ec.generate_private_key(ec.SECP256R1())
CA_A = make_ca("Chain A").cert_pem.decode()
CA_B = make_ca("Chain B").cert_pem.decode()
T0 = 1_800_000_000.0
FAST = Settings(poll_first=1.0, poll_most=30.0, member_wait=20.0, errors_fast=1.0, errors_slow=60.0,
                error_quiet=5.0, retry_after_failure=5.0, recheck_every=100.0, drift_every=1000.0, jitter=0.0,
                firmware_every=300.0)


def vin(i: int) -> str:
    return f"5YJ3E1EA0KF{i:06d}"


def spec_for(vins: Sequence[str], **extra: Any) -> Any:
    return parse_spec({
        "hostname": "telemetry.example.com", "certificate": {"privateCA": {}}, "vehicles": list(vins),
        "fields": {"VehicleSpeed": {"interval_seconds": 10}},
        "fleetApi": {"baseUrl": "http://127.0.0.1:1", "partnerCredentialsSecretRef": {"name": "partner"},
                     "userTokenSecretRef": {"name": "user"}, "signingKeySecretRef": {"name": "key"}},
        **extra,
    })


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeVehicle:
    paired: bool = True
    firmware: str = "2025.20.1"
    full: bool = False  # another app holds the last slot
    held: dict[str, Any] | None = None
    pending: dict[str, Any] | None = None
    sync_at: float = 0.0
    refused: bool = False  # over the limit


@dataclass
class FakeFleetApi:
    """Fleet API semantics on a manual clock; records calls and the most calls in flight."""

    clock: Clock
    sync_delay: float = 10.0
    vehicles: dict[str, FakeVehicle] = field(default_factory=dict)
    errors: list[TelemetryError] = field(default_factory=list)
    calls: list[tuple[str, int]] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    fail_pushes: int = 0
    in_flight: int = 0
    most_in_flight: int = 0

    async def _enter(self, name: str, n: int = 1) -> None:
        self.calls.append((name, n))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0)  # let other calls start: the cap is what limits them
        self.in_flight -= 1

    def _sync(self, v: FakeVehicle) -> None:
        if v.pending is not None and self.clock.now >= v.sync_at:
            if v.full and v.held is None:
                v.refused = True
            else:
                v.held = v.pending
            v.pending = None

    async def fleet_status(self, vins: Sequence[str]) -> FleetStatus:
        await self._enter("fleet_status", len(vins))
        unknown = [v for v in vins if v not in self.vehicles]
        if unknown:
            raise FleetApiError(f"unknown vehicle(s): {unknown}", status=404)
        paired = [v for v in vins if self.vehicles[v].paired]
        return FleetStatus(paired, [v for v in vins if v not in paired],
                           {v: VehicleInfo(self.vehicles[v].firmware, True, "1.0", None) for v in vins})

    async def push_config_jws(self, vins: Sequence[str], token: str) -> PushResult:
        await self._enter("push", len(vins))
        self.tokens.append(token)
        if self.fail_pushes:
            self.fail_pushes -= 1
            raise ServerError("HTTP 503 after 5 attempts", status=503)
        claims = verify_token(token, public_point(KEY))
        config = {k: v for k, v in claims.items() if k not in ("iss", "aud")}
        skipped: dict[str, list[str]] = {"missing_key": [], "unsupported_firmware": []}
        for v in vins:
            vehicle = self.vehicles[v]
            if not vehicle.paired:
                skipped["missing_key"].append(v)
                continue
            vehicle.pending, vehicle.sync_at, vehicle.refused = config, self.clock.now + self.sync_delay, False
        return PushResult.from_response({"updated_vehicles": len(vins) - len(skipped["missing_key"]),
                                         "skipped_vehicles": skipped})

    async def push_config_unsigned(self, vins: Sequence[str], config: Mapping[str, Any]) -> PushResult:
        raise AssertionError("configs are signed in these tests")

    async def get_config(self, vin_: str) -> VehicleConfigState:
        await self._enter("get_config")
        v = self.vehicles[vin_]
        self._sync(v)
        if v.pending is not None:
            return VehicleConfigState(False, v.pending, False, v.paired)
        return VehicleConfigState(True, v.held, v.refused, v.paired)

    async def delete_config(self, vin_: str) -> int:
        await self._enter("delete_config")
        self.vehicles[vin_].held = None
        return 1

    async def telemetry_errors(self) -> list[TelemetryError]:
        await self._enter("telemetry_errors")
        return list(self.errors)

    def count(self, name: str) -> int:
        return sum(1 for call, _ in self.calls if call == name)

    def error(self, vin_: str, name: str, text: str, at: float) -> None:
        stamp = __import__("datetime").datetime.fromtimestamp(at, __import__("datetime").UTC).isoformat()
        self.errors.append(TelemetryError(vin_, name, text, stamp, "app", "tx", "telemetry.example.com", 443))


def fleet(n: int, **special: FakeVehicle) -> tuple[Clock, FakeFleetApi, list[str]]:
    clock = Clock()
    api = FakeFleetApi(clock)
    vins = [vin(i) for i in range(n)]
    for v in vins:
        api.vehicles[v] = special.get(v, FakeVehicle())
    return clock, api, vins


def reconciler(api: FakeFleetApi, clock: Clock, store: MemoryRecordStore | None = None,
               settings: Settings = FAST) -> VehicleReconciler:
    return VehicleReconciler(api, store or MemoryRecordStore("fleet"), signing_key=KEY, settings=settings,
                             clock=clock, name="default/fleet")


async def settle(rec: VehicleReconciler, clock: Clock, spec: Any, ca: str, *, until: float) -> PassResult:
    """Passes, moving the clock to each next due time, until `until` seconds passed."""
    end = clock.now + until
    result = await rec.reconcile(spec, ca)
    while clock.now < end:
        clock.now = min(end, clock.now + result.next_in)
        result = await rec.reconcile(spec, ca)
    return result


async def test_a_fleet_is_checked_pushed_in_batches_and_applied_with_one_signature() -> None:
    clock, api, vins = fleet(250, **{vin(3): FakeVehicle(paired=False), vin(4): FakeVehicle(firmware="2024.8.9")})
    rec = reconciler(api, clock)
    spec = spec_for(vins)
    first = await rec.reconcile(spec, CA_A)
    assert [n for name, n in api.calls if name == "fleet_status"] == [100, 100, 50]
    assert [n for name, n in api.calls if name == "push"] == [100, 100, 48]
    assert len(set(api.tokens)) == 1  # signed once for every batch
    assert first.pushed == {"new vehicle": 248}
    assert rec.records[vin(3)].skip == "missing_key" and rec.records[vin(4)].skip == "unsupported_firmware"
    assert api.count("get_config") == 0  # nobody syncs in no time

    result = await settle(rec, clock, spec, CA_A, until=30)
    assert result.counts == {"pending": 0, "pushed": 0, "applied": 248, "skipped": 2, "failing": 0}
    assert result.condition.status == "True" and result.condition.reason == "VehiclesSkipped"
    assert result.condition.message == ("248 of 250 applied; 2 skipped: missing_key (1), unsupported_firmware (1)")
    # Probes: 2 per batch polled until synced, then each other vehicle read once.
    assert api.count("get_config") <= 248 + 6 * 7
    assert result.status()["caFingerprint"] == ca_fingerprint(CA_A)
    assert result.status()["applied"] == 248 and result.status()["desired"] == 250


async def test_a_new_chain_is_pushed_to_every_vehicle_in_the_next_pass() -> None:
    clock, api, vins = fleet(120, **{vin(0): FakeVehicle(paired=False)})
    rec = reconciler(api, clock)
    spec = spec_for(vins)
    await settle(rec, clock, spec, CA_A, until=30)
    pushes = api.count("push")
    clock.now += 1
    result = await rec.reconcile(spec, CA_B)
    assert result.pushed == {"CA chain changed": 119}
    assert api.count("push") == pushes + 2
    assert rec.records[vin(1)].state == PUSHED and rec.records[vin(0)].state == SKIPPED
    assert result.condition.reason == "VehiclesSyncing"
    result = await settle(rec, clock, spec, CA_B, until=30)
    assert result.counts["applied"] == 119
    assert all(api.vehicles[v].held["ca"] == CA_B for v in vins[1:])  # type: ignore[index]


async def test_calls_in_flight_never_exceed_the_cap() -> None:
    clock, api, vins = fleet(1000)
    rec = reconciler(api, clock, settings=Settings(**{**FAST.__dict__, "concurrency": 3}))
    await settle(rec, clock, spec_for(vins), CA_A, until=30)
    assert api.most_in_flight == 3


async def test_a_failed_push_stays_pending_and_is_retried_after_the_back_off() -> None:
    clock, api, vins = fleet(10)
    api.fail_pushes = 1
    rec = reconciler(api, clock)
    result = await rec.reconcile(spec_for(vins), CA_A)
    assert result.counts["pending"] == 10 and result.condition.reason == "FleetApiError"
    assert "HTTP 503" in result.condition.message and "push failed" in rec.records[vin(0)].reason
    assert result.next_in == pytest.approx(FAST.retry_after_failure)
    await rec.reconcile(spec_for(vins), CA_A)
    assert api.count("push") == 1  # still backing off
    rec.wake()  # a new chain does not wait for the back-off
    result = await rec.reconcile(spec_for(vins), CA_B)
    assert api.count("push") == 2 and result.counts["pushed"] == 10


async def test_unknown_vins_are_isolated_by_halving_the_status_call() -> None:
    clock, api, vins = fleet(64)
    rec = reconciler(api, clock)
    stranger = "5YJ3E1EA0KF999999"
    await rec.reconcile(spec_for([*vins, stranger]), CA_A)
    assert rec.records[stranger].skip == "unknown_vehicle"
    assert sum(1 for r in rec.records.values() if r.state == PUSHED) == 64


async def test_max_configs_trap_and_vehicles_leaving_the_spec() -> None:
    clock, api, vins = fleet(5, **{vin(2): FakeVehicle(full=True)})
    rec = reconciler(api, clock)
    result = await settle(rec, clock, spec_for(vins), CA_A, until=30)
    assert rec.records[vin(2)].skip == "max_configs"  # "updated", then config null over the limit
    assert result.counts["applied"] == 4
    result = await rec.reconcile(spec_for(vins[:3]), CA_A)
    assert set(rec.records) == set(vins[:3]) and api.count("delete_config") == 2
    assert api.vehicles[vin(4)].held is None


async def test_tls_errors_mark_vehicles_until_the_repush_heals_them() -> None:
    clock, api, vins = fleet(3)
    rec = reconciler(api, clock)
    spec = spec_for(vins)
    await settle(rec, clock, spec, CA_A, until=30)
    # The server moved to chain B; vehicle 0 reconnects and fails; errors are read slowly when all is quiet.
    clock.now += FAST.errors_slow
    api.error(vin(0), "cloud_manager_error", "x509: certificate signed by unknown authority", clock.now - 1)
    result = await rec.reconcile(spec, CA_A)
    assert rec.records[vin(0)].state == FAILING and result.condition.reason == "VehiclesFailing"
    assert "1 failing: cloud_manager_error" in result.condition.message
    # Re-push; while the vehicle still runs chain A it keeps failing (after the push).
    clock.now += 1
    await rec.reconcile(spec, CA_B)
    clock.now += 2
    api.error(vin(0), "cloud_manager_error", "x509: certificate signed by unknown authority", clock.now)
    await rec.reconcile(spec, CA_B)
    assert rec.records[vin(0)].state == PUSHED
    assert rec.records[vin(0)].last_error.startswith("cloud_manager_error: x509")
    # Synced, and quiet for `error_quiet`: applied, error gone.
    result = await settle(rec, clock, spec, CA_B, until=30)
    assert rec.records[vin(0)].state == APPLIED and rec.records[vin(0)].last_error == ""
    assert result.condition.reason == "VehiclesApplied"


async def test_a_signature_error_stands_until_another_push() -> None:
    clock, api, vins = fleet(2)
    rec = reconciler(api, clock)
    spec = spec_for(vins)
    await settle(rec, clock, spec, CA_A, until=30)
    api.error(vin(1), "config_manager_error", "error loading config file: InvalidSignature: unknown issuer",
              clock.now - 5)  # reported when the vehicle loaded the config, after the push
    result = await settle(rec, clock, spec, CA_A, until=600)  # far beyond error_quiet
    assert rec.records[vin(1)].state == FAILING and "unknown issuer" in rec.records[vin(1)].reason
    assert result.counts["failing"] == 1


NEW_FIELDS = {"VehicleSpeed": {"interval_seconds": 10}, "GpsAccuracyMeters": {"interval_seconds": 10}}


async def test_fields_the_firmware_is_too_old_to_send_are_flagged_until_the_vehicle_updates() -> None:
    clock, api, vins = fleet(6, **{vin(0): FakeVehicle(firmware="2026.32.1 f00d"),
                                   vin(5): FakeVehicle(firmware="2024.8.9")})
    rec = reconciler(api, clock)
    spec = spec_for(vins, fields=NEW_FIELDS)
    result = await settle(rec, clock, spec, CA_A, until=30)
    assert {v: rec.records[v].firmware for v in vins[:2]} == {vin(0): "2026.32.1 f00d", vin(1): "2025.20.1"}
    assert rec.records[vin(0)].too_new == () and rec.records[vin(1)].too_new == (260,)
    assert result.counts["applied"] == 5 and result.status()["fieldsTooNew"] == 4  # not the skipped one
    assert result.condition.message == ("5 of 6 applied; 1 skipped: unsupported_firmware; "
                                         "4 on firmware too old to send GpsAccuracyMeters")
    assert api.count("fleet_status") == 1

    # The flag is a fact about the firmware: the vehicles are re-checked, and an update clears it.
    api.vehicles[vin(1)].firmware = "2026.32.4"
    result = await settle(rec, clock, spec, CA_A, until=FAST.recheck_every + 10)
    assert rec.records[vin(1)].too_new == (260,)  # asked once a day (here 300 s), not as often as a skip
    result = await settle(rec, clock, spec, CA_A, until=FAST.firmware_every)
    assert rec.records[vin(1)].too_new == () and rec.records[vin(1)].firmware == "2026.32.4"
    assert result.status()["fieldsTooNew"] == 3 and rec.records[vin(1)].state == APPLIED
    sizes = [n for name, n in api.calls if name == "fleet_status"]
    # One batched call for the four flagged vehicles, once in the window; the rest re-check the skipped one.
    assert sizes[0] == 6 and sizes.count(4) == 1 and set(sizes[1:]) == {1, 4}

    # A spec without the new field flags nobody, without asking the Fleet API again.
    calls = api.count("fleet_status")
    result = await rec.reconcile(spec_for(vins), CA_A)
    assert result.status()["fieldsTooNew"] == 0 and all(not r.too_new for r in rec.records.values())
    assert api.count("fleet_status") == calls
    assert "too old" not in result.condition.message


async def test_records_without_a_firmware_learn_it_once() -> None:
    clock, api, vins = fleet(3)
    store = MemoryRecordStore("fleet")
    rec = reconciler(api, clock, store)
    await settle(rec, clock, spec_for(vins), CA_A, until=30)
    for v in vins:  # records written before firmware was kept
        store.objects[shard_name("fleet", 0)][v] = encode_record(replace(rec.records[v], firmware=""))
    api.calls.clear()
    again = reconciler(api, clock, store)
    spec = spec_for(vins, fields=NEW_FIELDS)
    await again.reconcile(spec, CA_A)
    assert [n for name, n in api.calls if name == "fleet_status"] == [3]
    assert all(again.records[v].firmware == "2025.20.1" and again.records[v].too_new == (260,) for v in vins)
    result = await settle(again, clock, spec, CA_A, until=30)
    assert result.status()["fieldsTooNew"] == 3 and result.counts["applied"] == 3
    assert [n for name, n in api.calls if name == "fleet_status"] == [3]  # the re-check waits its turn


async def test_records_survive_a_restart_in_shards() -> None:
    clock, api, vins = fleet(2500)
    store = MemoryRecordStore("fleet", shard_size=1000)  # the default is 500
    rec = reconciler(api, clock, store)
    spec = spec_for(vins)
    await settle(rec, clock, spec, CA_A, until=30)
    assert sorted(store.objects) == [shard_name("fleet", BUNDLES)] + [shard_name("fleet", i) for i in range(3)]
    assert [len(store.objects[shard_name("fleet", i)]) for i in range(3)] == [1000, 1000, 500]
    writes = store.writes
    api.calls.clear()
    again = reconciler(api, clock, store)
    result = await again.reconcile(spec, CA_A)
    assert result.counts["applied"] == 2500 and api.count("push") == 0 and api.count("fleet_status") == 0
    assert again.records == rec.records
    assert store.writes == writes  # nothing changed, nothing written
    result = await again.reconcile(spec_for(vins[:900]), CA_A)
    assert sorted(store.objects) == [shard_name("fleet", BUNDLES), shard_name("fleet", 0)] and len(store.objects[shard_name("fleet", 0)]) == 900


async def test_ten_thousand_records_fit_the_object_limit() -> None:
    """The longest records: a push failure's reason and an error, both at their length limit."""
    longest = VehicleRecord("X", state=PENDING, reason=push_failed(VehicleRecord("X"), "x" * 400).reason,
                            last_error=with_error(VehicleRecord("X"), "cloud_manager_error", "e" * 400).last_error,
                            skip="max_configs", config_fp="f" * 16, ca_fp="c" * 16, exp=2_000_000_000,
                            pushed_at=T0 + 0.123456, applied_at=T0 + 0.654321,
                            firmware="2024.26.100.1 0123456789abcdef",
                            too_new=tuple(i.number for i in FIELD_CATALOG if i.min_firmware and i.min_firmware
                                          > (2024, 26)))
    assert len(longest.too_new) > 90  # the oldest firmware that takes a config, with every field configured
    store = MemoryRecordStore("fleet")
    records = {vin(i): replace(longest, vin=vin(i)) for i in range(10_000)}
    await store.save(records, set(records))
    assert len(store.objects) == 20
    for data in (d for name, d in store.objects.items() if name != shard_name("fleet", BUNDLES)):
        size = len(json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "data": data}).encode())
        assert size < 1024 * 1024 // 2, size
    again = MemoryRecordStore("fleet")
    again.objects = store.objects
    loaded = await again.load()
    assert loaded[vin(7)].reason == longest.reason and loaded[vin(7)].pushed_at == round(T0 + 0.123456, 3)
    skipped = pushed(None, vin(1), {"hostname": "h"}, CA_A, T0, skip="missing_key")
    assert "reason" not in encode_record(skipped) and decode_record(vin(1), encode_record(skipped)) == skipped
    assert decode_record(vin(1), "not json") is None
    assert shard_layout([]) == [[]]


async def test_run_reports_missing_inputs_and_wakes_for_a_new_chain() -> None:
    clock, api, vins = fleet(3)
    rec = reconciler(api, clock)
    spec = spec_for(vins)
    ca = {"pem": None}
    reports: list[PassResult] = []

    async def inputs() -> Inputs:
        if ca["pem"] is None:
            raise NotReady("the TLS Secret fleet-tls has no ca.crt yet")
        return Inputs(spec, ca["pem"])

    async def report(result: PassResult) -> None:
        reports.append(result)

    task = asyncio.create_task(rec.run(inputs, report, retry=3600))
    await asyncio.sleep(0.05)
    assert reports[-1].condition.reason == "WaitingForInputs" and "ca.crt" in reports[-1].condition.message
    ca["pem"] = CA_A
    rec.wake()
    for _ in range(100):
        await asyncio.sleep(0.01)
        if reports[-1].pushed:
            break
    assert reports[-1].pushed == {"new vehicle": 3}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
