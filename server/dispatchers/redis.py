"""The redis backend: records published to Redis channels, as the reference does.

Settings are the reference's `redis` section; durations (`publish_timeout`, the pool's
timeouts) are Go `time.Duration` values in its JSON, i.e. integer nanoseconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fleetwire.strictjson import Reader

POOL_KEYS = ("pool_size", "min_idle_conns", "max_idle_conns", "max_active_conns", "read_timeout",
             "write_timeout", "pool_timeout", "conn_max_idle_time", "conn_max_lifetime")


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
    publish_timeout: int = 0
    cluster_mode: bool = False
    publish_vin_topics: bool = False
    subscriber_set_prefix: str = ""


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
    pool: dict[str, int] = {}
    if "pool" in s.data:
        p = s.section("pool")
        p.known(POOL_KEYS)
        pool = {k: p.integer(k, 0, minimum=0) for k in POOL_KEYS if k in p.data}
    return RedisSettings(
        addrs=tuple(s.string_list("addrs")),
        username=s.string("username", ""),
        password=s.string("password", ""),
        db=s.integer("db", 0, minimum=0),
        tls=tls,
        override_tls_server_name=s.boolean("override_tls_server_name", False),
        pool=pool,
        publish_timeout=s.integer("publish_timeout", 0, minimum=0),
        cluster_mode=s.boolean("cluster_mode", False),
        publish_vin_topics=s.boolean("publish_vin_topics", False),
        subscriber_set_prefix=s.string("subscriber_set_prefix", ""),
    )
