"""The server configuration: reference configs load unchanged; mistakes name their key."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from fleetwire.server.config import (
    ConfigError,
    ServerConfig,
    load_config,
    parse_config,
)
from fleetwire.server.dispatchers.mqtt import BrokerAddress, parse_broker


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    """A config folder with the certificate files a config refers to (content unread here)."""
    (tmp_path / "certs").mkdir()
    for name in ("server.crt", "server.key", "ca.pem"):
        (tmp_path / "certs" / name).write_text("not read by the configuration loader\n")
    return tmp_path


def reference_config() -> dict[str, Any]:
    """Every key the reference server documents, with relative certificate paths."""
    return {
        "host": "127.0.0.1",
        "port": 4443,
        "status_port": 8080,
        "log_level": "info",
        "json_log_enable": True,
        "namespace": "tesla_telemetry",
        "use_default_eng_ca": False,
        "transmit_decoded_records": False,
        "reliable_ack_sources": {"V": "mqtt"},
        "kafka": {"bootstrap.servers": "kafka:9092", "queue.buffering.max.messages": 1000000},
        "kinesis": {"max_retries": 3, "override_host": "http://kinesis:4566", "streams": {"V": "test_V"}},
        "pubsub": {"gcp_project_id": "test-project-id"},
        "zmq": {"addr": "tcp://*:5284", "verbose": False},
        "mqtt": {
            "broker": "localhost:1883",
            "client_id": "client-1",
            "username": "user",
            "password": "secret",
            "topic_base": "telemetry",
            "qos": 1,
            "retained": False,
            "connect_timeout_ms": 30000,
            "publish_timeout_ms": 1000,
            "disconnect_timeout_ms": 250,
            "connect_retry_interval_ms": 10000,
            "keep_alive_seconds": 30,
        },
        "redis": {
            "addrs": ["redis:6379"],
            "username": "u",
            "password": "p",
            "db": 2,
            "pool": {"pool_size": 10},
            "publish_timeout": 2000000000,
            "cluster_mode": False,
            "publish_vin_topics": True,
            "subscriber_set_prefix": "consumer",
        },
        "monitoring": {
            "prometheus_metrics_port": 9090,
            "prometheus_metrics_host": "0.0.0.0",
            "profiler_port": 4269,
            "statsd": {"host": "statsd:8125", "prefix": "ft", "sample_rate": 100, "flush_period": 1000},
        },
        "logger": {"verbose": True},
        "rate_limit": {"enabled": True, "message_interval_time": 30, "message_limit": 1000},
        "records": {
            "V": ["logger", "mqtt"],
            "alerts": ["logger"],
            "errors": ["logger"],
            "connectivity": ["mqtt"],
        },
        "tls": {"ca_file": "certs/ca.pem", "server_cert": "certs/server.crt", "server_key": "certs/server.key"},
    }


def write(folder: Path, data: dict[str, Any]) -> Path:
    path = folder / "config.json"
    path.write_text(json.dumps(data))
    return path


def error_of(data: dict[str, Any], base: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(data, base)
    return info.value


def test_reference_config_loads_with_every_key(certs: Path) -> None:
    config, warnings = load_config(write(certs, reference_config()))
    assert warnings == []
    assert isinstance(config, ServerConfig)
    assert (config.host, config.port, config.status_port) == ("127.0.0.1", 4443, 8080)
    assert config.tls.server_cert == certs / "certs" / "server.crt"
    assert config.tls.ca_file == certs / "certs" / "ca.pem"
    assert config.records["V"] == ("logger", "mqtt")
    assert config.reliable_ack_sources == {"V": "mqtt"}
    assert config.dispatchers_in_use() == ("logger", "mqtt")
    assert config.rate_limit.enabled and config.rate_limit.message_limit == 1000
    assert config.rate_limit.message_interval_time == 30.0
    mqtt = config.backend("mqtt")
    assert mqtt.qos == 1 and mqtt.publish_timeout_ms == 1000
    assert mqtt.address() == BrokerAddress("localhost", 1883)
    redis = config.backend("redis")
    assert redis.addrs == ("redis:6379",) and redis.pool == {"pool_size": 10}
    assert config.backend("kafka").properties == {"bootstrap.servers": "kafka:9092", "queue.buffering.max.messages": 1000000}
    assert config.backend("kinesis").streams == {"V": "test_V"}
    assert config.backend("pubsub").gcp_project_id == "test-project-id"
    assert config.backend("zmq").addr == "tcp://*:5284"
    assert config.monitoring.prometheus_metrics_port == 9090
    assert config.monitoring.statsd is not None and config.monitoring.statsd.flush_period == 1000
    assert config.backend("logger").verbose and config.json_log_enable and config.namespace == "tesla_telemetry"


def test_minimal_config_takes_reference_defaults(certs: Path) -> None:
    data = {"tls": {"server_cert": "certs/server.crt", "server_key": "certs/server.key"},
            "records": {"V": ["logger"]}}
    config, warnings = parse_config(data, certs)
    assert warnings == []
    assert (config.host, config.port, config.status_port) == ("0.0.0.0", 443, None)
    assert config.tls.ca_file is None and config.tls.reload_interval_seconds == 10.0
    assert not config.rate_limit.enabled
    assert (config.rate_limit.message_limit, config.rate_limit.message_interval_time) == (1000, 30.0)
    assert "mqtt" not in config.backends and config.log_level == "info"
    assert config.vins.allows("ANYVIN") and config.dispatch.lossy == frozenset()


def test_mqtt_zero_values_mean_reference_defaults(certs: Path) -> None:
    data = reference_config()
    data["mqtt"] = {"broker": "tcp://broker:1883", "topic_base": "t", "publish_timeout_ms": 0}
    config, _ = parse_config(data, certs)
    mqtt = config.backend("mqtt")
    assert (mqtt.qos, mqtt.publish_timeout_ms, mqtt.connect_retry_interval_ms) == (0, 2500, 10000)
    assert (mqtt.keep_alive_seconds, mqtt.connect_timeout_ms) == (30, 30000)


def test_typo_key_warns_with_suggestion(certs: Path) -> None:
    data = reference_config()
    data["recrods"] = data.pop("records")
    data["mqtt"]["qso"] = data["mqtt"].pop("qos")
    data["reliable_ack_sources"] = {}
    _, warnings = parse_config(data, certs)
    assert "recrods: unknown key, ignored (did you mean 'records'?)" in warnings
    assert "mqtt.qso: unknown key, ignored (did you mean 'qos'?)" in warnings


def test_unknown_key_without_close_match_still_warns(certs: Path) -> None:
    data = reference_config()
    data["completely_unrelated"] = 1
    _, warnings = parse_config(data, certs)
    assert warnings == ["completely_unrelated: unknown key, ignored"]


def test_reliable_ack_at_top_level_points_to_reliable_ack_sources(certs: Path) -> None:
    data = reference_config()
    data["reliable_ack"] = True
    _, warnings = parse_config(data, certs)
    assert len(warnings) == 1 and "reliable_ack_sources" in warnings[0]


@pytest.mark.parametrize(
    ("path", "value", "key", "message"),
    [
        (("mqtt", "qos"), "1", "mqtt.qos", "mqtt.qos: expected an integer 0, 1 or 2, got '1'"),
        (("mqtt", "qos"), 3, "mqtt.qos", "mqtt.qos: expected an integer 0, 1 or 2, got 3"),
        (("port",), "443", "port", "port: expected a port number from 1 to 65535, got '443'"),
        (("mqtt", "retained"), "yes", "mqtt.retained", "mqtt.retained: expected true or false, got 'yes'"),
        (("rate_limit", "message_limit"), 1.5, "rate_limit.message_limit",
         "rate_limit.message_limit: expected an integer of at least 1, got 1.5"),
        (("rate_limit", "enabled"), 1, "rate_limit.enabled", "rate_limit.enabled: expected true or false, got 1"),
        (("redis", "addrs"), "redis:6379", "redis.addrs",
         "redis.addrs: expected a list of strings [\"...\"], got 'redis:6379'"),
        (("tls",), "certs", "tls", "tls: expected an object {...}, got 'certs'"),
        (("mqtt", "broker"), "redis://x", "mqtt.broker", None),
    ],
)
def test_wrong_type_names_the_key(
    certs: Path, path: tuple[str, ...], value: Any, key: str, message: str | None
) -> None:
    data = reference_config()
    target = data
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    error = error_of(data, certs)
    assert error.key == key
    assert str(error).startswith(f"{key}: expected")
    if message is not None:
        assert str(error) == message


def test_missing_certificate_file_names_key_and_path(certs: Path) -> None:
    data = reference_config()
    data["tls"]["server_key"] = "certs/missing.key"
    error = error_of(data, certs)
    assert error.key == "tls.server_key"
    assert str(certs / "certs" / "missing.key") in str(error)
    assert "file not found" in str(error)


def test_missing_tls_section_explains_mtls(certs: Path) -> None:
    data = reference_config()
    del data["tls"]
    error = error_of(data, certs)
    assert error.key == "tls" and "mutual TLS" in str(error)


def test_unknown_record_type(certs: Path) -> None:
    data = reference_config()
    data["records"]["v"] = data["records"].pop("V")
    data["reliable_ack_sources"] = {}
    error = error_of(data, certs)
    assert error.key == "records.v"
    assert "unknown record type 'v'" in str(error) and "did you mean 'V'?" in str(error)


def test_unknown_dispatcher(certs: Path) -> None:
    data = reference_config()
    data["records"]["alerts"] = ["logger", "mqt"]
    error = error_of(data, certs)
    assert error.key == "records.alerts"
    assert "unknown dispatcher 'mqt'" in str(error) and "did you mean 'mqtt'?" in str(error)


def test_dispatcher_not_in_this_build_fails_only_when_used(certs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fleetwire.server.dispatchers.kafka", None)  # a build without it
    data = reference_config()  # has a kafka section, used by no record type: fine
    parse_config(data, certs)
    data["records"]["errors"] = ["kafka"]
    error = error_of(data, certs)
    assert error.key == "records.errors"
    assert "dispatcher 'kafka' is not available in this build" in str(error)


def test_used_dispatcher_needs_its_section(certs: Path) -> None:
    data = reference_config()
    del data["mqtt"]
    error = error_of(data, certs)
    assert error.key == "mqtt" and "missing" in str(error)


def test_reliable_ack_source_must_be_configured_for_the_record_type(certs: Path) -> None:
    data = reference_config()
    data["reliable_ack_sources"] = {"alerts": "mqtt"}  # alerts go to the logger only
    error = error_of(data, certs)
    assert error.key == "reliable_ack_sources.alerts"
    assert "expected one of the dispatchers configured for 'alerts'" in str(error)


@pytest.mark.parametrize(
    ("sources", "needle"),
    [
        ({"V": "logger"}, "cannot confirm"),
        ({"connectivity": "mqtt"}, "never acked"),
        ({"X": "mqtt"}, "unknown record type"),
    ],
)
def test_reliable_ack_source_rules(certs: Path, sources: dict[str, str], needle: str) -> None:
    data = reference_config()
    data["reliable_ack_sources"] = sources
    error = error_of(data, certs)
    assert error.key == f"reliable_ack_sources.{next(iter(sources))}" and needle in str(error)


def test_reliable_ack_source_cannot_be_lossy(certs: Path) -> None:
    data = reference_config()
    data["dispatch"] = {"lossy": ["mqtt"]}
    error = error_of(data, certs)
    assert error.key == "reliable_ack_sources.V" and "dispatch.lossy" in str(error)


def test_extensions(certs: Path) -> None:
    data = reference_config()
    data["vins"] = {"allow": ["5YJ3E1EA7KF000001", "5YJ3E1EA7KF000002"], "deny": ["5YJ3E1EA7KF000002"]}
    data["dispatch"] = {"queue_size": 50, "batch_size": 10, "lossy": ["logger"], "close_timeout_seconds": 1}
    data["tls"]["reload_interval_seconds"] = 0
    config, warnings = parse_config(data, certs)
    assert config.vins.allows("5YJ3E1EA7KF000001")
    assert not config.vins.allows("5YJ3E1EA7KF000002")  # deny wins
    assert not config.vins.allows("5YJ3E1EA7KF000003")  # not in a non-empty allow list
    assert warnings == ["vins: '5YJ3E1EA7KF000002' is both allowed and denied; deny wins"]
    assert (config.dispatch.queue_size, config.dispatch.batch_size) == (50, 10)
    assert config.dispatch.lossy == frozenset({"logger"}) and config.dispatch.close_timeout_seconds == 1.0
    assert config.tls.reload_interval_seconds == 0.0


def test_config_is_frozen(certs: Path) -> None:
    config, _ = parse_config(reference_config(), certs)
    with pytest.raises(AttributeError):
        config.port = 1  # type: ignore[misc]


def test_input_is_not_modified(certs: Path) -> None:
    data = reference_config()
    before = copy.deepcopy(data)
    parse_config(data, certs)
    assert data == before


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{\n  "port": 443,\n}\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "line 3" in str(info.value) and str(path) in str(info.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the configuration file"):
        load_config(tmp_path / "nope.json")


def test_redis_tls_files_checked_only_when_redis_is_used(certs: Path) -> None:
    data = reference_config()
    data["redis"]["tls"] = {"ca_file": "certs/absent.pem"}
    config, _ = parse_config(data, certs)  # redis is configured but unused
    redis = config.backend("redis")
    assert redis.tls is not None and redis.tls.ca_file == certs / "certs" / "absent.pem"


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("localhost:1883", BrokerAddress("localhost", 1883)),
        ("broker", BrokerAddress("broker", 1883)),
        ("tcp://10.0.0.1:1884", BrokerAddress("10.0.0.1", 1884)),
        ("ssl://broker", BrokerAddress("broker", 8883, tls=True)),
        ("mqtts://broker:9999", BrokerAddress("broker", 9999, tls=True)),
        ("wss://broker/mqtt", BrokerAddress("broker", 443, tls=True, transport="websockets")),
        ("tcp://[::1]:1883", BrokerAddress("::1", 1883)),
    ],
)
def test_parse_broker(text: str, address: BrokerAddress) -> None:
    assert parse_broker(text) == address


@pytest.mark.parametrize("text", ["http://broker:1883", "broker:99999", ":1883", "broker:abc"])
def test_parse_broker_rejects(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_broker(text)
    assert info.value.key == "mqtt.broker"


def test_use_default_eng_ca_warns_that_the_ca_file_counts(certs: Path) -> None:
    _config, warnings = load_config(write(certs, {**reference_config(), "use_default_eng_ca": True}))
    assert any("use_default_eng_ca" in w and "tls.ca_file" in w for w in warnings)
