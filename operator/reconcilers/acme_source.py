"""The `acme` mode: issued and renewed through ACME, with back-off and an order marker.

HTTP-01 is answered by the operator itself, DNS-01 through the provider's API; the account
key is kept in a Secret. Before an order starts, its hostname, reason (and code) and start
time are written into `status.certificate.order` at once, so an operator that restarts (or
a second replica) does not start another while it may still be running (`ORDER_GATE`);
failures back off (`RETRY_GATE`, `status.certificate.retry`); a new spec retries at once.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable

import aiohttp
from cryptography.hazmat.primitives import serialization

from fleetwire import pki
from fleetwire.operator.clients.acme import AcmeClient, ChallengeSolver
from fleetwire.operator.clients.acme_errors import AcmeError
from fleetwire.operator.clients.acme_chains import IssuedCertificate, choose_chain
from fleetwire.operator.clients.acme_roots import PebbleRoots, RootFetcher, static_roots
from fleetwire.operator.clients.dns01 import CLOUDFLARE_API, CloudflareDns, Dns01Solver, DnsProviderError
from fleetwire.operator.clients.kube import KubeError
from fleetwire.operator.policies.certificates import (
    BACKING_OFF,
    ORDER_GATE,
    RETRY_GATE,
    CertificateProblem,
    GateFacts,
    Material,
    check,
    failed_retry,
    failures_text,
    reissue_decision,
    secret_bytes,
    timestamp,
)
from fleetwire.operator.policies.conditions import Event
from fleetwire.operator.policies.reasons import first
from fleetwire.operator.policies.renewal import backoff, renew_at
from fleetwire.operator.reconcilers.certificate_context import (
    CertificateContext,
    CertificateOutcome,
    not_ready_outcome,
    ready_outcome,
    stored_certificate,
)
from fleetwire.operator.reconcilers.certificate_rotation import install, rotate, staged_certificate
from fleetwire.operator.resource import builders
from fleetwire.operator.resource.builders import Names
from fleetwire.operator.resource.spec import AcmeCertificate, Dns01Challenge
from fleetwire.trust import refusal

__all__ = ["ACCOUNT_KEY", "AcmeSource", "cloudflare_zone_id"]

log = logging.getLogger("fleetwire.operator.reconcilers.certificates")

ACCOUNT_KEY = "account.key"
ACCOUNT_URI_ANNOTATION = "fleetwire.io/acme-account"
ISSUE_TIMEOUT = 120.0
DNS01_PROPAGATION_SECONDS = 10.0


class AcmeSource:
    """ACME issuance and renewal, with back-off and the order marker described above."""

    mode = "acme"

    async def ensure(self, ctx: CertificateContext) -> CertificateOutcome:
        settings = ctx.spec.certificate
        assert isinstance(settings, AcmeCertificate)
        names, hostname = Names(ctx.owner.name), ctx.spec.hostname
        material, report = await stored_certificate(ctx, names.tls_secret)
        staged = await staged_certificate(ctx, names.tls_secret, material)
        if staged is not None:
            return await rotate(ctx, self.mode, names.tls_secret, staged, material, report, settings.renew_before)
        decision = reissue_decision(material, report, hostname, ctx.now, settings.renew_before)
        usable = material is not None and report is not None and report.ok
        if decision is None:
            assert material is not None and report is not None
            return ready_outcome(ctx, self.mode, material, report, names.tls_secret,
                                 renew_at(material.leaf, settings.renew_before))
        reason = decision.message
        retry = ctx.previous.get("retry")
        gated = first((*RETRY_GATE, *ORDER_GATE), GateFacts(retry, ctx.previous.get("order"), ctx.generation,
                                                           hostname, ctx.now))
        if gated is not None:
            keep = {k: v for k, v in (("retry", retry), ("order", ctx.previous.get("order"))) if v}
            why, wait = gated.message, gated.code == BACKING_OFF
            # The reasons stay those of the failure itself, so waiting out a back-off is no news.
            if usable:
                assert material is not None and report is not None
                return ready_outcome(ctx, self.mode, material, report, names.tls_secret,
                                     renew_at(material.leaf, settings.renew_before), keep=keep,
                                     extra=f"renewal due ({reason}) waits: {why}",
                                     reason="RenewalFailing" if wait else "RenewalPending")
            return not_ready_outcome(ctx, self.mode, "AcmeFailed" if wait else "OrderInProgress",
                              f"no usable certificate for {hostname} ({reason}); {why}", names.tls_secret, keep=keep)

        order = {"hostname": hostname, "reason": reason, "code": decision.code, "startedAt": timestamp(ctx.now)}
        await ctx.record_order(order)
        try:
            issued, root_note = await self._issue(ctx, settings, material)
            fresh = check(issued, hostname, dt.datetime.now(dt.UTC))
            if not fresh.ok:
                raise AcmeError(f"the CA's certificate fails the vehicle checks: {failures_text(fresh)}")
            return await install(ctx, self.mode, names.tls_secret, issued, fresh, reason, material, report,
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
                return ready_outcome(ctx, self.mode, material, report, names.tls_secret,
                                     renew_at(material.leaf, settings.renew_before), keep={"retry": record},
                              extra=f"renewal failing ({reason}): {error}", events=(event,), reason="RenewalFailing")
            return not_ready_outcome(ctx, self.mode, "AcmeFailed",
                                     f"could not {verb} the certificate for {hostname}: {error}; next attempt at "
                              f"{record['nextAttemptAt']}", names.tls_secret, events=(event,), keep={"retry": record})

    async def _issue(self, ctx: CertificateContext, settings: AcmeCertificate,
                     current: Material | None) -> tuple[Material, str]:
        """Account key from its Secret (created on first use), a solver, one order; of the chains
        the CA offers (RFC 8555 alternates), the first the vehicles' current `ca` accepts."""
        namespace = ctx.owner.namespace
        account_name = settings.account_secret_name or Names(ctx.owner.name).account_secret
        account = await ctx.api.get("Secret", namespace, account_name)
        key_pem = secret_bytes(account, ACCOUNT_KEY) if account is not None else None
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
        token = secret_bytes(secret, ref.key) if secret is not None else None
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


