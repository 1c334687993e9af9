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
import json
import datetime as dt
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import PEBBLE, KopfRunnerFactory, LocalDns, Pebble, free_port
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
from fleetwire.operator.resource.builders import CONFIG_CHECKSUM_ANNOTATION
from fleetwire.operator.reconcilers.certificates import FINGERPRINT_ANNOTATION, chain_fingerprint

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
    if PEBBLE is None:
        pytest.skip("pebble not installed (make test installs it)")
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


# ======================================================================================
# Private CA and secretRef
# ======================================================================================


async def test_private_ca_renewal_keeps_the_vehicles_ca(kopf_runner: KopfRunnerFactory, kube: KubeClient,
                                                        operator_env: pytest.MonkeyPatch, kubelet: Any) -> None:
    kopf_runner(HANDLERS)
    await vehicle_ca(kube, "private")
    created = await kube.create(ftc("private", {"privateCA": {"validityDays": 30, "leafValidityDays": 7}}))
    obj = await kube.wait_for(FTC, "private", NS, ready())
    ca_secret = await kube.get(SECRETS, "private-ca", NS)
    ca_cert = certs(secret_bytes(ca_secret, "tls.crt"))[0]
    assert owned_by(ca_secret, created)
    tls = await kube.get(SECRETS, "private-tls", NS)
    leaf = certs(secret_bytes(tls, "tls.crt"))[0]
    assert certs(secret_bytes(tls, "ca.crt")) == [ca_cert]
    assert list(leaf.subject) == []  # SAN only: vehicles never read the CN
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical and san.value.get_values_for_type(x509.DNSName) == [HOST]
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey) and leaf.public_key().curve.name == "secp256r1"
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc <= dt.timedelta(days=7, hours=1)
    status = obj["status"]["certificate"]
    assert status["mode"] == "privateCA" and status["chainFingerprint"] == chain_fingerprint(
        secret_bytes(tls, "ca.crt"))
    assert {"PrivateCaCreated", "CertificateIssued"} <= {e["reason"] for e in await events(kube, "private")}
    template = (await kube.get(DEPLOYMENTS, "private-server", NS))["spec"]["template"]
    # ServerReady from the pod's readiness probe, which the stand-in runs as the spec writes it.
    available = await kube.wait_for(FTC, "private", NS, is_("ServerReady", "True", "Available"), timeout=20)
    assert available["status"]["server"]["readyReplicas"] == 1
    await serving(kubelet, "private", leaf.serial_number)
    (pod,) = kubelet.pods(NS, "private-server")

    # A new hostname needs a new leaf: from the same CA, so the vehicles' ca stays.
    await kube.patch(FTC, "private", {"spec": {"hostname": "new.fleetwire.test"}}, NS)
    moved = await kube.wait_for(FTC, "private", NS, lambda o: o["status"]["certificate"]["san"] == [
        "new.fleetwire.test"] and is_("CertificateReady", "True")(o))
    renewed = await kube.get(SECRETS, "private-tls", NS)
    assert certs(secret_bytes(renewed, "ca.crt")) == [ca_cert]
    assert certs(secret_bytes(renewed, "tls.crt"))[0].serial_number != leaf.serial_number
    assert moved["status"]["certificate"]["chainFingerprint"] == status["chainFingerprint"]
    assert "same chain" in (await wait_event(kube, "private", "CertificateRenewed"))[0]
    assert (await kube.get(DEPLOYMENTS, "private-server", NS))["spec"]["template"] == template
    moved_leaf = await serving(kubelet, "private", certs(secret_bytes(renewed, "tls.crt"))[0].serial_number)
    assert moved_leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == ["new.fleetwire.test"]
    assert kubelet.pods(NS, "private-server") == [pod] and pod.restarts == 0  # reloaded in place

    # A configuration change does roll the server: the checksum in the pod template moves.
    await kube.patch(FTC, "private", {"spec": {"server": {"records": {"V": ["logger"], "alerts": ["logger"]}}}}, NS)
    rolled = await kube.wait_for(DEPLOYMENTS, "private-server", NS, lambda d: d["spec"]["template"] != template)
    assert rolled["spec"]["template"]["metadata"]["annotations"][CONFIG_CHECKSUM_ANNOTATION] != template[
        "metadata"]["annotations"][CONFIG_CHECKSUM_ANNOTATION]

    # The stand-in rolls the pod: a new one gets ready, then the old one goes.
    generation = rolled["metadata"]["generation"]
    await kube.wait_for(DEPLOYMENTS, "private-server", NS, lambda d: (d.get("status") or {}).get(
        "observedGeneration") == generation and d["status"].get("updatedReplicas") == 1
        and d["status"].get("replicas") == 1 and d["status"].get("readyReplicas") == 1, timeout=20,
        what="rolled out")
    (new_pod,) = kubelet.pods(NS, "private-server")
    assert new_pod.name != pod.name
    await kube.wait_gone(PODS, pod.name, NS)
    await kube.wait_for(FTC, "private", NS, is_("ServerReady", "True", "Available"))

    # Deleting the resource deletes what it owns.
    await kube.delete(FTC, "private", NS)
    for resource, name in ((SECRETS, "private-ca"), (SECRETS, "private-tls"), (DEPLOYMENTS, "private-server"),
                           (SERVICES, "private-server"), (CONFIGMAPS, "private-server-config")):
        # kopf keeps its finalizer until the vehicles daemon has stopped (it may take its
        # 10 s cancellation timeout), so the owner may linger that long.
        await kube.wait_gone(resource, name, NS, timeout=30)


