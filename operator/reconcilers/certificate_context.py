"""One certificate pass's context and outcome, and the TLS Secret every mode ends in.

`CertificateContext` is what a mode (`secretRef`, `privateCA`, `acme`) may know and touch;
`CertificateOutcome` is what it reports: the CertificateReady condition, `status.certificate`
(`describe`) and events. `tls_secret` builds the kubernetes.io/tls Secret the server mounts,
annotated with what was issued and why.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from fleetwire.operator.clients.acme import ChallengeSolver
from fleetwire.operator.clients.kube import KubernetesApi
from fleetwire.operator.environment import OperatorEnvironment
from fleetwire.operator.policies.certcheck import Report
from fleetwire.operator.policies.certificates import (
    CertificateProblem,
    Material,
    check,
    material_from_secret,
    timestamp,
    warnings_text,
)
from fleetwire.operator.policies.conditions import CERTIFICATE_READY, Condition, Event
from fleetwire.operator.policies.renewal import san_dns_names
from fleetwire.operator.resource import builders
from fleetwire.operator.resource.builders import Owner
from fleetwire.operator.resource.spec import FleetTelemetrySpec
from fleetwire.pki import chain_fingerprint

__all__ = [
    "FINGERPRINT_ANNOTATION",
    "CertificateContext",
    "CertificateOutcome",
    "CertificateSource",
    "describe",
    "issued_event",
    "not_ready_outcome",
    "ready_outcome",
    "stored_certificate",
    "tls_secret",
]

log = logging.getLogger("fleetwire.operator.reconcilers.certificates")

FINGERPRINT_ANNOTATION = "fleetwire.io/chain-fingerprint"
NOT_AFTER_ANNOTATION = "fleetwire.io/not-after"
HOSTNAME_ANNOTATION = "fleetwire.io/hostname"
REASON_ANNOTATION = "fleetwire.io/issued-because"
STAGED_AT_ANNOTATION = "fleetwire.io/staged-at"
PROMOTE_BY_ANNOTATION = "fleetwire.io/promote-by"


def describe(material: Material, mode: str, secret_name: str, renew: dt.datetime | None) -> dict[str, Any]:
    """`status.certificate` for a certificate in use: what a user and the next issue's CA push need."""
    leaf = material.leaf
    out: dict[str, Any] = {
        "mode": mode,
        "secretName": secret_name,
        "notBefore": timestamp(leaf.not_valid_before_utc),
        "notAfter": timestamp(leaf.not_valid_after_utc),
        "issuer": leaf.issuer.rfc4514_string(),
        "san": san_dns_names(leaf) or [],
        "serialNumber": format(leaf.serial_number, "x"),
        "chainFingerprint": chain_fingerprint(material.ca_pem),
    }
    if renew is not None:
        out["renewAt"] = timestamp(renew)
    return out


def tls_secret(owner: Owner, name: str, material: Material, *, hostname: str, reason: str) -> dict[str, Any]:
    """The kubernetes.io/tls Secret the server mounts, annotated with what was issued and why."""
    leaf = material.leaf
    annotations = {
        FINGERPRINT_ANNOTATION: chain_fingerprint(material.ca_pem),
        NOT_AFTER_ANNOTATION: timestamp(leaf.not_valid_after_utc),
        HOSTNAME_ANNOTATION: hostname,
        REASON_ANNOTATION: reason,
    }
    return builders.secret(owner, name, {"tls.crt": material.chain_pem, "tls.key": material.key_pem,
                                         "ca.crt": material.ca_pem},
                           type_="kubernetes.io/tls", annotations=annotations)



@dataclass(frozen=True)
class CertificateContext:
    """What a mode needs to know and may touch during one pass.

    `previous` is `status.certificate` as last written (retry and order markers live
    there); `http01` starts (once) and returns the operator's HTTP-01 responder;
    `record_order` writes `status.certificate.order` immediately, before a CA is asked.
    """

    api: KubernetesApi
    owner: Owner
    spec: FleetTelemetrySpec
    env: OperatorEnvironment
    previous: Mapping[str, Any]
    generation: int | None
    now: dt.datetime
    http01: Callable[[], Awaitable[ChallengeSolver]]
    record_order: Callable[[Mapping[str, Any]], Awaitable[None]]
    annotations: Mapping[str, str] = field(default_factory=dict)  # the resource's (PROMOTE_ANNOTATION)
    vehicles: Mapping[str, Any] = field(default_factory=dict)  # `status.vehicles` (its `next`: the fleet's progress)


