"""The server certificate: one interface, three modes.

- `acme`: issued and renewed through ACME (HTTP-01 answered by the operator itself, or
  DNS-01 through the provider's API); the account key is kept in a Secret.
- `secretRef`: a kubernetes.io/tls Secret someone else keeps valid (cert-manager).
- `privateCA`: a long-lived CA kept in a Secret issues short-lived P-256 leaves, so the
  vehicles' `ca` never changes across renewals.

Every mode ends in the same place: a kubernetes.io/tls Secret the server mounts
(`tls.crt` the full chain leaf first, `tls.key`, `ca.crt` everything above the leaf
including the root: what vehicles must trust), checked the way a vehicle checks it
(`check_server_certificate`), and a `CertificateReady` condition that says what is
wrong in words a user can act on. A bad Secret or a failing CA is a condition, never an
exception that makes kopf retry in a loop.

The decisions are pure functions returning a reason (`reissue_reason`, `retry_wait`,
`order_gate`); the mode classes gather state, ask them, act, and report. Two rules keep
issuance from repeating itself: before an order starts, its hostname, reason and start
time are written into `status.certificate.order` at once, so an operator that restarts
(or a second replica that takes over) does not start another one while it may still be
running; and a certificate that is valid for the hostname is never re-issued, whatever
the marker says. ACME failures back off with `renewal.backoff`, recorded in
`status.certificate.retry`; changing the spec retries at once.

A new certificate replaces the served one at once only when the vehicles' `ca` accepts it
(or there is no valid current one to keep); otherwise it is staged in `<tls>-next` and
promoted by the policies of `fleetwire.operator.policies.rotation` (make before break). Of the
chains an ACME CA offers, the one the vehicles' `ca` accepts is served; a private CA near
its end is succeeded by a new one it cross-signs.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from fleetwire import pki
from fleetwire.pki import chain_fingerprint
from fleetwire.operator.resource import builders
from fleetwire.operator.policies import rotation
from fleetwire.operator.clients.acme import (
    AcmeClient,
    AcmeError,
    ChallengeSolver,
    IssuedCertificate,
    PebbleRoots,
    RootFetcher,
    choose_chain,
    static_roots,
)
from fleetwire.operator.resource.builders import Names, Owner
from fleetwire.operator.policies.certcheck import Report, check_server_certificate
from fleetwire.trust import refusal
from fleetwire.operator.clients.dns01 import CLOUDFLARE_API, CloudflareDns, Dns01Solver, DnsProviderError
from fleetwire.operator.environment import OperatorEnvironment
from fleetwire.operator.clients.kube import KubeError, KubernetesApi
from fleetwire.operator.policies.conditions import CERTIFICATE_READY, Condition, Event
from fleetwire.operator.policies.renewal import backoff, renew_at, renewal_reason, san_dns_names
from fleetwire.operator.resource.spec import (
    AcmeCertificate,
    Dns01Challenge,
    FleetTelemetrySpec,
    PrivateCaCertificate,
    SecretCertificate,
)

__all__ = [
    "ACCOUNT_KEY",
    "FINGERPRINT_ANNOTATION",
    "ORDER_TIMEOUT",
    "CertificateContext",
    "CertificateOutcome",
    "CertificateProblem",
    "CertificateSource",
    "Material",
    "chain_fingerprint",
    "check",
    "describe",
    "ensure_certificate",
    "failed_retry",
    "material_from_secret",
    "new_private_ca",
    "order_gate",
    "private_leaf",
    "reissue_reason",
    "retry_wait",
    "source_for",
    "tls_secret",
]

log = logging.getLogger("fleetwire.operator.reconcilers.certificates")

FINGERPRINT_ANNOTATION = "fleetwire.io/chain-fingerprint"
NOT_AFTER_ANNOTATION = "fleetwire.io/not-after"
HOSTNAME_ANNOTATION = "fleetwire.io/hostname"
REASON_ANNOTATION = "fleetwire.io/issued-because"
STAGED_AT_ANNOTATION = "fleetwire.io/staged-at"
PROMOTE_BY_ANNOTATION = "fleetwire.io/promote-by"
ACCOUNT_KEY = "account.key"
ACCOUNT_URI_ANNOTATION = "fleetwire.io/acme-account"

ORDER_TIMEOUT = dt.timedelta(minutes=3)
"""An order started longer ago than this is abandoned: `AcmeClient.issue` gives up after two minutes."""
ISSUE_TIMEOUT = 120.0
DNS01_PROPAGATION_SECONDS = 10.0
_BACKDATE = dt.timedelta(hours=1)  # tolerate clock skew between the server and the vehicles


class CertificateProblem(Exception):
    """A certificate that cannot be used; `reason` is the condition's CamelCase reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


