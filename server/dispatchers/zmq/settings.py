"""The zmq backend's settings: the `zmq` section of config.json, read and checked, with the
CURVE key files it names (read only when zmq is in use).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from fleetwire.strictjson import ConfigError, Reader, show

__all__ = ["Z85_ALPHABET", "ZmqSettings", "is_z85_key", "parse_settings", "read_allowed_keys", "read_server_key"]

Z85_ALPHABET = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#")
_ADDR = re.compile(r"^(?:tcp://(?P<host>\[[^\]]*\]|[^:/]+):(?P<port>\*|\d+)|ipc://.+|inproc://.+)$")


@dataclass(frozen=True, slots=True)
class ZmqSettings:
    addr: str = ""
    server_key_json_path: Path | None = None
    allowed_public_keys_json_path: Path | None = None
    verbose: bool = False
    send_hwm: int = 10_000
    publish_timeout_ms: int = 5000
    # From the key files (read only when zmq is in use); z85 text.
    server_secret_key: bytes = field(default=b"", repr=False)
    server_public_key: bytes = b""
    allowed_public_keys: frozenset[bytes] | None = None


def is_z85_key(text: Any) -> bool:
    """A CURVE key as z85 text: 40 characters of the z85 alphabet (32 bytes)."""
    return isinstance(text, str) and len(text) == 40 and set(text) <= Z85_ALPHABET


def _load_json(path: Path, key: str, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError):
        # The decoder's message quotes the text near the error: a key's characters.
        raise ConfigError(key, f"{path} is not JSON; expected {what}") from None


def read_server_key(path: Path, key: str) -> tuple[bytes, bytes]:
    """(secret, public) z85 keys from a `{"secret": "<z85>", "public": "<z85>"}` file,
    the public key checked against the secret."""
    expected = '{"secret": "<40 z85 characters>", "public": "<40 z85 characters>"}'
    data = _load_json(path, key, expected)
    if not isinstance(data, dict):
        raise ConfigError(key, f"{path}: expected {expected}")
    secret, public = data.get("secret"), data.get("public")
    if not is_z85_key(secret):
        state = "missing" if secret is None else "not a z85-encoded CURVE key (40 characters)"
        raise ConfigError(key, f"{path}: \"secret\" is {state}; expected {expected} (not shown: it holds a secret)")
    derived = zmq.curve_public(secret.encode())
    if public is None:
        return secret.encode(), derived
    if not is_z85_key(public):
        raise ConfigError(key, f"{path}: \"public\" is not a z85-encoded CURVE key (40 characters)")
    if public.encode() != derived:
        raise ConfigError(key, f"{path}: \"public\" is not the public key of \"secret\" (a key pair from "
                          "zmq.curve_keypair() or zmq_curve_keypair has both)")
    return secret.encode(), derived


def read_allowed_keys(path: Path, key: str) -> frozenset[bytes]:
    """The z85 client public keys listed in a JSON list."""
    data = _load_json(path, key, 'a list of z85 public keys ["<40 z85 characters>", ...]')
    if not isinstance(data, list):
        raise ConfigError(key, f'{path}: expected a list of z85 public keys ["<40 z85 characters>", ...], '
                          f"got {show(data) if not isinstance(data, dict) else 'an object'}")
    if not data:
        raise ConfigError(key, f"{path}: the list is empty, so no client could connect; list the clients' "
                          "public keys, or leave allowed_public_keys_json_path empty to let any client in")
    for n, entry in enumerate(data):
        if not is_z85_key(entry):
            raise ConfigError(key, f"{path}: entry {n} is not a z85-encoded CURVE public key (40 characters)")
    return frozenset(entry.encode() for entry in data)


def parse_settings(s: Reader, env: Mapping[str, str], in_use: bool) -> ZmqSettings:
    s.known(("addr", "server_key_json_path", "allowed_public_keys_json_path", "verbose", "send_hwm",
             "publish_timeout_ms"))
    addr = s.string("addr", "")
    if in_use and not addr:
        raise ConfigError(s.key("addr"), 'missing: expected the address to bind, e.g. "tcp://*:5284"')
    if addr and not _ADDR.match(addr):
        raise ConfigError(s.key("addr"), 'expected "tcp://<interface>:<port>" (e.g. "tcp://*:5284"), '
                          f'"ipc://<path>" or "inproc://<name>", got {show(addr)}')
    match = _ADDR.match(addr) if addr else None
    if match and match["port"] and match["port"] != "*" and not 0 < int(match["port"]) < 65536:
        raise ConfigError(s.key("addr"), f"expected a port number from 1 to 65535, got {show(addr)}")
    read = s.existing_file if in_use else s.file_path
    server_key_path = read("server_key_json_path", required=False)
    allowed_path = read("allowed_public_keys_json_path", required=False)
    if allowed_path is not None and server_key_path is None:
        raise ConfigError(s.key("allowed_public_keys_json_path"), "needs server_key_json_path: client keys are "
                          "checked by CURVE, which the server's key pair turns on")
    secret = public = b""
    allowed: frozenset[bytes] | None = None
    if in_use and server_key_path is not None:
        if not zmq.has("curve"):
            raise ConfigError(s.key("server_key_json_path"), "this build of libzmq has no CURVE support")
        secret, public = read_server_key(server_key_path, s.key("server_key_json_path"))
        if allowed_path is not None:
            allowed = read_allowed_keys(allowed_path, s.key("allowed_public_keys_json_path"))
    return ZmqSettings(
        addr=addr,
        server_key_json_path=server_key_path,
        allowed_public_keys_json_path=allowed_path,
        verbose=s.boolean("verbose", False),
        send_hwm=s.integer("send_hwm", 10_000, minimum=1),
        publish_timeout_ms=s.integer("publish_timeout_ms", 5000, minimum=1),
        server_secret_key=secret,
        server_public_key=public,
        allowed_public_keys=allowed,
    )
