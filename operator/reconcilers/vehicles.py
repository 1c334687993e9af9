"""Keep every vehicle of one FleetTelemetryConfig running the desired config: the reconciler.

One `VehicleReconciler` per resource, with its I/O injected (the Fleet API client, a
`RecordStore` for the per-vehicle records, a clock), so the same code runs under kopf,
in the benchmark and in unit tests. A pass (`reconcile`) does, in order:

1. pre-flight: `fleet_status` (at most 100 VINs a call) for vehicles never seen and for
   skipped ones whose re-check is due, so unpaired or outdated vehicles are not pushed
   (every answered call is billed, refusals included). Its firmware versions tell which
   configured fields each vehicle is too old to send (`fields_too_new`); those vehicles are
   asked again daily (`firmware_every`, billed like any call), so an update clears the flag;
2. push: `push_reason` for every vehicle; the desired config is signed once (Tesla.SS256
   with the app's key, or sent unsigned to the user's tesla-http-proxy) and pushed in
   batches, with at most `concurrency` Fleet API calls in flight;
3. poll: each pushed vehicle's config is read until `observe` calls it applied. A few
   "probe" vehicles of each push batch are read on a schedule proportional to the time
   since the push; when a probe has synced, the rest of its batch is read at once, so a
   batch costs about one read per vehicle whatever the sync delay is;
4. telemetry errors: `telemetry_errors` is read often while vehicles sync or fail, rarely
   otherwise; `current_error` decides which error describes each vehicle now;
5. the changed records are saved (`RecordStore`, sharded so 10,000 vehicles stay far from
   the 1 MiB object limit).

A vehicle's `ca` is judged by what it accepts, never by its bytes: given the chains the
server presents now and has staged to present next (`reconcile(..., chains=...)`), a
vehicle is pushed only when the `ca` it was sent would refuse one of them (`ca_refused`,
named first among the push reasons), so a renewal under the same or a sibling intermediate
costs no push. The bundles are kept once per fingerprint beside the records. `run` starts
a pass as soon as it is woken (`wake()`), cutting a poll sweep in progress short, so a
needed push never waits for a timer; `PassResult.next` tells how far the fleet is towards a
staged chain, which is what its promotion waits for (`fleetwire.operator.policies.rotation`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric import ec

from fleetwire.operator.clients.fleetapi_errors import FleetApiError
from fleetwire.operator.clients.fleetapi_types import FleetStatus, PushResult, TelemetryError, VehicleConfigState
from fleetwire.operator.environment import VehicleSettings as Settings
from fleetwire.operator.reconcilers.vehicle_reads import VehicleReads
from fleetwire.operator.reconcilers.vehicle_pass import (
    NEXT_BEHIND_LISTED,
    Batch,
    CaJudge,
    Inputs,
    NotReady,
    Pacer,
    PassResult,
    chain_ca_fingerprint,
)
from fleetwire.operator.policies.conditions import Condition
from fleetwire.proto.ss256 import sign_telemetry_config
from fleetwire.operator.resource.spec import FleetTelemetrySpec, desired_vehicle_config
from fleetwire.operator.stores.records import RecordStore
from fleetwire.operator.policies.vehicles import (
    APPLIED,
    CA_REFUSED,
    FAILING,
    PENDING,
    PUSHED,
    SKIPPED,
    VEHICLES_CONFIGURED,
    Reason,
    VehicleRecord,
    ca_accepts,
    ca_fingerprint,
    count_too_new,
    counts,
    fingerprint,
    push_decision,
    push_failed,
    pushed,
    vehicles_condition,
)

__all__ = ["FleetApi", "VehicleReconciler"]

log = logging.getLogger("fleetwire.operator.policies.vehicles")


# --------------------------------------------------------------------------------------
# What the reconciler talks to
# --------------------------------------------------------------------------------------


class FleetApi(Protocol):
    """The Fleet API calls the reconciler makes (`FleetApiClient` has them)."""

    async def fleet_status(self, vins: Sequence[str]) -> FleetStatus: ...

    async def push_config_jws(self, vins: Sequence[str], token: str) -> PushResult: ...

    async def push_config_unsigned(self, vins: Sequence[str], config: Mapping[str, Any]) -> PushResult: ...

    async def get_config(self, vin: str) -> VehicleConfigState: ...

    async def delete_config(self, vin: str) -> int: ...

    async def telemetry_errors(self) -> list[TelemetryError]: ...


# --------------------------------------------------------------------------------------
# The reconciler
# --------------------------------------------------------------------------------------


class VehicleReconciler(VehicleReads):
    """Keeps the vehicles of one resource configured; `reconcile()` is one pass, `run()` loops.

    `signing_key` signs configs (Tesla.SS256); without it configs go unsigned through
    `push_config_unsigned`, which the client sends to its tesla-http-proxy (`proxy_url`).
    """

    def __init__(self, api: FleetApi, store: RecordStore, *, signing_key: ec.EllipticCurvePrivateKey | None,
                 settings: Settings = Settings(), clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None, name: str = "") -> None:
        self.api = api
        self.store = store
        self.signing_key = signing_key
        self.settings = settings
        self.clock = clock
        self.name = name
        self._rng = rng or random.Random()
        self._pacer = Pacer(settings.concurrency, settings.rate)
        self._wake = asyncio.Event()
        self._woken = 0  # wake() calls so far: a pass stops polling when it changes
        self._pass_mark = 0
        self.records: dict[str, VehicleRecord] = {}
        self._loaded = False
        self._due: dict[str, float] = {}  # next config read per vehicle
        self._batch_of: dict[str, Batch] = {}
        self._unsynced_seen: dict[str, float] = {}  # last time a vehicle was seen not yet synced
        self._recheck_at: dict[str, float] = {}
        self._errors_at = 0.0
        self._push_retry_at = 0.0
        self._signed: tuple[str, str] | None = None  # (canonical desired, token)
        self._last_push: float | None = None
        self._problem: str | None = None
        self._fields: frozenset[str] | None = None  # the desired config's fields (None: not seen yet)
        self._firmware_asked: set[str] = set()  # asked `fleet_status` for a firmware this run
        self._firmware_at: dict[str, float] = {}  # next firmware look of a vehicle with fields too new
        self.bundles: dict[str, str] = {}  # `ca` fingerprint → PEM, for every `ca` pushed or seen held
        self._judge: CaJudge | None = None
        self._pushed_codes: Counter[str] = Counter()
        self._refused: list[str] = []  # VINs pushed this pass because their `ca` refused a chain

    # ---- the loop ---------------------------------------------------------------------

    def wake(self) -> None:
        """Start a pass now (a new `ca`, a spec change); a poll sweep in progress stops early
        and a push waiting out a failure's back-off is tried at once."""
        self._push_retry_at = 0.0
        self._woken += 1
        self._wake.set()

    async def run(self, inputs: Callable[[], Awaitable[Inputs | None]],
                  report: Callable[[PassResult], Awaitable[None]], *, retry: float = 10.0, most: float = math.inf,
                  failure: Callable[[Exception], str] | None = None) -> None:
        """Pass after pass until cancelled: each reads `inputs()`, reconciles, `report`s, then
        sleeps until something is due (at most `most`) or `wake()` is called.

        `inputs()` returning None means nothing to configure: nothing is reported. A missing
        input (`NotReady`) is reported and retried after `retry`; so is any other failure when
        `failure` gives its text for the condition (without it, the failure propagates)."""
        while True:
            mark = self._woken
            try:
                current = await inputs()
                if current is None:
                    await self.pause(most, mark)
                    continue
                result = await self.reconcile(current.spec, current.ca_pem, chains=current.chains,
                                              staged=current.staged)
                wait = min(result.next_in, most)
            except NotReady as exc:
                result, wait = self.waiting(str(exc), retry), min(retry, most)
            except Exception as exc:
                if failure is None:
                    raise
                result, wait = self.waiting(failure(exc), retry), retry
            await report(result)
            await self.pause(wait, mark)

    async def pause(self, seconds: float, mark: int) -> None:
        """Sleep `seconds`, or not at all if `wake()` was called since `mark` (a `woken` value)."""
        if self._woken != mark:
            return
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), max(0.0, seconds))
        except TimeoutError:
            pass

    @property
    def woken(self) -> int:
        """How many times `wake()` was called: take it before reading inputs, pass it to `pause`."""
        return self._woken

    def waiting(self, why: str, retry: float) -> PassResult:
        """The result reported while an input is missing: nothing pushed, the reason shown."""
        condition = Condition(VEHICLES_CONFIGURED, "False", "WaitingForInputs", why)
        return PassResult(counts(self.records.values()), condition, retry, last_push=self._last_push,
                          shards=tuple(self.store.names), too_new=count_too_new(self.records.values()))

    # ---- one pass -----------------------------------------------------------------------

    async def load(self) -> dict[str, VehicleRecord]:
        """The stored records, read once (the first pass does it; a caller may do it earlier)."""
        if not self._loaded:
            self.records = dict(await self.store.load())
            self.bundles = dict(await self.store.load_bundles())
            self._loaded = True
            self._last_push = max((r.pushed_at for r in self.records.values() if r.pushed_at), default=None)
            now = self.clock()
            for vin, record in self.records.items():  # after a restart: what is in flight is read soon
                if record.state in (PUSHED, FAILING):
                    self._due[vin] = now
                elif record.state == APPLIED or record.skip == "max_configs":
                    self._due[vin] = now + self._rng.uniform(0.0, self.settings.drift_every)
        return self.records

    async def reconcile(self, spec: FleetTelemetrySpec, ca_pem: str, *, chains: Sequence[str] | None = None,
                        staged: str | None = None) -> PassResult:
        """One pass: pre-flight, push, poll, telemetry errors, save. Never raises for a
        Fleet API failure: it is reported in the result and retried later.

        `chains`: the server chains (leaf first) every vehicle's `ca` must accept; a vehicle is
        pushed only when the `ca` it was sent refuses one of them. None: any change of the
        `ca`'s bytes is a push (the behaviour before acceptance was judged). `staged`: the
        chain waiting to be promoted, whose acceptance by the `ca` each vehicle holds is
        reported in `PassResult.next`.
        """
        await self.load()
        self._problem = None
        self._pass_mark = self._woken
        changed: set[str] = set()
        wanted = list(dict.fromkeys(spec.vehicles))
        keep = set(wanted)
        await self._forget([vin for vin in self.records if vin not in keep], changed)
        self._follow_fields(frozenset(spec.fields), changed)
        await self._preflight(wanted, changed)
        now = self.clock()
        desired = desired_vehicle_config(spec, ca_pem, issued_at=now)
        fingerprints = (fingerprint(desired), ca_fingerprint(ca_pem))
        self.bundles.setdefault(fingerprints[1], desired["ca"])
        at = dt.datetime.fromtimestamp(now, dt.UTC)
        if chains is not None:  # a chain even the desired `ca` refuses (expired) is no vehicle's to fix by a push
            chains = [c for c in chains if ca_accepts(desired["ca"], [c], spec.hostname, at)]
        judge = self._judge = CaJudge(self.bundles, fingerprints[1], tuple(chains) if chains is not None else None,
                                     spec.hostname, at)
        decisions = {vin: why for vin in wanted if (why := push_decision(
            record := self.records.get(vin), fingerprints[0], now, record is None or judge(record.ca_fp),
            record is not None and judge.ending(record.ca_fp)))}
        pushed_now: Counter[str] = Counter()
        self._pushed_codes = Counter()
        self._refused = []
        if decisions and now >= self._push_retry_at:
            pushed_now = await self._push(decisions, desired, ca_pem, fingerprints, changed)
        await self._poll(desired, changed)
        if self.records and self.clock() >= self._errors_at:
            await self._read_errors(changed)
        await self.store.save(self.records, changed)
        await self.store.save_bundles(self._live_bundles(fingerprints[1]))
        return self._result(ca_pem, pushed_now, staged)

    def _live_bundles(self, desired_fp: str) -> dict[str, str]:
        """The bundles some record names (or the desired one): the rest are forgotten."""
        named = {desired_fp} | {fp for r in self.records.values() for fp in (r.ca_fp, r.held_ca_fp) if fp}
        for fp in [fp for fp in self.bundles if fp not in named]:
            del self.bundles[fp]
        return dict(self.bundles)

    def progress(self, staged: str, hostname: str) -> dict[str, Any]:
        """How far the fleet is towards `staged`: vehicles that can take a config and hold one,
        how many of them hold a `ca` accepting it, and the first VINs still behind."""
        judge = CaJudge(self.bundles, "", (staged,), hostname, dt.datetime.fromtimestamp(self.clock(), dt.UTC))
        holding = [r for r in self.records.values() if r.state != SKIPPED and (r.held_ca_fp or (
            r.state in (APPLIED, FAILING) and r.ca_fp))]
        behind = sorted(r.vin for r in holding if not judge(r.held_ca_fp or r.ca_fp))
        return {"chain": chain_ca_fingerprint(staged), "ready": len(holding) - len(behind),
                "total": len(holding), "behind": behind[:NEXT_BEHIND_LISTED], "behindCount": len(behind)}

    def _result(self, ca_pem: str, pushed_now: Mapping[str, int], staged: str | None = None) -> PassResult:
        now = self.clock()
        condition = vehicles_condition(self.records.values())
        if self._problem:
            condition = replace(condition, status="False", reason="FleetApiError",
                                message=f"{condition.message}; Fleet API: {self._problem}")
        pending = any(r.state == PENDING for r in self.records.values())
        due = [min(self._due.values(), default=now + self.settings.idle), self._errors_at,
               min(self._recheck_at.values(), default=now + self.settings.idle),
               min((at for vin, at in self._firmware_at.items() if (r := self.records.get(vin)) is not None
                    and r.too_new and r.state != SKIPPED), default=now + self.settings.idle)]
        if pending:
            due.append(max(now, self._push_retry_at))
        next_in = min(self.settings.idle, max(0.05, min(due) - now))
        hostname = self._judge.hostname if self._judge is not None else ""
        return PassResult(counts(self.records.values()), condition, next_in, ca_fingerprint(ca_pem),
                          self._last_push, dict(pushed_now), self._problem, tuple(self.store.names),
                          count_too_new(self.records.values()), dict(self._pushed_codes),
                          self.progress(staged, hostname) if staged is not None else None, tuple(self._refused))

    # ---- vehicles leaving the spec --------------------------------------------------------

    async def _forget(self, vins: Sequence[str], changed: set[str]) -> None:
        """Vehicles removed from spec.vehicles: their config is deleted from the vehicle (it
        would keep streaming to the server otherwise) and their record dropped."""
        async def remove(vin: str) -> None:
            record = self.records[vin]
            if record.ca_fp:
                try:
                    await self._pacer.call(self.api.delete_config(vin))
                except FleetApiError as exc:
                    self._fail(f"deleting the config of {vin}", exc)
                    return
            del self.records[vin]
            changed.discard(vin)
            for table in (self._due, self._unsynced_seen, self._recheck_at, self._firmware_at):
                table.pop(vin, None)
            self._batch_of.pop(vin, None)
            self._firmware_asked.discard(vin)

        await self._pacer.each(vins, remove)

    # ---- push ---------------------------------------------------------------------------

    def _token(self, desired: Mapping[str, Any]) -> str:
        """The signed config, signed once per distinct desired config."""
        assert self.signing_key is not None
        canonical = json.dumps(desired, sort_keys=True, separators=(",", ":"))
        if self._signed is None or self._signed[0] != canonical:
            self._signed = (canonical, sign_telemetry_config(self.signing_key, desired))
        return self._signed[1]

    async def _push(self, decisions: Mapping[str, Reason], desired: Mapping[str, Any], ca_pem: str,
                    fingerprints: tuple[str, str], changed: set[str]) -> Counter[str]:
        """Push to the decided vehicles; the count by message is returned, by code kept in `_pushed_codes`."""
        reasons = {vin: why.message for vin, why in decisions.items()}
        vins = list(reasons)
        token = self._token(desired) if self.signing_key is not None else None
        size = self.settings.push_batch
        batches = [vins[i:i + size] for i in range(0, len(vins), size)]
        done: Counter[str] = Counter()
        for reason, n in Counter(reasons.values()).most_common():
            log.info("%s: pushing the config to %d vehicle(s): %s", self.name or "vehicles", n, reason)

        async def push(batch: list[str]) -> None:
            try:
                if token is not None:
                    result = await self._pacer.call(self.api.push_config_jws(batch, token))
                else:
                    result = await self._pacer.call(self.api.push_config_unsigned(batch, desired))
            except FleetApiError as exc:
                self._fail(f"pushing to {len(batch)} vehicle(s)", exc)
                self._push_retry_at = self.clock() + self.settings.retry_after_failure
                for vin in batch:
                    record = self.records.get(vin) or VehicleRecord(vin)
                    self._set(push_failed(record, str(exc)), changed)
                return
            now = self.clock()
            self._last_push = now
            accepted = []
            for vin in batch:
                skip = result.skip_reason(vin)
                self._set(pushed(self.records.get(vin), vin, desired, ca_pem, now, skip, fingerprints=fingerprints),
                          changed)
                done[reasons[vin]] += 1
                self._pushed_codes[decisions[vin].code] += 1
                if decisions[vin].code == CA_REFUSED:
                    self._refused.append(vin)
                if skip is None:
                    accepted.append(vin)
                elif skip == "max_configs":  # only a read shows when a slot frees up
                    self._due[vin] = now + self._spread(self.settings.recheck_every)
                else:
                    self._due.pop(vin, None)
                    self._recheck_at[vin] = now + self._spread(self.settings.recheck_every)
            self._schedule_batch(accepted, now)
            # While vehicles switch configs, their errors (TLS to the server, signatures) matter most.
            self._errors_at = min(self._errors_at, now + self.settings.errors_fast)

        await self._pacer.each(batches, push)
        return done

    def _schedule_batch(self, vins: Sequence[str], now: float) -> None:
        """Probes are read from `poll_first` on; the others when a probe has synced, or after
        `member_wait` first-intervals at the latest (the probes may be asleep)."""
        if not vins:
            return
        batch = Batch(set(vins))
        probes = set(vins[:self.settings.probes_per_batch])
        for vin in vins:
            self._batch_of[vin] = batch
            self._unsynced_seen.pop(vin, None)
            wait = self.settings.poll_first if vin in probes else self.settings.poll_first * self.settings.member_wait
            self._due[vin] = now + wait
