"""The operator's certificate and server story against pebble and the Kubernetes API emulator.

A FleetTelemetryConfig goes in; out come a certificate (ACME with real HTTP-01 validation
by pebble, a private CA, or a Secret managed elsewhere), the server's ConfigMap,
Deployment and Services owned by the resource, and conditions that say what happened.
Renewals happen on the operator's timer; a pebble restart (a new root) shows up as a new
chain fingerprint. Bad input ends in a condition with the reason, never in a crash loop.

Where a test takes the `kubelet` fixture, the kubelet stand-in runs the operator's
Deployment: the server's pod starts with the mounts, environment and probes the operator
wrote, ServerReady comes from its readiness probe, and a renewed certificate reaches it
through the mounted Secret's `..data` swap, checked by the certificate the pod serves.

What a real cluster does that the emulator does not, and where the tests stand in: a
server-side apply is a plain merge here, without field ownership (fields the operator
stops setting are removed on a cluster, kept here); no load balancer gives the HTTP-01
Service an address (pebble reaches the operator's responder on loopback, where the local
DNS resolver points every name).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ssl
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fixtures.tools import require
from conftest import PEBBLE, KopfRunnerFactory, LocalDns, Pebble
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from kube import (  # noqa: F401 - kubelet is a fixture
    CONFIGMAPS,
    DEPLOYMENTS,
    FTC,
    PODS,
    SECRETS,
    SERVICES,
    KubeApi,
    KubeClient,
    accept_any_spec,
    condition,
    kubelet,
    operator_rbac,
)

from fleetwire import pki
from fleetwire.operator.resource import crd
from fleetwire.operator.reconcilers.certificate_context import FINGERPRINT_ANNOTATION
from fleetwire.pki import chain_fingerprint

HANDLERS = "fleetwire.operator.handlers.resource"
NS = "default"
HOST = "telemetry.fleetwire.test"
REPO_ROOT = Path(__file__).resolve().parent.parent


# ======================================================================================
# Helpers
# ======================================================================================


def ftc(name: str, certificate: dict[str, Any], **spec: Any) -> dict[str, Any]:
    spec.setdefault("hostname", HOST)
    spec.setdefault("server", {"records": {"V": ["logger"]}})
    return {"apiVersion": FTC.api_version, "kind": FTC.kind, "metadata": {"name": name, "namespace": NS},
            "spec": {"certificate": certificate, **spec}}


def is_(type_: str, status: str, reason: str | None = None) -> Any:
    def check(obj: dict[str, Any]) -> bool:
        found = condition(obj, type_)
        return found is not None and found["status"] == status and (reason is None or found["reason"] == reason)
    return check


def all_of(*checks: Any) -> Any:
    return lambda obj: all(check(obj) for check in checks)


def ready() -> Any:
    return all_of(is_("SpecValid", "True"), is_("CertificateReady", "True"), is_("ServerReady", "True"))


def secret_bytes(secret: dict[str, Any], key: str) -> bytes:
    return base64.b64decode(secret["data"][key])


def certs(pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem)


def tls_data(bundle: pki.Bundle, chain: list[x509.Certificate], ca: list[x509.Certificate] | None) -> dict[str, str]:
    pem = bundle.cert_pem + b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    data = {"tls.crt": pem, "tls.key": bundle.key_pem}
    if ca is not None:
        data["ca.crt"] = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in ca)
    return {key: base64.b64encode(value).decode() for key, value in data.items()}


def tls_secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": NS}, "data": data}


async def vehicle_ca(kube: KubeClient, name: str) -> None:
    """The ConfigMap with the vehicles' CAs the server needs (the user provides it)."""
    root = pki.make_ca("Vehicle Root")
    await kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{name}-vehicle-ca",
                                                                            "namespace": NS},
                       "data": {"ca.crt": root.cert_pem.decode()}})


async def events(kube: KubeClient, name: str) -> list[dict[str, Any]]:
    return await kube.events(NS, name)


