"""The operator validates the config.json it builds with the server's own parser."""

from __future__ import annotations

from typing import Any

import pytest

from fleetwire.operator.policies.conditions import check_spec
from fleetwire.operator.resource.server_check import server_refusal
from fleetwire.operator.resource.spec_parse import parse_spec

BASE: dict[str, Any] = {"hostname": "telemetry.example.com", "certificate": {"privateCA": {}}}
SECRET = {"secretKeyRef": {"name": "backend", "key": "password"}}


@pytest.mark.parametrize("server", [
    {},
    {"records": {"V": ["logger"]}},
    {"records": {"V": ["logger", "redis"]}, "redis": {"addrs": ["redis:6379"], "password": SECRET, "publish_vin_topics": True},
     "reliableAckSources": {"V": "redis"}},
    {"records": {"V": ["kafka"], "alerts": ["kafka"]}, "kafka": {"bootstrap.servers": "kafka:9092"}},
    {"records": {"V": ["mqtt"]}, "mqtt": {"broker": "mqtt:1883", "qos": 1}},
    {"records": {"V": ["nats"]}, "nats": {"url": "nats://nats:4222"}},
    {"records": {"V": ["kinesis"]}, "kinesis": {"streams": {"V": "telemetry"}},
     "env": [{"name": "AWS_REGION", "value": "eu-west-1"}]},
    {"records": {"V": ["logger"]}, "rateLimit": {"enabled": True, "messageLimit": 100},
     "vins": {"allow": ["5YJ3E1EA7KF000001"]}, "namespace": "tesla"},
])
def test_the_built_config_is_one_the_server_accepts(server: dict[str, Any]) -> None:
    spec = parse_spec({**BASE, "server": server})
    assert server_refusal(spec) is None
    parsed, condition = check_spec({**BASE, "server": server}, 3)
    assert parsed is not None and condition.status == "True"


@pytest.mark.parametrize(("server", "words"), [
    ({"records": {"V": ["mqtt"]}, "mqtt": {"broker": "mqtt:1883", "qos": 7}}, "mqtt.qos: expected an integer 0, 1 or 2"),
    ({"records": {"V": ["kafka"]}, "kafka": {"bootstrap.servers": "kafka:9092", "no.such.property": 1}},
     "kafka.no.such.property"),
    ({"records": {"V": ["kinesis"]}, "kinesis": {"streams": {"V": "telemetry"}}}, "no AWS region"),
])
def test_a_spec_the_server_would_refuse_is_not_valid(server: dict[str, Any], words: str) -> None:
    spec = parse_spec({**BASE, "server": server})  # the spec parser alone lets it through
    refusal = server_refusal(spec)
    assert refusal is not None and words in refusal
    parsed, condition = check_spec({**BASE, "server": server}, 3)
    assert parsed is None and (condition.status, condition.reason) == ("False", "InvalidSpec")
    assert "the server refuses the config.json" in condition.message and refusal in condition.message
