"""Admission as the API server does it (fleetwire.sim.admission): the CRD's schema, defaults and
CEL rules; the official schemas of built-in objects; the 422 body. Pure: no emulator."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fleetwire.operator.resource import builders, crd
from fleetwire.operator.environment import OperatorEnvironment
from fleetwire.operator.resource.spec_parse import parse_spec
from fleetwire.sim import admission
from fleetwire.sim.admission import Cause

CRD = crd.build_crd()


def ftc(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{crd.GROUP}/{crd.VERSION}", "kind": crd.KIND,
            "metadata": {"name": "fleet", "namespace": "default"},
            "spec": {"hostname": "telemetry.example.com", "certificate": {"privateCA": {}}, **spec}}


def causes(obj: dict[str, Any], old: dict[str, Any] | None = None, **options: Any) -> list[str]:
    return [str(cause) for cause in admission.admit(obj, CRD, old, **options)[1]]


def test_a_valid_resource_is_stored_with_the_schemas_defaults() -> None:
    stored, found = admission.admit(ftc(), CRD)
    assert found == []
    assert stored["spec"]["port"] == 443
    assert stored["spec"]["certificate"]["privateCA"] == {"validityDays": 3650, "leafValidityDays": 365}
    assert stored["metadata"] == ftc()["metadata"]
    assert parse_spec(stored["spec"]).port == 443  # the operator reads what the API stored


def test_structural_rules_name_the_field() -> None:
    assert causes(ftc(port="443")) == [
        'spec.port: Invalid value: "443": spec.port in body must be of type integer: "string"']
    assert causes(ftc(port=70000)) == [
        "spec.port: Invalid value: 70000: spec.port in body should be less than or equal to 65535"]
    no_host = ftc()
    del no_host["spec"]["hostname"]
    assert causes(no_host) == ["spec.hostname: Required value"]
    assert causes(ftc(fields={"Soc": {"interval_seconds": 0}})) == [
        "spec.fields[Soc].interval_seconds: Invalid value: 0: spec.fields[Soc].interval_seconds in body should be "
        "greater than or equal to 1"]
    assert causes(ftc(server={"serviceType": "Ingress"}))[0].startswith(
        'spec.server.serviceType: Unsupported value: "Ingress": supported values: "LoadBalancer"')
    assert causes(ftc(certificate={"privateCA": {}, "acme": {}})) == [
        'spec.certificate: Invalid value: "object": spec.certificate in body must validate exactly one schema (oneOf)']


def test_cel_rules_run_on_schema_typed_values() -> None:
    assert causes(ftc(certificate={"privateCA": {"validityDays": 30, "leafValidityDays": 60}})) == [
        'spec.certificate.privateCA: Invalid value: "object": leafValidityDays must not exceed validityDays']
    assert causes(ftc(vehicles=["5YJ3SIM0000000001"])) == [
        'spec: Invalid value: "object": vehicles are configured through the Fleet API: give fleetApi']
    # minimum_delta is a `number`: written as 1, it is the double 1.0 to CEL, as on a cluster.
    assert causes(ftc(fields={"SelfDrivingMilesSinceReset": {"interval_seconds": 60, "minimum_delta": 1}})) == []
    assert causes(ftc(fields={"VehicleSpede": {"interval_seconds": 1}}))[0].startswith(
        'spec.fields: Invalid value: "object": unknown field name')
    assert causes(ftc(server={"records": {"V": ["logger"]}, "mqtt": {"password": "hunter2"}}))[0].startswith(
        'spec.server.mqtt: Invalid value: "object": password is a credential')


def test_transition_rules_see_old_self() -> None:
    definition = copy.deepcopy(CRD)
    schema = definition["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    schema["properties"]["hostname"]["x-kubernetes-validations"] = [
        {"rule": "self == oldSelf", "message": "hostname is immutable"}]
    assert admission.admit(ftc(), definition)[1] == []  # a create has no oldSelf
    old = admission.admit(ftc(), definition)[0]
    moved = ftc(hostname="other.example.com")
    assert [str(c) for c in admission.admit(moved, definition, old)[1]] == [
        'spec.hostname: Invalid value: "other.example.com": hostname is immutable']


def test_unknown_fields_are_pruned_or_refused_when_strict() -> None:
    obj = ftc(server={"records": {"V": ["logger"]}, "replica": 2})
    stored, found = admission.admit(obj, CRD)
    assert found == [] and "replica" not in stored["spec"]["server"]
    assert causes(obj, strict=True) == ['spec.server.replica: Invalid value: "replica": unknown field']


def test_metadata_name_must_be_a_dns_subdomain() -> None:
    bad = ftc()
    bad["metadata"]["name"] = "Fleet_1"
    assert causes(bad)[0].startswith('metadata.name: Invalid value: "Fleet_1": a lowercase RFC 1123 subdomain')


def test_the_422_body_is_the_api_servers() -> None:
    found = [Cause("spec.port", "FieldValueTypeInvalid", 'Invalid value: "443": must be integer'),
             Cause("spec.hostname", "FieldValueRequired", "Required value")]
    body = admission.invalid_status(crd.KIND, crd.GROUP, "fleet", found)
    assert body == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Invalid", "code": 422,
        "message": 'FleetTelemetryConfig.fleetwire.io "fleet" is invalid: [spec.port: Invalid value: "443": must be '
                   'integer, spec.hostname: Required value]',
        "details": {"name": "fleet", "group": crd.GROUP, "kind": crd.KIND, "causes": [
            {"reason": "FieldValueTypeInvalid", "message": 'Invalid value: "443": must be integer', "field": "spec.port"},
            {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.hostname"}]}}


@pytest.mark.parametrize("version", [admission.OLDEST_KUBERNETES, admission.NEWEST_KUBERNETES])
def test_every_object_the_operator_builds_passes_the_official_schemas(version: str) -> None:
    spec = parse_spec({"hostname": "telemetry.example.com",
                       "certificate": {"acme": {"directoryUrl": "https://acme.example/dir", "challenge": "http01"}},
                       "server": {"records": {"V": ["logger"]}, "resources": {"limits": {"memory": "256Mi"}}}})
    owner = builders.Owner("fleet", "default", "uid-1")
    env = OperatorEnvironment(image="ghcr.io/fleetwire/fleetwire:test")
    objects = [*builders.server_objects(owner, spec, env), builders.http01_service(owner, env),
               builders.secret(owner, "fleet-tls", {"tls.crt": b"C", "tls.key": b"K"}, type_="kubernetes.io/tls")]
    for obj in objects:
        assert admission.builtin_causes(obj, (version,)) == [], obj["kind"]


def test_an_invalid_builtin_object_is_named_with_the_release() -> None:
    service = builders.metrics_service(builders.Owner("fleet", "default", "uid-1"))
    service["spec"]["ports"][0]["port"] = "9090"
    found = admission.builtin_causes(service, ("1.25.0",))
    assert [(c.field, c.message) for c in found] == [
        ("spec.ports[0].port", "Invalid value: '9090' is not of type 'integer' (Kubernetes 1.25.0)")]
    service["spec"]["ports"][0]["port"] = 9090
    service["spec"]["bogus"] = True
    assert admission.builtin_causes(service, ("1.25.0",))[0].field == "spec"  # strict: unknown fields refused
