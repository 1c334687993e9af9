"""The FleetTelemetryConfig CRD and the spec parser: one contract, checked twice.

The same examples go through the CRD's OpenAPI schema (what the API server enforces)
and `parse_spec` (what the operator enforces); where the schema cannot decide (field
names, CEL rules), the parser must still refuse and the CRD must carry the CEL rule.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from fleetwire.operator.resource import crd
from fleetwire.operator.resource.spec import (
    AcmeCertificate,
    PrivateCaCertificate,
    SecretCertificate,
    SpecError,
    desired_vehicle_config,
)
from fleetwire.operator.resource.spec_parse import parse_duration, parse_spec
from fleetwire.proto import catalog
from fleetwire.server import config as server_config

ROOT = Path(__file__).resolve().parent.parent
CA = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUY2E=\n-----END CERTIFICATE-----\n"
VIN = "5YJ3E1EA7KF000001"

SPEC_SCHEMA = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def minimal(**extra: Any) -> dict[str, Any]:
    return {"hostname": "telemetry.example.com", "certificate": {"privateCA": {}}, **extra}


def full() -> dict[str, Any]:
    return {
        "hostname": "telemetry.example.com",
        "port": 8443,
        "certificate": {"acme": {
            "email": "ops@example.com", "challenge": "dns01", "renewBefore": "720h",
            "dns01": {"provider": "cloudflare", "zone": "example.com",
                      "apiTokenSecretRef": {"name": "cloudflare", "key": "token"}},
            "rootCertificates": CA, "accountSecretName": "acme-account",
        }},
        "server": {
            "replicas": 2, "image": "ghcr.io/example/fleetwire:1", "serviceType": "NodePort",
            "resources": {"requests": {"cpu": "100m"}},
            "records": {"V": ["mqtt", "logger"], "alerts": ["logger"]},
            "reliableAckSources": {"V": "mqtt"},
            "mqtt": {"broker": "mqtt:1883", "topic_base": "telemetry"},
            "namespace": "fleet",
            "rateLimit": {"enabled": True, "messageLimit": 100, "messageIntervalTime": 30},
            "vins": {"allow": [VIN], "deny": []},
        },
        "vehicles": [VIN],
        "fields": {"VehicleSpeed": {"interval_seconds": 10},
                   "Location": {"interval_seconds": 5, "minimum_delta": 50, "resend_interval_seconds": 300}},
        "alertTypes": ["service"],
        "exp": 30,
        "deliveryPolicy": "latest",
        "fleetApi": {"region": "eu", "partnerCredentialsSecretRef": {"name": "partner"},
                     "userTokenSecretRef": {"name": "user-token"},
                     "signingKeySecretRef": {"name": "app-key", "key": "private-key.pem"}},
    }


def with_change(path: str, value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """`base` (default: full()) with the dotted `path` set to `value`."""
    spec = copy.deepcopy(base if base is not None else full())
    *parents, last = path.split(".")
    node = spec
    for part in parents:
        node = node[part]
    node[last] = value
    return spec


# (id, spec, parser accepts?, schema accepts?, what the parser's message names)
EXAMPLES: list[tuple[str, dict[str, Any], bool, bool, str]] = [
    ("minimal", minimal(), True, True, ""),
    ("full", full(), True, True, ""),
    ("secret-ref", minimal(certificate={"secretRef": {"name": "tls"}}), True, True, ""),
    ("base-url-and-proxy", with_change("fleetApi", {"baseUrl": "https://127.0.0.1:4443/",
                                                    "partnerCredentialsSecretRef": {"name": "p"},
                                                    "userTokenSecretRef": {"name": "u"},
                                                    "proxyUrl": "https://proxy:4443"}), True, True, ""),
    ("string-port", with_change("port", "443"), False, False, "spec.port"),
    ("port-out-of-range", with_change("port", 70000), False, False, "spec.port"),
    ("two-certificate-modes", minimal(certificate={"privateCA": {}, "secretRef": {"name": "tls"}}),
     False, False, "spec.certificate"),
    ("no-certificate-mode", minimal(certificate={}), False, False, "spec.certificate"),
    ("no-hostname", {"certificate": {"privateCA": {}}}, False, False, "spec.hostname"),
    ("upper-case-hostname", with_change("hostname", "Telemetry.Example.com"), False, False, "spec.hostname"),
    ("interval-zero", with_change("fields.VehicleSpeed", {"interval_seconds": 0}), False, False,
     "spec.fields.VehicleSpeed.interval_seconds"),
    ("interval-fraction", with_change("fields.VehicleSpeed", {"interval_seconds": 1.5}), False, False,
     "spec.fields.VehicleSpeed.interval_seconds"),
    ("interval-missing", with_change("fields.VehicleSpeed", {"minimum_delta": 1}), False, False,
     "spec.fields.VehicleSpeed.interval_seconds"),
    ("negative-delta", with_change("fields.Location", {"interval_seconds": 5, "minimum_delta": -1}), False, False,
     "spec.fields.Location.minimum_delta"),
    ("short-vin", with_change("vehicles", ["5YJ3E1EA7KF00000"]), False, False, "spec.vehicles[0]"),
    ("service-type", with_change("server.serviceType", "Ingress"), False, False, "spec.server.serviceType"),
    ("unknown-dispatcher", with_change("server.records", {"V": ["kafkaa"]}), False, False, "spec.server.records.V[0]"),
    ("delivery-policy", with_change("deliveryPolicy", "earliest"), False, False, "spec.deliveryPolicy"),
    ("renew-before-days", with_change("certificate.acme.renewBefore", "30d"), False, False,
     "spec.certificate.acme.renewBefore"),
    ("region-and-base-url", with_change("fleetApi.baseUrl", "https://fleet.example.com"), False, False,
     "spec.fleetApi"),
    ("unknown-region", with_change("fleetApi.region", "us"), False, False, "spec.fleetApi.region"),
    ("no-user-token", with_change("fleetApi", {"region": "na", "partnerCredentialsSecretRef": {"name": "p"},
                                               "signingKeySecretRef": {"name": "k"}}), False, False,
     "spec.fleetApi.userTokenSecretRef"),
    # The schema cannot know the field catalog: only the parser refuses.
    ("misspelt-field", with_change("fields.VehicleSpede", {"interval_seconds": 1}), False, True,
     "spec.fields.VehicleSpede"),
    ("self-driving-miles-delta-one", with_change("fields.SelfDrivingMilesSinceReset",
                                                 {"interval_seconds": 60, "minimum_delta": 1}), True, True, ""),
    ("provisional-field", with_change("fields.AccessoryRail", {"interval_seconds": 60}), True, True, ""),
    # CEL rules (x-kubernetes-validations) the API server evaluates; JSON Schema skips them.
    ("self-driving-miles-without-delta", with_change("fields.SelfDrivingMilesSinceReset", {"interval_seconds": 60}),
     False, True, "spec.fields.SelfDrivingMilesSinceReset.minimum_delta"),
    ("self-driving-miles-small-delta", with_change("fields.SelfDrivingMilesSinceReset",
                                                   {"interval_seconds": 60, "minimum_delta": 0.5}),
     False, True, "spec.fields.SelfDrivingMilesSinceReset.minimum_delta"),
    ("dns01-without-settings", with_change("certificate.acme", {"challenge": "dns01"}), False, True,
     "spec.certificate.acme.dns01"),
    ("leaf-outlives-ca", minimal(certificate={"privateCA": {"validityDays": 30, "leafValidityDays": 60}}),
     False, True, "spec.certificate.privateCA.leafValidityDays"),
    ("unsigned", with_change("fleetApi", {"region": "na", "partnerCredentialsSecretRef": {"name": "p"},
                                          "userTokenSecretRef": {"name": "u"}}), False, True,
     "spec.fleetApi.signingKeySecretRef"),
    ("vehicles-without-fleet-api", minimal(vehicles=[VIN], fields={"Soc": {"interval_seconds": 60}}), False, True,
     "spec.fleetApi"),
]


@pytest.mark.parametrize(("spec", "parser_ok", "schema_ok", "where"),
                         [pytest.param(s, p, c, w, id=i) for i, s, p, c, w in EXAMPLES])
def test_parser_and_schema_agree(spec: dict[str, Any], parser_ok: bool, schema_ok: bool, where: str) -> None:
    schema_errors = list(jsonschema.Draft4Validator(SPEC_SCHEMA).iter_errors(spec))
    assert (not schema_errors) == schema_ok, [e.message for e in schema_errors]
    if parser_ok:
        parse_spec(spec)
        return
    with pytest.raises(SpecError) as caught:
        parse_spec(spec)
    assert where in [path for path, _message in caught.value.problems], str(caught.value)


def _cel_rules(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        yield from (rule["rule"] for rule in node.get("x-kubernetes-validations", []))
        for value in node.values():
            yield from _cel_rules(value)
    elif isinstance(node, list):
        for value in node:
            yield from _cel_rules(value)


def test_rules_json_schema_cannot_check_are_cel_rules() -> None:
    rules = set(_cel_rules(SPEC_SCHEMA))
    assert "self.challenge != 'dns01' || has(self.dns01)" in rules
    assert "self.leafValidityDays <= self.validityDays" in rules
    assert "has(self.signingKeySecretRef) || has(self.proxyUrl)" in rules
    assert "!has(self.vehicles) || size(self.vehicles) == 0 || has(self.fleetApi)" in rules
    assert ("!('SelfDrivingMilesSinceReset' in self) || (has(self.SelfDrivingMilesSinceReset.minimum_delta) "
            "&& self.SelfDrivingMilesSinceReset.minimum_delta >= 1.0)") in rules


def test_crd_field_names_follow_the_catalog() -> None:
    """The API server refuses a name the catalog lacks; the map is bounded so the rule's cost is."""
    fields = SPEC_SCHEMA["properties"]["fields"]
    configurable = [info.name for info in catalog.FIELDS if info.number != 0]
    assert fields["maxProperties"] == len(configurable) == 277
    (rule,) = [r for r in fields["x-kubernetes-validations"] if r["rule"].startswith("self.all(")]
    listed = rule["rule"].removeprefix("self.all(name, name in [").removesuffix("])")
    assert [name.strip("'") for name in listed.split(", ")] == configurable
    assert "Unknown" not in listed.split(", ") and "SpecValid" in rule["message"]
    assert "provisional" in fields["description"] and "2026.32" in fields["description"]


