"""ACME client for the server certificate: account, order, challenge, finalize, chain with root.

Built on the `acme` library (certbot's), whose calls block on `requests`. Every library
call runs in ONE dedicated worker thread per client rather than `asyncio.to_thread`:
the library's `ClientNetwork` keeps a nonce pool and a `requests.Session` that are not
thread-safe, so a single worker serialises them even when two handlers share a client,
and its blocking sleeps (finalization polling) never occupy the event loop's default
executor, which asyncio also needs for DNS lookups. Waiting between polls happens on the
event loop, so the operator stays responsive while a CA validates.

The deciding parts are pure and tested without sockets: CSR building, challenge
selection, chain splitting and root matching (`assemble`, in `acme_chains`), and the
translation of library and network failures into errors that say what to do (`explain`, in
`acme_errors`). Where a chain's root comes from is `acme_roots`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from types import TracebackType
from typing import Any, Protocol, TypeVar, cast

from josepy.jwa import ES256, ES384, ES512, RS256, JWASignature
from josepy.jwk import JWK, JWKEC, JWKRSA
from acme import client, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fleetwire.operator.clients.acme_chains import IssuedCertificate, assemble
from fleetwire.operator.clients.acme_errors import (
    AcmeError,
    AcmeServerError,
    ChallengeFailed,
    challenge_error,
    explain,
)
from fleetwire.operator.clients.acme_roots import RootFetcher
from fleetwire.pki import generate_key

# The client, and the errors (acme_errors), chains (acme_chains) and root sources (acme_roots)
# a caller of it needs, importable from here.
__all__ = ["AcmeClient", "ChallengeSolver", "make_key_and_csr", "select_challenge"]

log = logging.getLogger("fleetwire.operator.acme")
T = TypeVar("T")


# ======================================================================================
# Pure parts
# ======================================================================================


class ChallengeSolver(Protocol):
    """Publishes a challenge answer where the CA will look, and withdraws it afterwards.

    `validation` is what must be served: the key authorization for http-01, the TXT value
    (digest of it) for dns-01. See `Http01Responder` and `Dns01Solver`.
    """

    challenge_type: str

    async def present(self, domain: str, token: str, validation: str) -> None: ...

    async def cleanup(self, domain: str, token: str, validation: str) -> None: ...



def make_key_and_csr(hostname: str) -> tuple[bytes, bytes]:
    """A fresh P-256 key and a CSR naming `hostname` in subjectAltName only (empty subject).

    A new key per certificate limits what a leaked key exposes to one certificate's life;
    no CN because clients ignore it and CAs are phasing it out.
    """
    key = generate_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


def select_challenge(authzr: messages.AuthorizationResource, challenge_type: str) -> messages.ChallengeBody:
    """The challenge of `challenge_type` the CA offers for this authorization, or a clear error."""
    offered = [challb.chall.typ for challb in authzr.body.challenges]
    for challb in authzr.body.challenges:
        if challb.chall.typ == challenge_type:
            return challb
    raise AcmeError(
        f"the ACME server offers no {challenge_type} challenge for {authzr.body.identifier.value} "
        f"(offered: {', '.join(offered) or 'none'}); choose another challenge type"
    )



def _load_account_key(pem: bytes) -> tuple[JWK, JWASignature]:
    key = serialization.load_pem_private_key(pem, password=None)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        algs = {"secp256r1": ES256, "secp384r1": ES384, "secp521r1": ES512}
        if key.curve.name not in algs:
            raise ValueError(f"unsupported ACME account key curve {key.curve.name}")
        return JWKEC(key=key), algs[key.curve.name]
    if isinstance(key, rsa.RSAPrivateKey):
        return JWKRSA(key=key), RS256
    raise ValueError("the ACME account key must be an EC (P-256/384/521) or RSA private key")



# ======================================================================================
# The client
# ======================================================================================


def _new_account(acme: client.ClientV2, new: messages.NewRegistration) -> str:
    """Register, or adopt the account the CA already has for this key (it answers 200 + Location)."""
    try:
        return str(acme.new_account(new).uri)
    except errors.ConflictError as exc:
        acme.net.account = messages.RegistrationResource(body=messages.Registration(), uri=exc.location)
        return str(exc.location)


class AcmeClient:
    """One ACME account at one CA. `register()` once, then `issue()` as often as needed.

    `account_key_pem`: the persisted account key (keep `client.account_key_pem` in a
    Secret after the first run); None makes a new P-256 key. `verify`: True, False, or the
    path of a CA bundle that signs the ACME server's TLS certificate (private CAs, pebble).
    `root_fetcher`: where the chain's root comes from; without one `ca_chain_pem` holds the
    intermediates only and `IssuedCertificate.root_missing` is set.
    """

    def __init__(
        self,
        directory_url: str,
        *,
        account_key_pem: bytes | None = None,
        verify: bool | str = True,
        root_fetcher: RootFetcher | None = None,
        timeout: float = 30.0,
        user_agent: str = "fleetwire-operator",
    ) -> None:
        self.directory_url = directory_url
        self.root_fetcher = root_fetcher
        if account_key_pem is None:
            account_key_pem = generate_key().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        self._account_key_pem = account_key_pem
        self._jwk, alg = _load_account_key(account_key_pem)
        # requests takes a CA-bundle path where the library's signature says bool.
        self._net = client.ClientNetwork(
            self._jwk, alg=alg, verify_ssl=cast(bool, verify), user_agent=user_agent, timeout=int(timeout)
        )
        self._acme: client.ClientV2 | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="acme")
        self.account_uri: str | None = None
        self._closed = False

    def __repr__(self) -> str:  # the key stays out of logs and tracebacks
        return f"AcmeClient({self.directory_url!r}, account={self.account_uri!r})"

    @property
    def account_key_pem(self) -> bytes:
        """The account's private key (PKCS#8 PEM), for the caller to keep in a Secret."""
        return self._account_key_pem

    async def _call(self, action: str, fn: Callable[..., T], *args: Any) -> T:
        """Run one blocking library call in the worker thread; failures become `AcmeError`s."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._worker, functools.partial(fn, *args))
        except Exception as exc:
            raise explain(exc, action, self.directory_url) from exc

    async def _client(self) -> client.ClientV2:
        if self._acme is None:
            directory = await self._call(
                "fetch the directory", client.ClientV2.get_directory, self.directory_url, self._net
            )
            self._acme = client.ClientV2(directory, self._net)
        return self._acme

    async def register(self, email: str | None = None) -> str:
        """Create the account (agreeing to the CA's terms) or find it again; returns its URL.

        Idempotent: for a key the CA already knows it answers with the existing account,
        so the operator can call this on every start with the stored key.
        """
        acme = await self._client()
        new = messages.NewRegistration.from_data(email=email, terms_of_service_agreed=True)
        uri = await self._call("register the account", _new_account, acme, new)
        self.account_uri = uri
        log.info("ACME account %s at %s", uri, self.directory_url)
        return uri

    async def issue(self, hostname: str, solver: ChallengeSolver, *, timeout: float = 120.0) -> IssuedCertificate:
        """Order, validate with `solver`, finalize with a new key, and return key, chain and CA chain."""
        if self.account_uri is None:
            raise AcmeError("no ACME account: call register() before issue()")
        acme = await self._client()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        started = loop.time()
        key_pem, csr_pem = make_key_and_csr(hostname)
        orderr = await self._call(f"create an order for {hostname}", acme.new_order, csr_pem)
        log.info("order %s for %s via %s", orderr.uri, hostname, solver.challenge_type)

        presented: list[tuple[str, str, str]] = []
        try:
            pending: list[tuple[messages.AuthorizationResource, messages.ChallengeBody]] = []
            for authzr in orderr.authorizations:
                if authzr.body.status == messages.STATUS_VALID:
                    continue  # the CA reuses a recent validation of this name
                challb = select_challenge(authzr, solver.challenge_type)
                token = str(challb.chall.encode("token"))
                validation = str(challb.chall.validation(self._jwk))
                domain = str(authzr.body.identifier.value)
                await solver.present(domain, token, validation)
                presented.append((domain, token, validation))
                response = challb.chall.response(self._jwk)
                await self._call(f"answer the {challb.chall.typ} challenge", acme.answer_challenge, challb, response)
                pending.append((authzr, challb))
            for authzr, challb in pending:
                await self._await_authorization(acme, authzr, challb, deadline)
        finally:
            for domain, token, validation in presented:
                try:
                    await solver.cleanup(domain, token, validation)
                except Exception as exc:  # a leftover record must not hide the real outcome
                    log.warning("could not withdraw the %s answer for %s: %s", solver.challenge_type, domain, exc)

        remaining = max(deadline - loop.time(), 1.0)
        # The library compares naive local times.
        finalize_deadline = dt.datetime.now() + dt.timedelta(seconds=remaining)
        orderr = await self._call("finalize the order", acme.finalize_order, orderr, finalize_deadline, True)
        issued = await self._with_root(key_pem, orderr.fullchain_pem.encode("ascii"), hostname)
        alternates = []
        for pem in orderr.alternative_fullchains_pem or ():
            try:
                alternates.append(await self._with_root(key_pem, pem.encode("ascii"), hostname))
            except (AcmeServerError, ValueError) as exc:  # an unusable alternate is no reason to lose the order
                log.warning("ignoring an alternate chain for %s: %s", hostname, exc)
        if alternates:
            issued = replace(issued, alternates=tuple(alternates))
        log.info(
            "issued %s serial %x until %s by %s in %.1f s%s",
            hostname,
            issued.leaf.serial_number,
            issued.leaf.not_valid_after_utc.isoformat(),
            issued.leaf.issuer.rfc4514_string(),
            loop.time() - started,
            f" (root missing: {issued.root_missing_reason})" if issued.root_missing else "",
        )
        return issued

    async def _await_authorization(
        self,
        acme: client.ClientV2,
        authzr: messages.AuthorizationResource,
        challb: messages.ChallengeBody,
        deadline: float,
    ) -> None:
        """Poll one authorization on the event loop until valid, invalid or out of time."""
        loop = asyncio.get_running_loop()
        name = str(authzr.body.identifier.value)
        interval = 0.2
        while True:
            authzr, response = await self._call(f"check the authorization of {name}", acme.poll, authzr)
            status = authzr.body.status
            if status == messages.STATUS_VALID:
                return
            if status not in (messages.STATUS_PENDING, messages.STATUS_PROCESSING):
                failed = next((c for c in authzr.body.challenges if c.error is not None), None)
                if failed is not None:
                    raise challenge_error(name, failed)
                raise ChallengeFailed(f"authorization of {name} ended {status}", challb.chall.typ, str(status))
            if loop.time() >= deadline:
                raise AcmeError(
                    f"the ACME server did not validate the {challb.chall.typ} challenge for {name} in time; "
                    "check that the answer is reachable from the internet"
                )
            wait = interval
            retry_after = response.headers.get("Retry-After", "")
            if retry_after.isdigit():
                wait = max(wait, float(retry_after))
            await asyncio.sleep(min(wait, max(deadline - loop.time(), 0.0)))
            interval = min(interval * 1.5, 2.0)

    async def _with_root(self, key_pem: bytes, fullchain_pem: bytes, hostname: str) -> IssuedCertificate:
        if self.root_fetcher is None:
            return assemble(
                key_pem, fullchain_pem, hostname,
                root_missing_reason="no root_fetcher configured: the CA chain holds the intermediates only",
            )
        last = x509.load_pem_x509_certificates(fullchain_pem)[-1]
        try:
            roots = await self.root_fetcher(last)
        except Exception as exc:  # the certificate is issued; keep it rather than waste an issuance
            log.warning("could not fetch the root for %s: %s", last.issuer.rfc4514_string(), exc)
            return assemble(key_pem, fullchain_pem, hostname, root_missing_reason=f"fetching the root failed: {exc}")
        return assemble(key_pem, fullchain_pem, hostname, roots)

    async def close(self) -> None:
        """Close the HTTP session and stop the worker thread; closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(self._worker, self._net.session.close)
        self._worker.shutdown(wait=True)

    async def __aenter__(self) -> AcmeClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

