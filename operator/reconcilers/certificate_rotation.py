"""Make before break, the reconciler's side: stage a certificate the vehicles' `ca` refuses,
promote it when the policies of `fleetwire.operator.policies.rotation` say so.

A new certificate is served at once only when the vehicles' `ca` accepts it (or there is no
valid current one to keep); otherwise it waits in `<tls>-next` and CertificateRotating says
how far the fleet is.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from fleetwire.operator.policies import rotation
from fleetwire.operator.policies.certcheck import Report
from fleetwire.operator.policies.certificates import (
    CertificateProblem,
    Material,
    check,
    failures_text,
    material_from_secret,
    parse_timestamp,
    timestamp,
)
from fleetwire.operator.policies.conditions import CERTIFICATE_ROTATING, Condition, Event
from fleetwire.operator.policies.renewal import renew_at
from fleetwire.operator.reconcilers.certificate_context import (
    PROMOTE_BY_ANNOTATION,
    STAGED_AT_ANNOTATION,
    CertificateContext,
    CertificateOutcome,
    issued_event,
    ready_outcome,
    tls_secret,
)
from fleetwire.operator.resource import builders
from fleetwire.operator.resource.builders import Owner
from fleetwire.operator.resource.spec import FleetTelemetrySpec
from fleetwire.pki import chain_fingerprint

__all__ = ["emptied_stage", "install", "rotate", "staged_certificate"]

log = logging.getLogger("fleetwire.operator.reconcilers.certificates")



def emptied_stage(owner: Owner, tls_name: str) -> dict[str, Any]:
    """The staged Secret once its certificate is promoted: no copy of the served key stays
    behind. Emptied rather than deleted, so the operator needs no right to delete Secrets
    (a kubernetes.io/tls Secret must keep both keys; empty values read as nothing staged)."""
    return builders.secret(owner, rotation.next_secret_name(tls_name), {"tls.crt": b"", "tls.key": b""},
                           type_="kubernetes.io/tls")


def _vehicles_expected(spec: FleetTelemetrySpec) -> bool:
    return bool(spec.vehicles) and spec.fleet_api is not None


async def staged_certificate(ctx: CertificateContext, tls_name: str,
                             current: Material | None) -> tuple[Material, Mapping[str, str]] | None:
    """The staged certificate and its annotations, or None. A promoted one stays in its Secret
    (the same chain as the one served) until the next staging overwrites it, and one that no
    longer passes the vehicle checks (it expired waiting, the hostname changed) is ignored, so
    the operator never needs to delete Secrets."""
    name = rotation.next_secret_name(tls_name)
    secret = await ctx.api.get("Secret", ctx.owner.namespace, name)
    if secret is None:
        return None
    try:
        material = material_from_secret(secret, f"{ctx.owner.namespace}/{name}")
    except CertificateProblem as exc:
        log.debug("ignoring the unreadable staged certificate in Secret %s/%s: %s", ctx.owner.namespace, name, exc)
        return None
    if current is not None and material.chain_pem == current.chain_pem:
        return None  # promoted already
    report = check(material, ctx.spec.hostname, ctx.now)
    if not report.ok:
        log.debug("ignoring the staged certificate in Secret %s/%s: %s", ctx.owner.namespace, name,
                  failures_text(report))
        return None
    return material, dict((secret.get("metadata") or {}).get("annotations") or {})


def _next_status(material: Material, staged_at: dt.datetime, deadline: dt.datetime) -> dict[str, Any]:
    """`status.certificate.next`."""
    return {"fingerprint": chain_fingerprint(material.ca_pem), "notAfter": timestamp(material.leaf.not_valid_after_utc),
            "stagedAt": timestamp(staged_at), "promoteBy": timestamp(deadline),
            "serialNumber": format(material.leaf.serial_number, "x")}


def _waiting(ctx: CertificateContext, mode: str, current: Material, report: Report, tls_name: str,
             renew: dt.datetime | None, staged: Material, staged_at: dt.datetime, deadline: dt.datetime,
             events: tuple[Event, ...] = ()) -> CertificateOutcome:
    """The current certificate keeps serving; CertificateRotating says how far the vehicles are."""
    progress = ctx.vehicles.get("next") if isinstance(ctx.vehicles, Mapping) else None
    text = rotation.progress_text(progress, rotation.staged_fingerprint(staged.chain_pem), deadline)
    rotating = Condition(CERTIFICATE_ROTATING, "True", "WaitingForVehicles", text, ctx.generation)
    return ready_outcome(ctx, mode, current, report, tls_name, renew, events=events, rotating=rotating,
                         extra=f"next certificate staged in Secret {rotation.next_secret_name(tls_name)}: {text}",
                         keep={"next": _next_status(staged, staged_at, deadline)})


async def install(ctx: CertificateContext, mode: str, tls_name: str, material: Material, report: Report,
                  reason: str, before: Material | None, before_report: Report | None, source: str,
                  renew_before: dt.timedelta | None, *, extra: str = "",
                  events: tuple[Event, ...] = ()) -> CertificateOutcome:
    """Serve a new certificate at once, or stage it when the vehicles' `ca` would refuse it."""
    hostname = ctx.spec.hostname
    usable = before is not None and before_report is not None and before_report.ok
    decision = rotation.stage_decision(usable, before.ca_pem if before is not None else None, material.chain_pem,
                                       hostname, ctx.now, _vehicles_expected(ctx.spec))
    if decision.code == rotation.REFUSED_BY_CA:
        assert before is not None and before_report is not None
        deadline = rotation.promote_by(ctx.now, before.leaf.not_valid_after_utc, ctx.spec.rotation)
        secret = tls_secret(ctx.owner, rotation.next_secret_name(tls_name), material, hostname=hostname, reason=reason)
        secret["metadata"]["annotations"].update({STAGED_AT_ANNOTATION: timestamp(ctx.now),
                                                  PROMOTE_BY_ANNOTATION: timestamp(deadline)})
        await ctx.api.apply(secret)
        event = Event("Normal", "CertificateStaged",
                      f"staged the certificate for {hostname} via {source} ({reason}) in Secret "
                      f"{rotation.next_secret_name(tls_name)} [{decision.code}]: {decision.message}; the server keeps "
                      f"the current one; promoting by {timestamp(deadline)} at the latest")
        return _waiting(ctx, mode, before, before_report, tls_name, renew_at(before.leaf, renew_before), material,
                        ctx.now, deadline, events=(*events, event))
    await ctx.api.apply(tls_secret(ctx.owner, tls_name, material, hostname=hostname, reason=reason))
    events = (*events, issued_event(hostname, reason, material, before, source))
    if decision.code == rotation.NO_USABLE_CURRENT and before is not None:
        events = (*events, Event("Warning", "CertificateSwitched", f"[{decision.code}] {decision.message}"))
    return ready_outcome(ctx, mode, material, report, tls_name, renew_at(material.leaf, renew_before), extra=extra,
                         events=events)


