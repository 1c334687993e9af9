"""Does the server's certificate need a new one, may the CA be asked now, and why: pure policies.

The facts are what a TLS Secret holds (`Material`, read by `material_from_secret`) and the
checks a vehicle makes (`check`). The reissue chain `REISSUE` extends the renewal chain
(`policies.renewal.RENEWAL`) with a stored certificate failing those checks; the gates
`RETRY_GATE` (the back-off after failures) and `ORDER_GATE` (an order that may still be
running elsewhere) say why not to ask the CA now. Each answer is a `Reason`: the code goes
into status (`status.certificate.order.code`) and events, the message into conditions. The
`*_reason`/`retry_wait`/`order_gate` functions return the message alone, for messages.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fleetwire.operator.policies.certcheck import Report, check_server_certificate
from fleetwire.operator.policies.reasons import Reason, first
from fleetwire.operator.policies.renewal import RENEWAL, RenewalFacts, backoff

__all__ = [
    "BACKING_OFF",
    "FAILS_CHECKS",
    "ORDER_GATE",
    "ORDER_IN_FLIGHT",
    "ORDER_TIMEOUT",
    "PRIVATE_CA_REPLACED",
    "REISSUE",
    "RETRY_GATE",
    "CertificateProblem",
    "GateFacts",
    "Material",
    "ReissueFacts",
    "check",
    "failed_retry",
    "failures_text",
    "material_from_secret",
    "order_gate",
    "reissue_decision",
    "reissue_reason",
    "retry_wait",
    "warnings_text",
]

ORDER_TIMEOUT = dt.timedelta(minutes=3)
"""An order started longer ago than this is abandoned: `AcmeClient.issue` gives up after two minutes."""

# Codes of the reissue chain beyond the renewal chain's, and of the gates.
FAILS_CHECKS = "FailsChecks"
PRIVATE_CA_REPLACED = "PrivateCaReplaced"
BACKING_OFF = "BackingOff"
ORDER_IN_FLIGHT = "OrderInFlight"


class CertificateProblem(Exception):
    """A certificate that cannot be used; `reason` is the condition's CamelCase reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def pem_of(cert: x509.Certificate) -> bytes:
    """The certificate as PEM bytes."""
    return cert.public_bytes(serialization.Encoding.PEM)


def timestamp(moment: dt.datetime) -> str:
    """RFC 3339 in UTC, to the second: how status and annotations write a moment."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(text: Any) -> dt.datetime | None:
    """A moment `timestamp` wrote; None when unreadable (a marker then counts as absent)."""
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


def secret_bytes(secret: Mapping[str, Any], key: str) -> bytes | None:
    """A Secret's key decoded; None when absent or not base64."""
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
    chain_pem, key_pem = secret_bytes(secret, "tls.crt"), secret_bytes(secret, "tls.key")
    if chain_pem is None or key_pem is None:
        missing = " and ".join(k for k, v in (("tls.crt", chain_pem), ("tls.key", key_pem)) if v is None)
        raise CertificateProblem("SecretInvalid", f"Secret {where} has no {missing}: expected a kubernetes.io/tls "
                                 "Secret with tls.crt (the chain, leaf first), tls.key and ideally ca.crt")
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as exc:
        raise CertificateProblem("SecretInvalid", f"Secret {where}: tls.crt holds no readable PEM certificate "
                                 f"({exc})") from None
    ca_pem = secret_bytes(secret, "ca.crt")
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
        ca_pem = b"".join(pem_of(cert) for cert in chain[1:])
    return Material(chain_pem, key_pem, ca_pem)


def check(material: Material, hostname: str, now: dt.datetime) -> Report:
    """The checks a vehicle makes, plus the key: SAN names the host, chain verifies, not expired."""
    return check_server_certificate(material.chain_pem, material.ca_pem, hostname, key_pem=material.key_pem, now=now)


def failures_text(report: Report) -> str:
    """The failed checks, for a message."""
    return "; ".join(f"{c.name}: {c.detail}" for c in report.failures)


def warnings_text(report: Report) -> str:
    """The warnings, for a message."""
    return "; ".join(f"{c.name}: {c.detail}" for c in report.warnings)


@dataclass(frozen=True)
class ReissueFacts(RenewalFacts):
    """The renewal facts plus the stored certificate's checks (None: not checked), the `ca` it
    was served with, and the CA that issues now (a private CA; None: any)."""

    report: Report | None = None
    served_ca: bytes | None = None
    issuer_ca: bytes | None = None