# ======================================================================================
# Pure parts
# ======================================================================================


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _timestamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_timestamp(text: Any) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None


@dataclass(frozen=True)
class Material:
    """What a TLS Secret holds: the chain (leaf first), its key, and the `ca` vehicles trust."""

    chain_pem: bytes
    key_pem: bytes = field(repr=False)
    ca_pem: bytes

    @property
    def leaf(self) -> x509.Certificate:
        return x509.load_pem_x509_certificates(self.chain_pem)[0]


def _secret_bytes(secret: Mapping[str, Any], key: str) -> bytes | None:
    value = (secret.get("data") or {}).get(key)
    if not value:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def material_from_secret(secret: Mapping[str, Any], where: str) -> Material:
    """The certificate in a kubernetes.io/tls Secret; `ca.crt`, if absent, is the chain above the leaf.

    Raises `CertificateProblem` naming the missing or unreadable key.
    """
    chain_pem, key_pem = _secret_bytes(secret, "tls.crt"), _secret_bytes(secret, "tls.key")
    if chain_pem is None or key_pem is None:
        missing = " and ".join(k for k, v in (("tls.crt", chain_pem), ("tls.key", key_pem)) if v is None)
        raise CertificateProblem("SecretInvalid", f"Secret {where} has no {missing}: expected a kubernetes.io/tls "
                                 "Secret with tls.crt (the chain, leaf first), tls.key and ideally ca.crt")
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as exc:
        raise CertificateProblem("SecretInvalid", f"Secret {where}: tls.crt holds no readable PEM certificate "
                                 f"({exc})") from None
    ca_pem = _secret_bytes(secret, "ca.crt")
    if ca_pem:
        try:
            x509.load_pem_x509_certificates(ca_pem)
        except ValueError as exc:
            raise CertificateProblem("SecretInvalid", f"Secret {where}: ca.crt holds no readable PEM "
                                     f"certificate ({exc})") from None
    else:
        if len(chain) < 2:
            raise CertificateProblem(
                "SecretInvalid", f"Secret {where} has no ca.crt and its tls.crt holds only the leaf: vehicles need "
                "the chain that issued it; add ca.crt or put the intermediates (and root) after the leaf")
        ca_pem = b"".join(_pem(cert) for cert in chain[1:])
    return Material(chain_pem, key_pem, ca_pem)


def check(material: Material, hostname: str, now: dt.datetime) -> Report:
    """The checks a vehicle makes, plus the key: SAN names the host, chain verifies, not expired."""
    return check_server_certificate(material.chain_pem, material.ca_pem, hostname, key_pem=material.key_pem, now=now)


def failures_text(report: Report) -> str:
    return "; ".join(f"{c.name}: {c.detail}" for c in report.failures)


def warnings_text(report: Report) -> str:
    return "; ".join(f"{c.name}: {c.detail}" for c in report.warnings)


def reissue_reason(material: Material | None, report: Report | None, hostname: str, now: dt.datetime,
                   renew_before: dt.timedelta | None = None) -> str | None:
    """Why the operator must issue a new certificate (None: keep this one).

    `renewal_reason` decides on name and lifetime; a stored certificate that fails the
    vehicle checks (a chain that does not verify, a key that does not match) is replaced too.
    """
    if material is None:
        return "no certificate"
    reason = renewal_reason(material.leaf, hostname, now, renew_before)
    if reason is not None:
        return reason
    if report is not None and not report.ok:
        return f"the stored certificate fails checks ({failures_text(report)})"
    return None


def retry_wait(retry: Mapping[str, Any] | None, generation: int | None, now: dt.datetime) -> str | None:
    """Why not to ask the CA now: the back-off after failures (None: go ahead).

    A new spec generation ends the back-off, since the user may have fixed the cause.
    """
    if not retry or retry.get("generation") != generation:
        return None
    until = _parse_timestamp(retry.get("nextAttemptAt"))
    if until is None or now >= until:
        return None
    return (f"{retry.get('attempts')} failed attempt(s), next at {_timestamp(until)}; "
            f"last error: {retry.get('lastError')}")


