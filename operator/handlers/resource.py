"""kopf handlers for FleetTelemetryConfig: thin glue between the API and the pure policies.

Each handler gathers state, asks the policies (`judge_spec`, `certificates`, `builders`),
acts, and writes the answer: status conditions, `status.certificate`, events. `spec_valid`
checks the spec; `manage` (on create, spec update and resume) and the `keep` timer (every
`FLEETWIRE_RECONCILE_SECONDS`, 60 by default) run one pass of the same work: the HTTP-01
solver Service when needed, the certificate (issued, renewed or checked), the server's
ConfigMap, Deployment and Services (server-side apply, so a pass is idempotent), and the
conditions SpecValid, CertificateReady and ServerReady. A pass never raises: whatever
fails becomes a condition with its reason, so a bad Secret or an unreachable CA cannot
put kopf into a retry loop; the timer tries again.

The timer and the change handlers of one resource may overlap, so passes over one
resource are serialised by a lock, and what a pass wrote into `status.certificate`
(the back-off and order markers) is remembered in memory: kopf applies a handler's status
patch only after it returns, so the next pass may be handed an older body. Conditions are
not written through kopf's patch (a merge patch replaces the list whole): `spec_valid`
writes SpecValid and a pass its own types (`PASS_OWNED`) with `handlers.status.write_status`,
merged into the list as the API holds it, so no writer reverts another's. The spec is
parsed once per generation (`resource.spec_cache`) and handed on.

Loaded by `fleetwire operator` (`fleetwire.operator.main`), or by `kopf run -m
fleetwire.operator.handlers.resource` for development.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from fleetwire.operator.resource import builders, crd
from fleetwire.operator.resource.builders import Names, Owner
from fleetwire.operator.reconcilers.certificate_context import CertificateContext, CertificateOutcome
from fleetwire.operator.reconcilers.certificates import ensure_certificate
from fleetwire.operator.environment import OperatorEnvironment, from_env
from fleetwire.operator.clients.http01 import Http01Responder
from fleetwire.operator.policies.rotation import PROMOTE_ANNOTATION
from fleetwire.operator.resource.spec import FleetTelemetrySpec
from fleetwire.operator.clients.kube import KubeError, KubernetesApi, load_configuration
from fleetwire.operator.handlers.status import resource_path, write_status
from fleetwire.operator.policies.conditions import (
    CERTIFICATE_READY,
    PASS_OWNED,
    SERVER_READY,
    SPEC_OWNED,
    Condition,
    Event,
    check_spec,
    find_condition,
    judge_spec,
    server_condition,
    transition_events,
)
from fleetwire.operator.handlers.vehicles import register as register_vehicle_handlers

RESOURCE = (crd.GROUP, crd.VERSION, crd.PLURAL)
"""What the handlers watch: fleettelemetryconfigs.v1alpha1.fleetwire.io."""

ENVIRONMENT: OperatorEnvironment = from_env()
"""Read when the handlers load: the timer's interval is fixed at registration."""

log = logging.getLogger("fleetwire.operator")

DELETION_POLLING_SECONDS = 1.0


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Keep kopf's bookkeeping under the project's own annotation prefix, not kopf's; and
    release a deleted resource as soon as its timer's pass in flight has ended (kopf
    re-checks a timer still running at deletion only every `cancellation_polling`
    seconds, 60 by default, so a deletion that met a pass waited a minute)."""
    settings.background.cancellation_polling = DELETION_POLLING_SECONDS
    settings.persistence.finalizer = f"{crd.GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=crd.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=crd.GROUP, key="last-handled-configuration")


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster service account, else $KUBECONFIG: the same credentials the `kubernetes`
    client then uses for the objects the handlers create."""
    return kopf.login_via_client(**kwargs)


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
async def spec_valid(body: kopf.Body, spec: kopf.Spec, meta: kopf.Meta, status: kopf.Status,
                     logger: kopf.Logger, **_: Any) -> None:
    """Check the spec and say so in the SpecValid condition (and an event when it changes).

    An invalid spec is the user's to fix, so it is reported, not retried.
    """
    runtime = _runtime
    assert runtime is not None, "the startup handler creates the runtime"
    result = judge_spec(dict(spec), dict(status), meta.get("generation"), uid=str(meta["uid"]))
    extra = {"observedGeneration": result.observed_generation} if result.observed_generation is not None else {}
    await write_status(runtime.api, Owner.of(body), SPEC_OWNED, result.conditions, extra, body=body)
    for event in result.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        (logger.warning if event.type == "Warning" else logger.info)("%s: %s", event.reason, event.message)


# ======================================================================================
# Certificate and server: one pass, from the create/update/resume handlers and the timer
# ======================================================================================


