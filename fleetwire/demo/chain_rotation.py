"""The cluster demo's rotation part: a renewal under the same CA (nothing pushed, no handshake
refused), then a new private CA rolled out to every vehicle before the server switches to it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fleetwire.demo.probes import _until, ca_of
from fleetwire.demo.stage import DEMO_HOST, Stage


async def renew_and_rotate(stage: Stage) -> tuple[str, list[str]]:
    """Renew, then rotate the chain; the new chain's ca and the TLS errors vehicles reported."""
    from fleetwire.operator.policies.vehicles import ca_fingerprint

    api, sim, node, ns, name, healthy = stage.api, stage.sim, stage.node, stage.ns, stage.name, stage.healthy
    vehicles, say, step_timeout = stage.vehicles, stage.say, stage.step_timeout
    resource, vehicles_status, records, metric = stage.resource, stage.vehicles_status, stage.records, stage.metric

    # A renewal under the same root, as at two thirds of a leaf's life: the private CA signs a new
    # leaf into the served Secret. The vehicles' ca accepts it, so nothing is pushed.
    import datetime as dt

    from fleetwire.operator.resource.builders import Owner
    from fleetwire.operator.reconcilers.private_ca import ca_from_secret, private_leaf
    from fleetwire.operator.reconcilers.certificate_context import tls_secret

    push_calls = ("/api/1/vehicles/fleet_telemetry_config_jws", 200)
    reloaded = 'fleetwire_certificate_reloads_total{outcome="reloaded"}'
    pushes_at, failures_at, reloads = sim.requests.get(push_calls, 0), sim.tls.count, await metric(reloaded)
    now = dt.datetime.now(dt.UTC)
    private_ca = ca_from_secret(await api.get("Secret", ns, f"{name}-ca") or {}, f"{ns}/{name}-ca", now)
    await api.apply(tls_secret(Owner.of(await resource()), f"{name}-tls", private_leaf(private_ca, DEMO_HOST, 30, now),
                               hostname=DEMO_HOST, reason="renewal under the same CA"))

    async def renewed_served() -> bool:
        return await metric(reloaded) > reloads

    await _until(renewed_served, step_timeout, "the pod on the renewed leaf")
    acked = {v: sim.vehicle(v).stats.acked for v in healthy}
    sim.reconnect(healthy)  # every vehicle meets the renewed leaf
    await _until(lambda: all(sim.vehicle(v).stats.acked > acked[v] and sim.vehicle(v).connected for v in healthy),
                 step_timeout, "streaming on the renewed leaf")
    await asyncio.sleep(2.0)  # two passes of the vehicles' daemon, which would push a vehicle its ca refuses
    say(f"renewal under the same root: the pod serves a new leaf, every vehicle reconnected; pushes: "
        f"{sim.requests.get(push_calls, 0) - pushes_at}, TLS failures: {sim.tls.count - failures_at}")

    # The chain rotates: a new private CA (as after a compromise, or a CA's end of life).
    acked = {v: sim.vehicle(v).stats.acked for v in healthy}
    pushes_at, failures_at, rotation_at = sim.requests.get(push_calls, 0), sim.tls.count, time.time()
    await api.delete("Secret", ns, f"{name}-ca")
    say(f"chain rotation: Secret {name}-ca (the private CA) deleted; the operator makes a new CA and certificate")

    async def rotating() -> dict[str, Any] | None:
        found = {c["type"]: c for c in ((await resource()).get("status") or {}).get("conditions") or []}
        return found.get("CertificateRotating")

    staged = await _until(rotating, step_timeout, "the new certificate staged")
    say(f"staged, not served: the vehicles' ca would refuse the new chain, so the pod keeps the current one "
        f"and every vehicle is sent a ca accepting both ({staged['message'][:90]})")
    reloaded = 'fleetwire_certificate_reloads_total{outcome="reloaded"}'
    reloads = await metric(reloaded)

    async def promoted() -> dict[str, Any] | None:
        found = await rotating()
        return found if found and found.get("status") == "False" and found.get("reason") == "VehiclesReady" else None

    await _until(promoted, step_timeout, "the promotion")
    new_ca = ca_of(await api.get("Secret", ns, f"{name}-tls"))
    say(f"promoted once every vehicle held both: Secret {name}-tls now carries the new chain "
        f"(ca {ca_fingerprint(new_ca)[:16]})")

    async def serving_new_chain() -> bool:
        return await metric(reloaded) > reloads

    await _until(serving_new_chain, step_timeout, "the pod on the new chain")
    pod = node.pods(ns, f"{name}-server")[0]
    say(f"the pod reloaded it from its mounted Secret ({pod.volume_updates} ..data swap(s), {pod.restarts} restarts); "
        "connected vehicles keep streaming")
    gap = healthy[:3]
    sim.reconnect(gap)
    await _until(lambda: all(sim.vehicle(v).stats.acked > acked[v] and sim.vehicle(v).connected for v in gap),
                 step_timeout, "the reconnected vehicles streaming")
    current = await records()
    errors = [current[v].last_error for v in healthy if v in current and current[v].last_error]
    say(f"{len(gap)} vehicles reconnected after the switch and were accepted at once (their ca holds both chains); "
        f"TLS errors reported by vehicles: {len(errors)}")

    async def applied_new_ca() -> dict[str, Any] | None:
        status = await vehicles_status()
        return status if (status.get("caFingerprint") == ca_fingerprint(new_ca)
                          and status.get("applied") == vehicles and status.get("failing") == 0) else None

    await _until(applied_new_ca, step_timeout, "the new ca applied")
    held = await records()
    pushed_vehicles = sum(1 for v in healthy if v in held and (held[v].pushed_at or 0.0) >= rotation_at)
    say(f"rotated without a human and without a gap: all {vehicles} vehicles hold the new ca; the rotation cost "
        f"{sim.requests.get(push_calls, 0) - pushes_at} push call(s) to {pushed_vehicles} vehicles (once each), "
        f"TLS failures during the rotation: {sim.tls.count - failures_at}")
    await _until(lambda: all(sim.vehicle(v).stats.acked > acked[v] + 3 and sim.vehicle(v).connected for v in healthy),
                 step_timeout, "streaming again")
    say(f"streaming throughout: {vehicles} vehicles, {sum(sim.vehicle(v).stats.acked - acked[v] for v in healthy)} "
        "records acknowledged since the rotation")
    return new_ca, errors
