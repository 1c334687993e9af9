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

The decisions are pure policy chains returning a `Reason` (`policies.certificates`: `REISSUE`,
`RETRY_GATE`, `ORDER_GATE`); the mode classes (`SecretRefSource` here, `private_ca`,
`acme_source`) gather state, ask them, act, and report (`certificate_context`). Two rules keep
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

from fleetwire.operator.clients.kube import KubeError
from fleetwire.operator.policies.certificates import (
    CertificateProblem,
    check,
    failures_text,
    material_from_secret,
)
from fleetwire.operator.reconcilers.acme_source import AcmeSource
from fleetwire.operator.reconcilers.certificate_context import (
    CertificateContext,
    CertificateOutcome,
    CertificateSource,
    not_ready_outcome,
    ready_outcome,
)
from fleetwire.operator.reconcilers.private_ca import PrivateCaSource
from fleetwire.operator.resource import builders
from fleetwire.operator.resource.spec import AcmeCertificate, FleetTelemetrySpec, SecretCertificate
from fleetwire.pki import chain_fingerprint

__all__ = ["SecretRefSource", "ensure_certificate", "source_for"]


class SecretRefSource:
    """A TLS Secret managed elsewhere: read and check it, never write it."""

    mode = "secretRef"

    async def ensure(self, ctx: CertificateContext) -> CertificateOutcome:
        assert isinstance(ctx.spec.certificate, SecretCertificate)
        name = ctx.spec.certificate.secret_name
        where = f"{ctx.owner.namespace}/{name}"
        secret = await ctx.api.get("Secret", ctx.owner.namespace, name)
        if secret is None:
            return not_ready_outcome(ctx, self.mode, "SecretNotFound",
                              f"Secret {where} not found: create a kubernetes.io/tls Secret (e.g. a cert-manager "
                                     f"Certificate) for {ctx.spec.hostname} with tls.crt, tls.key and ca.crt", name)
        try:
            material = material_from_secret(secret, where)
        except CertificateProblem as exc:
            return not_ready_outcome(ctx, self.mode, exc.reason, exc.message, name)
        report = check(material, ctx.spec.hostname, ctx.now)
        if not report.ok:
            return not_ready_outcome(ctx, self.mode, "CertificateInvalid",
                                     f"Secret {where}: vehicles would refuse it: {failures_text(report)}", name,
                                     keep={"chainFingerprint": chain_fingerprint(material.ca_pem)})
        return ready_outcome(ctx, self.mode, material, report, name, None)




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
        return not_ready_outcome(ctx, source.mode, "ApiError", f"Kubernetes API: {exc}", secret_name,
                                 keep={k: v for k, v in ctx.previous.items() if k in ("retry", "order")})