@dataclass
class _Memory:
    """What this process last wrote for one resource: `status.certificate` and the
    (status, reason) of each condition that events were posted for."""

    certificate: dict[str, Any]
    announced: dict[str, tuple[str, str]]
    http01_service: bool

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> _Memory:
        announced = {}
        for type_ in (CERTIFICATE_READY, SERVER_READY):
            found = find_condition(status.get("conditions"), type_)
            if found is not None:
                announced[type_] = (str(found.get("status")), str(found.get("reason")))
        server = status.get("server") or {}
        return cls(dict(status.get("certificate") or {}), announced, bool(server.get("http01Service")))


@dataclass
class Runtime:
    """Per-process state: the API client, the HTTP-01 responder (started on first use), and
    per-resource locks and memory."""

    env: OperatorEnvironment
    api: KubernetesApi
    responder: Http01Responder | None = None
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    memory: dict[str, _Memory] = field(default_factory=dict)
    closed: bool = False

    async def http01(self) -> Http01Responder:
        if self.responder is None:
            responder = Http01Responder("0.0.0.0", self.env.http01_port)
            await responder.start()
            self.responder = responder
        return self.responder

    async def close(self) -> None:
        """At shutdown. kopf may still fire a timer after its cleanup activities: such a pass
        (and one cut short) writes nothing, so a stopping operator leaves the status as it was."""
        self.closed = True
        if self.responder is not None:
            await self.responder.stop()
        await self.api.close()


_runtime: Runtime | None = None


@kopf.on.startup()
async def start_runtime(**_: Any) -> None:
    """The API client the passes use, with the credentials kopf logs in with."""
    global _runtime
    _runtime = Runtime(ENVIRONMENT, KubernetesApi(load_configuration()))


@kopf.on.cleanup()
async def stop_runtime(**_: Any) -> None:
    if _runtime is not None:
        await _runtime.close()


