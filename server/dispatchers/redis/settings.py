"""The redis backend's settings: the reference's `redis` section of config.json, read and checked.

Durations are Go `time.Duration` values in its JSON (integer nanoseconds; 0: the default);
`REDIS_PASSWORD` in the environment overrides `password` (see `dispatchers.redis`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fleetwire.strictjson import ConfigError, Reader, show

__all__ = ["DEFAULT_PUBLISH_TIMEOUT", "NANOS", "POOL_KEYS", "ClientTls", "RedisSettings", "parse_settings", "split_addr"]

POOL_KEYS = ("pool_size", "min_idle_conns", "max_idle_conns", "max_active_conns", "read_timeout",
             "write_timeout", "pool_timeout", "conn_max_idle_time", "conn_max_lifetime")
_POOL_IGNORED = ("min_idle_conns", "max_idle_conns", "write_timeout", "conn_max_idle_time", "conn_max_lifetime")
NANOS = 1_000_000_000
DEFAULT_PUBLISH_TIMEOUT = 5.0  # seconds, the reference's


@dataclass(frozen=True, slots=True)
class ClientTls:
    """Files for the TLS connection to Redis; `server_cert`/`server_key` are the client's own."""

    ca_file: Path | None = None
    server_cert: Path | None = None
    server_key: Path | None = None


@dataclass(frozen=True, slots=True)
class RedisSettings:
    addrs: tuple[str, ...] = ()
    username: str = ""
    password: str = ""
    db: int = 0
    tls: ClientTls | None = None
    override_tls_server_name: bool = False
    pool: Mapping[str, int] = field(default_factory=dict)
    publish_timeout: int = 0  # nanoseconds
    cluster_mode: bool = False
    publish_vin_topics: bool = False
    subscriber_set_prefix: str = ""

    @property
    def cluster(self) -> bool:
        return self.cluster_mode or len(self.addrs) > 1

    def seconds(self, nanos: int | None, default: float | None) -> float | None:
        return default if not nanos else nanos / NANOS

    @property
    def publish_timeout_s(self) -> float:
        return self.seconds(self.publish_timeout, DEFAULT_PUBLISH_TIMEOUT) or DEFAULT_PUBLISH_TIMEOUT


def split_addr(addr: str) -> tuple[str, int]:
    """"host:port" (or "[v6]:port"; the port defaults to 6379) → (host, port)."""
    host, sep, port = addr.rpartition(":")
    if not sep or "]" in port:
        host, port = addr, "6379"
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(addr)
    return host, int(port)


def parse_settings(s: Reader, env: Mapping[str, str], in_use: bool) -> RedisSettings:
    s.known(("addrs", "username", "password", "db", "tls", "override_tls_server_name", "pool",
             "publish_timeout", "cluster_mode", "publish_vin_topics", "subscriber_set_prefix"))
    tls: ClientTls | None = None
    if "tls" in s.data:
        t = s.section("tls")
        t.known(("ca_file", "server_cert", "server_key"))
        read = t.existing_file if in_use else t.file_path
        tls = ClientTls(read("ca_file", required=False), read("server_cert", required=False),
                        read("server_key", required=False))
        if (tls.server_cert is None) != (tls.server_key is None):
            missing = "server_key" if tls.server_key is None else "server_cert"
            raise ConfigError(t.key(missing), "missing: the client certificate needs both server_cert and server_key")
    pool: dict[str, int] = {}
    if "pool" in s.data:
        p = s.section("pool")
        p.known(POOL_KEYS)
        pool = {k: p.integer(k, 0, minimum=0) for k in POOL_KEYS if k in p.data}
        for k in _POOL_IGNORED:
            if pool.get(k):
                s.warnings.append(f"{p.key(k)}: has no effect here (the Redis client has no idle-connection "
                                  "limits, lifetimes or write timeout); accepted for compatibility")
    addrs = tuple(s.string_list("addrs"))
    for i, addr in enumerate(addrs):
        try:
            split_addr(addr)
        except ValueError:
            raise ConfigError(f"{s.key('addrs')}[{i}]", f'expected "host:port", got {show(addr)}') from None
    password = s.secret("password", "")
    if "REDIS_PASSWORD" in env:
        password = env["REDIS_PASSWORD"]
    settings = RedisSettings(
        addrs=addrs,
        username=s.string("username", ""),
        password=password,
        db=s.integer("db", 0, minimum=0),
        tls=tls,
        override_tls_server_name=s.boolean("override_tls_server_name", False),
        pool=pool,
        publish_timeout=s.integer("publish_timeout", 0, minimum=0),
        cluster_mode=s.boolean("cluster_mode", False),
        publish_vin_topics=s.boolean("publish_vin_topics", False),
        subscriber_set_prefix=s.string("subscriber_set_prefix", ""),
    )
    if in_use:
        if not addrs:
            raise ConfigError(s.key("addrs"), 'missing: expected the Redis addresses, e.g. ["redis:6379"]')
        if not settings.publish_vin_topics and not settings.subscriber_set_prefix:
            raise ConfigError(s.path, "redis requires publish_vin_topics or subscriber_set_prefix: set "
                              f'"{s.key("publish_vin_topics")}": true or a "{s.key("subscriber_set_prefix")}", '
                              "otherwise no record is published")
        if settings.cluster and settings.db:
            raise ConfigError(s.key("db"), "a Redis Cluster has database 0 only (cluster_mode or several addrs)")
    return settings