def test_crd_cel_rules_decide_as_the_parser_does() -> None:
    """Evaluated with cel-python where it is installed (the API server runs the same rules)."""
    celpy = pytest.importorskip("celpy")
    fields = SPEC_SCHEMA["properties"]["fields"]
    environment = celpy.Environment()
    programs = [environment.program(environment.compile(r["rule"])) for r in fields["x-kubernetes-validations"]]
    cases = [
        ({"VehicleSpeed": {"interval_seconds": 1}}, True),
        ({"VehicleSpede": {"interval_seconds": 1}}, False),
        ({"Unknown": {"interval_seconds": 1}}, False),
        ({"SelfDrivingMilesSinceReset": {"interval_seconds": 1}}, False),
        ({"SelfDrivingMilesSinceReset": {"interval_seconds": 1, "minimum_delta": 0.5}}, False),
        ({"SelfDrivingMilesSinceReset": {"interval_seconds": 1, "minimum_delta": 1.0}}, True),
    ]
    for value, accepted in cases:
        activation = {"self": celpy.json_to_cel(value)}
        assert all(bool(p.evaluate(activation)) for p in programs) == accepted, value


_FORBIDDEN_IN_JUNCTORS = {"type", "description", "default", "additionalProperties", "nullable", "properties", "items"}


