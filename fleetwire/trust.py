"""How a vehicle judges the chain a server presents: the one judgement of "would this `ca` accept it".

A vehicle builds its trust pool from the `ca` of the config it last synced (every
certificate in it an anchor), verifies the presented leaf and intermediates against it,
and reads the host from subjectAltName only. `fleetwire check-cert`, the operator's push
and rotation policies and the vehicle simulator all ask here, so they cannot disagree.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence

from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

__all__ = ["clean_error", "hostname_matches", "ip_literal", "refusal", "verified_path"]


def ip_literal(hostname: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(hostname.strip("[]"))
    except ValueError:
        return None



def hostname_matches(hostname: str, san: x509.SubjectAlternativeName) -> str | None:
    """The SAN entry that covers `hostname`, or None.

    RFC 6125 rules, as Go's verifier on the vehicle applies them: an IP literal matches
    only IP entries; names compare case-insensitively without a trailing dot; a wildcard
    is the whole left-most label and stands for exactly one label ("*.example.com"
    covers "a.example.com", not "example.com" nor "a.b.example.com"). Stricter than Go
    in one point: a wildcard needs two labels under it ("*.com" matches nothing), as
    public CAs never issue such names.
    """
    ip = ip_literal(hostname)
    if ip is not None:
        return next((f"IP:{a}" for a in san.get_values_for_type(x509.IPAddress) if a == ip), None)
    host = hostname.lower().rstrip(".").split(".")
    for pattern in san.get_values_for_type(x509.DNSName):
        labels = pattern.lower().rstrip(".").split(".")
        if len(labels) != len(host) or "" in labels or "" in host:
            continue
        if labels == host or (labels[0] == "*" and len(labels) > 2 and labels[1:] == host[1:]):
            return f"DNS:{pattern}"
    return None



def clean_error(exc: Exception) -> str:
    """cryptography's verification messages without the certificate repr appended to them."""
    return str(exc).split(" (encountered processing", 1)[0]



def verified_path(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    ca: Sequence[x509.Certificate],
    hostname: str,
    now: dt.datetime,
) -> list[x509.Certificate]:
    """The path a vehicle holding `ca` builds from the presented leaf and intermediates.

    Raises `VerificationError` (or `ValueError` for an unusable name or store) when the
    vehicle would refuse it. The one judgement of "would this `ca` accept this chain",
    used by `fleetwire check-cert` and by the operator's push and rotation policies.
    """
    ip = ip_literal(hostname)
    subject: x509.DNSName | x509.IPAddress = x509.IPAddress(ip) if ip else x509.DNSName(hostname)
    verifier = PolicyBuilder().store(Store(list(ca))).time(now).build_server_verifier(subject)
    return verifier.verify(leaf, list(intermediates))



def refusal(chain_pem: bytes | str, ca_pem: bytes | str, hostname: str, now: dt.datetime) -> str | None:
    """Why a vehicle holding `ca_pem` refuses the server chain `chain_pem` (leaf first) for
    `hostname` at `now`, or None when it accepts it: every certificate in `ca` a trust
    anchor, the presented intermediates used to reach one, the name in subjectAltName."""
    as_bytes = [v.encode() if isinstance(v, str) else v for v in (chain_pem, ca_pem)]
    try:
        chain = x509.load_pem_x509_certificates(as_bytes[0])
        ca = x509.load_pem_x509_certificates(as_bytes[1])
    except ValueError as exc:
        return f"unreadable PEM: {exc}"
    try:
        verified_path(chain[0], chain[1:], ca, hostname, now)
    except (VerificationError, ValueError) as exc:
        return clean_error(exc)
    return None
