"""ACME: a real pebble CA validating real HTTP-01 and DNS-01 answers; the client's pure parts.

Pebble runs on loopback with ports picked here and `-dnsserver` pointing at an in-process
dnslib server that answers A 127.0.0.1 for every name (so HTTP-01 reaches the responder)
and the TXT records the DNS-01 provider publishes (both fixtures live in conftest.py,
shared with the operator's certificate tests). The challenge solvers alone are
test_http01.py and test_dns01.py; the renewal policy is test_acme_renewal.py.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from acme import messages
from conftest import PEBBLE, LocalDns, Pebble
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fleetwire import pki
from fleetwire.operator.clients.acme import AcmeClient, make_key_and_csr, select_challenge
from fleetwire.operator.clients.acme_errors import AcmeError, AcmeServerError, ChallengeFailed, DirectoryUnreachable, RateLimited, explain
from fleetwire.operator.clients.acme_roots import PebbleRoots, static_roots
from fleetwire.operator.clients.acme_chains import assemble
from fleetwire.operator.clients.dns01 import Dns01Solver, DnsProvider
from fleetwire.operator.clients.http01 import Http01Responder


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _spki(key: Any) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _sans(cert: x509.Certificate) -> list[str]:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


def _verify_chain(leaf: x509.Certificate, above: list[x509.Certificate], root: x509.Certificate) -> None:
    """Each certificate signed by the next, ending at `root` (raises otherwise)."""
    chain = [leaf, *above]
    assert chain[-1] == root
    for cert, issuer in zip(chain, chain[1:]):
        cert.verify_directly_issued_by(issuer)


# ======================================================================================
# Real issuance against pebble
# ======================================================================================


@pytest.mark.slow
async def test_http01_issuance_real_validation(
    pebble: Pebble, local_dns: LocalDns, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # the acme library logs whole requests at DEBUG
    host = "telemetry.fleetwire.test"
    async with Http01Responder("127.0.0.1", pebble.http_port) as responder, pebble.client() as acme:
        await acme.register("ops@fleetwire.test")
        started = time.monotonic()
        issued = await acme.issue(host, responder)
        elapsed = time.monotonic() - started
        assert responder.tokens == {}  # withdrawn after validation
    print(f"http-01 issuance: {elapsed:.2f} s")

    # The CSR has an empty subject (test_csr_names_host_only_in_san); pebble copies the name
    # into the leaf's CN anyway, so only the SAN is checked, as vehicles do.
    assert _sans(issued.leaf) == [host]
    assert (host, "A") in local_dns.queries  # pebble really resolved and fetched
    root = pebble.root()
    assert not issued.root_missing and issued.root == root
    ca_chain = x509.load_pem_x509_certificates(issued.ca_chain_pem)
    chain = x509.load_pem_x509_certificates(issued.chain_pem)
    assert chain[0] == issued.leaf and ca_chain == [*chain[1:], root]
    _verify_chain(issued.leaf, ca_chain, root)
    key = serialization.load_pem_private_key(issued.key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert _spki(key.public_key()) == _spki(issued.leaf.public_key())
    assert b"PRIVATE" not in issued.ca_chain_pem + issued.chain_pem
    assert "PRIVATE KEY" not in caplog.text and issued.key_pem.decode().splitlines()[1] not in caplog.text
    assert f"issued {host}" in caplog.text
    assert "key_pem" not in repr(issued)


@pytest.mark.slow
async def test_dns01_issuance_through_provider(pebble: Pebble, local_dns: LocalDns) -> None:
    host = "dns.fleetwire.test"
    assert isinstance(local_dns, DnsProvider)
    async with pebble.client() as acme:
        await acme.register()
        started = time.monotonic()
        issued = await acme.issue(host, Dns01Solver(local_dns))
        print(f"dns-01 issuance: {time.monotonic() - started:.2f} s")
    assert (f"_acme-challenge.{host}", "TXT") in local_dns.queries
    assert local_dns.records.get(f"_acme-challenge.{host}") == []  # cleared
    assert _sans(issued.leaf) == [host]
    _verify_chain(issued.leaf, x509.load_pem_x509_certificates(issued.ca_chain_pem), pebble.root())


async def test_account_key_round_trip_finds_same_account(pebble: Pebble) -> None:
    async with pebble.client() as first:
        uri = await first.register("ops@fleetwire.test")
        stored = first.account_key_pem
    assert b"PRIVATE KEY" in stored and "PRIVATE" not in repr(first)
    async with pebble.client(account_key_pem=stored) as again:
        assert await again.register("ops@fleetwire.test") == uri


async def test_failed_challenge_carries_server_detail(pebble: Pebble) -> None:
    class Silent(Http01Responder):
        async def present(self, domain: str, token: str, validation: str) -> None:
            pass  # the CA will find nothing

    async with Silent("127.0.0.1", pebble.http_port) as responder, pebble.client() as acme:
        await acme.register()
        with pytest.raises(ChallengeFailed) as caught:
            await acme.issue("nothing-served.fleetwire.test", responder)
    error = caught.value
    assert error.challenge_type == "http-01"
    assert "404" in error.detail and "nothing-served.fleetwire.test" in str(error)


async def test_pebble_roots_follow_alternate_links(
    tmp_path: Path, local_dns: LocalDns, pebble: Pebble
) -> None:
    assert PEBBLE is not None
    alt = Pebble(PEBBLE, tmp_path, local_dns.port, PEBBLE_ALTERNATE_ROOTS="1")
    alt.start()
    try:
        primary = alt.root()
        roots = await PebbleRoots(alt.management, verify=alt.ca_file)(primary)
    finally:
        alt.stop()
    assert roots[0] == primary and len(roots) == 2
    assert roots[1].fingerprint(hashes.SHA256()) != primary.fingerprint(hashes.SHA256())


async def test_unreachable_directory_is_a_clear_error() -> None:
    url = f"https://127.0.0.1:{_free_port()}/dir"
    async with AcmeClient(url) as acme:
        with pytest.raises(DirectoryUnreachable, match="cannot reach the ACME server") as caught:
            await acme.register()
    assert url in str(caught.value)


async def test_untrusted_acme_tls_is_a_clear_error(pebble: Pebble) -> None:
    async with AcmeClient(pebble.directory) as acme:  # the system trust store lacks pebble's CA
        with pytest.raises(DirectoryUnreachable, match="TLS verification failed"):
            await acme.register()


async def test_issue_before_register_is_refused() -> None:
    async with AcmeClient("https://127.0.0.1:1/dir") as acme:
        with pytest.raises(AcmeError, match="register"):
            await acme.issue("x.fleetwire.test", Http01Responder(port=0))


@pytest.mark.slow
async def test_ca_rotation_after_pebble_restart(pebble: Pebble) -> None:
    """A restarted pebble has a new root and intermediate: the re-issued CA chain differs."""
    host = "rotate.fleetwire.test"

    async def issue() -> Any:
        async with Http01Responder("127.0.0.1", pebble.http_port) as responder, pebble.client() as acme:
            await acme.register()
            return await acme.issue(host, responder)

    before = await issue()
    pebble.restart()
    after = await issue()
    old, new = (x509.load_pem_x509_certificates(i.ca_chain_pem) for i in (before, after))
    assert before.root is not None and after.root is not None
    assert before.root.fingerprint(hashes.SHA256()) != after.root.fingerprint(hashes.SHA256())
    assert old[0].fingerprint(hashes.SHA256()) != new[0].fingerprint(hashes.SHA256())  # intermediate
    assert before.ca_chain_pem != after.ca_chain_pem
    _verify_chain(after.leaf, new, pebble.root())
    with pytest.raises((ValueError, InvalidSignature)):  # the old chain does not lead to the new root
        _verify_chain(before.leaf, [*old[:-1], after.root], after.root)


# ======================================================================================
# Pure parts of the client
# ======================================================================================


def test_csr_names_host_only_in_san() -> None:
    key_pem, csr_pem = make_key_and_csr("telemetry.fleetwire.test")
    csr = x509.load_pem_x509_csr(csr_pem)
    assert list(csr.subject) == [] and not csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    ) == ["telemetry.fleetwire.test"]
    assert csr.is_signature_valid
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert _spki(key.public_key()) == _spki(csr.public_key())
    assert make_key_and_csr("telemetry.fleetwire.test")[0] != key_pem  # a new key every time


def _issued_by_test_ca(host: str) -> tuple[pki.Bundle, pki.Bundle, pki.Bundle]:
    root = pki.make_ca("Test Root")
    inter = pki.make_ca("Test Intermediate", parent=root)
    return root, inter, pki.make_server_cert(inter, [host])


async def test_assemble_adds_matching_root_or_says_why_not() -> None:
    root, inter, leaf = _issued_by_test_ca("a.fleetwire.test")
    fullchain = leaf.cert_pem + inter.cert_pem
    decoy = pki.make_ca("Test Root")  # same name, other key: must not be picked
    roots = await static_roots(decoy.cert_pem + root.cert_pem)(inter.cert)

    issued = assemble(leaf.key_pem, fullchain, "a.fleetwire.test", roots)
    assert issued.root == root.cert and not issued.root_missing
    assert x509.load_pem_x509_certificates(issued.ca_chain_pem) == [inter.cert, root.cert]

    bare = assemble(leaf.key_pem, fullchain, "a.fleetwire.test", root_missing_reason="no root_fetcher configured")
    assert bare.root_missing and bare.root_missing_reason == "no root_fetcher configured"
    assert x509.load_pem_x509_certificates(bare.ca_chain_pem) == [inter.cert]

    wrong = assemble(leaf.key_pem, fullchain, "a.fleetwire.test", [decoy.cert])
    assert wrong.root_missing and "Test Root" in (wrong.root_missing_reason or "")

    with pytest.raises(AcmeServerError, match="different key"):
        assemble(pki.make_server_cert(inter, ["a.fleetwire.test"]).key_pem, fullchain, "a.fleetwire.test")
    with pytest.raises(AcmeServerError, match="does not name b.fleetwire.test"):
        assemble(leaf.key_pem, fullchain, "b.fleetwire.test")


def test_select_challenge_names_what_is_offered() -> None:
    authz = messages.Authorization.from_json({
        "identifier": {"type": "dns", "value": "a.fleetwire.test"},
        "status": "pending",
        "challenges": [{"type": "http-01", "url": "https://ca/c/1", "token": "A" * 43, "status": "pending"}],
    })
    authzr = messages.AuthorizationResource(body=authz, uri="https://ca/a/1")
    assert select_challenge(authzr, "http-01").chall.typ == "http-01"
    with pytest.raises(AcmeError, match=r"no dns-01 challenge for a.fleetwire.test \(offered: http-01\)"):
        select_challenge(authzr, "dns-01")


def test_explain_maps_server_problems() -> None:
    limited = explain(messages.Error.with_code("rateLimited", detail="too many certificates"), "create an order", "u")
    assert isinstance(limited, RateLimited) and "too many certificates" in str(limited)
    refused = explain(messages.Error.with_code("rejectedIdentifier", detail="blocked"), "create an order", "u")
    assert isinstance(refused, AcmeServerError) and "will not issue" in str(refused)
    timeout = explain(requests.exceptions.ConnectTimeout(), "fetch the directory", "https://ca/dir")
    assert isinstance(timeout, DirectoryUnreachable) and "https://ca/dir" in str(timeout)


async def test_alternate_chains_are_offered_and_the_one_the_fleet_trusts_is_chosen(
    tmp_path: Path, local_dns: LocalDns, pebble: Pebble
) -> None:
    """Pebble with PEBBLE_ALTERNATE_ROOTS offers the same leaf under another root (RFC 8555
    `Link: rel="alternate"`): a fleet whose `ca` holds the alternate root keeps its `ca`."""
    from fleetwire.operator.clients.acme_chains import choose_chain
    from fleetwire.trust import refusal

    assert PEBBLE is not None
    host = "alternate.fleetwire.test"
    alt = Pebble(PEBBLE, tmp_path, local_dns.port, PEBBLE_ALTERNATE_ROOTS="1")
    alt.start()
    try:
        async def issue() -> Any:
            async with Http01Responder("127.0.0.1", alt.http_port) as responder, alt.client() as acme:
                await acme.register()
                return await acme.issue(host, responder)

        first, second = await issue(), await issue()
    finally:
        alt.stop()
    assert len(first.alternates) == 1 and first.alternates[0].leaf == first.leaf
    assert first.root is not None and first.alternates[0].root is not None
    assert first.root.fingerprint(hashes.SHA256()) != first.alternates[0].root.fingerprint(hashes.SHA256())
    now = dt.datetime.now(dt.UTC)
    # The intermediates of pebble's chains share subject and key, so a `ca` holding any of them
    # accepts every chain; a fleet whose `ca` holds the alternate root alone tells them apart.
    assert refusal(second.chain_pem, first.alternates[0].ca_chain_pem, host, now) is None
    fleet_ca = first.alternates[0].root.public_bytes(serialization.Encoding.PEM)

    def accepted(chain: Any) -> bool:
        return refusal(chain.chain_pem, fleet_ca, host, now) is None

    assert not accepted(second)  # the default chain would need a push to every vehicle
    chosen = choose_chain(second, accepted)
    assert chosen is second.alternates[0] and accepted(chosen)
    assert choose_chain(second, lambda chain: False) is second  # none trusted: the default one
