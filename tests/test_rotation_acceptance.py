"""Push only what a vehicle needs: the `ca` is judged by what it accepts, never by its bytes.

The acceptance policy (`ca_accepts`, built on `certcheck.refusal`, the one judgement
`fleetwire check-cert` also uses) against real chains: a renewal under the same
intermediate or a sibling intermediate of the same root is accepted by the `ca` the vehicles
hold, a new root is not, a `ca` holding both roots accepts both. Then the reconciler on the
in-memory Fleet API: zero pushes for the renewal, one per vehicle for a new root, and the
same fleet in the fingerprint mode (every change of the bundle's bytes pushed) as the baseline.
"""

from __future__ import annotations

import datetime as dt
import time

from cryptography.hazmat.primitives import serialization
from test_operator_configure import Clock, FakeFleetApi, FakeVehicle, reconciler, spec_for, vin

from fleetwire import pki
from fleetwire.trust import refusal
from fleetwire.operator.reconcilers.vehicle_pass import PassResult
from fleetwire.operator.reconcilers.vehicles import VehicleReconciler
from fleetwire.operator.stores.records import MemoryRecordStore
from fleetwire.operator.policies.vehicles import (
    APPLIED, CA_ENDING, CA_REFUSED, NEW_VEHICLE, PUSH_POLICIES, VehicleRecord, ca_accepts, ca_fingerprint, ca_union,
    push_decision,
)

HOST = "telemetry.example.com"


def pem(*certs: pki.Bundle) -> str:
    return b"".join(c.cert.public_bytes(serialization.Encoding.PEM) for c in certs).decode()


class Hierarchy:
    """A root with two sibling intermediates, as Let's Encrypt's R10/R11 under ISRG Root X1."""

    def __init__(self, name: str) -> None:
        self.root = pki.make_ca(f"{name} Root")
        self.first = pki.make_ca(f"{name} R1", parent=self.root, path_length=0)
        self.sibling = pki.make_ca(f"{name} R2", parent=self.root, path_length=0)

    def chain(self, under: pki.Bundle, host: str = HOST, days: int = 90) -> str:
        """The chain the server presents: leaf, then its intermediate."""
        return pem(pki.make_server_cert(under, [host], days=days), under)

    def ca(self, under: pki.Bundle) -> str:
        """The `ca` vehicles are sent: the intermediate and the root."""
        return pem(under, self.root)


NOW = dt.datetime.now(dt.UTC)
A = Hierarchy("Alpha")
B = Hierarchy("Beta")


def test_a_renewal_under_the_same_or_a_sibling_intermediate_is_accepted() -> None:
    held = A.ca(A.first)
    assert ca_accepts(held, [A.chain(A.first)], HOST, NOW)
    assert ca_accepts(held, [A.chain(A.sibling)], HOST, NOW)  # the root in `ca` is an anchor
    assert ca_accepts(pem(A.root), [A.chain(A.sibling)], HOST, NOW)


def test_a_new_root_is_refused_and_a_union_accepts_both() -> None:
    held = A.ca(A.first)
    assert refusal(B.chain(B.first), held, HOST, NOW) is not None
    assert not ca_accepts(held, [B.chain(B.first)], HOST, NOW)
    both = ca_union(held, B.ca(B.first))
    assert ca_accepts(both, [A.chain(A.first), B.chain(B.first)], HOST, NOW)
    assert both.count("BEGIN CERTIFICATE") == 4 and ca_union(both, held) == both


def test_the_vehicle_judges_name_and_time_too() -> None:
    held = A.ca(A.first)
    assert not ca_accepts(held, [A.chain(A.first, host="other.example.com")], HOST, NOW)
    assert not ca_accepts(held, [A.chain(A.first, days=1)], HOST, NOW + dt.timedelta(days=2))
    assert refusal(A.chain(A.first), "not a pem", HOST, NOW) is not None


