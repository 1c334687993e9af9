"""The nats dispatcher without a server: settings, subjects and headers.

Against a real nats-server: test_nats_dispatcher_server.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import server_config_data
from fleetwire.server.config import parse_config
from fleetwire.server.dispatchers import nats as nats_backend
from fleetwire.server.dispatch import Dispatcher
from fleetwire.server.dispatchers.nats import (
    NatsDispatcher,
    NatsSettings,
    covers,
    headers,
    redact,
    subject,
)
from fleetwire.server.dispatchers.registry import build_dispatchers

from fleetwire.sim.fleet_pki import FleetPki
from fleetwire.strictjson import ConfigError, Reader
from nats_records import (
    NS,
    T0,
    VIN,
    connectivity,
    vehicle_data,
)


# -- settings ------------------------------------------------------------------------


def parse(section: dict[str, Any], env: dict[str, str] | None = None, in_use: bool = True,
          base: Path = Path("/")) -> NatsSettings:
    return nats_backend.parse_settings(Reader(section, "nats", [], base), env or {}, in_use)


def test_settings_in_the_forks_shape_with_defaults() -> None:
    settings = parse({"url": "nats://nats:4222", "name": "fleet"})
    assert settings.servers == ("nats://nats:4222",) and settings.name == "fleet"
    assert settings.jetstream and settings.deduplicate and settings.stream == ""
    assert (settings.publish_timeout_ms, settings.connect_timeout_ms) == (5000, 2000)
    assert parse({"url": "nats:4222"}).servers == ("nats://nats:4222",)


def test_a_cluster_as_a_list_or_comma_separated() -> None:
    expected = ("nats://a:4222", "tls://b:4222", "nats://c:4222")
    assert parse({"url": "nats://a:4222, tls://b:4222,c:4222"}).servers == expected
    assert parse({"url": ["nats://a:4222", "tls://b:4222", "c:4222"]}).servers == expected


@pytest.mark.parametrize(("section", "key", "words"), [
    ({}, "nats.url", "missing"),
    ({"url": 4222}, "nats.url", "expected a server URL"),
    ({"url": "http://nats:4222"}, "nats.url", "scheme nats, tls, ws or wss"),
    ({"url": "nats://nats:99999"}, "nats.url", "bad port"),
    ({"url": "nats://:4222"}, "nats.url", "no host"),
    ({"url": "nats://n:4222", "password": "pw"}, "nats.user", "no user"),
    ({"url": "nats://n:4222", "user": "u", "token": "t"}, "nats.token", "one way"),
    ({"url": "nats://n:4222", "tls": {"cert_file": "/etc/hostname"}}, "nats.tls.key_file", "both"),
    ({"url": "nats://n:4222", "creds_file": "/nonexistent/user.creds"}, "nats.creds_file", "not found"),
    ({"url": "nats://n:4222", "stream": "a.b"}, "nats.stream", "stream name"),
    ({"url": "nats://n:4222", "jetstream": "yes"}, "nats.jetstream", "true or false"),
    ({"url": "nats://n:4222", "publish_timeout_ms": 0}, "nats.publish_timeout_ms", "at least 1"),
])
def test_invalid_settings_name_the_key(section: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as caught:
        parse(section)
    assert caught.value.key == key


def test_secrets_are_never_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        parse({"url": "http://fleet:hunter2@nats:4222"})
    assert "hunter2" not in str(caught.value) and "fleet:***@nats:4222" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        parse({"url": "nats://n:4222", "password": 12345, "user": "u"})
    assert "12345" not in str(caught.value)
    assert redact("nats://tok3n@nats:4222") == "nats://***@nats:4222"
    assert redact("nats://nats:4222") == "nats://nats:4222"


def test_environment_overrides_password_and_token() -> None:
    env = {"NATS_PASSWORD": "from-env"}
    assert parse({"url": "nats://n:4222", "user": "u", "password": "file"}, env).password == "from-env"
    assert parse({"url": "nats://n:4222"}, {"NATS_TOKEN": "t0k"}).token == "t0k"


def test_files_are_checked_only_in_use(tmp_path: Path) -> None:
    section = {"url": "nats://n:4222", "creds_file": "user.creds", "tls": {"ca_file": "ca.pem"}}
    settings = parse(section, in_use=False, base=tmp_path)
    assert settings.creds_file == tmp_path / "user.creds"
    with pytest.raises(ConfigError) as caught:
        parse(section, base=tmp_path)
    assert caught.value.key == "nats.creds_file"


def test_from_a_config_file(fleet_pki: FleetPki) -> None:
    data = server_config_data(fleet_pki, {
        "namespace": NS, "records": {"V": ["nats"], "alerts": ["nats", "logger"]},
        "reliable_ack_sources": {"V": "nats"}, "nats": {"url": "nats://127.0.0.1:4222", "name": "fw"},
    })
    config, warnings = parse_config(data, fleet_pki.directory)
    assert warnings == []
    dispatcher = build_dispatchers(config)["nats"]
    assert isinstance(dispatcher, NatsDispatcher) and isinstance(dispatcher, Dispatcher)
    assert dispatcher.namespace == NS and dispatcher._kinds == ("data", "alerts")


@pytest.mark.parametrize(("namespace", "words"), [("", "missing"), ("a b", "subject tokens"), ("a.>", "subject tokens"),
                                                  ("a..b", "subject tokens")])
def test_namespace_must_make_a_subject(fleet_pki: FleetPki, namespace: str, words: str) -> None:
    data = server_config_data(fleet_pki, {"namespace": namespace, "records": {"V": ["nats"]},
                                          "nats": {"url": "nats://127.0.0.1:4222"}})
    config, _ = parse_config(data, fleet_pki.directory)
    with pytest.raises(ConfigError, match=words) as caught:
        build_dispatchers(config)
    assert caught.value.key == "namespace"


# -- subjects and headers, no server -------------------------------------------------


def test_subjects_per_record_type() -> None:
    assert subject(NS, vehicle_data("t")) == f"{NS}.{VIN}.data"
    assert subject("a.b", connectivity("c")) == f"a.b.{VIN}.connectivity"
    odd = vehicle_data("t", vin="5YJ.3 *>")
    assert subject(NS, odd) == f"{NS}.5YJ_3___.data"


def test_headers_are_the_reference_metadata() -> None:
    assert headers(vehicle_data("tx-1"), deduplicate=True) == {
        "vin": VIN, "receivedat": str(T0 * 1000 + 250), "timestamp": "0", "txid": "tx-1", "txtype": "V",
        "version": "0", "device_client_version": "2026.2.3", "Nats-Msg-Id": f"{VIN}:V:tx-1",
    }
    assert "Nats-Msg-Id" not in headers(vehicle_data("tx-1"), deduplicate=False)
    assert "Nats-Msg-Id" not in headers(connectivity("c-1"), deduplicate=True)  # its txid repeats
    assert headers(vehicle_data("a\r\nb"), deduplicate=False)["txid"] == "a  b"


def test_the_wire_header_block_is_the_metadata() -> None:
    for record in (vehicle_data("tx-1"), vehicle_data("a\r\nb"), connectivity("c-1")):
        for dedup in (True, False):
            assert nats_backend.record_header_block(record, dedup) == nats_backend.header_block(headers(record, dedup))


@pytest.mark.parametrize(("pattern", "subj", "expected"), [
    ("t.>", "t.*.data", True), ("t.*.data", "t.*.data", True), ("t.*.*", "t.*.alerts", True),
    ("t.*.data", "t.*.alerts", False), ("t.VIN1.data", "t.*.data", False), (">", "t.*.data", True),
    ("t.*", "t.*.data", False), ("t.>", "t", False), ("t.*.>", "t.*.data", True), ("u.>", "t.*.data", False),
])
def test_stream_subjects_cover(pattern: str, subj: str, expected: bool) -> None:
    assert covers(pattern, subj) is expected