def failed_retry(retry: Mapping[str, Any] | None, generation: int | None, error: str,
                 now: dt.datetime) -> dict[str, Any]:
    """The retry record after one more failure: attempts counted per spec generation."""
    same = bool(retry) and retry.get("generation") == generation  # type: ignore[union-attr]
    attempts = (int(retry.get("attempts") or 0) if same else 0) + 1  # type: ignore[union-attr]
    return {"attempts": attempts, "generation": generation, "lastError": error,
            "lastAttemptAt": _timestamp(now), "nextAttemptAt": _timestamp(now + backoff(attempts))}


def order_gate(order: Mapping[str, Any] | None, hostname: str, now: dt.datetime) -> str | None:
    """Why not to start an order now: one for the same name began less than `ORDER_TIMEOUT` ago
    and may still be running in another process (a replica that took over, or this
    operator before a restart). None: start one."""
    if not order or order.get("hostname") != hostname:
        return None
    started = _parse_timestamp(order.get("startedAt"))
    if started is None or now - started >= ORDER_TIMEOUT:
        return None
    return (f"an order for {hostname} ({order.get('reason')}) started at {_timestamp(started)} may still be "
            f"running; waiting until {_timestamp(started + ORDER_TIMEOUT)} before starting another")


def describe(material: Material, mode: str, secret_name: str, renew: dt.datetime | None) -> dict[str, Any]:
    """`status.certificate` for a certificate in use: what a user and the next issue's CA push need."""
    leaf = material.leaf
    out: dict[str, Any] = {
        "mode": mode,
        "secretName": secret_name,
        "notBefore": _timestamp(leaf.not_valid_before_utc),
        "notAfter": _timestamp(leaf.not_valid_after_utc),
        "issuer": leaf.issuer.rfc4514_string(),
        "san": san_dns_names(leaf) or [],
        "serialNumber": format(leaf.serial_number, "x"),
        "chainFingerprint": chain_fingerprint(material.ca_pem),
    }
    if renew is not None:
        out["renewAt"] = _timestamp(renew)
    return out


def tls_secret(owner: Owner, name: str, material: Material, *, hostname: str, reason: str) -> dict[str, Any]:
    """The kubernetes.io/tls Secret the server mounts, annotated with what was issued and why."""
    leaf = material.leaf
    annotations = {
        FINGERPRINT_ANNOTATION: chain_fingerprint(material.ca_pem),
        NOT_AFTER_ANNOTATION: _timestamp(leaf.not_valid_after_utc),
        HOSTNAME_ANNOTATION: hostname,
        REASON_ANNOTATION: reason,
    }
    return builders.secret(owner, name, {"tls.crt": material.chain_pem, "tls.key": material.key_pem,
                                         "ca.crt": material.ca_pem},
                           type_="kubernetes.io/tls", annotations=annotations)


def new_private_ca(owner: Owner, days: int) -> pki.Bundle:
    """A CA named after the resource, with room for one CA below it (path length 1): the
    cross-certificate of its successor, which keeps vehicles holding it connecting."""
    return pki.make_ca(f"fleetwire {owner.namespace}/{owner.name} server CA", days=days, path_length=1,
                       organization="fleetwire")


def private_leaf(ca: pki.Bundle, hostname: str, days: int, now: dt.datetime) -> Material:
    """A P-256 server certificate naming `hostname` in subjectAltName only, valid at most as long as the CA.

    The subject is empty, so the SAN extension is critical (RFC 5280 4.2.1.6).
    """
    key = pki.generate_key()
    not_after = min(now + dt.timedelta(days=days), ca.cert.not_valid_after_utc)
    ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(max(now - _BACKDATE, ca.cert.not_valid_before_utc))
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=True)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return Material(_pem(cert), key_pem, ca.cert_pem)


CROSS_KEY = "cross.crt"
"""In the private CA's Secret after a rollover: the new CA certified by the old one."""


def _cross_from_secret(secret: Mapping[str, Any], now: dt.datetime) -> x509.Certificate | None:
    """The rollover's cross-certificate while it is valid (afterwards the leaf is served alone)."""
    pem = _secret_bytes(secret, CROSS_KEY)
    if not pem:
        return None
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None
    return cert if cert.not_valid_before_utc <= now < cert.not_valid_after_utc else None