def test_the_push_chain_names_a_refused_ca_first() -> None:
    assert [p.__name__ for p in PUSH_POLICIES] == ["_never_configured", "_ca_refused", "_ca_ending",
                                                   "_desired_changed", "_exp_near", "_still_pending"]
    record = VehicleRecord(vin(1), state=APPLIED, config_fp="old", ca_fp="x")
    assert push_decision(None, "fp", 0.0, True).code == NEW_VEHICLE  # type: ignore[union-attr]
    assert push_decision(record, "new", 0.0, False).code == CA_REFUSED  # type: ignore[union-attr]
    assert push_decision(record, "new", 0.0, True).code == "desired_changed"  # type: ignore[union-attr]
    assert push_decision(record, "old", 0.0, True) is None


# --------------------------------------------------------------------------------------
# The reconciler: pushes counted on the in-memory Fleet API
# --------------------------------------------------------------------------------------


def real_clock_fleet(n: int) -> tuple[Clock, FakeFleetApi, list[str]]:
    clock = Clock()
    clock.now = time.time()  # the chains are valid now
    api = FakeFleetApi(clock)
    vins = [vin(i) for i in range(n)]
    for v in vins:
        api.vehicles[v] = FakeVehicle()
    return clock, api, vins


async def settle(rec: VehicleReconciler, clock: Clock, spec: object, ca: str, chains: list[str] | None,
                 until: float = 60.0) -> PassResult:
    end = clock.now + until
    result = await rec.reconcile(spec, ca, chains=chains)  # type: ignore[arg-type]
    while clock.now < end:
        clock.now = min(end, clock.now + result.next_in)
        result = await rec.reconcile(spec, ca, chains=chains)  # type: ignore[arg-type]
    return result


def pushed_vehicles(api: FakeFleetApi) -> int:
    return sum(n for name, n in api.calls if name == "push")


async def rotate(n: int, before: tuple[str, str], after: tuple[str, str], *, judged: bool,
                 store: MemoryRecordStore | None = None) -> tuple[int, PassResult, VehicleReconciler, FakeFleetApi]:
    """Configure `n` vehicles for chain `before` = (chain, ca), switch to `after`; the pushes it cost."""
    clock, api, vins = real_clock_fleet(n)
    rec = reconciler(api, clock, store)
    spec = spec_for(vins, hostname=HOST)
    first = await settle(rec, clock, spec, before[1], [before[0]] if judged else None)
    assert first.counts["applied"] == n
    pushes = pushed_vehicles(api)
    result = await settle(rec, clock, spec, after[1], [after[0]] if judged else None)
    assert result.counts["applied"] == n
    return pushed_vehicles(api) - pushes, result, rec, api


async def test_a_sibling_intermediate_renewal_costs_no_push_and_the_baseline_pushes_everyone() -> None:
    before, after = (A.chain(A.first), A.ca(A.first)), (A.chain(A.sibling), A.ca(A.sibling))
    judged, result, rec, api = await rotate(40, before, after, judged=True)
    baseline, *_ = await rotate(40, before, after, judged=False)
    assert (judged, baseline) == (0, 40)
    # What each vehicle holds is recorded: the `ca` it was sent, which still accepts the new chain.
    assert {r.held_ca_fp for r in rec.records.values()} == {ca_fingerprint(A.ca(A.first))}
    assert result.pushed_codes == {}
    # A vehicle added now gets the current chain's `ca`.
    vins = [*rec.records, vin(99)]
    api.vehicles[vin(99)] = FakeVehicle()
    clock = rec.clock
    spec = spec_for(vins, hostname=HOST)
    await settle(rec, clock, spec, A.ca(A.sibling), [A.chain(A.sibling)])  # type: ignore[arg-type]
    assert api.vehicles[vin(99)].held["ca"] == A.ca(A.sibling)  # type: ignore[index]
    assert pushed_vehicles(api) == 40 + 1


async def test_a_new_root_costs_one_push_per_vehicle_named_as_a_refused_ca() -> None:
    before, after = (A.chain(A.first), A.ca(A.first)), (B.chain(B.first), B.ca(B.first))
    clock, api, vins = real_clock_fleet(30)
    rec = reconciler(api, clock)
    spec = spec_for(vins, hostname=HOST)
    await settle(rec, clock, spec, before[1], [before[0]])
    pushes = pushed_vehicles(api)
    first = await rec.reconcile(spec, after[1], chains=[after[0]])
    assert first.pushed_codes == {CA_REFUSED: 30} and first.pushed == {"CA chain changed": 30}
    await settle(rec, clock, spec, after[1], [after[0]])
    assert pushed_vehicles(api) - pushes == 30