def _issuing_chain() -> tuple[pki.Bundle, pki.Bundle]:
    root = pki.make_ca("Managed Root")
    return root, pki.make_ca("Managed Intermediate", parent=root, path_length=0)


async def test_secret_ref_reads_a_secret_managed_elsewhere(kopf_runner: KopfRunnerFactory, kube: KubeClient,
                                                           operator_env: pytest.MonkeyPatch) -> None:
    root, inter = _issuing_chain()
    leaf = pki.make_server_cert(inter, [HOST])
    await kube.create(tls_secret("managed", tls_data(leaf, [inter.cert], [inter.cert, root.cert])))
    await kube.create(tls_secret("no-ca", tls_data(leaf, [inter.cert, root.cert], None)))
    kopf_runner(HANDLERS)
    await vehicle_ca(kube, "external")
    await kube.create(ftc("external", {"secretRef": {"name": "managed"}}))
    await kube.create(ftc("derived", {"secretRef": {"name": "no-ca"}}))
    obj = await kube.wait_for(FTC, "external", NS, ready())
    status = obj["status"]["certificate"]
    assert status["mode"] == "secretRef" and status["secretName"] == "managed" and "renewAt" not in status
    assert status["chainFingerprint"] == chain_fingerprint(inter.cert_pem + root.cert_pem)
    volumes = (await kube.get(DEPLOYMENTS, "external-server", NS))["spec"]["template"]["spec"]["volumes"]
    assert {"name": "tls", "secret": {"secretName": "managed", "defaultMode": 0o440}} in volumes
    assert "ownerReferences" not in (await kube.get(SECRETS, "managed", NS))["metadata"]  # never taken over
    # Without ca.crt, the chain after the leaf in tls.crt is what vehicles must trust.
    derived = await kube.wait_for(FTC, "derived", NS, is_("CertificateReady", "True"))
    assert derived["status"]["certificate"]["chainFingerprint"] == chain_fingerprint(inter.cert_pem + root.cert_pem)


# ======================================================================================
# Bad input: a condition with the reason, never a crash loop
# ======================================================================================


def no_crash(logs: list[str]) -> None:
    text = "\n".join(logs)
    assert "Traceback" not in text and "failed with an exception" not in text, text[-3000:]


async def test_bad_certificates_are_reported_not_retried(kopf_runner: KopfRunnerFactory, kube: KubeClient,
                                                         operator_env: pytest.MonkeyPatch) -> None:
    root, inter = _issuing_chain()
    _, other = _issuing_chain()
    cases = {
        "cn-only": (tls_data(pki.make_server_cert(inter, [HOST], cn_only=True), [inter.cert], [inter.cert, root.cert]),
                    "legacy Common Name"),
        "unverified": (tls_data(pki.make_server_cert(inter, [HOST]), [inter.cert], [other.cert]), "chain verifies"),
        "mismatch": (tls_data(pki.make_server_cert(inter, ["other.fleetwire.test"]), [inter.cert],
                              [inter.cert, root.cert]), f"hostname: {HOST} is not among DNS:other.fleetwire.test"),
    }
    for name, (data, _) in cases.items():
        await kube.create(tls_secret(name, data))
    operator = kopf_runner(HANDLERS)
    for name in [*cases, "absent"]:
        await kube.create(ftc(name, {"secretRef": {"name": name}}))
    for name, (_, expected) in cases.items():
        obj = await kube.wait_for(FTC, name, NS, is_("CertificateReady", "False", "CertificateInvalid"))
        message = condition(obj, "CertificateReady")["message"]  # type: ignore[index]
        assert message.startswith(f"Secret {NS}/{name}: vehicles would refuse it:") and expected in message, message
        await wait_event(kube, name, "CertificateInvalid")
    absent = await kube.wait_for(FTC, "absent", NS, is_("CertificateReady", "False", "SecretNotFound"))
    assert "create a kubernetes.io/tls Secret" in condition(absent, "CertificateReady")["message"]  # type: ignore[index]
    # The Secret appears later: the timer notices and the condition recovers.
    await kube.create(tls_secret("absent", tls_data(pki.make_server_cert(inter, [HOST]), [inter.cert],
                                                    [inter.cert, root.cert])))
    await kube.wait_for(FTC, "absent", NS, is_("CertificateReady", "True"))
    await asyncio.sleep(1.5)
    assert [e["reason"] for e in await events(kube, "cn-only")].count("CertificateInvalid") == 1  # no repeats
    no_crash(operator.logs)


