"""Certificate renewal policy: does the server's certificate need a new one, and why.

Pure policies of (certificate, hostname, clock), asked as the chain `RENEWAL`: the operator
gathers state, asks here, and records the returned reason (its code in status and events,
its message for people), so a user reading `kubectl describe` sees why a certificate was
(or was not) re-issued. `policies.certificates.REISSUE` extends the chain.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509

from fleetwire.operator.policies.reasons import Reason, first

__all__ = ["DEFAULT_RENEW_FRACTION", "RENEWAL", "RenewalFacts", "backoff", "renew_at", "renewal_decision",
           "renewal_reason", "san_dns_names"]

DEFAULT_RENEW_FRACTION = 2 / 3
"""Renew after two thirds of the lifetime, as Let's Encrypt advises: 30 days of slack on
its 90-day certificates, two days on its 6-day ones, enough to ride out an outage."""


def san_dns_names(cert: x509.Certificate) -> list[str] | None:
    """The certificate's DNS subjectAltNames, lower-cased; None when it has no SAN at all."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    return [name.lower() for name in san.get_values_for_type(x509.DNSName)]


def _covers(pattern: str, hostname: str) -> bool:
    """RFC 6125 matching: exact, or a wildcard standing for exactly one leftmost label."""
    if pattern == hostname:
        return True
    if pattern.startswith("*."):
        head, _, rest = hostname.partition(".")
        return bool(head) and rest == pattern[2:]
    return False


def renew_at(cert: x509.Certificate, renew_before: dt.timedelta | None = None) -> dt.datetime:
    """When the certificate should be replaced: `renew_before` its expiry, else at 2/3 of its life."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if renew_before is not None:
        return end - renew_before
    return start + (end - start) * DEFAULT_RENEW_FRACTION


def _span(delta: dt.timedelta) -> str:
    """A duration in the largest whole unit a person reads at a glance."""
    seconds = abs(delta.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return "less than a minute"


def _lifetime(delta: dt.timedelta) -> str:
    days = delta.total_seconds() / 86400
    return f"{round(days)}-day" if days >= 1 else f"{round(days * 24)}-hour"


# Codes of the renewal chain (status, events, metrics).
NO_CERTIFICATE = "NoCertificate"
CN_ONLY = "CnOnly"
HOSTNAME_CHANGED = "HostnameChanged"
EXPIRED = "Expired"
RENEWAL_DUE = "RenewalDue"


@dataclass(frozen=True)
class RenewalFacts:
    """What the renewal policies look at: the certificate (None: none), the hostname it must
    name (lower-cased, without a trailing dot), the clock, and the `renewBefore` override."""

    cert: x509.Certificate | None
    hostname: str
    now: dt.datetime
    renew_before: dt.timedelta | None = None


def _no_certificate(facts: RenewalFacts) -> Reason | None:
    return Reason(NO_CERTIFICATE, "no certificate") if facts.cert is None else None


def _cn_only(facts: RenewalFacts) -> Reason | None:
    if facts.cert is None or san_dns_names(facts.cert) is not None:
        return None
    return Reason(CN_ONLY, f"certificate is CN-only (no subjectAltName): clients refuse it for {facts.hostname}")


def _hostname_changed(facts: RenewalFacts) -> Reason | None:
    names = san_dns_names(facts.cert) if facts.cert is not None else None
    if names is None or any(_covers(name, facts.hostname) for name in names):
        return None
    have = ", ".join(names) or "no DNS names"
    return Reason(HOSTNAME_CHANGED, f"hostname changed: SAN has {have}, want {facts.hostname}")


def _expired(facts: RenewalFacts) -> Reason | None:
    if facts.cert is None or facts.now < (end := facts.cert.not_valid_after_utc):
        return None
    return Reason(EXPIRED, f"expired {_span(facts.now - end)} ago")


def _renewal_due(facts: RenewalFacts) -> Reason | None:
    cert, renew_before = facts.cert, facts.renew_before
    if cert is None or facts.now < renew_at(cert, renew_before):
        return None
    end = cert.not_valid_after_utc
    rule = (f"renew {_span(renew_before)} before expiry" if renew_before is not None
            else f"renew at 2/3 of a {_lifetime(end - cert.not_valid_before_utc)} lifetime")
    return Reason(RENEWAL_DUE, f"expires in {_span(end - facts.now)} ({rule})")


RENEWAL = (_no_certificate, _cn_only, _hostname_changed, _expired, _renewal_due)
"""In this order: a certificate that names the wrong host is reported as such even when it has also expired."""


def renewal_decision(cert: x509.Certificate | None, hostname: str, now: dt.datetime,
                     renew_before: dt.timedelta | None = None) -> Reason | None:
    """None when `cert` can keep serving `hostname` at `now`, else why it must be replaced.

    The name is checked in subjectAltName only: vehicles' Go TLS stack ignores the CN, so a
    CN-only certificate is as good as none. `renew_before` overrides the 2/3-of-lifetime rule
    (e.g. 30 days); a value longer than the lifetime simply renews on every check.
    """
    return first(RENEWAL, RenewalFacts(cert, hostname.lower().rstrip("."), now, renew_before))


def renewal_reason(cert: x509.Certificate | None, hostname: str, now: dt.datetime,
                   renew_before: dt.timedelta | None = None) -> str | None:
    """`renewal_decision`'s message."""
    found = renewal_decision(cert, hostname, now, renew_before)
    return found.message if found is not None else None


def backoff(
    attempts: int,
    base: dt.timedelta = dt.timedelta(minutes=5),
    cap: dt.timedelta = dt.timedelta(hours=6),
) -> dt.timedelta:
    """Wait before retry number `attempts` (consecutive ACME failures so far; 0 → no wait).

    Doubles from 5 minutes and stops at 6 hours: a failed validation usually needs a person
    to fix DNS or a firewall, and Let's Encrypt allows only 5 failed validations per hostname
    per hour, so four retries fit in the first hour and a fixed problem heals the same day.
    """
    if attempts <= 0:
        return dt.timedelta(0)
    # Cap the exponent before multiplying so a huge attempt count cannot overflow timedelta.
    doublings = min(attempts - 1, 32)
    return min(base * (1 << doublings), cap)