async def test_the_bundles_survive_a_restart_so_nothing_is_pushed_again() -> None:
    store = MemoryRecordStore("fleet")
    before, after = (A.chain(A.first), A.ca(A.first)), (A.chain(A.sibling), A.ca(A.sibling))
    _, _, rec, api = await rotate(10, before, after, judged=True, store=store)
    again = MemoryRecordStore("fleet")
    again.objects = store.objects
    restarted = reconciler(api, rec.clock, again)  # type: ignore[arg-type]
    pushes = pushed_vehicles(api)
    await restarted.reconcile(spec_for(list(rec.records), hostname=HOST), after[1], chains=[after[0]])
    assert pushed_vehicles(api) == pushes
    assert ca_fingerprint(A.ca(A.first)) in restarted.bundles


async def test_the_old_root_leaves_the_ca_only_with_a_push_the_fleet_needs_anyway() -> None:
    both = ca_union(A.ca(A.first), B.ca(B.first))
    clock, api, vins = real_clock_fleet(8)
    rec = reconciler(api, clock)
    spec = spec_for(vins, hostname=HOST)
    await settle(rec, clock, spec, both, [A.chain(A.first), B.chain(B.first)])  # staged: both chains
    pushes = pushed_vehicles(api)
    # Promoted: the served chain is B's; the union the vehicles hold accepts it, so nothing is pushed.
    await settle(rec, clock, spec, B.ca(B.first), [B.chain(B.first)])
    assert pushed_vehicles(api) == pushes
    assert all(v.held["ca"] == both for v in api.vehicles.values())  # type: ignore[index]
    # A push the fleet needs anyway (here a new field; the exp lease alike) carries B's ca alone.
    changed = spec_for(vins, hostname=HOST, fields={"VehicleSpeed": {"interval_seconds": 5}})
    await settle(rec, clock, changed, B.ca(B.first), [B.chain(B.first)])
    assert pushed_vehicles(api) == pushes + 8
    assert all(v.held["ca"] == B.ca(B.first) for v in api.vehicles.values())  # type: ignore[index]


async def test_a_ca_accepted_only_through_a_cross_certificate_about_to_expire_is_replaced_in_time() -> None:
    """After a private-CA rollover a vehicle holding the old CA accepts the new leaf through the
    cross-certificate, which ends with the old CA: it is sent the new CA a week ahead, not after."""
    now = dt.datetime.now(dt.UTC)
    old = pki.make_ca("Old private CA", days=5, path_length=1)  # ends in 5 days
    new = pki.make_ca("New private CA", days=3650, path_length=1)
    cross = pki.cross_sign(new, old)
    chain = pem(pki.make_server_cert(new, [HOST], days=30)) + cross.public_bytes(serialization.Encoding.PEM).decode()
    assert ca_accepts(pem(old), [chain], HOST, now) and ca_accepts(pem(new), [chain], HOST, now)
    clock, api, vins = real_clock_fleet(4)
    rec = reconciler(api, clock)
    spec = spec_for(vins, hostname=HOST)
    await settle(rec, clock, spec, pem(old), [pem(pki.make_server_cert(old, [HOST], days=4), )])
    pushes = pushed_vehicles(api)
    result = await rec.reconcile(spec, pem(new), chains=[chain])
    assert result.pushed_codes == {CA_ENDING: 4}
    await settle(rec, clock, spec, pem(new), [chain])
    assert pushed_vehicles(api) == pushes + 4
    assert all(v.held["ca"] == pem(new) for v in api.vehicles.values())  # type: ignore[index]
    # A long-lived root behind the chain is no reason to push.
    before = pushed_vehicles(api)
    await settle(rec, clock, spec, pem(new), [chain])
    assert pushed_vehicles(api) == before