def _fails_checks(facts: ReissueFacts) -> Reason | None:
    report = facts.report
    if facts.cert is None or report is None or report.ok:
        return None
    return Reason(FAILS_CHECKS, f"the stored certificate fails checks ({failures_text(report)})")


def _issuer_replaced(facts: ReissueFacts) -> Reason | None:
    if facts.issuer_ca is None or facts.served_ca is None or facts.served_ca == facts.issuer_ca:
        return None
    return Reason(PRIVATE_CA_REPLACED, "the private CA was replaced")


REISSUE = (*RENEWAL, _fails_checks, _issuer_replaced)
"""Name and lifetime first (`RENEWAL`); a stored certificate that fails the vehicle checks (a
chain that does not verify, a key that does not match) is replaced too, and so is one from a
private CA that was replaced (rolled over)."""


def reissue_decision(material: Material | None, report: Report | None, hostname: str, now: dt.datetime,
                     renew_before: dt.timedelta | None = None, *, issuer_ca: bytes | None = None) -> Reason | None:
    """Why the operator must issue a new certificate (None: keep this one)."""
    facts = ReissueFacts(material.leaf if material is not None else None, hostname.lower().rstrip("."), now,
                         renew_before, report, material.ca_pem if material is not None else None, issuer_ca)
    return first(REISSUE, facts)


def reissue_reason(material: Material | None, report: Report | None, hostname: str, now: dt.datetime,
                   renew_before: dt.timedelta | None = None) -> str | None:
    """`reissue_decision`'s message."""
    found = reissue_decision(material, report, hostname, now, renew_before)
    return found.message if found is not None else None


@dataclass(frozen=True)
class GateFacts:
    """What the gates before an order look at: `status.certificate.retry` and `.order` as last
    written, the spec generation and hostname, the clock."""

    retry: Mapping[str, Any] | None
    order: Mapping[str, Any] | None
    generation: int | None
    hostname: str
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


def _backing_off(facts: GateFacts) -> Reason | None:
    """The back-off after failures; a new spec generation ends it, since the user may have fixed the cause."""
    retry = facts.retry
    if not retry or retry.get("generation") != facts.generation:
        return None
    until = parse_timestamp(retry.get("nextAttemptAt"))
    if until is None or facts.now >= until:
        return None
    return Reason(BACKING_OFF, f"{retry.get('attempts')} failed attempt(s), next at {timestamp(until)}; "
                               f"last error: {retry.get('lastError')}")


def _order_in_flight(facts: GateFacts) -> Reason | None:
    """One order for the same name began less than `ORDER_TIMEOUT` ago and may still be running
    in another process (a replica that took over, or this operator before a restart)."""
    order, hostname = facts.order, facts.hostname
    if not order or order.get("hostname") != hostname:
        return None
    started = parse_timestamp(order.get("startedAt"))
    if started is None or facts.now - started >= ORDER_TIMEOUT:
        return None
    return Reason(ORDER_IN_FLIGHT, f"an order for {hostname} ({order.get('reason')}) started at {timestamp(started)} "
                                   f"may still be running; waiting until {timestamp(started + ORDER_TIMEOUT)} before "
                                   "starting another")


RETRY_GATE = (_backing_off,)
ORDER_GATE = (_order_in_flight,)


def retry_wait(retry: Mapping[str, Any] | None, generation: int | None, now: dt.datetime) -> str | None:
    """Why not to ask the CA now: the back-off after failures (None: go ahead)."""
    found = first(RETRY_GATE, GateFacts(retry, None, generation, "", now))
    return found.message if found is not None else None


def failed_retry(retry: Mapping[str, Any] | None, generation: int | None, error: str,
                 now: dt.datetime) -> dict[str, Any]:
    """The retry record after one more failure: attempts counted per spec generation."""
    same = bool(retry) and retry.get("generation") == generation  # type: ignore[union-attr]
    attempts = (int(retry.get("attempts") or 0) if same else 0) + 1  # type: ignore[union-attr]
    return {"attempts": attempts, "generation": generation, "lastError": error,
            "lastAttemptAt": timestamp(now), "nextAttemptAt": timestamp(now + backoff(attempts))}


def order_gate(order: Mapping[str, Any] | None, hostname: str, now: dt.datetime) -> str | None:
    """Why not to start an order now (an order that may still be running); None: start one."""
    found = first(ORDER_GATE, GateFacts(None, order, None, hostname, now))
    return found.message if found is not None else None