@dataclass(frozen=True)
class CertificateOutcome:
    """The condition, `status.certificate` (replacing the previous one whole), events, and the
    Secret the server mounts."""

    condition: Condition
    status: dict[str, Any]
    secret_name: str
    events: tuple[Event, ...] = ()
    rotating: Condition | None = None  # CertificateRotating, while a certificate is staged or just promoted
    promoted: bool = False  # a staged certificate was promoted in this pass


class CertificateSource(Protocol):
    """One certificate mode: make sure a usable certificate is in place, say how it went."""

    mode: str

    async def ensure(self, ctx: CertificateContext) -> CertificateOutcome: ...


def ready_outcome(ctx: CertificateContext, mode: str, material: Material, report: Report, secret_name: str,
                  renew: dt.datetime | None, *, extra: str = "", events: tuple[Event, ...] = (),
                  keep: Mapping[str, Any] | None = None, reason: str = "CertificateValid",
                  rotating: Condition | None = None, promoted: bool = False) -> CertificateOutcome:
    leaf = material.leaf
    message = (f"{mode}: certificate for {ctx.spec.hostname} valid until {timestamp(leaf.not_valid_after_utc)}, "
               f"issued by {leaf.issuer.rfc4514_string()}")
    if renew is not None:
        message += f"; renews at {timestamp(renew)}"
    warnings = warnings_text(report)
    if warnings:
        message += f"; warnings: {warnings}"
    if extra:
        message += f"; {extra}"
    status = {**describe(material, mode, secret_name, renew), **(keep or {})}
    return CertificateOutcome(Condition(CERTIFICATE_READY, "True", reason, message, ctx.generation),
                              status, secret_name, events, rotating, promoted)


def not_ready_outcome(ctx: CertificateContext, mode: str, reason: str, message: str, secret_name: str, *,
                      events: tuple[Event, ...] = (), keep: Mapping[str, Any] | None = None) -> CertificateOutcome:
    return CertificateOutcome(Condition(CERTIFICATE_READY, "False", reason, message, ctx.generation),
                              {"mode": mode, "secretName": secret_name, **(keep or {})}, secret_name, events)


async def stored_certificate(ctx: CertificateContext, name: str) -> tuple[Material | None, Report | None]:
    """The certificate in a Secret the operator writes, and its checks; (None, None) if absent
    or unreadable (then it is simply issued anew)."""
    secret = await ctx.api.get("Secret", ctx.owner.namespace, name)
    if secret is None:
        return None, None
    try:
        material = material_from_secret(secret, f"{ctx.owner.namespace}/{name}")
    except CertificateProblem as exc:
        log.warning("replacing the unreadable certificate in Secret %s/%s: %s", ctx.owner.namespace, name, exc)
        return None, None
    return material, check(material, ctx.spec.hostname, ctx.now)


def issued_event(hostname: str, reason: str, material: Material, before: Material | None,
                 source: str) -> Event:
    leaf = material.leaf
    fingerprint = chain_fingerprint(material.ca_pem)
    if before is None:
        change = f"chain fingerprint {fingerprint[:16]}"
    elif chain_fingerprint(before.ca_pem) == fingerprint:
        change = "same chain: the vehicles' ca is unchanged"
    else:
        change = f"NEW chain {fingerprint[:16]}: the vehicles need the new ca"
    verb = "Issued" if before is None else "Renewed"
    return Event("Normal", f"Certificate{verb}",
                 f"{verb} the certificate for {hostname} via {source} ({reason}): serial "
                 f"{format(leaf.serial_number, 'x')}, valid until {timestamp(leaf.not_valid_after_utc)}; {change}")


