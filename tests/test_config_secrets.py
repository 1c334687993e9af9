"""Bad TLS settings: a clear error that names the key and the file, never a secret, never a traceback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fleetwire.server.config import ConfigError, parse_config

from fleetwire.pki import Bundle, make_ca, make_server_cert, write_pem

KEY_LINES = 3  # lines of a PEM key body checked for in every error


@pytest.fixture(scope="module")
def ca() -> Bundle:
    return make_ca("Secrets Test CA")


@pytest.fixture(scope="module")
def leaf(ca: Bundle) -> Bundle:
    return make_server_cert(ca, ["telemetry.example.com"])


def _key_fragments(bundle: Bundle) -> list[str]:
    body = [line for line in bundle.key_pem.decode().splitlines() if line and not line.startswith("-----")]
    return [line[:20] for line in body[:KEY_LINES]]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(folder: Path, **tls: Any) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": _free_port(),
        "tls": {"server_cert": "server.crt", "server_key": "server.key", "ca_file": "ca.pem", **tls},
        "records": {"V": ["logger"]},
    }


def _error(data: dict[str, Any], folder: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(data, folder)
    return info.value


def _placeholders(folder: Path) -> None:
    for name in ("server.crt", "server.key", "ca.pem"):
        (folder / name).write_text("unread\n")


def test_a_key_pasted_instead_of_a_path_is_never_echoed(tmp_path: Path, leaf: Bundle) -> None:
    _placeholders(tmp_path)
    data = _config(tmp_path, server_key=leaf.key_pem.decode())
    error = _error(data, tmp_path)
    text = str(error)
    assert error.key == "tls.server_key"
    assert "expected the path of a file" in text and "not shown" in text
    assert "PRIVATE KEY" not in text and "BEGIN" not in text
    for fragment in _key_fragments(leaf):
        assert fragment not in text


def test_a_long_value_is_never_echoed(tmp_path: Path) -> None:
    _placeholders(tmp_path)
    token = "eyJ" + "A" * 400  # a token pasted where a path belongs
    error = _error(_config(tmp_path, ca_file=token), tmp_path)
    assert error.key == "tls.ca_file" and token[:30] not in str(error) and "403 characters" in str(error)


@pytest.mark.parametrize(
    ("section", "settings", "key"),
    [
        ("mqtt", {"broker": "localhost:1883", "password": 1234567890}, "mqtt.password"),
        ("redis", {"addrs": ["localhost:6379"], "password": ["hunter2-secret"], "publish_vin_topics": True},
         "redis.password"),
        ("kafka", {"bootstrap.servers": "k:9092", "sasl.password": {"value": "hunter2-secret"}}, "kafka.sasl.password"),
    ],
)
def test_a_secret_of_the_wrong_type_is_named_not_shown(
    tmp_path: Path, section: str, settings: dict[str, Any], key: str
) -> None:
    _placeholders(tmp_path)
    data = _config(tmp_path)
    data[section] = settings
    data["records"] = {"V": [section]} if section == "mqtt" else {"V": ["logger"]}
    error = _error(data, tmp_path)
    assert error.key == key
    assert "1234567890" not in str(error) and "hunter2" not in str(error)
    assert "not shown" in str(error)


def _serve(folder: Path, data: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    config = folder / "config.json"
    config.write_text(json.dumps(data))
    return subprocess.run(
        [sys.executable, "-P", "-m", "fleetwire.cli", "serve", "--config", str(config)],
        capture_output=True, text=True, timeout=60,
    )


def _write_tls(folder: Path, cert: bytes, key: bytes, ca_pem: bytes) -> None:
    write_pem(folder / "server.crt", cert)
    write_pem(folder / "server.key", key, private=True)
    (folder / "ca.pem").write_bytes(ca_pem)


@pytest.mark.parametrize(
    ("case", "key", "needle"),
    [
        ("cert_not_a_certificate", "tls.server_cert", "holds no PEM certificate"),
        ("key_not_a_key", "tls.server_key", "holds no PEM private key"),
        ("key_does_not_match", "tls.server_key", "does not match the certificate"),
        ("ca_not_pem", "tls.ca_file", "holds no PEM certificate"),
        ("cert_and_key_swapped", "tls.server_cert", "holds no PEM certificate"),
    ],
)
def test_bad_certificate_files_stop_serve_with_a_clear_error(
    tmp_path: Path, ca: Bundle, leaf: Bundle, case: str, key: str, needle: str
) -> None:
    cert, private, ca_pem = leaf.cert_pem, leaf.key_pem, ca.cert_pem
    if case == "cert_not_a_certificate":
        cert = b"this is not a certificate\n"
    elif case == "key_not_a_key":
        private = leaf.cert_pem
    elif case == "key_does_not_match":
        private = make_server_cert(ca, ["other.example.com"]).key_pem
    elif case == "ca_not_pem":
        ca_pem = b"\x30\x82\x01\x0a binary DER or junk"
    elif case == "cert_and_key_swapped":
        cert, private = private, cert
    _write_tls(tmp_path, cert, private, ca_pem)
    result = _serve(tmp_path, _config(tmp_path))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "SSLError" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert key in lines[0] and needle in lines[0]
    filename = {"tls.server_cert": "server.crt", "tls.server_key": "server.key", "tls.ca_file": "ca.pem"}[key]
    assert str(tmp_path / filename) in lines[0]
    for fragment in _key_fragments(leaf):
        assert fragment not in result.stderr


def test_a_credential_can_stay_out_of_the_file(tmp_path: Path) -> None:
    """`{"file": ...}` (a mounted Secret) or `{"env": ...}` instead of the password itself."""
    _placeholders(tmp_path)
    (tmp_path / "mqtt-password").write_text("s3cret-from-a-secret\n")
    data = _config(tmp_path)
    data["records"] = {"V": ["mqtt"]}
    data["mqtt"] = {"broker": "localhost:1883", "password": {"file": "mqtt-password"}}
    config, _ = parse_config(data, tmp_path)
    assert config.backend("mqtt").password == "s3cret-from-a-secret"

    data["mqtt"]["password"] = {"env": "BROKER_PASSWORD"}
    config, _ = parse_config(data, tmp_path, env={"BROKER_PASSWORD": "from-env"})
    assert config.backend("mqtt").password == "from-env"

    error = _error(data, tmp_path)  # parse_config's default env is the process's, without it
    assert error.key == "mqtt.password" and "'BROKER_PASSWORD'" in str(error) and "not set" in str(error)

    data["mqtt"]["password"] = {"file": "absent"}
    assert _error(data, tmp_path).key == "mqtt.password.file"
    data["mqtt"]["password"] = {"value": "hunter2-secret"}
    error = _error(data, tmp_path)
    assert error.key == "mqtt.password" and "hunter2" not in str(error) and '{"file": "<path>"}' in str(error)


def test_a_path_may_be_written_as_a_file_reference(tmp_path: Path) -> None:
    _placeholders(tmp_path)
    data = _config(tmp_path, ca_file={"file": "ca.pem"})
    config, _ = parse_config(data, tmp_path)
    assert config.tls.ca_file == tmp_path / "ca.pem"
