"""The nats backend's settings: the ``"nats"`` section of config.json, read and checked.

Settings (the ``"nats"`` section; `url` and `name` as in the community fork)::

    "nats": {
      "url": "nats://nats:4222",          // or a list, or "nats://a:4222,nats://b:4222" (a cluster)
      "name": "fleetwire",                // the connection's name, shown by the server
      "user": "", "password": "",         // or "token": "", or "creds_file": "/path/user.creds"
      "tls": {"ca_file": "", "cert_file": "", "key_file": ""},   // or a tls:// url
      "jetstream": true,                  // false: core NATS, no persistence
      "stream": "",                       // JetStream stream to use or create (default: the namespace)
      "deduplicate": true,                // Nats-Msg-Id from VIN, type and txid
      "connect_timeout_ms": 2000, "publish_timeout_ms": 5000,
      "reconnect_initial_ms": 100, "reconnect_max_ms": 5000
    }

`NATS_PASSWORD` and `NATS_TOKEN` in the environment override `password` and `token`.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from fleetwire.server.dispatchers.nats.layout import UNSAFE_TOKEN
from fleetwire.strictjson import ConfigError, Reader, show

__all__ = ["SCHEMES", "NatsSettings", "NatsTls", "check_namespace", "parse_settings", "redact", "tls_context"]

SCHEMES = ("nats", "tls", "ws", "wss")


@dataclass(frozen=True, slots=True)
class NatsTls:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True, slots=True)
class NatsSettings:
    servers: tuple[str, ...] = ()
    name: str = "fleetwire"
    user: str = ""
    password: str = ""
    token: str = ""
    creds_file: Path | None = None
    tls: NatsTls | None = None
    jetstream: bool = True
    stream: str = ""
    deduplicate: bool = True
    connect_timeout_ms: int = 2000
    publish_timeout_ms: int = 5000
    reconnect_initial_ms: int = 100
    reconnect_max_ms: int = 5000

    @property
    def uses_tls(self) -> bool:
        return self.tls is not None or any(s.startswith(("tls://", "wss://")) for s in self.servers)


def redact(url: str) -> str:
    """`url` without the password or token it may carry (`nats://user:***@host:4222`)."""
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    if "@" not in parts.netloc:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
    masked = f"{user}:***" if user else "***"
    return f"{parts.scheme}://{masked}@{host}{parts.path}"


def _server_url(text: str, key: str) -> str:
    text = text.strip()
    expected = 'expected "nats://host:port" (scheme nats, tls, ws or wss; port 4222 by default)'
    shown = repr(redact(text)) if len(text) <= 200 and "\n" not in text else show(text)
    url = text if "://" in text else f"nats://{text}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError(key, f"{expected}, got {shown} (bad port)") from None
    if parts.scheme.lower() not in SCHEMES:
        raise ConfigError(key, f"{expected}, got {shown}")
    if not parts.hostname:
        raise ConfigError(key, f"{expected}, got {shown} (no host)")
    if port == 0:
        raise ConfigError(key, f"{expected}, got {shown} (bad port)")
    return url


def parse_settings(s: Reader, env: Mapping[str, str], in_use: bool) -> NatsSettings:
    s.known(("url", "name", "user", "password", "token", "creds_file", "tls", "jetstream", "stream",
             "deduplicate", "connect_timeout_ms", "publish_timeout_ms", "reconnect_initial_ms",
             "reconnect_max_ms"))
    url_key = s.key("url")
    raw = s.data.get("url", "")
    if isinstance(raw, str):
        entries = [part for part in raw.split(",") if part.strip()]
    elif isinstance(raw, list) and all(isinstance(u, str) for u in raw):
        entries = [part for u in raw for part in u.split(",") if part.strip()]
    else:
        raise ConfigError(url_key, "expected a server URL (\"nats://host:4222\") or a list of them, "
                          f"got {show(raw, url_key)}")
    if not entries and in_use:
        raise ConfigError(url_key, 'missing: expected the NATS server, e.g. "nats://nats:4222" '
                          "(a list or a comma-separated string for a cluster)")
    servers = tuple(_server_url(entry, url_key) for entry in entries)

    password = env.get("NATS_PASSWORD") or s.string("password", "")
    token = env.get("NATS_TOKEN") or s.string("token", "")
    user = s.string("user", "")
    if password and not user:
        raise ConfigError(s.key("user"), "missing: a password is set (nats.password or NATS_PASSWORD) "
                          "but no user; set nats.user")
    if token and user:
        raise ConfigError(s.key("token"), "a token and a user are both set; NATS takes one way of "
                          "logging in: keep either nats.token or nats.user/password")
    read = s.existing_file if in_use else s.file_path
    creds_file = read("creds_file", required=False)
    if creds_file is not None and (user or token):
        raise ConfigError(s.key("creds_file"), "a credentials file and a user or token are both set; "
                          "keep one way of logging in")

    tls: NatsTls | None = None
    if "tls" in s.data:
        t = s.section("tls")
        t.known(("ca_file", "cert_file", "key_file"))
        tread = t.existing_file if in_use else t.file_path
        tls = NatsTls(tread("ca_file", required=False), tread("cert_file", required=False),
                      tread("key_file", required=False))
        if (tls.cert_file is None) != (tls.key_file is None):
            missing = "key_file" if tls.key_file is None else "cert_file"
            raise ConfigError(t.key(missing), "missing: a client certificate needs both cert_file and key_file")

    stream = s.string("stream", "")
    if stream and not _valid_stream_name(stream):
        raise ConfigError(s.key("stream"), f"expected a JetStream stream name (no spaces, '.', '*', '>', "
                          f"'/' or '\\'), got {show(stream)}")
    initial = s.integer("reconnect_initial_ms", 100, minimum=1)
    return NatsSettings(
        servers=servers,
        name=s.string("name", "fleetwire"),
        user=user,
        password=password,
        token=token,
        creds_file=creds_file,
        tls=tls,
        jetstream=s.boolean("jetstream", True),
        stream=stream,
        deduplicate=s.boolean("deduplicate", True),
        connect_timeout_ms=s.integer("connect_timeout_ms", 2000, minimum=1),
        publish_timeout_ms=s.integer("publish_timeout_ms", 5000, minimum=1),
        reconnect_initial_ms=initial,
        reconnect_max_ms=s.integer("reconnect_max_ms", max(5000, initial), minimum=initial),
    )


def _valid_stream_name(name: str) -> bool:
    return bool(name) and re.search(r"[\s.*>/\\]", name) is None


def check_namespace(namespace: str) -> str:
    """The subject prefix: `namespace` if it is one or more valid subject tokens."""
    if not namespace:
        raise ConfigError("namespace", 'missing: the nats dispatcher publishes to "<namespace>.<VIN>.<kind>"; '
                          'set it, e.g. "namespace": "tesla_telemetry"')
    if any(not token or UNSAFE_TOKEN.search(token) for token in namespace.split(".")):
        raise ConfigError("namespace", f"expected NATS subject tokens separated by '.' (no spaces, '*' or '>') "
                          f"for the nats dispatcher, got {show(namespace)}")
    return namespace


def tls_context(settings: NatsSettings) -> ssl.SSLContext | None:
    """The client TLS context, or None for a plain connection."""
    if not settings.uses_tls:
        return None
    tls = settings.tls or NatsTls()
    try:
        context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError("nats.tls.ca_file", f"cannot load CA certificates from {tls.ca_file}: "
                          f"{getattr(exc, 'reason', None) or exc.strerror or exc}") from None
    if tls.cert_file is not None and tls.key_file is not None:
        try:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError("nats.tls.cert_file", f"cannot load the client certificate {tls.cert_file} with "
                              f"key {tls.key_file}: {getattr(exc, 'reason', None) or exc.strerror or exc}") from None
    return context
