"""Check a server certificate and a config's `ca` the way a vehicle will use them.

A vehicle connects to the config's `hostname`, verifies the presented chain against the
config's `ca` and refuses certificates that name the host only in the legacy CN; when
that goes wrong the only trace is an error in Tesla's `fleet_telemetry_errors`, hours
later. Tesla's own check script verifies the leaf against `ca` and nothing more, so it
passes certificates that vehicles then refuse for a missing SAN or a hostname mismatch.
This module checks all of it before a config is pushed.

`check_server_certificate` and `check_config` are pure (PEM bytes in, a `Report` out);
`fleetwire.operator.commands.check_cert` is the thin I/O shell of `fleetwire check-cert`
(fetching a live server's chain, the command's arguments).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import VerificationError

from fleetwire.trust import clean_error, hostname_matches, verified_path

__all__ = [
    "EXPIRY_WARNING_DAYS",
    "Check",
    "Report",
    "check_config",
    "check_port",
    "check_server_certificate",
    "config_of",
]

EXPIRY_WARNING_DAYS = 14
"""Under this many days left, warn: a push to vehicles can take a day to sync."""

_LEGACY_CN_ERROR = "x509: certificate relies on legacy Common Name field, use SANs instead"


@dataclass(frozen=True)
class Check:
    """One finding. A failed check with `fatal=False` is a warning: reported, not a failure."""

    name: str
    ok: bool
    detail: str
    fatal: bool = True

    @property
    def symbol(self) -> str:
        return "✓" if self.ok else ("✗" if self.fatal else "!")


@dataclass(frozen=True)
class Report:
    """The checks in the order they were made, and what they add up to."""

    hostname: str
    checks: tuple[Check, ...] = field(default_factory=tuple)

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok and c.fatal)

    @property
    def warnings(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok and not c.fatal)

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def verdict(self) -> str:
        if self.failures:
            names = ", ".join(c.name for c in self.failures)
            return f"FAIL: vehicles would refuse this setup for {self.hostname} ({names})"
        if self.warnings:
            names = ", ".join(c.name for c in self.warnings)
            return f"OK with warnings for {self.hostname} ({names})"
        return f"OK: vehicles should accept this certificate for {self.hostname}"

    def get(self, name: str) -> Check:
        """The check called `name` (KeyError if it was not made)."""
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(name)

    def render(self) -> str:
        lines = [f"{c.symbol} {c.name}: {c.detail}" for c in self.checks]
        return "\n".join([*lines, self.verdict])


# --------------------------------------------------------------------------------------
# Helpers over certificates
# --------------------------------------------------------------------------------------


def _label(cert: x509.Certificate) -> str:
    """A short human name: the CN if there is one, else the whole subject."""
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return f"CN={cns[0].value!s}" if cns else (cert.subject.rfc4514_string() or "(empty subject)")


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when `issuer`'s name and key signed `cert`."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _issuer_path(leaf: x509.Certificate, pool: Sequence[x509.Certificate]) -> tuple[list[x509.Certificate], bool]:
    """The issuers of `leaf` found in `pool`, in order, and whether they end at a self-signed root."""
    path: list[x509.Certificate] = []
    current = leaf
    while len(path) <= len(pool):
        issuer = next((c for c in pool if c not in path and _issued_by(current, c)), None)
        if issuer is None:
            return path, False
        path.append(issuer)
        if _issued_by(issuer, issuer):
            return path, True
        current = issuer
    return path, False


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _san(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def _san_text(san: x509.SubjectAlternativeName) -> str:
    names = [f"DNS:{n}" for n in san.get_values_for_type(x509.DNSName)]
    names += [f"IP:{ip}" for ip in san.get_values_for_type(x509.IPAddress)]
    return ", ".join(names) or "(no DNS or IP names)"


def _days(delta: dt.timedelta) -> str:
    days = delta.total_seconds() / 86400
    return f"{days:.1f} days" if abs(days) < 2 else f"{int(days)} days"


# --------------------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------------------


def check_port(port: object) -> Check:
    """The config's port must be a JSON integer: a port sent as a string broke streaming."""
    if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536:
        return Check("port", True, f"{port} is an integer")
    if isinstance(port, str):
        return Check("port", False, f"port is the string {port!r}: vehicles need a JSON integer")
    return Check("port", False, f"port is {port!r}: expected an integer from 1 to 65535")


