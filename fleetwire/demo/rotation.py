"""A certificate rotation through the operator's own policies, against the Fleet API simulator.

`RotationRun` is the operator's certificate side without Kubernetes: the chain the server
presents (`served`), a staged one, and the same decisions the certificate handler takes
(`rotation.stage_decision`, `rotation.promote_decision`), around the real
`VehicleReconciler`. The simulator's vehicles meet whatever `served` is when they connect
(its `presented_chain`), so a run counts what vehicles would see.

Two modes, compared in the same run by the story tests, `bench/repush.py` and the demo:

* `make-before-break`: pushes judged by acceptance; a chain the vehicles' `ca` refuses is
  staged, the vehicles are sent a `ca` accepting both, and it is promoted when all hold one
  (or at the deadline);
* `immediate`: the behaviour before: the server switches as soon as the new chain exists,
  and any change of the `ca`'s bytes is pushed to every vehicle.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fleetwire.operator.policies import rotation
from fleetwire.operator.reconcilers.vehicle_pass import PassResult
from fleetwire.operator.reconcilers.vehicles import VehicleReconciler
from fleetwire.operator.resource.spec import FleetTelemetrySpec, Rotation
from fleetwire.operator.policies.reasons import Reason
from fleetwire.operator.policies.vehicles import ca_union

__all__ = ["IMMEDIATE", "MAKE_BEFORE_BREAK", "RotationRun", "Served"]

MAKE_BEFORE_BREAK = "make-before-break"
IMMEDIATE = "immediate"


@dataclass(frozen=True)
class Served:
    """A certificate as the server presents it (`chain`, leaf first) and the `ca` that goes with it."""

    chain: str
    ca: str
    key: str = field(default="", repr=False)


@dataclass
class RotationRun:
    """The reconciler and the rotation policies, pass after pass; `on_serve` installs a chain on
    a real server when there is one (the simulator's judged vehicles read `served` directly)."""

    reconciler: VehicleReconciler
    spec: FleetTelemetrySpec
    served: Served
    mode: str = MAKE_BEFORE_BREAK
    settings: Rotation = field(default_factory=Rotation)
    time_factor: float = 1.0  # the deadline's durations are scaled like the simulator's clock
    on_serve: Callable[[Served], Awaitable[None]] | None = None
    clock: Callable[[], float] = time.time
    staged: Served | None = None
    staged_at: float | None = None
    deadline: float | None = None
    promoted_at: float | None = None
    promotion: Reason | None = None
    stage: Reason | None = None
    behind_at_promotion: list[str] = field(default_factory=list)
    pushes: int = 0  # vehicles pushed since the run began
    pushed_codes: dict[str, int] = field(default_factory=dict)
    last: PassResult | None = None

    def presented(self) -> str:
        """What a vehicle connecting now is shown: the simulator's `presented_chain`."""
        return self.served.chain

    async def rotate(self, new: Served) -> Reason:
        """A new certificate exists: serve it at once, or stage it (make before break)."""
        now = self.clock()
        if self.mode == IMMEDIATE:
            await self._serve(new)
            self.stage = Reason("Immediate", "served as soon as it exists")
            return self.stage
        decision = rotation.stage_decision(True, self.served.ca.encode(), new.chain.encode(), self.spec.hostname,
                                           dt.datetime.fromtimestamp(now, dt.UTC), True)
        self.stage = decision
        if decision.code == rotation.REFUSED_BY_CA:
            self.staged, self.staged_at = new, now
            settings = Rotation(self.settings.max_wait * self.time_factor, self.settings.safety_margin * self.time_factor)
            self.deadline = now + settings.max_wait.total_seconds()
            self.promoted_at, self.promotion = None, None
        else:
            await self._serve(new)
        return decision

    async def switch(self, new: Served) -> None:
        """The current certificate is gone (expired, key lost, Secret deleted): served at once in any mode."""
        await self._serve(new)
        self.stage = Reason(rotation.NO_USABLE_CURRENT, "the current certificate is gone: switched at once")

    async def step(self) -> PassResult:
        """One reconciler pass with the inputs the vehicle daemon would read, then the promotion check."""
        if self.mode == IMMEDIATE:
            result = await self.reconciler.reconcile(self.spec, self.served.ca)
        elif self.staged is None:
            result = await self.reconciler.reconcile(self.spec, self.served.ca, chains=[self.served.chain])
        else:
            result = await self.reconciler.reconcile(
                self.spec, ca_union(self.served.ca, self.staged.ca), chains=[self.served.chain, self.staged.chain],
                staged=self.staged.chain)
        self.pushes += sum(result.pushed.values())
        for code, n in result.pushed_codes.items():
            self.pushed_codes[code] = self.pushed_codes.get(code, 0) + n
        self.last = result
        if self.staged is not None and self.deadline is not None:
            now = self.clock()
            facts = rotation.PromoteFacts(True, rotation.staged_fingerprint(self.staged.chain),
                                          dt.datetime.fromtimestamp(self.deadline, dt.UTC),
                                          dt.datetime.fromtimestamp(now, dt.UTC), result.next, False, True)
            decision = rotation.promote_decision(facts)
            if decision is not None:
                self.behind_at_promotion = list((result.next or {}).get("behind") or ())
                self.promotion, self.promoted_at = decision, now
                staged, self.staged = self.staged, None
                await self._serve(staged)
        return result

    async def _serve(self, new: Served) -> None:
        self.served = new
        if self.on_serve is not None:
            await self.on_serve(new)

    def figures(self) -> dict[str, Any]:
        """What the run cost, for a report."""
        out: dict[str, Any] = {"mode": self.mode, "pushes": self.pushes, "pushed_by_reason": dict(self.pushed_codes)}
        if self.stage is not None:
            out["stage"] = self.stage.code
        if self.promotion is not None and self.staged_at is not None and self.promoted_at is not None:
            out["promotion"] = self.promotion.code
            out["time_to_promotion_s"] = round((self.promoted_at - self.staged_at) / self.time_factor, 1)
            out["behind_at_promotion"] = len(self.behind_at_promotion)
        return out


# --------------------------------------------------------------------------------------
# A whole trial: a fleet configured for one chain, then rotated to another
# --------------------------------------------------------------------------------------


@dataclass
class Trial:
    """What a rotation cost a fleet, in the simulator's scaled time turned back into real time."""

    mode: str
    vehicles: int
    pushes: int
    tls_failures: int
    vehicles_failed: int
    lost_vehicle_minutes: float
    synced_before_promotion_failed: int  # vehicles that held the new `ca` before promotion yet failed TLS
    time_to_promotion_h: float | None
    time_to_all_streaming_h: float | None  # until the last vehicle that can take a config streams again
    cut_off: int  # vehicles still refused at the end
    api_calls: dict[str, int]
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


async def trial(n: int, before: Served, after: Served, *, mode: str, hostname: str, time_factor: float = 1 / 3600,
                rotation_settings: Rotation | None = None, seed: int = 0, forced: bool = False,
                timeout: float = 300.0) -> Trial:
    """Configure `n` simulated vehicles (long-tailed sync, own reconnects) for `before`, rotate to
    `after` in `mode`, and run until every vehicle streams with `after` served. `forced`: the
    current certificate is gone at the moment of rotation (served at once in either mode).
    Vehicles are judged without sockets (`FleetApiSimulator.presented_chain`)."""
    import asyncio

    from cryptography.hazmat.primitives.asymmetric import ec

    from fleetwire.operator.environment import VehicleSettings as Settings
    from fleetwire.operator.clients.fleetapi import FleetApiClient
    from fleetwire.operator.clients.fleetapi_types import Tokens
    from fleetwire.operator.stores.records import MemoryRecordStore
    from fleetwire.operator.stores.tokens import MemoryTokenStore
    from fleetwire.operator.resource.spec_parse import parse_spec
    from fleetwire.sim.fleet import sim_vin
    from fleetwire.sim.fleetapi import FleetApiSimulator, LongTailSync, Reconnects

    key = ec.generate_private_key(ec.SECP256R1())
    holder: dict[str, RotationRun] = {}
    scale = time_factor * 3600  # seconds of the run per real hour
    sim = FleetApiSimulator(public_key=key.public_key(), sync_delay=LongTailSync(time_factor, seed=seed),
                            reconnect_every=Reconnects(time_factor, seed=seed + 1), max_streaming=0,
                            presented_chain=lambda: holder["run"].presented(),
                            reconnect_delay=(60 * time_factor, 300 * time_factor))
    vins = [sim_vin(i) for i in range(n)]
    for vin in vins:
        sim.add_vehicle(vin)
    await sim.start()
    tokens = sim.issue_user_tokens()
    client = FleetApiClient(client_id=sim.client_id, client_secret=sim.apps[sim.client_id].client_secret,
                            token_store=MemoryTokenStore(Tokens(tokens["access_token"], tokens["refresh_token"],
                                                                time.time() + tokens["expires_in"])),
                            base_url=sim.base_url("na"), auth_url=sim.auth_url)
    calls: dict[str, int] = {}

    class Counting:
        def __getattr__(self, name: str) -> Any:
            method = getattr(client, name)

            async def call(*args: Any, **kwargs: Any) -> Any:
                calls[name] = calls.get(name, 0) + 1
                return await method(*args, **kwargs)

            return call

    # The operator's cadences in the same scaled time: a look every 5 real minutes at first, every
    # 50 at most; telemetry errors every 10 real minutes while vehicles sync.
    settings = Settings(poll_first=max(0.05, 300 * time_factor), poll_most=max(0.5, 3000 * time_factor),
                        member_wait=4.0, errors_fast=max(0.2, 600 * time_factor), errors_slow=max(1.0, 3600 * time_factor),
                        error_quiet=max(0.5, 1800 * time_factor), retry_after_failure=0.5, jitter=0.0,
                        idle=max(1.0, 3600 * time_factor), concurrency=16)
    reconciler = VehicleReconciler(Counting(), MemoryRecordStore("trial"), signing_key=key,  # type: ignore[arg-type]
                                   settings=settings, name="trial")
    spec = parse_spec({"hostname": hostname, "certificate": {"privateCA": {}}, "vehicles": vins,
                       "fields": {"VehicleSpeed": {"interval_seconds": 10}},
                       "fleetApi": {"baseUrl": sim.base_url("na"), "partnerCredentialsSecretRef": {"name": "p"},
                                    "userTokenSecretRef": {"name": "u"}, "signingKeySecretRef": {"name": "k"}}})
    run = holder["run"] = RotationRun(reconciler, spec, before, mode=mode, settings=rotation_settings or Rotation(),
                                      time_factor=time_factor)
    try:
        deadline = time.monotonic() + timeout

        async def until(done: Callable[[PassResult], bool], what: str) -> PassResult:
            while True:
                result = await run.step()
                if done(result):
                    return result
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{what}: not reached after {timeout:.0f} s ({dict(result.counts)})")
                await asyncio.sleep(min(result.next_in, settings.poll_most))

        await until(lambda r: r.counts.get("applied") == n, "the first configuration")
        while sim.judging < n:  # every vehicle has met the server once
            await asyncio.sleep(0.05)
        pushes_before, calls_before = run.pushes, dict(calls)
        run.pushes, run.pushed_codes = 0, {}
        started = time.time()
        if forced:
            await run.switch(after)
        else:
            await run.rotate(after)
        sim.reconnect(vins[: max(1, n // 20)])  # a few cars reconnect right away (a tunnel, a wake-up)

        def settled(result: PassResult) -> bool:
            return run.served is after and result.counts.get("applied") == n and not sim.tls.cut_off()

        await until(settled, "the rotation")
        ended = time.time()
        synced_before = set()
        if run.promoted_at is not None:
            accepting = {vin for vin, record in reconciler.records.items() if record.held_ca_fp}
            synced_before = accepting - set(run.behind_at_promotion)
        failed_synced = {vin for vin, entries in sim.tls.failures.items()
                         if vin in synced_before and any(at >= started for at, _ in entries)}
        last_back = max((spans[-1][1] or ended for spans in sim.tls.outages.values() if spans), default=None)
        failures = sum(1 for entries in sim.tls.failures.values() for at, _ in entries if at >= started)
        return Trial(
            mode=mode, vehicles=n, pushes=run.pushes, tls_failures=failures,
            vehicles_failed=sum(1 for entries in sim.tls.failures.values() if any(at >= started for at, _ in entries)),
            lost_vehicle_minutes=round(sim.tls.lost_seconds(ended, since=started) / scale * 60, 1),
            synced_before_promotion_failed=len(failed_synced),
            time_to_promotion_h=(round((run.promoted_at - started) / scale, 2) if run.promoted_at else None),
            time_to_all_streaming_h=(round((last_back - started) / scale, 2) if last_back is not None else 0.0),
            cut_off=len(sim.tls.cut_off()), api_calls={k: v - calls_before.get(k, 0) for k, v in calls.items()},
            extra={"initial_pushes": pushes_before, "stage": run.stage.code if run.stage else None,
                   "promotion": run.promotion.code if run.promotion else None,
                   "run_seconds": round(ended - started, 1)},
        )
    finally:
        await client.close()
        await sim.stop()