def _check_structural(node: dict[str, Any], path: str, problems: list[str]) -> None:
    """The API server's structural-schema rules, the ones this schema could break."""
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
    if "type" not in node and not preserve and not node.get("x-kubernetes-int-or-string"):
        problems.append(f"{path}: no type")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: properties and additionalProperties together")
    if "default" in node:
        defaults_schema = {k: v for k, v in node.items() if k != "default"}
        if list(jsonschema.Draft4Validator(defaults_schema).iter_errors(node["default"])):
            problems.append(f"{path}: default {node['default']!r} does not validate")
    for junctor in ("oneOf", "anyOf", "allOf"):
        for branch in node.get(junctor, []):
            if _FORBIDDEN_IN_JUNCTORS & set(branch):
                problems.append(f"{path}.{junctor}: {sorted(_FORBIDDEN_IN_JUNCTORS & set(branch))}")
    for name, child in node.get("properties", {}).items():
        _check_structural(child, f"{path}.{name}", problems)
    if isinstance(node.get("additionalProperties"), dict):
        _check_structural(node["additionalProperties"], f"{path}[*]", problems)
    if isinstance(node.get("items"), dict):
        _check_structural(node["items"], f"{path}[]", problems)


def test_crd_is_structural_with_status_and_columns() -> None:
    definition = crd.build_crd()
    assert definition["metadata"]["name"] == "fleettelemetryconfigs.fleetwire.io"
    spec = definition["spec"]
    assert (spec["group"], spec["scope"], spec["names"]["kind"], spec["names"]["shortNames"]) == \
        ("fleetwire.io", "Namespaced", "FleetTelemetryConfig", ["ftc"])
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    schema = version["schema"]["openAPIV3Schema"]
    problems: list[str] = []
    _check_structural(schema, "", problems)
    for definition_ in crd.build_peering_crds():
        _check_structural(definition_["spec"]["versions"][0]["schema"]["openAPIV3Schema"], "peering", problems)
    assert problems == []
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns == {"Hostname": ".spec.hostname", "Cert Expiry": ".status.certificate.notAfter",
                       "Ready Vehicles": ".status.vehicles.applied", "Age": ".metadata.creationTimestamp"}
    for json_path in columns.values():  # metadata's schema is the API server's own
        if json_path.startswith(".metadata."):
            continue
        node = schema
        for part in json_path.strip(".").split("."):
            node = node["properties"][part]