def _name_checks(leaf: x509.Certificate, hostname: str) -> list[Check]:
    san = _san(leaf)
    cns = [str(a.value) for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if san is None:
        where = f"CN={cns[0]}" if cns else "no CN either"
        checks = [Check("subjectAltName", False, f"the leaf has no subjectAltName extension ({where})")]
        if cns:
            checks.append(Check("not CN-only", False, f"{_LEGACY_CN_ERROR} (the host is named only in CN={cns[0]})"))
        else:
            checks.append(Check("not CN-only", False, "the leaf names no host at all"))
        checks.append(Check("hostname", False, f"{hostname} cannot match: vehicles read names from subjectAltName only"))
        return checks
    matched = hostname_matches(hostname, san)
    return [
        Check("subjectAltName", True, _san_text(san)),
        Check("not CN-only", True, "names come from subjectAltName; vehicles ignore the CN"),
        Check("hostname", True, f"{hostname} matches {matched}")
        if matched
        else Check("hostname", False, f"{hostname} is not among {_san_text(san)}"),
    ]


def _verify_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    ca: Sequence[x509.Certificate],
    hostname: str,
    now: dt.datetime,
) -> Check:
    """Path validation from the leaf (with the server's intermediates) to a certificate in `ca`.

    Every certificate in `ca` is a trust anchor, as in the vehicle's pool built from the
    config's PEM, so an intermediate-only `ca` verifies here; `ca is a full chain` warns
    about it separately. The profile is `cryptography`'s web-PKI one, stricter in places
    than a vehicle's Go verifier (e.g. it wants key identifiers on CAs), so the detail
    names the rule that failed.
    """
    try:
        chain = verified_path(leaf, intermediates, ca, hostname, now)
    except (VerificationError, ValueError) as exc:
        return Check("chain verifies", False, f"against ca for {hostname}: {clean_error(exc)}")
    return Check("chain verifies", True, " → ".join(_label(c) for c in chain) + " (anchor in ca)")


def _ca_checks(leaf: x509.Certificate, intermediates: Sequence[x509.Certificate], ca: Sequence[x509.Certificate]) -> list[Check]:
    """Does `ca` hold the leaf's issuer (Tesla's check) and a self-signed root (the full chain)?"""
    in_ca, complete = _issuer_path(leaf, ca)
    if not in_ca:
        via_server, _ = _issuer_path(leaf, [*intermediates, *ca])
        anchors = [c for c in via_server if c in ca]
        if anchors:
            detail = (
                f"ca holds {', '.join(_label(c) for c in anchors)} but not {_label(via_server[0])}, "
                "which issued the leaf: Tesla's check script verifies the leaf against ca alone and "
                "fails; whether vehicles accept a root-only ca is undocumented — add the intermediate"
            )
        else:
            detail = f"ca does not contain the leaf's issuer ({leaf.issuer.rfc4514_string()})"
        return [
            Check("ca has the leaf's issuer", False, detail),
            Check("ca is a full chain", False, "ca alone holds no path up from the leaf", fatal=False),
        ]
    path_text = " → ".join(_label(c) for c in in_ca)
    issuer_check = Check("ca has the leaf's issuer", True, f"{_label(in_ca[0])} is in ca")
    if complete:
        return [issuer_check, Check("ca is a full chain", True, f"{path_text} (self-signed root)")]
    return [
        issuer_check,
        Check(
            "ca is a full chain",
            False,
            f"partial chain: ca ends at {_label(in_ca[-1])}, which is not self-signed; "
            "Tesla asks for the full chain up to the root",
            fatal=False,
        ),
    ]


