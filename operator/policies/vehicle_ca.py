"""Judging a vehicle's `ca` by what it accepts, and fingerprints of configs and bundles.

A `ca` is never compared by its bytes: `ca_accepts` asks the vehicle's own judgement
(`fleetwire.trust`) whether it accepts the chains the server presents; `fingerprint` is what
"desired changed" compares (the config without `exp`, the signer's keys and the `ca`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import VerificationError

from fleetwire.pki import chain_fingerprint
from fleetwire.trust import refusal, verified_path

def comparable(config: Mapping[str, Any]) -> dict[str, Any]:
    """A config without what changes on every push (`exp`), what the signer adds, and the
    `ca`: a `ca` is judged by what it accepts (`ca_accepts`), never by its bytes."""
    return {k: v for k, v in config.items() if k not in ("exp", "iss", "aud", "ca")}


def ca_accepts(ca_pem: str, chains: Iterable[str], hostname: str, at: dt.datetime) -> bool:
    """Whether a vehicle holding `ca_pem` accepts every chain in `chains` (PEM, leaf first)
    for `hostname` at `at`: the vehicle's own judgement (`certcheck.refusal`)."""
    return all(refusal(chain, ca_pem, hostname, at) is None for chain in chains)


def ca_lasts_until(ca_pem: str, chains: Iterable[str], hostname: str, at: dt.datetime) -> dt.datetime | None:
    """Until when `ca_pem` keeps accepting `chains` as they are presented at `at`: the earliest
    expiry of the certificates above the leaf on the paths it builds (the leaf is renewed in
    place; a CA or a cross-certificate expiring is what takes the vehicle's trust away).
    None when it refuses one now."""
    ca = x509.load_pem_x509_certificates(ca_pem.encode())
    until: dt.datetime | None = None
    for chain in chains:
        certs = x509.load_pem_x509_certificates(chain.encode())
        try:
            path = verified_path(certs[0], certs[1:], ca, hostname, at)
        except (VerificationError, ValueError):
            return None
        ends = min((c.not_valid_after_utc for c in path[1:]), default=certs[0].not_valid_after_utc)
        until = ends if until is None else min(until, ends)
    return until


def ca_union(*bundles: str) -> str:
    """One `ca` holding every certificate of `bundles` once, in order: what a vehicle needs to
    accept the chain served now and the one staged to replace it."""
    seen: set[bytes] = set()
    out: list[str] = []
    for bundle in bundles:
        for cert in x509.load_pem_x509_certificates(bundle.encode()):
            der = cert.public_bytes(serialization.Encoding.DER)
            if der not in seen:
                seen.add(der)
                out.append(cert.public_bytes(serialization.Encoding.PEM).decode())
    return "".join(out)


def fingerprint(config: Mapping[str, Any]) -> str:
    """Short stable hash of a config's comparable part: what 'desired changed' compares."""
    canonical = json.dumps(comparable(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@lru_cache(maxsize=64)  # asked per vehicle read; a fleet holds a handful of distinct bundles
def ca_fingerprint(ca_pem: str) -> str:
    """The `ca` bundle's chain fingerprint (`status.certificate.chainFingerprint`): a change
    of chain must be told apart from other edits, and named the same way everywhere."""
    return chain_fingerprint(ca_pem)



@lru_cache(maxsize=64)  # a fleet holds a handful of distinct `ca` bundles: parse each once
def ca_fp_or_empty(ca_pem: str) -> str:
    try:
        return ca_fingerprint(ca_pem) if ca_pem else ""
    except ValueError:
        return ""
