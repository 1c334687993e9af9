"""The operator's pure parts: settings, builders, certificate policies, server conditions."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import api_request_rules
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fleetwire import pki
from fleetwire.operator.resource import builders
from fleetwire.operator.resource.builders import Names, Owner
from fleetwire.operator.policies.certificates import CertificateProblem, Material, check, failed_retry, material_from_secret, order_gate, reissue_reason, retry_wait
from fleetwire.operator.reconcilers.private_ca import ca_from_secret, new_private_ca, private_leaf
from fleetwire.pki import chain_fingerprint
from fleetwire.operator.environment import DEFAULT_OPERATOR_SELECTOR, OperatorEnvironment, SettingError, from_env
from fleetwire.operator.policies.conditions import Condition, server_condition, transition_events
from fleetwire.operator.resource.spec_parse import parse_spec
from fleetwire.server.config import parse_config

HOST = "telemetry.fleetwire.test"
OWNER = Owner("fleet", "telemetry", "0b7c0de0-0000-4000-8000-000000000001")
ENV = OperatorEnvironment(image="ghcr.io/fleetwire/fleetwire:1.2.3", namespace="telemetry")
NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def spec(**extra: Any) -> Any:
    body = {"hostname": HOST, "certificate": {"acme": {"challenge": "http01"}},
            "server": {"records": {"V": ["logger", "mqtt"], "alerts": ["logger"]},
                       "mqtt": {"broker": "mosquitto:1883", "topic_base": "telemetry"},
                       "reliableAckSources": {"V": "mqtt"}, "rateLimit": {"enabled": True, "messageLimit": 100},
                       "vins": {"deny": ["5YJ3E1EA7KF000009"]}, "namespace": "fleet",
                       "resources": {"limits": {"memory": "256Mi"}}}}
    body.update(extra)
    return parse_spec(body)


# ======================================================================================
# Settings from the environment
# ======================================================================================


def test_environment_defaults_and_errors() -> None:
    env = from_env({})
    assert env.http01_port == 8089 and env.http01_service and env.namespace is None
    assert env.operator_selector == DEFAULT_OPERATOR_SELECTOR and env.reconcile_seconds == 60
    assert env.image.startswith("ghcr.io/fleetwire/fleetwire:")
    custom = from_env({"POD_NAMESPACE": "ops", "FLEETWIRE_ACME_HTTP01_PORT": "8090", "FLEETWIRE_IMAGE": "img:1",
                       "FLEETWIRE_OPERATOR_SELECTOR": "app=op, tier = control", "FLEETWIRE_ACME_HTTP01_SERVICE": "no",
                       "FLEETWIRE_RECONCILE_SECONDS": "2.5"})
    assert (custom.namespace, custom.http01_port, custom.image, custom.http01_service, custom.reconcile_seconds) == (
        "ops", 8090, "img:1", False, 2.5)
    assert dict(custom.operator_selector) == {"app": "op", "tier": "control"}
    for name, value, message in (("FLEETWIRE_ACME_HTTP01_PORT", "80a", "expected a port number"),
                                 ("FLEETWIRE_ACME_HTTP01_SERVICE", "maybe", "expected true or false"),
                                 ("FLEETWIRE_OPERATOR_SELECTOR", "app", "expected key=value pairs"),
                                 ("FLEETWIRE_RECONCILE_SECONDS", "0", "expected a number of seconds greater than 0")):
        with pytest.raises(SettingError, match=f"{name}: {message}"):
            from_env({name: value})


# ======================================================================================
# Builders
# ======================================================================================


def test_server_config_is_what_the_server_reads(tmp_path: Path) -> None:
    config = builders.server_config(spec())
    assert config["host"] == "0.0.0.0" and config["port"] == builders.SERVER_PORT
    assert config["tls"]["reload_interval_seconds"] == builders.TLS_RELOAD_SECONDS
    assert config["monitoring"] == {"prometheus_metrics_port": builders.METRICS_PORT}
    assert config["mqtt"] == {"broker": "mosquitto:1883", "topic_base": "telemetry"}
    # The paths point into the pod's mounts; here they point at files that exist.
    for key in ("server_cert", "server_key", "ca_file"):
        assert config["tls"][key].startswith("/etc/fleetwire/")
        local = tmp_path / Path(config["tls"][key]).name
        local.write_text("")
        config["tls"][key] = str(local)
    parsed, warnings = parse_config(json.loads(json.dumps(config)), tmp_path)
    assert warnings == []
    assert parsed.records == {"V": ("logger", "mqtt"), "alerts": ("logger",)}
    assert parsed.reliable_ack_sources == {"V": "mqtt"} and parsed.namespace == "fleet"
    assert parsed.rate_limit.enabled and parsed.rate_limit.message_limit == 100
    assert parsed.vins.deny == frozenset({"5YJ3E1EA7KF000009"}) and parsed.status_port == builders.STATUS_PORT


def test_deployment_is_hardened_and_rolls_only_on_config_changes() -> None:
    parsed = spec()
    objects = builders.server_objects(OWNER, parsed, ENV)
    assert [o["kind"] for o in objects] == ["ConfigMap", "Deployment", "Service", "Service"]
    for obj in objects:
        assert obj["metadata"]["ownerReferences"] == [builders.owner_reference(OWNER)]
        assert obj["metadata"]["namespace"] == OWNER.namespace
    config_map, deployment, vehicles, metrics = objects
    config = json.loads(config_map["data"]["config.json"])
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["annotations"] == {builders.CONFIG_CHECKSUM_ANNOTATION: builders.config_checksum(config)}
    assert pod["spec"]["securityContext"]["runAsNonRoot"] and not pod["spec"]["automountServiceAccountToken"]
    container = pod["spec"]["containers"][0]
    assert container["image"] == ENV.image and container["args"] == [
        "serve", "--config", "/etc/fleetwire/config/config.json", "--workers", "auto"]  # no CPU limit
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and security["capabilities"] == {"drop": ["ALL"]}
    assert not security["allowPrivilegeEscalation"] and container["resources"] == {"limits": {"memory": "256Mi"}}
    assert {"name": "tls", "secret": {"secretName": "fleet-tls", "defaultMode": 0o440}} in pod["spec"]["volumes"]
    assert {"name": "vehicle-ca", "configMap": {"name": "fleet-vehicle-ca"}} in pod["spec"]["volumes"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert all(pod["metadata"]["labels"][k] == v for k, v in selector.items())
    assert vehicles["spec"]["ports"] == [{"name": "vehicles", "port": 443, "targetPort": "vehicles", "protocol": "TCP"}]
    assert vehicles["spec"]["type"] == "LoadBalancer" and metrics["spec"]["type"] == "ClusterIP"
    assert not set(DEFAULT_OPERATOR_SELECTOR.items()) <= set(pod["metadata"]["labels"].items())

    # Only config.json moves the pod template: hostname or certificate mode do not.
    same = builders.server_objects(OWNER, spec(hostname="other.fleetwire.test",
                                               certificate={"privateCA": {}}), ENV)[1]
    assert same["spec"]["template"] == pod
    changed = builders.server_objects(OWNER, spec(server={"records": {"V": ["logger"]}}), ENV)[1]
    assert changed["spec"]["template"]["metadata"]["annotations"] != pod["metadata"]["annotations"]
    external = builders.server_objects(OWNER, spec(certificate={"secretRef": {"name": "cert-manager-tls"}}), ENV)[1]
    assert {"name": "tls", "secret": {"secretName": "cert-manager-tls", "defaultMode": 0o440}} in external["spec"][
        "template"]["spec"]["volumes"]
    assert builders.server_objects(OWNER, spec(port=8443), ENV)[2]["spec"]["ports"][0]["port"] == 8443



@pytest.mark.parametrize(("cpu", "workers"), [("2", "2"), ("1500m", "2"), ("0.5", "1"), ("100m", "1"), (3, "3"),
                                              (None, "auto")])
def test_server_workers_follow_the_cpu_limit(cpu: Any, workers: str) -> None:
    limits = {"memory": "1Gi"} if cpu is None else {"memory": "1Gi", "cpu": cpu}
    objects = builders.server_objects(OWNER, spec(server={"records": {"V": ["logger"]},
                                                          "resources": {"limits": limits}}), ENV)
    container = objects[1]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][-2:] == ["--workers", workers]
    assert container["resources"]["limits"] == limits
    assert builders.server_workers({"requests": {"cpu": "4"}}) == "auto"  # a request is no limit


@pytest.mark.parametrize(("limits", "workers"), [({"cpu": "4", "memory": "256Mi"}, "1"),
                                                 ({"cpu": "4", "memory": "512Mi"}, "3"),
                                                 ({"cpu": "2", "memory": "1Gi"}, "2"),
                                                 ({"memory": "256Mi"}, "auto")])
def test_server_workers_fit_the_memory_limit(limits: dict[str, str], workers: str) -> None:
    """Each worker is a whole interpreter: four in 256Mi would be killed for their memory."""
    assert builders.server_workers({"limits": limits}) == workers


def test_a_zmq_server_runs_one_worker_whatever_its_cpu_limit() -> None:
    """The server refuses ZMQ in more than one process: the Deployment must not ask for it."""
    objects = builders.server_objects(OWNER, spec(server={
        "records": {"V": ["zmq"]}, "zmq": {"addr": "tcp://0.0.0.0:5284"},
        "resources": {"limits": {"cpu": "2"}}}), ENV)
    assert objects[1]["spec"]["template"]["spec"]["containers"][0]["args"][-2:] == ["--workers", "1"]


def test_http01_solver_service_only_where_it_can_reach_the_operator() -> None:
    acme = spec()
    assert builders.http01_service_reason(acme, "telemetry", ENV)[0]
    solver = builders.http01_service(OWNER, ENV)
    assert solver["spec"]["selector"] == dict(DEFAULT_OPERATOR_SELECTOR)
    assert solver["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": 8089, "protocol": "TCP"}]
    needed, why = builders.http01_service_reason(acme, "elsewhere", ENV)
    assert not needed and "cannot reach it" in why
    assert not builders.http01_service_reason(acme, "telemetry", dataclasses.replace(ENV, http01_service=False))[0]
    assert not builders.http01_service_reason(spec(certificate={"privateCA": {}}), "telemetry", ENV)[0]
    dns = spec(certificate={"acme": {"challenge": "dns01", "dns01": {"provider": "cloudflare", "zone": "example.com",
                                                                     "apiTokenSecretRef": {"name": "cf"}}}})
    assert builders.http01_service_reason(dns, "telemetry", ENV) == (False, "no HTTP-01 challenge in use")


def test_names_and_unowned_secrets() -> None:
    names = Names("fleet")
    assert (names.tls_secret, names.ca_secret, names.account_secret, names.http01_service) == (
        "fleet-tls", "fleet-ca", "fleet-acme-account", "fleet-http01-solver")
    shared = builders.secret(OWNER, "shared-account", {"account.key": b"k"}, owned=False)
    assert "ownerReferences" not in shared["metadata"] and shared["data"] == {"account.key": "aw=="}


# ======================================================================================
# Certificate policies
# ======================================================================================


def _chain(host: str = HOST, **kwargs: Any) -> tuple[pki.Bundle, pki.Bundle, pki.Bundle]:
    root = pki.make_ca("Policy Root")
    inter = pki.make_ca("Policy Intermediate", parent=root, path_length=0)
    return root, inter, pki.make_server_cert(inter, [host], **kwargs)


def _material(leaf: pki.Bundle, *above: pki.Bundle) -> Material:
    return Material(leaf.cert_pem + above[0].cert_pem, leaf.key_pem, b"".join(b.cert_pem for b in above))


def _secret(**data: bytes) -> dict[str, Any]:
    return {"data": {key.replace("_", "."): base64.b64encode(value).decode() for key, value in data.items()}}


def test_chain_fingerprint_follows_certificates_not_formatting() -> None:
    root, inter, _ = _chain()
    pem = inter.cert_pem + root.cert_pem
    reformatted = pem.replace(b"-----\n", b"-----\r\n") + b"\n"
    assert chain_fingerprint(pem) == chain_fingerprint(reformatted)
    assert chain_fingerprint(pem) != chain_fingerprint(inter.cert_pem) != chain_fingerprint(root.cert_pem + inter.cert_pem)
    assert len(chain_fingerprint(pem)) == 64


def test_material_from_secret_names_what_is_wrong() -> None:
    root, inter, leaf = _chain()
    derived = material_from_secret(_secret(tls_crt=leaf.cert_pem + inter.cert_pem + root.cert_pem,
                                           tls_key=leaf.key_pem), "ns/s")
    assert x509.load_pem_x509_certificates(derived.ca_pem) == [inter.cert, root.cert]
    assert "key_pem" not in repr(derived) and "PRIVATE" not in repr(derived)
    cases = [
        (_secret(tls_crt=leaf.cert_pem), "has no tls.key"),
        (_secret(), "has no tls.crt and tls.key"),
        (_secret(tls_crt=b"garbage", tls_key=leaf.key_pem), "tls.crt holds no readable PEM"),
        (_secret(tls_crt=leaf.cert_pem, tls_key=leaf.key_pem), "tls.crt holds only the leaf"),
        (_secret(tls_crt=leaf.cert_pem, tls_key=leaf.key_pem, ca_crt=b"nope"), "ca.crt holds no readable PEM"),
    ]
    for secret, message in cases:
        with pytest.raises(CertificateProblem, match=message) as caught:
            material_from_secret(secret, "ns/s")
        assert caught.value.reason == "SecretInvalid" and "ns/s" in caught.value.message


def test_reissue_reasons() -> None:
    root, inter, leaf = _chain()
    material = _material(leaf, inter, root)
    now = leaf.cert.not_valid_before_utc + dt.timedelta(days=1)
    report = check(material, HOST, now)
    assert report.ok and reissue_reason(material, report, HOST, now) is None
    assert reissue_reason(None, None, HOST, now) == "no certificate"
    assert reissue_reason(material, report, "new.fleetwire.test", now).startswith("hostname changed")  # type: ignore[union-attr]
    assert reissue_reason(material, report, HOST, now, dt.timedelta(days=100)).startswith("expires in")  # type: ignore[union-attr]
    wrong_key = dataclasses.replace(material, key_pem=pki.generate_key().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    failing = check(wrong_key, HOST, now)
    assert reissue_reason(wrong_key, failing, HOST, now).startswith(  # type: ignore[union-attr]
        "the stored certificate fails checks (key matches: the private key does not belong to the leaf")


def test_back_off_per_spec_generation() -> None:
    first = failed_retry(None, 3, "refused", NOW)
    assert first == {"attempts": 1, "generation": 3, "lastError": "refused", "lastAttemptAt": "2026-03-01T12:00:00Z",
                     "nextAttemptAt": "2026-03-01T12:05:00Z"}
    assert "1 failed attempt(s), next at 2026-03-01T12:05:00Z; last error: refused" == retry_wait(first, 3, NOW)
    assert retry_wait(first, 3, NOW + dt.timedelta(minutes=5)) is None  # due
    assert retry_wait(first, 4, NOW) is None  # the spec changed: try at once
    second = failed_retry(first, 3, "refused", NOW + dt.timedelta(minutes=5))
    assert second["attempts"] == 2 and second["nextAttemptAt"] == "2026-03-01T12:15:00Z"
    assert failed_retry(second, 4, "other", NOW)["attempts"] == 1


def test_order_gate_waits_only_for_a_recent_order_of_the_same_name() -> None:
    order = {"hostname": HOST, "reason": "no certificate", "startedAt": "2026-03-01T11:59:00Z"}
    waiting = order_gate(order, HOST, NOW)
    assert waiting is not None and "waiting until 2026-03-01T12:02:00Z" in waiting
    assert order_gate(order, HOST, NOW + dt.timedelta(minutes=2)) is None  # abandoned: order again
    assert order_gate(order, "other.fleetwire.test", NOW) is None
    assert order_gate(None, HOST, NOW) is None and order_gate({"hostname": HOST}, HOST, NOW) is None


def test_private_ca_leaves_name_the_host_in_san_only() -> None:
    ca = new_private_ca(OWNER, days=60)
    material = private_leaf(ca, HOST, days=20, now=dt.datetime.now(dt.UTC))
    leaf = material.leaf
    assert list(leaf.subject) == [] and material.ca_pem == ca.cert_pem
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical
    report = check(material, HOST, dt.datetime.now(dt.UTC))
    assert report.ok and not report.warnings, report.render()
    capped = private_leaf(ca, HOST, days=365, now=dt.datetime.now(dt.UTC))
    assert capped.leaf.not_valid_after_utc == ca.cert.not_valid_after_utc  # never outlives its CA


def test_a_private_ca_secret_that_cannot_sign_says_how_to_recover() -> None:
    ca = new_private_ca(OWNER, days=1)
    assert ca_from_secret(_secret(tls_crt=ca.cert_pem, tls_key=ca.key_pem), "ns/ca", dt.datetime.now(dt.UTC)).cert == ca.cert
    with pytest.raises(CertificateProblem, match="expired at") as expired:
        ca_from_secret(_secret(tls_crt=ca.cert_pem, tls_key=ca.key_pem), "ns/ca",
                       ca.cert.not_valid_after_utc + dt.timedelta(seconds=1))
    assert expired.value.reason == "CaExpired" and "delete Secret ns/ca to create a new CA" in expired.value.message
    other = pki.generate_key().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption())
    with pytest.raises(CertificateProblem, match="not the CA certificate's P-256 key"):
        ca_from_secret(_secret(tls_crt=ca.cert_pem, tls_key=other), "ns/ca", dt.datetime.now(dt.UTC))
    with pytest.raises(CertificateProblem, match="holds no usable CA"):
        ca_from_secret(_secret(tls_crt=ca.cert_pem), "ns/ca", dt.datetime.now(dt.UTC))


# ======================================================================================
# Server condition, events, API request rules
# ======================================================================================


def _deployment(status: dict[str, Any] | None, generation: int = 2) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"name": "fleet-server", "generation": generation}, "spec": {"replicas": 2}}
    if status is not None:
        body["status"] = status
    return body


def test_server_condition() -> None:
    def of(deployment: dict[str, Any] | None, vehicle_ca: str | None = None) -> tuple[str, str]:
        found = server_condition(deployment, vehicle_ca=vehicle_ca)
        return found.status, found.reason

    assert of(None) == ("False", "DeploymentMissing")
    assert of(_deployment(None), "ConfigMap missing") == ("False", "VehicleCaMissing")
    assert of(_deployment(None)) == ("True", "DeploymentApplied")
    assert of(_deployment({"observedGeneration": 2, "replicas": 2})) == ("False", "NotReady")
    assert of(_deployment({"observedGeneration": 2, "readyReplicas": 1})) == ("True", "Available")
    rolling = server_condition(_deployment({"observedGeneration": 1, "readyReplicas": 2}), vehicle_ca=None)
    assert rolling.message == "2/2 server replicas ready (rolling out a change)"


def test_transition_events_only_for_new_status_or_reason() -> None:
    valid = Condition("CertificateReady", "True", "CertificateValid", "until May")
    assert [(e.type, e.reason) for e in transition_events({}, [valid])] == [("Normal", "CertificateValid")]
    assert transition_events({"CertificateReady": ("True", "CertificateValid")},
                             [Condition("CertificateReady", "True", "CertificateValid", "until June")]) == ()
    failing = Condition("CertificateReady", "False", "AcmeFailed", "refused")
    assert [(e.type, e.reason) for e in transition_events({"CertificateReady": ("True", "CertificateValid")},
                                                          [failing])] == [("Warning", "AcmeFailed")]


def test_api_request_rules() -> None:
    assert api_request_rules("GET", "", "secrets", None, "tls", {}) == {("get", "", "secrets")}
    assert api_request_rules("GET", "apps", "deployments", None, None, {}) == {("list", "apps", "deployments")}
    assert api_request_rules("GET", "fleetwire.io", "fleettelemetryconfigs", None, None, {"watch": "true"}) == {
        ("watch", "fleetwire.io", "fleettelemetryconfigs")}
    assert api_request_rules("PATCH", "fleetwire.io", "fleettelemetryconfigs", "status", "f", {}) == {
        ("patch", "fleetwire.io", "fleettelemetryconfigs/status")}
    assert api_request_rules("PATCH", "", "services", None, "s", {}, created=True) == {
        ("patch", "", "services"), ("create", "", "services")}
    assert api_request_rules("DELETE", "", "services", None, "s", {}) == {("delete", "", "services")}