def ca_from_secret(secret: Mapping[str, Any], where: str, now: dt.datetime) -> pki.Bundle:
    """The private CA kept in a Secret; `CertificateProblem` if it cannot sign any more."""
    cert_pem, key_pem = _secret_bytes(secret, "tls.crt"), _secret_bytes(secret, "tls.key")
    fix = (f"; delete Secret {where} to create a new CA (every vehicle must then be sent the new ca)")
    try:
        if cert_pem is None or key_pem is None:
            raise ValueError("tls.crt or tls.key is missing")
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except ValueError as exc:
        raise CertificateProblem("CaInvalid", f"Secret {where} holds no usable CA: {exc}{fix}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise CertificateProblem("CaInvalid", f"Secret {where}: tls.key is not the CA certificate's P-256 key{fix}")
    if now >= cert.not_valid_after_utc:
        raise CertificateProblem("CaExpired", f"the private CA in Secret {where} expired at "
                                 f"{_timestamp(cert.not_valid_after_utc)}{fix}")
    return pki.Bundle(cert, key)


# ======================================================================================
# The interface and its three modes
# ======================================================================================


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


def _ready(ctx: CertificateContext, mode: str, material: Material, report: Report, secret_name: str,
           renew: dt.datetime | None, *, extra: str = "", events: tuple[Event, ...] = (),
           keep: Mapping[str, Any] | None = None, reason: str = "CertificateValid",
           rotating: Condition | None = None, promoted: bool = False) -> CertificateOutcome:
    leaf = material.leaf
    message = (f"{mode}: certificate for {ctx.spec.hostname} valid until {_timestamp(leaf.not_valid_after_utc)}, "
               f"issued by {leaf.issuer.rfc4514_string()}")
    if renew is not None:
        message += f"; renews at {_timestamp(renew)}"
    warnings = warnings_text(report)
    if warnings:
        message += f"; warnings: {warnings}"
    if extra:
        message += f"; {extra}"
    status = {**describe(material, mode, secret_name, renew), **(keep or {})}
    return CertificateOutcome(Condition(CERTIFICATE_READY, "True", reason, message, ctx.generation),
                              status, secret_name, events, rotating, promoted)


def _not_ready(ctx: CertificateContext, mode: str, reason: str, message: str, secret_name: str, *,
               events: tuple[Event, ...] = (), keep: Mapping[str, Any] | None = None) -> CertificateOutcome:
    return CertificateOutcome(Condition(CERTIFICATE_READY, "False", reason, message, ctx.generation),
                              {"mode": mode, "secretName": secret_name, **(keep or {})}, secret_name, events)


async def _stored(ctx: CertificateContext, name: str) -> tuple[Material | None, Report | None]:
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


def _issued_event(hostname: str, reason: str, material: Material, before: Material | None,
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
                 f"{format(leaf.serial_number, 'x')}, valid until {_timestamp(leaf.not_valid_after_utc)}; {change}")


# -- make before break (`fleetwire.operator.policies.rotation`) ---------------------------------


def _vehicles_expected(spec: FleetTelemetrySpec) -> bool:
    return bool(spec.vehicles) and spec.fleet_api is not None


async def _staged(ctx: CertificateContext, tls_name: str,
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
    return {"fingerprint": chain_fingerprint(material.ca_pem), "notAfter": _timestamp(material.leaf.not_valid_after_utc),
            "stagedAt": _timestamp(staged_at), "promoteBy": _timestamp(deadline),
            "serialNumber": format(material.leaf.serial_number, "x")}


def _waiting(ctx: CertificateContext, mode: str, current: Material, report: Report, tls_name: str,
             renew: dt.datetime | None, staged: Material, staged_at: dt.datetime, deadline: dt.datetime,
             events: tuple[Event, ...] = ()) -> CertificateOutcome:
    """The current certificate keeps serving; CertificateRotating says how far the vehicles are."""
    progress = ctx.vehicles.get("next") if isinstance(ctx.vehicles, Mapping) else None
    text = rotation.progress_text(progress, rotation.staged_fingerprint(staged.chain_pem), deadline)
    rotating = Condition(rotation.CERTIFICATE_ROTATING, "True", "WaitingForVehicles", text, ctx.generation)
    return _ready(ctx, mode, current, report, tls_name, renew, events=events, rotating=rotating,
                  extra=f"next certificate staged in Secret {rotation.next_secret_name(tls_name)}: {text}",
                  keep={"next": _next_status(staged, staged_at, deadline)})


async def _install(ctx: CertificateContext, mode: str, tls_name: str, material: Material, report: Report,
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
        secret["metadata"]["annotations"].update({STAGED_AT_ANNOTATION: _timestamp(ctx.now),
                                                  PROMOTE_BY_ANNOTATION: _timestamp(deadline)})
        await ctx.api.apply(secret)
        event = Event("Normal", "CertificateStaged",
                      f"staged the certificate for {hostname} via {source} ({reason}) in Secret "
                      f"{rotation.next_secret_name(tls_name)} [{decision.code}]: {decision.message}; the server keeps "
                      f"the current one; promoting by {_timestamp(deadline)} at the latest")
        return _waiting(ctx, mode, before, before_report, tls_name, renew_at(before.leaf, renew_before), material,
                        ctx.now, deadline, events=(*events, event))
    await ctx.api.apply(tls_secret(ctx.owner, tls_name, material, hostname=hostname, reason=reason))
    events = (*events, _issued_event(hostname, reason, material, before, source))
    if decision.code == rotation.NO_USABLE_CURRENT and before is not None:
        events = (*events, Event("Warning", "CertificateSwitched", f"[{decision.code}] {decision.message}"))
    return _ready(ctx, mode, material, report, tls_name, renew_at(material.leaf, renew_before), extra=extra,
                  events=events)


async def _rotate(ctx: CertificateContext, mode: str, tls_name: str, staged: tuple[Material, Mapping[str, str]],
                  current: Material | None, current_report: Report | None, renew_before: dt.timedelta | None,
                  events: tuple[Event, ...] = ()) -> CertificateOutcome:
    """A certificate is staged: promote it (and say why, naming the vehicles left behind), or keep waiting."""
    material, annotations = staged
    hostname = ctx.spec.hostname
    usable = current is not None and current_report is not None and current_report.ok
    staged_at = _parse_timestamp(annotations.get(STAGED_AT_ANNOTATION)) or ctx.now
    deadline = _parse_timestamp(annotations.get(PROMOTE_BY_ANNOTATION)) or rotation.promote_by(
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
    behind = int((facts.progress or {}).get("behindCount", 0) or 0) if decision.code != rotation.VEHICLES_READY else 0
    message = (f"promoted the staged certificate for {hostname} (serial {format(material.leaf.serial_number, 'x')}, "
               f"staged at {_timestamp(staged_at)}) [{decision.code}]: {decision.message}")
    if behind and decision.code != rotation.DEADLINE:
        message += f"; {rotation.behind_text(facts.progress)}"
    event = Event("Warning" if behind else "Normal", "CertificatePromoted", message)
    rotating = Condition(rotation.CERTIFICATE_ROTATING, "False", decision.code,
                         f"promoted at {_timestamp(ctx.now)}: {decision.message}", ctx.generation)
    return _ready(ctx, mode, material, check(material, hostname, ctx.now), tls_name,
                  renew_at(material.leaf, renew_before), events=(*events, event), rotating=rotating, promoted=True)


class SecretRefSource:
    """A TLS Secret managed elsewhere: read and check it, never write it."""

    mode = "secretRef"

    async def ensure(self, ctx: CertificateContext) -> CertificateOutcome:
        assert isinstance(ctx.spec.certificate, SecretCertificate)
        name = ctx.spec.certificate.secret_name
        where = f"{ctx.owner.namespace}/{name}"
        secret = await ctx.api.get("Secret", ctx.owner.namespace, name)
        if secret is None:
            return _not_ready(ctx, self.mode, "SecretNotFound",
                              f"Secret {where} not found: create a kubernetes.io/tls Secret (e.g. a cert-manager "
                              f"Certificate) for {ctx.spec.hostname} with tls.crt, tls.key and ca.crt", name)
        try:
            material = material_from_secret(secret, where)
        except CertificateProblem as exc:
            return _not_ready(ctx, self.mode, exc.reason, exc.message, name)
        report = check(material, ctx.spec.hostname, ctx.now)
        if not report.ok:
            return _not_ready(ctx, self.mode, "CertificateInvalid",
                              f"Secret {where}: vehicles would refuse it: {failures_text(report)}", name,
                              keep={"chainFingerprint": chain_fingerprint(material.ca_pem)})
        return _ready(ctx, self.mode, material, report, name, None)


class PrivateCaSource:
    """A CA kept in `<name>-ca` issues the leaf in `<name>-tls`; the `ca` stays the CA certificate."""

    mode = "privateCA"

    async def ensure(self, ctx: CertificateContext) -> CertificateOutcome:
        assert isinstance(ctx.spec.certificate, PrivateCaCertificate)
        settings = ctx.spec.certificate
        names, namespace = Names(ctx.owner.name), ctx.owner.namespace
        events: list[Event] = []
        ca_secret = await ctx.api.get("Secret", namespace, names.ca_secret)
        if ca_secret is None:
            ca = new_private_ca(ctx.owner, settings.validity_days)
            await ctx.api.apply(builders.secret(ctx.owner, names.ca_secret, {"tls.crt": ca.cert_pem,
                                                                             "tls.key": ca.key_pem},
                                                type_="kubernetes.io/tls", component="private-ca"))
            events.append(Event("Normal", "PrivateCaCreated",
                                f"created a private CA valid until {_timestamp(ca.cert.not_valid_after_utc)} in "
                                f"Secret {names.ca_secret}: it is the ca vehicles trust"))
        else:
            try:
                ca = ca_from_secret(ca_secret, f"{namespace}/{names.ca_secret}", ctx.now)
            except CertificateProblem as exc:
                return _not_ready(ctx, self.mode, exc.reason, exc.message, names.tls_secret)
        cross = _cross_from_secret(ca_secret, ctx.now) if ca_secret is not None else None
        if ca.cert.not_valid_after_utc - ctx.now < dt.timedelta(days=settings.leaf_validity_days):
            old = ca
            ca = new_private_ca(ctx.owner, settings.validity_days)
            # A CA limited to signing leaves (path length 0, as CAs before this rollover were made)
            # cannot certify another CA: then the new one is staged like a replaced CA.
            constraints = old.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
            cross = pki.cross_sign(ca, old) if constraints.path_length != 0 else None
            data = {"tls.crt": ca.cert_pem, "tls.key": ca.key_pem, **({CROSS_KEY: _pem(cross)} if cross else {})}
            await ctx.api.apply(builders.secret(ctx.owner, names.ca_secret, data, type_="kubernetes.io/tls",
                                                component="private-ca"))
            how = ("cross-signed by the old one until it expires, so a vehicle holding the old ca keeps connecting; "
                   "the new ca reaches the vehicles with their next push" if cross is not None else
                   "the old one may only sign leaves and cannot cross-sign it, so the new certificate is staged "
                   "until the vehicles hold a ca for both")
            events.append(Event("Normal", "PrivateCaRolledOver",
                                f"the private CA expires at {_timestamp(old.cert.not_valid_after_utc)}, within one leaf "
                                f"lifetime: a new CA valid until {_timestamp(ca.cert.not_valid_after_utc)} is in Secret "
                                f"{names.ca_secret}, {how}"))
        material, report = await _stored(ctx, names.tls_secret)
        staged = await _staged(ctx, names.tls_secret, material)
        if staged is not None:
            return await _rotate(ctx, self.mode, names.tls_secret, staged, material, report, None, tuple(events))
        reason = reissue_reason(material, report, ctx.spec.hostname, ctx.now)
        if reason is None and material is not None and material.ca_pem != ca.cert_pem:
            reason = "the private CA was replaced"
        left = ca.cert.not_valid_after_utc - ctx.now
        extra = (f"the private CA expires at {_timestamp(ca.cert.not_valid_after_utc)}, within one leaf lifetime"
                 if left < dt.timedelta(days=settings.leaf_validity_days) else "")
        if reason is not None:
            before, before_report = material, report
            material = private_leaf(ca, ctx.spec.hostname, settings.leaf_validity_days, ctx.now)
            if cross is not None:  # presented after the leaf: the old CA's vehicles reach their anchor through it
                material = Material(material.chain_pem + _pem(cross), material.key_pem, material.ca_pem)
            report = check(material, ctx.spec.hostname, ctx.now)
            if not report.ok:  # the CA itself cannot make acceptable leaves (e.g. it is about to expire)
                return _not_ready(ctx, self.mode, "CertificateInvalid",
                                  f"a leaf from the private CA fails checks: {failures_text(report)}",
                                  names.tls_secret, events=tuple(events))
            return await _install(ctx, self.mode, names.tls_secret, material, report, reason, before, before_report,
                                  "the private CA", None, extra=extra, events=tuple(events))
        assert material is not None and report is not None
        return _ready(ctx, self.mode, material, report, names.tls_secret, renew_at(material.leaf), extra=extra,
                      events=tuple(events))


class AcmeSource:
    """ACME issuance and renewal, with back-off and the order marker described above."""

    mode = "acme"

    async def ensure(self, ctx: CertificateContext) -> CertificateOutcome:
        settings = ctx.spec.certificate
        assert isinstance(settings, AcmeCertificate)
        names, hostname = Names(ctx.owner.name), ctx.spec.hostname
        material, report = await _stored(ctx, names.tls_secret)
        staged = await _staged(ctx, names.tls_secret, material)
        if staged is not None:
            return await _rotate(ctx, self.mode, names.tls_secret, staged, material, report, settings.renew_before)
        reason = reissue_reason(material, report, hostname, ctx.now, settings.renew_before)
        usable = material is not None and report is not None and report.ok
        if reason is None:
            assert material is not None and report is not None
            return _ready(ctx, self.mode, material, report, names.tls_secret,
                          renew_at(material.leaf, settings.renew_before))
        retry = ctx.previous.get("retry")
        wait = retry_wait(retry, ctx.generation, ctx.now)
        gate = order_gate(ctx.previous.get("order"), hostname, ctx.now)
        if wait is not None or gate is not None:
            keep = {k: v for k, v in (("retry", retry), ("order", ctx.previous.get("order"))) if v}
            why = wait or gate or ""
            # The reasons stay those of the failure itself, so waiting out a back-off is no news.
            if usable:
                assert material is not None and report is not None
                return _ready(ctx, self.mode, material, report, names.tls_secret,
                              renew_at(material.leaf, settings.renew_before), keep=keep,
                              extra=f"renewal due ({reason}) waits: {why}",
                              reason="RenewalFailing" if wait else "RenewalPending")
            return _not_ready(ctx, self.mode, "AcmeFailed" if wait else "OrderInProgress",
                              f"no usable certificate for {hostname} ({reason}); {why}", names.tls_secret, keep=keep)

        order = {"hostname": hostname, "reason": reason, "startedAt": _timestamp(ctx.now)}
        await ctx.record_order(order)
        try:
            issued, root_note = await self._issue(ctx, settings, material)
            fresh = check(issued, hostname, dt.datetime.now(dt.UTC))
            if not fresh.ok:
                raise AcmeError(f"the CA's certificate fails the vehicle checks: {failures_text(fresh)}")
            return await _install(ctx, self.mode, names.tls_secret, issued, fresh, reason, material, report,
                                  f"ACME ({settings.directory_url})", settings.renew_before, extra=root_note)
        except (AcmeError, DnsProviderError, KubeError, OSError, ValueError, CertificateProblem) as exc:
            # ValueError: unreadable rootCertificates or account key, both the user's to fix.
            error = str(exc).rstrip(".")
            record = failed_retry(retry, ctx.generation, error, ctx.now)
            wait_for = backoff(int(record["attempts"]))
            verb = "issue" if material is None else "renew"
            event = Event("Warning", "CertificateFailed",
                          f"could not {verb} the certificate for {hostname} ({reason}): {error}; attempt "
                          f"{record['attempts']}, next in {int(wait_for.total_seconds() // 60)} min")
            if usable:
                assert material is not None and report is not None
                return _ready(ctx, self.mode, material, report, names.tls_secret,
                              renew_at(material.leaf, settings.renew_before), keep={"retry": record},
                              extra=f"renewal failing ({reason}): {error}", events=(event,), reason="RenewalFailing")
            return _not_ready(ctx, self.mode, "AcmeFailed",
                              f"could not {verb} the certificate for {hostname}: {error}; next attempt at "
                              f"{record['nextAttemptAt']}", names.tls_secret, events=(event,), keep={"retry": record})

    async def _issue(self, ctx: CertificateContext, settings: AcmeCertificate,
                     current: Material | None) -> tuple[Material, str]:
        """Account key from its Secret (created on first use), a solver, one order; of the chains
        the CA offers (RFC 8555 alternates), the first the vehicles' current `ca` accepts."""
        namespace = ctx.owner.namespace
        account_name = settings.account_secret_name or Names(ctx.owner.name).account_secret
        account = await ctx.api.get("Secret", namespace, account_name)
        key_pem = _secret_bytes(account, ACCOUNT_KEY) if account is not None else None
        if key_pem is None:
            key_pem = pki.generate_key().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption())
            # Kept before the CA sees it, so a crash after registering loses no account. A
            # named (possibly shared) account Secret is not owned: deleting one resource keeps it.
            owned = settings.account_secret_name is None
            await ctx.api.apply(builders.secret(ctx.owner, account_name, {ACCOUNT_KEY: key_pem},
                                                component="acme-account", owned=owned))
        env = ctx.env
        verify: bool | str = env.acme_ca_bundle or True
        roots: RootFetcher | None = None
        if settings.root_certificates:
            roots = static_roots(settings.root_certificates.encode())
        elif env.acme_roots_url:
            roots = PebbleRoots(env.acme_roots_url, verify=verify)
        closers: list[Callable[[], Awaitable[None]]] = []
        try:
            if settings.challenge == "dns01":
                assert settings.dns01 is not None
                solver: ChallengeSolver = await self._dns01(ctx, settings.dns01, closers)
            else:
                solver = await ctx.http01()
            try:
                client = AcmeClient(settings.directory_url, account_key_pem=key_pem, verify=verify, root_fetcher=roots)
            except ValueError as exc:
                raise AcmeError(f"the ACME account key in Secret {namespace}/{account_name} is unusable ({exc}); "
                                "delete the Secret to register a new account") from None
            async with client:
                await client.register(settings.email)
                issued = await client.issue(ctx.spec.hostname, solver, timeout=ISSUE_TIMEOUT)
        finally:
            for close in closers:
                await close()
        if current is not None and issued.alternates:
            def accepted(chain: IssuedCertificate) -> bool:
                return refusal(chain.chain_pem, current.ca_pem, ctx.spec.hostname, ctx.now) is None

            chosen = choose_chain(issued, accepted)
            if chosen is not issued:
                log.info("serving the CA's alternate chain for %s: the vehicles' ca accepts it, not the default one",
                         ctx.spec.hostname)
            issued = chosen
        note = f"ca has no root: {issued.root_missing_reason}" if issued.root_missing else ""
        return Material(issued.chain_pem, issued.key_pem, issued.ca_chain_pem), note

    async def _dns01(self, ctx: CertificateContext, dns01: Dns01Challenge,
                     closers: list[Callable[[], Awaitable[None]]]) -> ChallengeSolver:
        ref = dns01.api_token
        secret = await ctx.api.get("Secret", ctx.owner.namespace, ref.name)
        token = _secret_bytes(secret, ref.key) if secret is not None else None
        if not token:
            raise AcmeError(f"Secret {ctx.owner.namespace}/{ref.name} with key {ref.key} (the {dns01.provider} API "
                            "token for DNS-01) not found")
        base_url = (ctx.env.cloudflare_api_url or CLOUDFLARE_API).rstrip("/")
        api_token = token.decode().strip()
        zone_id = await cloudflare_zone_id(api_token, dns01.zone, base_url)
        provider = CloudflareDns(api_token, zone_id, base_url=base_url)
        closers.append(provider.aclose)
        return Dns01Solver(provider, propagation_delay=DNS01_PROPAGATION_SECONDS)


async def cloudflare_zone_id(api_token: str, zone: str, base_url: str = CLOUDFLARE_API) -> str:
    """The id of the Cloudflare zone called `zone`: the spec names the zone, the API wants its id."""
    url = f"{base_url.rstrip('/')}/zones"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            async with session.get(url, params={"name": zone}, headers={"Authorization": f"Bearer {api_token}"}) as r:
                body = await r.json(content_type=None)
                status = r.status
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise DnsProviderError(f"cannot reach the Cloudflare API at {base_url} to look up zone {zone}: {exc}") from exc
    found = body.get("result") if isinstance(body, dict) and body.get("success") else None
    if status != 200 or not isinstance(found, list):
        errors = body.get("errors", []) if isinstance(body, dict) else []
        detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors if isinstance(e, dict))
        raise DnsProviderError(f"Cloudflare refused to look up zone {zone} (HTTP {status}): {detail or 'no detail'}"
                               " — the API token needs Zone:Read and DNS:Edit on that zone")
    for entry in found:
        if isinstance(entry, dict) and entry.get("name") == zone and entry.get("id"):
            return str(entry["id"])
    raise DnsProviderError(f"Cloudflare has no zone {zone} visible to this API token")


def source_for(spec: FleetTelemetrySpec) -> CertificateSource:
    """The mode the spec asks for."""
    certificate = spec.certificate
    if isinstance(certificate, AcmeCertificate):
        return AcmeSource()
    if isinstance(certificate, SecretCertificate):
        return SecretRefSource()
    return PrivateCaSource()


async def ensure_certificate(ctx: CertificateContext) -> CertificateOutcome:
    """Run the spec's mode; an API failure becomes a condition (the next pass tries again)."""
    source = source_for(ctx.spec)
    try:
        return await source.ensure(ctx)
    except KubeError as exc:
        secret_name = builders.tls_secret_name(ctx.owner, ctx.spec)
        return _not_ready(ctx, source.mode, "ApiError", f"Kubernetes API: {exc}", secret_name,
                          keep={k: v for k, v in ctx.previous.items() if k in ("retry", "order")})