def test_status_documents_every_count_the_reconciler_writes() -> None:
    from fleetwire.operator.reconcilers.vehicle_pass import PassResult
    from fleetwire.operator.policies.conditions import Condition

    status = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    documented = status["properties"]["vehicles"]["properties"]
    written = PassResult({"pending": 0, "pushed": 0, "applied": 1, "skipped": 0, "failing": 0},
                         Condition("VehiclesConfigured", "True", "VehiclesApplied", ""), 1.0, "ab", 1.0,
                         shards=("fleet-vehicles-0",), too_new=1).status()
    assert set(written) <= set(documented)
    assert written["fieldsTooNew"] == 1 and "firmware" in documented["fieldsTooNew"]["description"]


def test_server_names_match_the_server() -> None:
    """The chart's CRD (rendered, checked in) names the server's backends and record types."""
    rendered = yaml.safe_load((ROOT / "charts/fleetwire/crds/fleettelemetryconfigs.yaml").read_text())
    server = rendered["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["server"]
    assert server["properties"]["records"]["additionalProperties"]["items"]["enum"] == list(server_config.KNOWN_DISPATCHERS)
    assert set(server_config.KNOWN_DISPATCHERS) <= set(server["properties"])
    assert tuple(crd.RECORD_TYPES) == tuple(server_config.RECORD_TYPES)


def test_rendered_chart_crds_are_current() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "render_crd.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    documents = list(yaml.safe_load_all((ROOT / "charts/fleetwire/crds/fleettelemetryconfigs.yaml").read_text()))
    assert documents == [crd.build_crd()]
    peering = list(yaml.safe_load_all((ROOT / "charts/fleetwire/crds/kopfpeerings.yaml").read_text()))
    assert [d["metadata"]["name"] for d in peering] == ["clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"]


# -- the parser on its own -----------------------------------------------------------------


def test_misspelt_field_names_the_catalog_suggestion() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(minimal(fields={"VehicleSpede": {"interval_seconds": 1}}))
    assert str(caught.value) == "spec.fields.VehicleSpede: unknown field (did you mean 'VehicleSpeed'?)"
    assert (caught.value.path, caught.value.message) == ("spec.fields.VehicleSpede",
                                                         "unknown field (did you mean 'VehicleSpeed'?)")


def test_string_port_says_why() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(minimal(port="443"))
    assert caught.value.path == "spec.port"
    assert "not the string '443'" in caught.value.message and "stop streaming" in caught.value.message


def test_every_problem_is_reported_at_once() -> None:
    spec = minimal(port="443", certificate={"acme": {}, "privateCA": {}}, exp=0,
                   fields={"Unknown": {"interval_seconds": 1}, "Soc": {"interval_seconds": 1, "intervall": 2}},
                   server={"replica": 2})
    with pytest.raises(SpecError) as caught:
        parse_spec(spec)
    paths = [path for path, _ in caught.value.problems]
    assert paths == ["spec.port", "spec.certificate", "spec.server.replica", "spec.fields.Soc.intervall",
                     "spec.fields.Unknown", "spec.exp"]
    messages = dict(caught.value.problems)
    assert messages["spec.server.replica"] == "unknown key (did you mean 'replicas'?)"
    assert "zero value" in messages["spec.fields.Unknown"]
    assert str(caught.value).count(";") == len(paths) - 1


def test_defaults_are_applied() -> None:
    parsed = parse_spec(minimal())
    assert parsed.port == 443 and parsed.certificate == PrivateCaCertificate(3650, 365)
    assert parsed.server.replicas == 1 and parsed.server.service_type == "LoadBalancer"
    assert parsed.vehicles == () and dict(parsed.fields) == {} and parsed.fleet_api is None
    acme = parse_spec(minimal(certificate={"acme": {}})).certificate
    assert acme == AcmeCertificate(directory_url=crd.DEFAULT_ACME_DIRECTORY, challenge="http01")
    assert parse_spec(minimal(certificate={"secretRef": {"name": "tls"}})).certificate == SecretCertificate("tls")


def test_full_spec_is_parsed_in_full() -> None:
    parsed = parse_spec(full())
    assert parsed.port == 8443 and parsed.vehicles == (VIN,) and parsed.exp_days == 30
    assert isinstance(parsed.certificate, AcmeCertificate)
    assert parsed.certificate.renew_before == timedelta(hours=720)
    assert parsed.certificate.dns01 is not None and parsed.certificate.dns01.api_token.key == "token"
    assert parsed.server.records == {"V": ("mqtt", "logger"), "alerts": ("logger",)}
    assert parsed.server.dispatchers["mqtt"]["broker"] == "mqtt:1883"
    assert parsed.server.rate_limit is not None and parsed.server.rate_limit.message_interval_time == 30.0
    assert parsed.fleet_api is not None and parsed.fleet_api.base_url == "https://fleet-api.prd.eu.vn.cloud.tesla.com"
    assert parsed.fleet_api.signing_key is not None and not parsed.fleet_api.signed_by_proxy
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        parsed.fields["Soc"] = parsed.fields["VehicleSpeed"]  # type: ignore[index]


def test_every_catalog_field_is_accepted() -> None:
    names = [info.name for info in catalog.FIELDS if info.number != 0]
    parsed = parse_spec(minimal(fields={name: {"interval_seconds": 60, "minimum_delta": 1} for name in names}))
    assert sorted(parsed.fields) == sorted(names)
    assert len(names) == 277


def test_self_driving_miles_needs_a_minimum_delta_of_one() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(minimal(fields={"SelfDrivingMilesSinceReset": {"interval_seconds": 60}}))
    assert str(caught.value) == ("spec.fields.SelfDrivingMilesSinceReset.minimum_delta: required for this field: "
                                 "a number of at least 1 (vehicles refuse a smaller one)")
    with pytest.raises(SpecError) as caught:
        parse_spec(minimal(fields={"SelfDrivingMilesSinceReset": {"interval_seconds": 60, "minimum_delta": 0.5}}))
    assert str(caught.value) == ("spec.fields.SelfDrivingMilesSinceReset.minimum_delta: must be at least 1 for "
                                 "this field, not 0.5 (vehicles refuse a smaller one)")
    parsed = parse_spec(minimal(fields={"SelfDrivingMilesSinceReset": {"interval_seconds": 60, "minimum_delta": 1}}))
    assert parsed.fields["SelfDrivingMilesSinceReset"].minimum_delta == 1
    parse_spec(minimal(fields={"MilesSinceReset": {"interval_seconds": 60}}))  # only that field


def test_provisional_fields_are_accepted_with_a_warning() -> None:
    parsed = parse_spec(minimal(fields={"AccessoryRail": {"interval_seconds": 60},
                                        "PowerTransferStatus": {"interval_seconds": 60},
                                        "GpsAccuracyMeters": {"interval_seconds": 60}}))
    assert sorted(parsed.fields) == ["AccessoryRail", "GpsAccuracyMeters", "PowerTransferStatus"]
    why = "its number may still change, so vehicles may stream it under another number or not at all"
    assert parsed.warnings == (
        ("spec.fields.AccessoryRail", f"provisional field (number 272): {why}"),
        ("spec.fields.PowerTransferStatus", f"provisional field (number 273): {why}"),
    )
    assert parse_spec(minimal(fields={"Soc": {"interval_seconds": 60}})).warnings == ()


@pytest.mark.parametrize(("text", "seconds"), [("720h", 2_592_000), ("1h30m", 5400), ("90s", 90), ("250ms", 0.25),
                                               ("1.5h", 5400)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "30d", "h", "10 m", "1h-2m"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


# -- the config object for vehicles --------------------------------------------------------


def test_desired_vehicle_config_has_the_fleet_api_shape() -> None:
    parsed = parse_spec(full())
    config = desired_vehicle_config(parsed, CA, issued_at=1_700_000_000.9)
    assert config == {
        "hostname": "telemetry.example.com",
        "port": 8443,
        "ca": CA,
        "fields": {"Location": {"interval_seconds": 5, "minimum_delta": 50, "resend_interval_seconds": 300},
                   "VehicleSpeed": {"interval_seconds": 10}},
        "alert_types": ["service"],
        "exp": 1_700_000_000 + 30 * 86_400,
        "delivery_policy": "latest",
    }
    assert type(config["port"]) is int and json.loads(json.dumps(config)) == config


def test_desired_vehicle_config_leaves_unset_keys_out() -> None:
    config = desired_vehicle_config(parse_spec(minimal(fields={"Soc": {"interval_seconds": 60}})), CA.rstrip("\n"))
    assert config == {"hostname": "telemetry.example.com", "port": 443, "ca": CA,
                      "fields": {"Soc": {"interval_seconds": 60}}}


def test_desired_vehicle_config_needs_a_pem_ca() -> None:
    with pytest.raises(ValueError, match="PEM"):
        desired_vehicle_config(parse_spec(minimal()), "not a certificate")


@pytest.mark.parametrize(("record_type", "name"), [("V", "logger"), ("connectivity", "mqtt")])
def test_reliable_ack_sources_follow_the_servers_rules(record_type: str, name: str) -> None:
    """The spec refuses what the server's own parser refuses, before a pod crash-loops on it."""
    spec = {"hostname": "telemetry.example.com", "certificate": {"privateCA": {}},
            "server": {"records": {record_type: ["logger", "mqtt"]}, "reliableAckSources": {record_type: name},
                       "mqtt": {"broker": "mqtt.example.com:1883"}}}
    with pytest.raises(SpecError) as caught:
        parse_spec(spec)
    assert f"spec.server.reliableAckSources.{record_type}" in dict(caught.value.problems)