def _replacing(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch that turns `old` into `new` at the top level (dropped keys become null)."""
    return {**{key: None for key in old if key not in new}, **new}


async def _apply_server(runtime: Runtime, owner: Owner, spec: FleetTelemetrySpec) -> tuple[Condition, dict[str, Any]]:
    """Apply ConfigMap, Deployment and Services; ServerReady from what the API returned."""
    names = Names(owner.name)
    stored: dict[str, Any] | None = None
    for obj in builders.server_objects(owner, spec, runtime.env):
        applied = await runtime.api.apply(obj)
        if obj["kind"] == "Deployment":
            stored = applied
    ca_map = await runtime.api.get("ConfigMap", owner.namespace, names.vehicle_ca)
    data = (ca_map or {}).get("data") or {}
    vehicle_ca = None
    if "BEGIN CERTIFICATE" not in str(data.get(builders.VEHICLE_CA_KEY, "")):
        vehicle_ca = (f"ConfigMap {owner.namespace}/{names.vehicle_ca} with key {builders.VEHICLE_CA_KEY} is "
                      f"{'missing' if ca_map is None else 'without a PEM certificate'}: it must hold the CAs that "
                      "issue the vehicles' client certificates, or the server cannot verify vehicles and does "
                      "not start")
    condition = server_condition(stored, vehicle_ca=vehicle_ca)
    ready = int(((stored or {}).get("status") or {}).get("readyReplicas") or 0)
    return condition, {"deployment": names.server, "service": names.server, "readyReplicas": ready}


async def _pass(runtime: Runtime, body: kopf.Body, memory: _Memory, spec: FleetTelemetrySpec,
                generation: int | None) -> tuple[CertificateOutcome, Condition, dict[str, Any]]:
    """HTTP-01 Service, certificate, server objects: the conditions and `status.server` they yield."""
    owner = Owner.of(body)
    api, env = runtime.api, runtime.env
    needed, why = builders.http01_service_reason(spec, owner.namespace, env)
    server_status: dict[str, Any] = {}
    if needed:
        await api.apply(builders.http01_service(owner, env))
        server_status["http01Service"] = Names(owner.name).http01_service
    elif memory.http01_service:
        await api.delete("Service", owner.namespace, Names(owner.name).http01_service)
        log.info("removed the HTTP-01 solver Service of %s/%s: %s", owner.namespace, owner.name, why)

    async def record_order(order: Mapping[str, Any]) -> None:
        await api.patch_status(f"{crd.GROUP}/{crd.VERSION}", crd.PLURAL, owner.namespace, owner.name,
                               {"certificate": {"order": dict(order)}})
        memory.certificate["order"] = dict(order)  # so this pass's status patch clears it

    meta = body.get("metadata") or {}
    ctx = CertificateContext(api=api, owner=owner, spec=spec, env=env, previous=memory.certificate,
                             generation=generation, now=dt.datetime.now(dt.UTC), http01=runtime.http01,
                             record_order=record_order, annotations=dict(meta.get("annotations") or {}),
                             vehicles=dict((body.get("status") or {}).get("vehicles") or {}))
    outcome = await ensure_certificate(ctx)
    try:
        server, applied = await _apply_server(runtime, owner, spec)
        server_status.update(applied)
    except KubeError as exc:
        server = Condition(SERVER_READY, "False", "ApiError", f"Kubernetes API: {exc}")
    return outcome, server, server_status


async def _manage(body: kopf.Body, spec: kopf.Spec, meta: kopf.Meta, status: kopf.Status, patch: kopf.Patch,
                  logger: kopf.Logger) -> None:
    runtime = _runtime
    assert runtime is not None, "the startup handler creates the runtime"
    uid = str(meta["uid"])
    generation = meta.get("generation")
    async with runtime.locks.setdefault(uid, asyncio.Lock()):
        if runtime.closed:
            return
        memory = runtime.memory.get(uid) or _Memory.from_status(status)
        parsed, _ = check_spec(dict(spec), generation, uid=uid)  # SpecValid is spec_valid's to write
        conditions: list[Condition] = []
        events: list[Event] = []
        status_patch: dict[str, Any] = {}
        if parsed is not None:
            try:
                outcome, server, server_status = await _pass(runtime, body, memory, parsed, generation)
            except Exception as exc:  # noqa: BLE001 - a pass must never make kopf retry in a loop
                if runtime.closed:
                    return
                logger.exception("the pass over %s/%s failed", meta.get("namespace"), meta.get("name"))
                message = f"unexpected failure, retried on the next pass: {type(exc).__name__}: {exc}"
                conditions += [Condition(CERTIFICATE_READY, "Unknown", "InternalError", message, generation),
                               Condition(SERVER_READY, "Unknown", "InternalError", message, generation)]
            else:
                conditions += [outcome.condition, Condition(server.type, server.status, server.reason,
                                                            server.message, generation)]
                if outcome.rotating is not None:  # CertificateRotating, while staged and once promoted
                    conditions.append(outcome.rotating)
                if outcome.promoted and PROMOTE_ANNOTATION in (meta.get("annotations") or {}):
                    # It asked for this promotion only; removed before the status says "promoted".
                    try:
                        await runtime.api.request("PATCH", resource_path(Owner.of(body)),
                                                  {"metadata": {"annotations": {PROMOTE_ANNOTATION: None}}},
                                                  content_type="application/merge-patch+json")
                    except KubeError as exc:
                        logger.warning("cannot remove the annotation %s: %s", PROMOTE_ANNOTATION, exc)
                events += outcome.events
                status_patch["certificate"] = _replacing(memory.certificate, outcome.status)
                status_patch["server"] = _replacing({"http01Service": True} if memory.http01_service else {},
                                                    server_status)
                memory.certificate = dict(outcome.status)
                memory.http01_service = "http01Service" in server_status
        events += transition_events(memory.announced, conditions)
        memory.announced.update({c.type: (c.status, c.reason) for c in conditions})
        runtime.memory[uid] = memory
        if conditions or status_patch:  # in one write: a reader seeing the conditions sees their details
            try:
                await write_status(runtime.api, Owner.of(body), PASS_OWNED, conditions, status_patch, body=body)
            except KubeError as exc:
                logger.warning("cannot write the status of %s/%s, retried on the next pass: %s",
                               meta.get("namespace"), meta.get("name"), exc)
        for event in events:
            kopf.event(body, type=event.type, reason=event.reason, message=event.message)
            (logger.warning if event.type == "Warning" else logger.info)("%s: %s", event.reason, event.message)


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
async def manage(body: kopf.Body, spec: kopf.Spec, meta: kopf.Meta, status: kopf.Status, patch: kopf.Patch,
                 logger: kopf.Logger, **_: Any) -> None:
    """Certificate and server after a change (or at start): one pass."""
    await _manage(body, spec, meta, status, patch, logger)


@kopf.timer(*RESOURCE, interval=ENVIRONMENT.reconcile_seconds, initial_delay=ENVIRONMENT.reconcile_seconds)
async def keep(body: kopf.Body, spec: kopf.Spec, meta: kopf.Meta, status: kopf.Status, patch: kopf.Patch,
               logger: kopf.Logger, **_: Any) -> None:
    """The same pass on a schedule: renewals fall due, Secrets and Deployments change, CAs recover."""
    await _manage(body, spec, meta, status, patch, logger)


@kopf.on.delete(*RESOURCE, optional=True)
async def forget(meta: kopf.Meta, **_: Any) -> None:
    """Drop what this process remembers about a deleted resource (its objects go by owner reference)."""
    if _runtime is not None:
        _runtime.memory.pop(str(meta["uid"]), None)
        _runtime.locks.pop(str(meta["uid"]), None)


VEHICLES = register_vehicle_handlers(environment=ENVIRONMENT)
"""The vehicles' daemon and watches (`fleetwire.operator.handlers.vehicles`), in this registry."""