async def wait_event(kube: KubeClient, name: str, reason: str, count: int = 1, timeout: float = 20) -> list[str]:
    """Messages of the `reason` events once there are `count` of them (kopf posts from a queue)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [e.get("message", "") for e in await events(kube, name) if e.get("reason") == reason]
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            reasons = [e.get("reason") for e in await events(kube, name)]
            raise AssertionError(f"{count} {reason} event(s) for {name} expected; got {reasons}")
        await asyncio.sleep(0.05)


def report(line: str) -> None:
    """Timings on the real stdout (kopf's runner swaps sys.stdout while an operator runs)."""
    print(line, file=sys.__stdout__, flush=True)


async def served_leaf(node: Any, name: str) -> x509.Certificate:
    """The certificate the resource's server pod presents on its vehicle Service's port 443."""
    address = await node.wait_address(NS, f"{name}-server", 443)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # the chain is checked from the Secret
    _reader, writer = await asyncio.open_connection(*address, ssl=ctx, server_hostname=HOST)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return x509.load_der_x509_certificate(der)


async def serving(node: Any, name: str, serial: int, timeout: float = 20) -> x509.Certificate:
    """Wait until the pod serves the leaf with `serial` (the server checks its files every few seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            leaf = await served_leaf(node, name)
            if leaf.serial_number == serial:
                return leaf
        except (OSError, LookupError, ssl.SSLError):
            leaf = None
        if time.monotonic() > deadline:
            raise AssertionError(f"the {name} pod serves {leaf and format(leaf.serial_number, 'x')}, "
                                 f"not {serial:x}, after {timeout:.0f} s")
        await asyncio.sleep(0.25)


def owned_by(obj: dict[str, Any], owner: dict[str, Any]) -> bool:
    refs = obj["metadata"].get("ownerReferences") or []
    return any(ref["uid"] == owner["metadata"]["uid"] and ref["kind"] == crd.KIND and ref.get("controller")
               for ref in refs)


@pytest.fixture(autouse=True)
def as_the_charts_service_account(operator_rbac: Any) -> Any:
    """Every story runs the operator with the chart's RBAC: a request without a grant is a 403
    and fails the test."""
    return operator_rbac


@pytest.fixture
def operator_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A one-second timer, so renewals and retries show within a test."""
    monkeypatch.setenv("FLEETWIRE_RECONCILE_SECONDS", "1")
    monkeypatch.setenv("FLEETWIRE_IMAGE", "ghcr.io/fleetwire/fleetwire:test")
    return monkeypatch


def point_at(monkeypatch: pytest.MonkeyPatch, server: Pebble) -> None:
    """The operator trusts `server`'s TLS, fetches its roots, and answers HTTP-01 on its httpPort."""
    monkeypatch.setenv("FLEETWIRE_ACME_CA_BUNDLE", server.ca_file)
    monkeypatch.setenv("FLEETWIRE_ACME_ROOTS_URL", server.management)
    monkeypatch.setenv("FLEETWIRE_ACME_HTTP01_PORT", str(server.http_port))


@pytest.fixture
def short_lived_pebble(tmp_path: Path, local_dns: LocalDns) -> Any:
    """A pebble of its own whose leaves live 12 seconds: renewal (at 2/3) falls due after 8."""
    require(PEBBLE, "pebble")
    server = Pebble(PEBBLE, tmp_path, local_dns.port, certificate_validity=12)
    server.start()
    yield server
    server.stop()


# ======================================================================================
# The ACME story
# ======================================================================================


@pytest.mark.slow
async def test_acme_http01_story_issue_renew_rotate(
    kopf_runner: KopfRunnerFactory, kube: KubeClient, operator_env: pytest.MonkeyPatch,
    short_lived_pebble: Pebble, local_dns: LocalDns, kubelet: Any,
) -> None:
    acme = short_lived_pebble
    point_at(operator_env, acme)
    kopf_runner(HANDLERS)
    await vehicle_ca(kube, "fleet")
    started = time.monotonic()
    created = await kube.create(ftc("fleet", {"acme": {"directoryUrl": acme.directory, "email": "ops@fleetwire.test",
                                                       "challenge": "http01"}}))
    obj = await kube.wait_for(FTC, "fleet", NS, ready(), timeout=30)
    issued_after = time.monotonic() - started
    assert (HOST, "A") in local_dns.queries  # pebble resolved the name and fetched the answer

    # The TLS Secret: full chain leaf first, the key, and ca.crt = everything above the leaf with the root.
    secret = await kube.get(SECRETS, "fleet-tls", NS)
    assert secret["type"] == "kubernetes.io/tls" and owned_by(secret, created)
    chain, ca = certs(secret_bytes(secret, "tls.crt")), certs(secret_bytes(secret, "ca.crt"))
    root = acme.root()
    assert ca == [*chain[1:], root] and len(chain) == 2
    leaf = chain[0]
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == [HOST]
    key = serialization.load_pem_private_key(secret_bytes(secret, "tls.key"), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.public_key() == leaf.public_key()
    fingerprint = chain_fingerprint(secret_bytes(secret, "ca.crt"))
    assert secret["metadata"]["annotations"][FINGERPRINT_ANNOTATION] == fingerprint

    status = obj["status"]["certificate"]
    assert status["mode"] == "acme" and status["chainFingerprint"] == fingerprint and status["san"] == [HOST]
    assert status["serialNumber"] == format(leaf.serial_number, "x") and "renewAt" in status
    assert "order" not in status and "retry" not in status
    account = await kube.get(SECRETS, "fleet-acme-account", NS)
    assert owned_by(account, created)

    # The server's objects, each owned by the resource.
    for resource, name in ((CONFIGMAPS, "fleet-server-config"), (DEPLOYMENTS, "fleet-server"),
                           (SERVICES, "fleet-server"), (SERVICES, "fleet-server-metrics"),
                           (SERVICES, "fleet-http01-solver")):
        assert owned_by(await kube.get(resource, name, NS), created), name
    solver = await kube.get(SERVICES, "fleet-http01-solver", NS)
    assert solver["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": acme.http_port, "protocol": "TCP"}]
    assert "CertificateIssued" in [e["reason"] for e in await events(kube, "fleet")]
    deployment = await kube.get(DEPLOYMENTS, "fleet-server", NS)
    template = deployment["spec"]["template"]
    await kube.wait_for(FTC, "fleet", NS, is_("ServerReady", "True", "Available"), timeout=20)
    await serving(kubelet, "fleet", leaf.serial_number)
    (pod,) = kubelet.pods(NS, "fleet-server")

    # Renewal at two thirds of the 12 s lifetime, by the timer: new serial, same chain.
    renewed_message = (await wait_event(kube, "fleet", "CertificateRenewed", timeout=30))[0]
    renewal_seen = time.monotonic() - started
    assert "same chain" in renewed_message
    renewed = await kube.get(SECRETS, "fleet-tls", NS)
    new_leaf = certs(secret_bytes(renewed, "tls.crt"))[0]
    assert new_leaf.serial_number != leaf.serial_number
    assert chain_fingerprint(secret_bytes(renewed, "ca.crt")) == fingerprint
    # Renewal changed only the Secret: the pod template is untouched, so no pod restarts;
    # the running pod serves the new leaf once the stand-in has swapped the mounted Secret.
    assert (await kube.get(DEPLOYMENTS, "fleet-server", NS))["spec"]["template"] == template
    await serving(kubelet, "fleet", new_leaf.serial_number)
    assert kubelet.pods(NS, "fleet-server") == [pod] and pod.restarts == 0 and pod.volume_updates >= 1

    # A restarted pebble has a new root and intermediate: the next renewal brings a new chain.
    acme.restart()
    rotated = await kube.wait_for(
        FTC, "fleet", NS, lambda o: (o.get("status", {}).get("certificate") or {}).get("chainFingerprint")
        not in (None, fingerprint), timeout=30, what="a new chain fingerprint")
    rotation_seen = time.monotonic() - started
    new_status = rotated["status"]["certificate"]
    rotated_secret = await kube.get(SECRETS, "fleet-tls", NS)
    assert certs(secret_bytes(rotated_secret, "ca.crt"))[-1] == acme.root() != root
    assert new_status["chainFingerprint"] == chain_fingerprint(secret_bytes(rotated_secret, "ca.crt"))
    assert any("NEW chain" in m for m in await wait_event(kube, "fleet", "CertificateRenewed", count=2))
    report(f"acme story: ready after {issued_after:.1f} s, renewed after {renewal_seen:.1f} s, "
           f"new chain after {rotation_seen:.1f} s")


async def test_a_restart_never_orders_twice_for_one_need(
    kopf_runner: KopfRunnerFactory, kube: KubeClient, operator_env: pytest.MonkeyPatch, pebble: Pebble,
) -> None:
    """A valid certificate is kept across a restart, even when the order marker of the previous
    process is still in status (it died after storing the Secret, before clearing the marker)."""
    point_at(operator_env, pebble)
    first = kopf_runner(HANDLERS)
    await vehicle_ca(kube, "steady")
    await kube.create(ftc("steady", {"acme": {"directoryUrl": pebble.directory}}))
    await kube.wait_for(FTC, "steady", NS, ready(), timeout=30)
    serial = certs(secret_bytes(await kube.get(SECRETS, "steady-tls", NS), "tls.crt"))[0].serial_number
    await asyncio.to_thread(first.stop)

    marker = {"hostname": HOST, "reason": "no certificate",
              "startedAt": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    await kube.patch_status(FTC, "steady", {"certificate": {"order": marker}}, NS)
    second = kopf_runner(HANDLERS)
    await second.logged("Handler 'manage' succeeded")  # the resume pass
    cleared = await kube.wait_for(FTC, "steady", NS, lambda o: "order" not in o["status"]["certificate"])
    assert is_("CertificateReady", "True", "CertificateValid")(cleared)
    await asyncio.sleep(2.5)  # two timer passes
    assert certs(secret_bytes(await kube.get(SECRETS, "steady-tls", NS), "tls.crt"))[0].serial_number == serial
    assert [e["reason"] for e in await events(kube, "steady")].count("CertificateIssued") == 1


async def test_a_fresh_order_marker_holds_off_a_second_order(
    kopf_runner: KopfRunnerFactory, kube: KubeClient, operator_env: pytest.MonkeyPatch, pebble: Pebble,
) -> None:
    """Another process started an order moments ago (a replica that took over): wait, do not order."""
    point_at(operator_env, pebble)
    await kube.create(ftc("busy", {"acme": {"directoryUrl": pebble.directory}}))
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    await kube.patch_status(FTC, "busy", {"certificate": {"order": {"hostname": HOST, "reason": "no certificate",
                                                                    "startedAt": started}}}, NS)
    kopf_runner(HANDLERS)
    waiting = await kube.wait_for(FTC, "busy", NS, is_("CertificateReady", "False", "OrderInProgress"))
    assert f"started at {started} may still be running" in condition(waiting, "CertificateReady")["message"]  # type: ignore[index]
    await asyncio.sleep(1.5)
    assert await kube.find(SECRETS, "busy-tls", NS) is None and await kube.find(SECRETS, "busy-acme-account", NS) is None
