"""The `privateCA` mode: a long-lived CA kept in `<name>-ca` issues short-lived P-256 leaves.

The vehicles' `ca` is the CA certificate, so it never changes across renewals. A CA near
its end (within one leaf lifetime) is succeeded by a new one it cross-signs, which keeps
vehicles holding the old one connecting until their next push.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fleetwire import pki
from fleetwire.operator.policies.certificates import (
    CertificateProblem,
    Material,
    check,
    failures_text,
    pem_of,
    reissue_decision,
    secret_bytes,
    timestamp,
)
from fleetwire.operator.policies.conditions import Event
from fleetwire.operator.policies.renewal import renew_at
from fleetwire.operator.reconcilers.certificate_context import (
    CertificateContext,
    CertificateOutcome,
    not_ready_outcome,
    ready_outcome,
    stored_certificate,
)
from fleetwire.operator.reconcilers.certificate_rotation import install, rotate, staged_certificate
from fleetwire.operator.resource import builders
from fleetwire.operator.resource.builders import Names, Owner
from fleetwire.operator.resource.spec import PrivateCaCertificate

__all__ = ["CROSS_KEY", "PrivateCaSource", "ca_from_secret", "new_private_ca", "private_leaf"]



def new_private_ca(owner: Owner, days: int) -> pki.Bundle:
    """A CA named after the resource, with room for one CA below it (path length 1): the
    cross-certificate of its successor, which keeps vehicles holding it connecting."""
    return pki.make_ca(f"fleetwire {owner.namespace}/{owner.name} server CA", days=days, path_length=1,
                       organization="fleetwire")


def private_leaf(ca: pki.Bundle, hostname: str, days: int, now: dt.datetime) -> Material:
    """A P-256 server certificate naming `hostname` in subjectAltName only, valid at most as long as the CA."""
    leaf = pki.make_server_cert(ca, [hostname], days=days, san_only=True, now=now)
    return Material(leaf.cert_pem, leaf.key_pem, ca.cert_pem)


CROSS_KEY = "cross.crt"
"""In the private CA's Secret after a rollover: the new CA certified by the old one."""


def _cross_from_secret(secret: Mapping[str, Any], now: dt.datetime) -> x509.Certificate | None:
    """The rollover's cross-certificate while it is valid (afterwards the leaf is served alone)."""
    pem = secret_bytes(secret, CROSS_KEY)
    if not pem:
        return None
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None
    return cert if cert.not_valid_before_utc <= now < cert.not_valid_after_utc else None


def ca_from_secret(secret: Mapping[str, Any], where: str, now: dt.datetime) -> pki.Bundle:
    """The private CA kept in a Secret; `CertificateProblem` if it cannot sign any more."""
    cert_pem, key_pem = secret_bytes(secret, "tls.crt"), secret_bytes(secret, "tls.key")
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
                                 f"{timestamp(cert.not_valid_after_utc)}{fix}")
    return pki.Bundle(cert, key)



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
                                f"created a private CA valid until {timestamp(ca.cert.not_valid_after_utc)} in "
                                f"Secret {names.ca_secret}: it is the ca vehicles trust"))
        else:
            try:
                ca = ca_from_secret(ca_secret, f"{namespace}/{names.ca_secret}", ctx.now)
            except CertificateProblem as exc:
                return not_ready_outcome(ctx, self.mode, exc.reason, exc.message, names.tls_secret)
        cross = _cross_from_secret(ca_secret, ctx.now) if ca_secret is not None else None
        if ca.cert.not_valid_after_utc - ctx.now < dt.timedelta(days=settings.leaf_validity_days):
            old = ca
            ca = new_private_ca(ctx.owner, settings.validity_days)
            # A CA limited to signing leaves (path length 0, as CAs before this rollover were made)
            # cannot certify another CA: then the new one is staged like a replaced CA.
            constraints = old.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
            cross = pki.cross_sign(ca, old) if constraints.path_length != 0 else None
            data = {"tls.crt": ca.cert_pem, "tls.key": ca.key_pem, **({CROSS_KEY: pem_of(cross)} if cross else {})}
            await ctx.api.apply(builders.secret(ctx.owner, names.ca_secret, data, type_="kubernetes.io/tls",
                                                component="private-ca"))
            how = ("cross-signed by the old one until it expires, so a vehicle holding the old ca keeps connecting; "
                   "the new ca reaches the vehicles with their next push" if cross is not None else
                   "the old one may only sign leaves and cannot cross-sign it, so the new certificate is staged "
                   "until the vehicles hold a ca for both")
            events.append(Event("Normal", "PrivateCaRolledOver",
                                f"the private CA expires at {timestamp(old.cert.not_valid_after_utc)}, within one leaf "
                                f"lifetime: a new CA valid until {timestamp(ca.cert.not_valid_after_utc)} is in Secret "
                                f"{names.ca_secret}, {how}"))
        material, report = await stored_certificate(ctx, names.tls_secret)
        staged = await staged_certificate(ctx, names.tls_secret, material)
        if staged is not None:
            return await rotate(ctx, self.mode, names.tls_secret, staged, material, report, None, tuple(events))
        decision = reissue_decision(material, report, ctx.spec.hostname, ctx.now, issuer_ca=ca.cert_pem)
        left = ca.cert.not_valid_after_utc - ctx.now
        extra = (f"the private CA expires at {timestamp(ca.cert.not_valid_after_utc)}, within one leaf lifetime"
                 if left < dt.timedelta(days=settings.leaf_validity_days) else "")
        if decision is not None:
            before, before_report = material, report
            material = private_leaf(ca, ctx.spec.hostname, settings.leaf_validity_days, ctx.now)
            if cross is not None:  # presented after the leaf: the old CA's vehicles reach their anchor through it
                material = Material(material.chain_pem + pem_of(cross), material.key_pem, material.ca_pem)
            report = check(material, ctx.spec.hostname, ctx.now)
            if not report.ok:  # the CA itself cannot make acceptable leaves (e.g. it is about to expire)
                return not_ready_outcome(ctx, self.mode, "CertificateInvalid",
                                         f"a leaf from the private CA fails checks: {failures_text(report)}",
                                         names.tls_secret, events=tuple(events))
            return await install(ctx, self.mode, names.tls_secret, material, report, decision.message, before,
                                 before_report, "the private CA", None, extra=extra, events=tuple(events))
        assert material is not None and report is not None
        return ready_outcome(ctx, self.mode, material, report, names.tls_secret, renew_at(material.leaf), extra=extra,
                             events=tuple(events))