async def test_unreachable_acme_directory_backs_off(kopf_runner: KopfRunnerFactory, kube: KubeClient,
                                                    operator_env: pytest.MonkeyPatch) -> None:
    url = f"https://127.0.0.1:{free_port()}/dir"
    operator = kopf_runner(HANDLERS)
    await kube.create(ftc("offline", {"acme": {"directoryUrl": url}}))
    obj = await kube.wait_for(FTC, "offline", NS, is_("CertificateReady", "False", "AcmeFailed"))
    retry = obj["status"]["certificate"]["retry"]
    assert retry["attempts"] == 1 and retry["generation"] == 1 and "cannot reach the ACME server" in retry["lastError"]
    first, next_at = (dt.datetime.strptime(retry[k], "%Y-%m-%dT%H:%M:%SZ") for k in ("lastAttemptAt", "nextAttemptAt"))
    assert next_at - first == dt.timedelta(minutes=5)
    assert url in condition(obj, "CertificateReady")["message"]  # type: ignore[index]
    await wait_event(kube, "offline", "CertificateFailed")
    await asyncio.sleep(2.5)  # timer passes inside the back-off ask the CA nothing
    later = await kube.get(FTC, "offline", NS)
    assert later["status"]["certificate"]["retry"]["attempts"] == 1
    assert is_("CertificateReady", "False", "AcmeFailed")(later)
    assert "1 failed attempt(s), next at" in condition(later, "CertificateReady")["message"]  # type: ignore[index]
    assert [e["reason"] for e in await events(kube, "offline")].count("CertificateFailed") == 1
    # A spec change may have fixed the cause: the operator tries again at once.
    await kube.patch(FTC, "offline", {"spec": {"certificate": {"acme": {"email": "ops@fleetwire.test"}}}}, NS)
    again = await kube.wait_for(FTC, "offline", NS, lambda o: o["status"]["certificate"].get("retry", {}).get(
        "generation") == 2)
    assert again["status"]["certificate"]["retry"]["attempts"] == 1
    no_crash(operator.logs)


async def test_invalid_specs_say_which_field(kopf_runner: KopfRunnerFactory, kube: KubeClient,
                                             kube_api: KubeApi, operator_env: pytest.MonkeyPatch) -> None:
    """The API refuses these (tests/test_operator_e2e.py); behind a CRD that accepts anything (an
    older release's: helm never upgrades CRDs) the operator's own parse_spec must, and nothing is
    built from such a spec."""
    accept_any_spec(kube_api)
    operator = kopf_runner(HANDLERS)
    await kube.create(ftc("typo", {"privateCA": {}}, fields={"VehicleSpede": {"interval_seconds": 10}}))
    await kube.create(ftc("string-port", {"privateCA": {}}, port="443"))
    typo = await kube.wait_for(FTC, "typo", NS, is_("SpecValid", "False", "InvalidSpec"))
    assert condition(typo, "SpecValid")["message"] == (  # type: ignore[index]
        "spec.fields.VehicleSpede: unknown field (did you mean 'VehicleSpeed'?)")
    port = await kube.wait_for(FTC, "string-port", NS, is_("SpecValid", "False", "InvalidSpec"))
    assert condition(port, "SpecValid")["message"].startswith(  # type: ignore[index]
        "spec.port: must be an integer, not the string '443'")
    await asyncio.sleep(1.5)
    for name in ("typo", "string-port"):
        obj = await kube.get(FTC, name, NS)
        assert condition(obj, "CertificateReady") is None and "certificate" not in obj.get("status", {})
        assert await kube.find(SECRETS, f"{name}-ca", NS) is None
        assert await kube.find(DEPLOYMENTS, f"{name}-server", NS) is None
    no_crash(operator.logs)