def _time_checks(certs: Sequence[x509.Certificate], now: dt.datetime) -> list[Check]:
    problems = []
    for cert in certs:
        if now < cert.not_valid_before_utc:
            problems.append(f"{_label(cert)} is not valid until {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
        elif now > cert.not_valid_after_utc:
            ago = _days(now - cert.not_valid_after_utc)
            problems.append(f"{_label(cert)} expired {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC ({ago} ago)")
    validity = (
        Check("validity", False, "; ".join(problems))
        if problems
        else Check("validity", True, f"all {len(certs)} certificates are valid at {now:%Y-%m-%d %H:%M} UTC")
    )
    soonest = min(certs, key=lambda c: c.not_valid_after_utc)
    left = soonest.not_valid_after_utc - now
    detail = f"{_days(left)} left ({_label(soonest)} expires {soonest.not_valid_after_utc:%Y-%m-%d})"
    if left <= dt.timedelta(0):
        days_left = Check("days left", False, f"{_label(soonest)} has expired")
    elif left < dt.timedelta(days=EXPIRY_WARNING_DAYS):
        days_left = Check("days left", False, f"{detail}: under {EXPIRY_WARNING_DAYS} days, renew", fatal=False)
    else:
        days_left = Check("days left", True, detail)
    return [validity, days_left]


def _key_check(leaf: x509.Certificate, key_pem: bytes) -> Check:
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        return Check("key matches", False, f"cannot read the private key: {exc}")
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) == leaf.public_key().public_bytes(*spki):
        return Check("key matches", True, "the private key belongs to the leaf")
    return Check("key matches", False, "the private key does not belong to the leaf: TLS handshakes would fail")


def _load_certs(pem: bytes, what: str) -> tuple[list[x509.Certificate], Check]:
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        return [], Check(what, False, f"no readable PEM certificate: {exc}")
    return certs, Check(what, True, f"{len(certs)} certificate(s): {', '.join(_label(c) for c in certs)}")


def check_server_certificate(
    chain_pem: bytes,
    ca_pem: bytes,
    hostname: str,
    *,
    key_pem: bytes | None = None,
    now: dt.datetime | None = None,
) -> Report:
    """Check the server's chain (leaf first) against `ca` for `hostname`, as a vehicle would.

    `now` fixes the clock (aware UTC), so expiry can be checked for any instant.
    """
    now = now or dt.datetime.now(dt.UTC)
    chain, chain_check = _load_certs(chain_pem, "server chain")
    ca, ca_check = _load_certs(ca_pem, "ca")
    checks = [chain_check, ca_check]
    if not chain:
        return Report(hostname, tuple(checks))
    leaf, intermediates = chain[0], chain[1:]
    if _is_ca(leaf):
        checks[0] = Check("server chain", False, f"the first certificate, {_label(leaf)}, is a CA: put the leaf first")
    checks += _name_checks(leaf, hostname)
    if ca:
        checks.append(_verify_chain(leaf, intermediates, ca, hostname, now))
        checks += _ca_checks(leaf, intermediates, ca)
    path, _ = _issuer_path(leaf, [*intermediates, *ca])
    checks += _time_checks([leaf, *path], now)
    if key_pem is not None:
        checks.append(_key_check(leaf, key_pem))
    return Report(hostname, tuple(checks))


def config_of(document: Mapping[str, Any]) -> Mapping[str, Any]:
    """The config inside a document: a bare config, or a request body {"vins", "config"}."""
    inner = document.get("config")
    return inner if "hostname" not in document and isinstance(inner, Mapping) else document


def check_config(
    config: Mapping[str, Any],
    chain_pem: bytes,
    *,
    key_pem: bytes | None = None,
    now: dt.datetime | None = None,
) -> Report:
    """Check a vehicle telemetry config (its hostname, port and ca) against the server's chain."""
    hostname, ca = config.get("hostname"), config.get("ca")
    port = check_port(config.get("port"))
    if not isinstance(hostname, str) or not hostname:
        bad_host = Check("config", False, f"hostname is {hostname!r}: expected the server's DNS name")
        return Report(str(hostname), (bad_host, port))
    if not isinstance(ca, str) or "BEGIN CERTIFICATE" not in ca:
        return Report(hostname, (Check("config", False, "ca is missing or holds no PEM certificate"), port))
    report = check_server_certificate(chain_pem, ca.encode(), hostname, key_pem=key_pem, now=now)
    return Report(hostname, (*report.checks, port))
