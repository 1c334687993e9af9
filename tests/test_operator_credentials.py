"""Backend credentials live in Secrets only: never in the resource, its ConfigMap or its status.

A credential in a dispatcher's settings is given as `{secretKeyRef: {name, key}}`: the API
server (CEL) and the operator refuse the value written in place; the server pod mounts the
Secret key as a file and the config.json names that file, which the server reads at start.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fleetwire.operator.resource import builders, crd
from fleetwire.operator.environment import OperatorEnvironment
from fleetwire.operator.resource.spec import SpecError
from fleetwire.operator.resource.spec_parse import parse_spec
from fleetwire.server.config import parse_config

OWNER = builders.Owner("fleet", "telemetry", "0b7c0de0-0000-4000-8000-000000000001")
ENV = OperatorEnvironment(image="ghcr.io/fleetwire/fleetwire:1.2.3", namespace="telemetry")
PASSWORD = "correct-horse-battery-staple"
REF = {"secretKeyRef": {"name": "broker-credentials", "key": "password"}}


def _spec(server: dict[str, Any]) -> dict[str, Any]:
    return {"hostname": "telemetry.example.com", "certificate": {"privateCA": {}}, "server": server}


def _mqtt_server(password: Any) -> dict[str, Any]:
    return {"records": {"V": ["mqtt"]}, "reliableAckSources": {"V": "mqtt"},
            "mqtt": {"broker": "mqtt.example.com:1883", "username": "fleet", "password": password, "qos": 1}}


def _problems(spec: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(SpecError) as caught:
        parse_spec(spec)
    return dict(caught.value.problems)


@pytest.mark.parametrize(
    ("server", "where"),
    [
        (_mqtt_server(PASSWORD), "spec.server.mqtt.password"),
        ({"records": {"V": ["redis"]}, "redis": {"addrs": ["r:6379"], "password": PASSWORD}}, "spec.server.redis.password"),
        ({"records": {"V": ["kafka"]}, "kafka": {"bootstrap.servers": "k:9092", "sasl.password": PASSWORD}},
         "spec.server.kafka.sasl.password"),
        ({"records": {"V": ["nats"]}, "nats": {"url": "nats://n:4222", "token": PASSWORD}}, "spec.server.nats.token"),
    ],
)
def test_a_credential_written_in_the_resource_is_refused(server: dict[str, Any], where: str) -> None:
    problems = _problems(_spec(server))
    assert "secretKeyRef" in problems[where] and PASSWORD not in json.dumps(problems)


def test_a_secret_looking_environment_value_is_refused() -> None:
    server = {"env": [{"name": "REDIS_PASSWORD", "value": PASSWORD}, {"name": "AWS_REGION", "value": "eu-west-1"}]}
    problems = _problems(_spec(server))
    assert list(problems) == ["spec.server.env[0].value"] and PASSWORD not in json.dumps(problems)


def test_credentials_reach_the_pod_as_mounted_files_and_env_references() -> None:
    server = {**_mqtt_server(REF), "env": [
        {"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "redis", "key": "password"}}},
        {"name": "AWS_REGION", "value": "eu-west-1"},
    ]}
    spec = parse_spec(_spec(server))
    config_map, deployment, *_ = builders.server_objects(OWNER, spec, ENV)

    config = json.loads(config_map["data"]["config.json"])
    assert config["mqtt"]["password"] == {"file": "/etc/fleetwire/secrets/broker-credentials/password"}
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volume = next(v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == "broker-credentials")
    assert volume["secret"]["items"] == [{"key": "password", "path": "password"}]  # only the key named
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    assert mount == {"name": volume["name"], "mountPath": "/etc/fleetwire/secrets/broker-credentials", "readOnly": True}
    assert container["env"] == [
        {"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "redis", "key": "password"}}},
        {"name": "AWS_REGION", "value": "eu-west-1"},
    ]


def test_the_server_reads_the_credential_from_the_mounted_file(tmp_path: Path) -> None:
    """The config.json the operator writes, with the pod's mounts materialized under tmp_path."""
    spec = parse_spec(_spec(_mqtt_server(REF)))
    config = builders.server_config(spec)
    root = tmp_path / "pod"
    text = json.dumps(config).replace('"/etc/fleetwire/', f'"{root}/etc/fleetwire/')
    mounted = json.loads(text)
    for path in (mounted["tls"]["server_cert"], mounted["tls"]["server_key"], mounted["tls"]["ca_file"],
                 mounted["mqtt"]["password"]["file"]):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text("unread by the loader\n")
    Path(mounted["mqtt"]["password"]["file"]).write_text(PASSWORD)  # as the kubelet writes a Secret key
    parsed, _warnings = parse_config(mounted, root)
    assert parsed.backend("mqtt").password == PASSWORD
    assert PASSWORD not in json.dumps(config)


def test_the_crd_refuses_a_credential_in_place() -> None:
    """The API server's own check, so the value never reaches etcd (rules run with cel-python)."""
    celpy = pytest.importorskip("celpy")
    schema = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    environment = celpy.Environment()
    for backend, keys in crd.CREDENTIAL_KEYS.items():
        rules = schema["properties"]["server"]["properties"][backend]["x-kubernetes-validations"]
        programs = [environment.program(environment.compile(rule["rule"])) for rule in rules]
        assert len(programs) == len(keys)
        for key in keys:
            for value, accepted in ((PASSWORD, False), ("", True), (REF, True)):
                activation = {"self": celpy.json_to_cel({key: value})}
                assert all(bool(p.evaluate(activation)) for p in programs) == accepted, (backend, key, value)