async def test_kubectl_apply_of_the_chart_example(kopf_runner: KopfRunnerFactory, kube: KubeClient,
                                                  kube_api: KubeApi, operator_env: pytest.MonkeyPatch) -> None:
    """The example resource the chart ships, applied with kubectl. It asks Let's Encrypt for a
    certificate; here the default directory points at a closed local port, so the test never
    leaves the machine and the failure shows as a back-off."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed")
    example = REPO_ROOT / "charts" / "fleetwire" / "examples" / "fleettelemetryconfig.yaml"
    operator_env.setattr(crd, "DEFAULT_ACME_DIRECTORY", f"https://127.0.0.1:{free_port()}/directory")
    kopf_runner(HANDLERS)
    done = await asyncio.to_thread(
        subprocess.run, [kubectl, "apply", "--validate=false", "-f", str(example)],
        env={**os.environ, "KUBECONFIG": str(kube_api.kubeconfig)}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "fleettelemetryconfig.fleetwire.io/fleetwire created" in done.stdout
    obj = await kube.wait_for(FTC, "fleetwire", "fleetwire", all_of(is_("SpecValid", "True"),
                                                                    is_("CertificateReady", "False", "AcmeFailed")))
    assert obj["status"]["certificate"]["retry"]["attempts"] == 1
    assert await kube.find(SERVICES, "fleetwire-http01-solver", "fleetwire") is not None
    assert await kube.find(DEPLOYMENTS, "fleetwire-server", "fleetwire") is not None
    # Another certificate mode needs no HTTP-01 solver: its Service goes.
    await kube.patch(FTC, "fleetwire", {"spec": {"certificate": {"acme": None, "privateCA": {}}}}, "fleetwire")
    await kube.wait_for(FTC, "fleetwire", "fleetwire", is_("CertificateReady", "True", "CertificateValid"))
    await kube.wait_gone(SERVICES, "fleetwire-http01-solver", "fleetwire")


# ======================================================================================
# Secrets stay secret
# ======================================================================================


@pytest.fixture
async def refusing_cloudflare() -> Any:
    """A stand-in for Cloudflare's API that refuses every token, and remembers what it was sent."""
    seen: list[str] = []

    async def refuse(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response({"success": False, "errors": [{"code": 10000, "message": "Authentication error"}]},
                                 status=403)

    app = web.Application()
    app.router.add_route("*", "/client/v4/{tail:.*}", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/client/v4", seen
    await runner.cleanup()


async def test_no_private_key_or_token_in_status_events_or_logs(
    kopf_runner: KopfRunnerFactory, kube: KubeClient, operator_env: pytest.MonkeyPatch, pebble: Pebble,
    refusing_cloudflare: Any,
) -> None:
    """ACME (account and certificate keys), the private CA's key and a DNS provider's token: none
    of them may appear in what `kubectl describe` and the operator's log (at debug level) show."""
    base_url, cloudflare_saw = refusing_cloudflare
    point_at(operator_env, pebble)
    operator_env.setenv("FLEETWIRE_CLOUDFLARE_API_URL", base_url)
    token = "cf-" + secrets.token_hex(20)
    operator = kopf_runner(HANDLERS, verbose=True)
    await kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cloudflare", "namespace": NS},
                       "data": {"api-token": base64.b64encode(token.encode()).decode()}})
    await kube.create(ftc("issued", {"acme": {"directoryUrl": pebble.directory}}))
    await kube.create(ftc("private", {"privateCA": {}}))
    await kube.create(ftc("dns", {"acme": {"directoryUrl": pebble.directory, "challenge": "dns01", "dns01": {
        "provider": "cloudflare", "zone": "fleetwire.test", "apiTokenSecretRef": {"name": "cloudflare"}}}}))
    await kube.wait_for(FTC, "issued", NS, is_("CertificateReady", "True"), timeout=30)
    await kube.wait_for(FTC, "private", NS, is_("CertificateReady", "True"))
    refused = await kube.wait_for(FTC, "dns", NS, is_("CertificateReady", "False", "AcmeFailed"))
    assert "Cloudflare refused to look up zone fleetwire.test" in condition(refused, "CertificateReady")["message"]  # type: ignore[index]
    assert cloudflare_saw == [f"Bearer {token}"]  # the token was really used
    await wait_event(kube, "dns", "CertificateFailed")

    hidden = [token]
    for name, key in (("issued-tls", "tls.key"), ("issued-acme-account", "account.key"), ("private-tls", "tls.key"),
                      ("private-ca", "tls.key"), ("dns-acme-account", "account.key")):
        secret = await kube.get(SECRETS, name, NS)
        hidden.append(secret["data"][key])
        hidden += secret_bytes(secret, key).decode().strip().splitlines()[1:-1]  # the PEM's base64 lines
    shown = [json.dumps(await kube.get(FTC, name, NS)) for name in ("issued", "private", "dns")]
    shown += [json.dumps(await events(kube, name)) for name in ("issued", "private", "dns")]
    shown += operator.logs
    text = "\n".join(shown)
    assert "DEBUG" in text and "PRIVATE KEY" not in text
    leaked = [value for value in hidden if value in text]
    assert not leaked
