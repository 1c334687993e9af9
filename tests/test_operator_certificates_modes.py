"""The operator's certificate story beyond ACME, against the Kubernetes API emulator: a private
CA, a Secret managed elsewhere, bad input (a condition with the reason, never a crash loop),
and secrets that stay secret (split from test_operator_certificates.py, whose helpers these
tests share; the chart's RBAC applies here too)."""

from __future__ import annotations

import asyncio
import base64
import json
import datetime as dt
import os
import secrets
import shutil
import subprocess
from typing import Any

import pytest
from fixtures.tools import require
from aiohttp import web
from conftest import KopfRunnerFactory, Pebble, free_port
from cryptography import x509
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
from fleetwire.pki import chain_fingerprint
from test_operator_certificates import (  # noqa: F401 - as_the_charts_service_account, operator_env: fixtures
    HANDLERS,
    HOST,
    NS,
    REPO_ROOT,
    all_of,
    as_the_charts_service_account,
    certs,
    events,
    ftc,
    is_,
    operator_env,
    owned_by,
    point_at,
    ready,
    secret_bytes,
    serving,
    tls_data,
    tls_secret,
    vehicle_ca,
    wait_event,
)

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
    for reason in ("PrivateCaCreated", "CertificateIssued"):  # kopf posts events from a queue
        await wait_event(kube, "private", reason)
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
    require(kubectl, "kubectl")
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