async def rotate(ctx: CertificateContext, mode: str, tls_name: str, staged: tuple[Material, Mapping[str, str]],
                 current: Material | None, current_report: Report | None, renew_before: dt.timedelta | None,
                 events: tuple[Event, ...] = ()) -> CertificateOutcome:
    """A certificate is staged: promote it (and say why, naming the vehicles left behind), or keep waiting."""
    material, annotations = staged
    hostname = ctx.spec.hostname
    usable = current is not None and current_report is not None and current_report.ok
    staged_at = parse_timestamp(annotations.get(STAGED_AT_ANNOTATION)) or ctx.now
    deadline = parse_timestamp(annotations.get(PROMOTE_BY_ANNOTATION)) or rotation.promote_by(
        staged_at, current.leaf.not_valid_after_utc if current is not None else None, ctx.spec.rotation)
    progress = ctx.vehicles.get("next") if isinstance(ctx.vehicles, Mapping) else None
    facts = rotation.PromoteFacts(usable, rotation.staged_fingerprint(material.chain_pem), deadline, ctx.now,
                                  progress if isinstance(progress, Mapping) else None,
                                  rotation.PROMOTE_ANNOTATION in ctx.annotations, _vehicles_expected(ctx.spec))
    decision = rotation.promote_decision(facts)
    if decision is None:
        assert current is not None and current_report is not None
        return _waiting(ctx, mode, current, current_report, tls_name, renew_at(current.leaf, renew_before),
                        material, staged_at, deadline, events)
    await ctx.api.apply(tls_secret(ctx.owner, tls_name, material, hostname=hostname,
                                   reason=f"promoted ({decision.code})"))
    await ctx.api.apply(emptied_stage(ctx.owner, tls_name))
    behind = int((facts.progress or {}).get("behindCount", 0) or 0) if decision.code != rotation.VEHICLES_READY else 0
    message = (f"promoted the staged certificate for {hostname} (serial {format(material.leaf.serial_number, 'x')}, "
               f"staged at {timestamp(staged_at)}) [{decision.code}]: {decision.message}")
    if behind and decision.code != rotation.DEADLINE:
        message += f"; {rotation.behind_text(facts.progress)}"
    event = Event("Warning" if behind else "Normal", "CertificatePromoted", message)
    rotating = Condition(CERTIFICATE_ROTATING, "False", decision.code,
                         f"promoted at {timestamp(ctx.now)}: {decision.message}", ctx.generation)
    return ready_outcome(ctx, mode, material, check(material, hostname, ctx.now), tls_name,
                  renew_at(material.leaf, renew_before), events=(*events, event), rotating=rotating, promoted=True)


