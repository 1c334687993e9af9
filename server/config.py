"""The server configuration: the reference server's `config.json`, read strictly.

A configuration written for the reference server loads unchanged. Unlike the
reference, nothing is silently ignored: an unknown key produces a warning (with a
close-match suggestion), and a wrong value raises `ConfigError` naming the key and the
expected form, so the user can fix the file without reading code.

Extensions of this project live in top-level keys the reference does not use:

- ``vins: {"allow": [...], "deny": [...]}`` — VIN allow/deny list (deny wins; an empty
  allow list allows every VIN not denied).
- ``dispatch: {"queue_size", "batch_size", "lossy", "close_timeout_seconds"}`` — the
  per-dispatcher queue between the vehicles and a backend; dispatchers named in
  ``lossy`` drop records when their queue is full instead of pausing the vehicles.
- ``tls.reload_interval_seconds`` — how often the certificate files are checked for a
  renewal (0 turns hot reload off).
- ``nats: {...}`` — settings of the NATS dispatcher, kept as given.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RECORD_TYPES: tuple[str, ...] = ("V", "alerts", "errors", "connectivity")
"""Record types a vehicle (or the server, for connectivity) produces."""

KNOWN_DISPATCHERS: tuple[str, ...] = ("logger", "mqtt", "redis", "kafka", "kinesis", "pubsub", "zmq", "nats")
"""Dispatcher names a configuration may use; `registry` says which this build has."""

LOG_LEVELS: tuple[str, ...] = ("trace", "debug", "info", "warn", "warning", "error", "fatal", "panic")

# Defaults of the reference server, kept so that its configurations behave the same.
DEFAULT_HOST = "0.0.0.0"
DEFAULT_PORT = 443
DEFAULT_RATE_LIMIT_MESSAGES = 1000
DEFAULT_RATE_LIMIT_INTERVAL_SECONDS = 30.0
DEFAULT_TLS_RELOAD_SECONDS = 10.0
DEFAULT_QUEUE_SIZE = 10_000
DEFAULT_BATCH_SIZE = 256
DEFAULT_CLOSE_TIMEOUT_SECONDS = 5.0


class ConfigError(Exception):
    """A configuration the server cannot run with.

    `key` is the dotted path of the offending key ("mqtt.qos", "records.V"), or ""
    for the file as a whole; the message names it and the expected form.
    """

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}" if key else message)


# -- the configuration ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """Server certificate and key; `ca_file` is the client-CA bundle (None: not given)."""

    server_cert: Path
    server_key: Path
    ca_file: Path | None = None
    reload_interval_seconds: float = DEFAULT_TLS_RELOAD_SECONDS


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """At most `message_limit` messages per connection per `message_interval_time` seconds.

    The reference never reads the interval (so its limiter never trips); here the
    interval counts, with the reference's example values as defaults.
    """

    enabled: bool = False
    message_limit: int = DEFAULT_RATE_LIMIT_MESSAGES
    message_interval_time: float = DEFAULT_RATE_LIMIT_INTERVAL_SECONDS


@dataclass(frozen=True, slots=True)
class MqttConfig:
    """MQTT dispatcher settings; defaults are the reference's."""

    broker: str
    client_id: str = ""
    username: str = ""
    password: str = ""
    topic_base: str = ""
    qos: int = 0
    retained: bool = False
    connect_timeout_ms: int = 30_000
    publish_timeout_ms: int = 2_500
    disconnect_timeout_ms: int = 250
    connect_retry_interval_ms: int = 10_000
    keep_alive_seconds: int = 30

    def address(self) -> BrokerAddress:
        return parse_broker(self.broker)


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where the MQTT broker listens: `transport` is "tcp" or "websockets"."""

    host: str
    port: int
    tls: bool = False
    transport: str = "tcp"


@dataclass(frozen=True, slots=True)
class ClientTlsConfig:
    """Files for a client-side TLS connection to a backend (all optional)."""

    ca_file: Path | None = None
    server_cert: Path | None = None
    server_key: Path | None = None


@dataclass(frozen=True, slots=True)
class RedisConfig:
    """Redis dispatcher settings, as the reference reads them.

    `publish_timeout` and the duration entries of `pool` are Go durations in the
    reference's JSON, i.e. nanoseconds; they are kept as given.
    """

    addrs: tuple[str, ...] = ()
    username: str = ""
    password: str = ""
    db: int = 0
    tls: ClientTlsConfig | None = None
    override_tls_server_name: bool = False
    pool: Mapping[str, int] = field(default_factory=dict)
    publish_timeout: int = 0
    cluster_mode: bool = False
    publish_vin_topics: bool = False
    subscriber_set_prefix: str = ""


@dataclass(frozen=True, slots=True)
class KinesisConfig:
    max_retries: int | None = None
    override_host: str = ""
    streams: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PubsubConfig:
    gcp_project_id: str = ""


@dataclass(frozen=True, slots=True)
class ZmqConfig:
    addr: str = ""
    server_key_json_path: Path | None = None
    allowed_public_keys_json_path: Path | None = None
    verbose: bool = False


@dataclass(frozen=True, slots=True)
class StatsdConfig:
    host: str = ""
    prefix: str = ""
    sample_rate: int = 100
    flush_period: int = 0


@dataclass(frozen=True, slots=True)
class MonitoringConfig:
    """Metrics and profiling endpoints; a port of None (or 0 in the file) is off."""

    prometheus_metrics_port: int | None = None
    prometheus_metrics_host: str = ""
    profiler_port: int | None = None
    profiler_host: str = ""
    profiling_path: str = ""
    statsd: StatsdConfig | None = None


@dataclass(frozen=True, slots=True)
class LoggerConfig:
    verbose: bool = False


@dataclass(frozen=True, slots=True)
class VinPolicy:
    """Which VINs may connect: deny wins; an empty allow list allows all others."""

    allow: frozenset[str] = frozenset()
    deny: frozenset[str] = frozenset()

    def allows(self, vin: str) -> bool:
        if vin in self.deny:
            return False
        return not self.allow or vin in self.allow


@dataclass(frozen=True, slots=True)
class DispatchConfig:
    """The queue in front of every dispatcher (see `dispatchers.base.DispatchQueue`)."""

    queue_size: int = DEFAULT_QUEUE_SIZE
    batch_size: int = DEFAULT_BATCH_SIZE
    lossy: frozenset[str] = frozenset()
    close_timeout_seconds: float = DEFAULT_CLOSE_TIMEOUT_SECONDS


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything the server reads from its configuration file.

    `records` maps a record type to the dispatchers it goes to, in file order;
    `reliable_ack_sources` maps a record type to the dispatcher whose confirmation the
    vehicle's ack waits for. Sections of dispatchers that are not configured are None.
    """

    tls: TlsConfig
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    status_port: int | None = None
    use_default_eng_ca: bool = False
    namespace: str = ""
    records: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    reliable_ack_sources: Mapping[str, str] = field(default_factory=dict)
    transmit_decoded_records: bool = False
    rate_limit: RateLimitConfig = RateLimitConfig()
    mqtt: MqttConfig | None = None
    redis: RedisConfig | None = None
    kafka: Mapping[str, Any] | None = None
    kinesis: KinesisConfig | None = None
    pubsub: PubsubConfig | None = None
    zmq: ZmqConfig | None = None
    nats: Mapping[str, Any] | None = None
    monitoring: MonitoringConfig = MonitoringConfig()
    logger: LoggerConfig = LoggerConfig()
    log_level: str = "info"
    json_log_enable: bool = False
    vins: VinPolicy = VinPolicy()
    dispatch: DispatchConfig = DispatchConfig()

    def dispatchers_in_use(self) -> tuple[str, ...]:
        """Every dispatcher some record type goes to, in first-use order."""
        seen: dict[str, None] = {}
        for names in self.records.values():
            for name in names:
                seen.setdefault(name)
        return tuple(seen)


# -- loading -------------------------------------------------------------------------


def load_config(path: str | Path) -> tuple[ServerConfig, list[str]]:
    """Read and check a configuration file; relative paths inside it are relative to it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read the configuration file {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            "", f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    return parse_config(data, path.resolve().parent)


def parse_config(data: Any, base_dir: Path) -> tuple[ServerConfig, list[str]]:
    """Check a decoded configuration; returns it with the warnings worth showing the user."""
    root = _Reader(data, "", [], base_dir)
    root.known(_TOP_LEVEL_KEYS)
    warnings = root.warnings

    if "reliable_ack" in root.data:
        warnings.append(
            "reliable_ack: has no effect (the reference server ignores it too); list the record "
            "types whose ack must wait for a backend under reliable_ack_sources, "
            'e.g. "reliable_ack_sources": {"V": "kafka"}'
        )
    if root.data.get("use_default_eng_ca") is True:
        warnings.append(
            "use_default_eng_ca: fleetwire embeds no Tesla CA, so this switches nothing; put the "
            "engineering CA (config/files/eng_ca.crt of the reference server's repository) in tls.ca_file"
        )
    for ignored in ("vins_signal_tracking_enabled", "airbrake"):
        if ignored in root.data:
            warnings.append(f"{ignored}: accepted for compatibility with the reference server; has no effect here")

    records = _records(root)
    in_use = {name for names in records.values() for name in names}
    dispatch = _dispatch(root, in_use)
    reliable = _reliable_ack_sources(root, records, dispatch)

    mqtt = _mqtt(root) if "mqtt" in root.data else None
    redis = _redis(root, check_files="redis" in in_use) if "redis" in root.data else None
    kafka = _kafka(root) if "kafka" in root.data else None
    kinesis = _kinesis(root) if "kinesis" in root.data else None
    pubsub = _pubsub(root) if "pubsub" in root.data else None
    zmq = _zmq(root, check_files="zmq" in in_use) if "zmq" in root.data else None
    nats = dict(root.section("nats").data) if "nats" in root.data else None
    sections: dict[str, object | None] = {
        "mqtt": mqtt, "redis": redis, "kafka": kafka, "kinesis": kinesis, "pubsub": pubsub,
        "zmq": zmq, "nats": nats,
    }
    for name in sorted(in_use):
        if name in sections and sections[name] is None:
            users = ", ".join(rt for rt, names in records.items() if name in names)
            raise ConfigError(name, f"missing: records of type {users} go to the '{name}' dispatcher, "
                              f"which needs a \"{name}\" section")
    if mqtt is not None and not mqtt.topic_base:
        warnings.append("mqtt.topic_base: empty, so topics start with '/' (as in the reference server); "
                        'set it, e.g. "telemetry"')

    log_level = root.string("log_level", "info").lower()
    if log_level not in LOG_LEVELS:
        raise ConfigError("log_level", f"expected one of {', '.join(LOG_LEVELS)}, got {log_level!r}"
                          + _suggest(log_level, LOG_LEVELS))

    config = ServerConfig(
        tls=_tls(root),
        host=root.string("host", DEFAULT_HOST),
        port=root.port("port", DEFAULT_PORT) or DEFAULT_PORT,
        status_port=root.port("status_port", None),
        use_default_eng_ca=root.boolean("use_default_eng_ca", False),
        namespace=root.string("namespace", ""),
        records=records,
        reliable_ack_sources=reliable,
        transmit_decoded_records=root.boolean("transmit_decoded_records", False),
        rate_limit=_rate_limit(root),
        mqtt=mqtt,
        redis=redis,
        kafka=kafka,
        kinesis=kinesis,
        pubsub=pubsub,
        zmq=zmq,
        nats=nats,
        monitoring=_monitoring(root),
        logger=_logger(root),
        log_level=log_level,
        json_log_enable=root.boolean("json_log_enable", False),
        vins=_vins(root),
        dispatch=dispatch,
    )
    return config, warnings


def parse_broker(broker: str) -> BrokerAddress:
    """Read an MQTT broker address: "host:port", or with a scheme (tcp, mqtt, ssl, tls,
    mqtts, ws, wss) as the reference's client accepts; the port defaults by scheme."""
    schemes = {
        "tcp": (False, "tcp", 1883), "mqtt": (False, "tcp", 1883),
        "ssl": (True, "tcp", 8883), "tls": (True, "tcp", 8883), "mqtts": (True, "tcp", 8883),
        "ws": (False, "websockets", 80), "wss": (True, "websockets", 443),
    }
    expected = "expected \"host:port\" or \"scheme://host:port\" (scheme tcp, mqtt, ssl, tls, mqtts, ws or wss)"
    scheme, sep, rest = broker.partition("://")
    if not sep:
        scheme, rest = "tcp", broker
    if scheme.lower() not in schemes:
        raise ConfigError("mqtt.broker", f"{expected}, got {_show(broker)}")
    tls, transport, default_port = schemes[scheme.lower()]
    rest = rest.split("/", 1)[0]
    if rest.startswith("["):  # IPv6 literal
        host, _, tail = rest[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port_text = rest.rpartition(":") if ":" in rest else (rest, "", "")
    if not host:
        raise ConfigError("mqtt.broker", f"{expected}, got {_show(broker)}")
    if not port_text:
        return BrokerAddress(host, default_port, tls, transport)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError("mqtt.broker", f"{expected}, got {_show(broker)} (bad port {port_text!r})")
    return BrokerAddress(host, int(port_text), tls, transport)


# -- sections ------------------------------------------------------------------------

_TOP_LEVEL_KEYS = (
    "host", "port", "status_port", "tls", "use_default_eng_ca", "namespace", "records",
    "reliable_ack_sources", "reliable_ack", "transmit_decoded_records", "rate_limit", "kafka",
    "kinesis", "pubsub", "zmq", "mqtt", "redis", "monitoring", "logger", "log_level",
    "json_log_enable", "vins_signal_tracking_enabled", "airbrake",
    # extensions of this project
    "vins", "dispatch", "nats",
)


def _records(root: _Reader) -> dict[str, tuple[str, ...]]:
    section = root.section("records", required=False)
    records: dict[str, tuple[str, ...]] = {}
    for record_type in section.data:
        key = section.key(record_type)
        if record_type not in RECORD_TYPES:
            raise ConfigError(key, f"unknown record type {record_type!r}; expected one of "
                              f"{', '.join(RECORD_TYPES)}" + _suggest(record_type, RECORD_TYPES))
        names = section.string_list(record_type)
        unique: dict[str, None] = {}
        for name in names:
            if name not in KNOWN_DISPATCHERS:
                raise ConfigError(key, f"unknown dispatcher {name!r}; expected one of "
                                  f"{', '.join(KNOWN_DISPATCHERS)}" + _suggest(name, KNOWN_DISPATCHERS))
            if name in unique:
                root.warnings.append(f"{key}: dispatcher {name!r} is listed twice; records go to it once")
            unique.setdefault(name)
        for name in unique:
            from fleetwire.server.dispatchers.registry import unavailable_reason

            reason = unavailable_reason(name)
            if reason is not None:
                raise ConfigError(key, f"dispatcher {name!r} is not available in this build ({reason})")
        records[record_type] = tuple(unique)
    if not records:
        root.warnings.append("records: no record type is routed to a dispatcher; vehicles' records are acked "
                             'and discarded (add e.g. "records": {"V": ["logger"]})')
    return records


def _reliable_ack_sources(
    root: _Reader, records: Mapping[str, tuple[str, ...]], dispatch: DispatchConfig
) -> dict[str, str]:
    section = root.section("reliable_ack_sources", required=False)
    result: dict[str, str] = {}
    for record_type in section.data:
        key = section.key(record_type)
        name = section.string(record_type, "")
        if record_type not in RECORD_TYPES:
            raise ConfigError(key, f"unknown record type {record_type!r}; expected one of "
                              f"{', '.join(RECORD_TYPES)}" + _suggest(record_type, RECORD_TYPES))
        if record_type == "connectivity":
            raise ConfigError(key, "connectivity records are produced by the server itself and never acked; "
                              "remove this entry")
        if name == "logger":
            raise ConfigError(key, "the logger stores nothing, so it cannot confirm records; "
                              "name a backend such as kafka, mqtt or redis")
        configured = [n for n in records.get(record_type, ()) if n != "logger"]
        if name not in configured:
            where = (f"records.{record_type} lists {', '.join(repr(n) for n in configured)}" if configured
                     else f"records.{record_type} lists no backend")
            raise ConfigError(key, f"expected one of the dispatchers configured for {record_type!r}, got "
                              f"{name!r} ({where})")
        if name in dispatch.lossy:
            raise ConfigError(key, f"dispatcher {name!r} is listed in dispatch.lossy, so it may drop records "
                              "and cannot confirm them; remove it from dispatch.lossy or choose another")
        result[record_type] = name
    return result


def _tls(root: _Reader) -> TlsConfig:
    if "tls" not in root.data:
        raise ConfigError("tls", 'missing: the server only speaks mutual TLS; expected '
                          '{"server_cert": "...", "server_key": "...", "ca_file": "..."}')
    s = root.section("tls")
    s.known(("server_cert", "server_key", "ca_file", "reload_interval_seconds"))
    return TlsConfig(
        server_cert=s.required_file("server_cert"),
        server_key=s.required_file("server_key"),
        ca_file=s.existing_file("ca_file", required=False),
        reload_interval_seconds=s.number("reload_interval_seconds", DEFAULT_TLS_RELOAD_SECONDS, minimum=0),
    )


def _rate_limit(root: _Reader) -> RateLimitConfig:
    s = root.section("rate_limit", required=False)
    s.known(("enabled", "message_limit", "message_interval_time"))
    return RateLimitConfig(
        enabled=s.boolean("enabled", False),
        message_limit=s.integer("message_limit", DEFAULT_RATE_LIMIT_MESSAGES, minimum=1),
        message_interval_time=s.number(
            "message_interval_time", DEFAULT_RATE_LIMIT_INTERVAL_SECONDS, minimum=0, exclusive=True
        ),
    )


def _mqtt(root: _Reader) -> MqttConfig:
    s = root.section("mqtt")
    s.known(("broker", "client_id", "username", "password", "topic_base", "qos", "retained",
             "connect_timeout_ms", "publish_timeout_ms", "disconnect_timeout_ms",
             "connect_retry_interval_ms", "keep_alive_seconds"))
    broker = s.string("broker", "")
    if not broker:
        raise ConfigError("mqtt.broker", 'missing: expected the broker address, e.g. "localhost:1883"')
    parse_broker(broker)
    qos = s.data.get("qos", 0)
    if type(qos) is not int or qos not in (0, 1, 2):
        raise ConfigError("mqtt.qos", f"expected an integer 0, 1 or 2, got {_show(qos)}")
    # A zero means "default" in the reference, so it does here too.
    return MqttConfig(
        broker=broker,
        client_id=s.string("client_id", ""),
        username=s.string("username", ""),
        password=s.string("password", ""),
        topic_base=s.string("topic_base", "").rstrip("/"),
        qos=qos,
        retained=s.boolean("retained", False),
        connect_timeout_ms=s.integer("connect_timeout_ms", 0, minimum=0) or 30_000,
        publish_timeout_ms=s.integer("publish_timeout_ms", 0, minimum=0) or 2_500,
        disconnect_timeout_ms=s.integer("disconnect_timeout_ms", 0, minimum=0) or 250,
        connect_retry_interval_ms=s.integer("connect_retry_interval_ms", 0, minimum=0) or 10_000,
        keep_alive_seconds=s.integer("keep_alive_seconds", 0, minimum=0) or 30,
    )


def _redis(root: _Reader, check_files: bool) -> RedisConfig:
    s = root.section("redis")
    s.known(("addrs", "username", "password", "db", "tls", "override_tls_server_name", "pool",
             "publish_timeout", "cluster_mode", "publish_vin_topics", "subscriber_set_prefix"))
    tls: ClientTlsConfig | None = None
    if "tls" in s.data:
        t = s.section("tls")
        t.known(("ca_file", "server_cert", "server_key"))
        read = t.existing_file if check_files else t.file_path
        tls = ClientTlsConfig(read("ca_file", required=False), read("server_cert", required=False),
                              read("server_key", required=False))
    pool: dict[str, int] = {}
    if "pool" in s.data:
        p = s.section("pool")
        pool_keys = ("pool_size", "min_idle_conns", "max_idle_conns", "max_active_conns", "read_timeout",
                     "write_timeout", "pool_timeout", "conn_max_idle_time", "conn_max_lifetime")
        p.known(pool_keys)
        pool = {k: p.integer(k, 0, minimum=0) for k in pool_keys if k in p.data}
    return RedisConfig(
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


def _kafka(root: _Reader) -> dict[str, Any]:
    """librdkafka properties, passed through; only their values' JSON types are checked."""
    s = root.section("kafka")
    for name, value in s.data.items():
        if not isinstance(value, (str, int, float, bool)):
            raise ConfigError(s.key(name), f"expected a string, number or boolean librdkafka property value, "
                              f"got {_show(value, s.key(name))}")
    return dict(s.data)


def _kinesis(root: _Reader) -> KinesisConfig:
    s = root.section("kinesis")
    s.known(("max_retries", "override_host", "streams"))
    streams: dict[str, str] = {}
    if "streams" in s.data:
        st = s.section("streams")
        for record_type in st.data:
            if record_type not in RECORD_TYPES:
                root.warnings.append(f"{st.key(record_type)}: not a record type (expected one of "
                                     f"{', '.join(RECORD_TYPES)}){_suggest(record_type, RECORD_TYPES)}")
            streams[record_type] = st.string(record_type, "")
    return KinesisConfig(
        max_retries=s.integer("max_retries", None, minimum=0),
        override_host=s.string("override_host", ""),
        streams=streams,
    )


def _pubsub(root: _Reader) -> PubsubConfig:
    s = root.section("pubsub")
    s.known(("gcp_project_id",))
    return PubsubConfig(gcp_project_id=s.string("gcp_project_id", ""))


def _zmq(root: _Reader, check_files: bool) -> ZmqConfig:
    s = root.section("zmq")
    s.known(("addr", "server_key_json_path", "allowed_public_keys_json_path", "verbose"))
    read = s.existing_file if check_files else s.file_path
    return ZmqConfig(
        addr=s.string("addr", ""),
        server_key_json_path=read("server_key_json_path", required=False),
        allowed_public_keys_json_path=read("allowed_public_keys_json_path", required=False),
        verbose=s.boolean("verbose", False),
    )


def _monitoring(root: _Reader) -> MonitoringConfig:
    s = root.section("monitoring", required=False)
    s.known(("prometheus_metrics_port", "prometheus_metrics_host", "profiler_port", "profiler_host",
             "profiling_path", "statsd"))
    statsd: StatsdConfig | None = None
    if "statsd" in s.data:
        st = s.section("statsd")
        st.known(("host", "prefix", "sample_rate", "flush_period"))
        statsd = StatsdConfig(
            host=st.string("host", ""),
            prefix=st.string("prefix", ""),
            sample_rate=st.integer("sample_rate", 100, minimum=0, maximum=100),
            flush_period=st.integer("flush_period", 0, minimum=0),
        )
    return MonitoringConfig(
        prometheus_metrics_port=s.port("prometheus_metrics_port", None, zero_is_off=True),
        prometheus_metrics_host=s.string("prometheus_metrics_host", ""),
        profiler_port=s.port("profiler_port", None, zero_is_off=True),
        profiler_host=s.string("profiler_host", ""),
        profiling_path=s.string("profiling_path", ""),
        statsd=statsd,
    )


def _logger(root: _Reader) -> LoggerConfig:
    s = root.section("logger", required=False)
    s.known(("verbose",))
    return LoggerConfig(verbose=s.boolean("verbose", False))


def _vins(root: _Reader) -> VinPolicy:
    s = root.section("vins", required=False)
    s.known(("allow", "deny"))
    allow = frozenset(v.strip() for v in s.string_list("allow"))
    deny = frozenset(v.strip() for v in s.string_list("deny"))
    for vin in sorted(allow & deny):
        root.warnings.append(f"vins: {vin!r} is both allowed and denied; deny wins")
    return VinPolicy(allow=allow, deny=deny)


def _dispatch(root: _Reader, in_use: set[str]) -> DispatchConfig:
    s = root.section("dispatch", required=False)
    s.known(("queue_size", "batch_size", "lossy", "close_timeout_seconds"))
    lossy = s.string_list("lossy")
    for name in lossy:
        if name not in KNOWN_DISPATCHERS:
            raise ConfigError("dispatch.lossy", f"unknown dispatcher {name!r}; expected one of "
                              f"{', '.join(KNOWN_DISPATCHERS)}" + _suggest(name, KNOWN_DISPATCHERS))
        if name not in in_use:
            root.warnings.append(f"dispatch.lossy: {name!r} is not used by any record type")
    return DispatchConfig(
        queue_size=s.integer("queue_size", DEFAULT_QUEUE_SIZE, minimum=1),
        batch_size=s.integer("batch_size", DEFAULT_BATCH_SIZE, minimum=1),
        lossy=frozenset(lossy),
        close_timeout_seconds=s.number("close_timeout_seconds", DEFAULT_CLOSE_TIMEOUT_SECONDS, minimum=0),
    )


# -- reading helpers -----------------------------------------------------------------


# Keys whose values are credentials: an error names them and their type, never the value.
_SECRET_KEY = re.compile(r"passw|secret|token|credential|private|key\.pem|jaas", re.IGNORECASE)
# A value longer than this is never echoed: a pasted token, key or certificate is long.
_SHOWN_MAX = 120


def _looks_secret(text: str) -> bool:
    return "-----BEGIN" in text or "PRIVATE KEY" in text or "\n" in text


def _show(value: Any, key: str = "") -> str:
    """A value as the user wrote it, for one error line, unless it may be a secret.

    A value under a credential's key, text that looks like key material, and anything
    long are described (type and length), never printed: error messages end up in
    terminals, CI logs and issue reports.
    """
    kind = {str: "a string", bool: "a boolean", int: "a number", float: "a number", list: "a list",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)
    if key and _SECRET_KEY.search(key):
        return f"{kind} (not shown: {key} holds a secret)"
    if isinstance(value, str):
        if _looks_secret(value):
            return f"text of {len(value)} characters that looks like key or certificate material (not shown)"
        if len(value) > _SHOWN_MAX:
            return f"a string of {len(value)} characters (not shown)"
        return repr(value)
    text = json.dumps(value, default=str)
    if len(text) > _SHOWN_MAX or _looks_secret(text):
        return f"{kind} of {len(text)} characters as JSON (not shown)"
    return text


def _suggest(word: str, candidates: Iterable[str]) -> str:
    """ " (did you mean 'x'?)" for a close match, else "". Case differences count as close."""
    candidates = list(candidates)
    for c in candidates:
        if c.lower() == word.lower():
            return f" (did you mean {c!r}?)"
    lowered = {c.lower(): c for c in candidates}
    match = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean {lowered[match[0]]!r}?)" if match else ""


class _Reader:
    """Typed access to one JSON object of the configuration, with dotted-path errors."""

    __slots__ = ("data", "path", "warnings", "base_dir")

    def __init__(self, data: Any, path: str, warnings: list[str], base_dir: Path) -> None:
        if not isinstance(data, dict):
            raise ConfigError(path, f"expected an object {{...}}, got {_show(data)}")
        self.data: dict[str, Any] = data
        self.path = path
        self.warnings = warnings
        self.base_dir = base_dir

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def known(self, names: Iterable[str]) -> None:
        names = tuple(names)
        for name in self.data:
            if name not in names:
                self.warnings.append(f"{self.key(name)}: unknown key, ignored" + _suggest(name, names))

    def section(self, name: str, required: bool = True) -> _Reader:
        value = self.data.get(name)
        if value is None:
            if required:
                raise ConfigError(self.key(name), "missing: expected an object {...}")
            value = {}
        return _Reader(value, self.key(name), self.warnings, self.base_dir)

    def string(self, name: str, default: str) -> str:
        value = self.data.get(name, default)
        if not isinstance(value, str):
            raise ConfigError(self.key(name), f"expected a string, got {_show(value, self.key(name))}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.data.get(name, default)
        if not isinstance(value, bool):
            raise ConfigError(self.key(name), f"expected true or false, got {_show(value, self.key(name))}")
        return value

    def integer(
        self, name: str, default: Any, minimum: int | None = None, maximum: int | None = None
    ) -> Any:
        value = self.data.get(name, default)
        if value is None and default is None:
            return None
        bounds = ""
        if minimum is not None and maximum is not None:
            bounds = f" from {minimum} to {maximum}"
        elif minimum is not None:
            bounds = f" of at least {minimum}"
        if type(value) is not int or (minimum is not None and value < minimum) or (
            maximum is not None and value > maximum
        ):
            raise ConfigError(self.key(name), f"expected an integer{bounds}, got {_show(value, self.key(name))}")
        return value

    def number(self, name: str, default: float, minimum: float | None = None, exclusive: bool = False) -> float:
        value = self.data.get(name, default)
        ok = type(value) in (int, float) and math.isfinite(value)
        if ok and minimum is not None:
            ok = value > minimum if exclusive else value >= minimum
        if not ok:
            bound = "" if minimum is None else f" {'greater than' if exclusive else 'of at least'} {minimum:g}"
            raise ConfigError(self.key(name), f"expected a number{bound}, got {_show(value, self.key(name))}")
        return float(value)

    def port(self, name: str, default: int | None, zero_is_off: bool = False) -> int | None:
        value = self.data.get(name, default)
        if value is None:
            return None
        if zero_is_off and value == 0 and type(value) is int:
            return None
        if type(value) is not int or not 0 < value < 65536:
            off = " (0 turns it off)" if zero_is_off else ""
            raise ConfigError(self.key(name), f"expected a port number from 1 to 65535{off}, got {_show(value, self.key(name))}")
        return value

    def string_list(self, name: str) -> list[str]:
        value = self.data.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(self.key(name), f"expected a list of strings [\"...\"], got {_show(value, self.key(name))}")
        return value

    def file_path(self, name: str, required: bool) -> Path | None:
        value = self.string(name, "")
        if not value:
            if required:
                raise ConfigError(self.key(name), "missing: expected the path of a file")
            return None
        if _looks_secret(value) or len(value) > _SHOWN_MAX or "\0" in value:
            # The content of a key or certificate pasted where its path belongs.
            raise ConfigError(self.key(name), f"expected the path of a file, got {_show(value)}")
        return (self.base_dir / Path(value).expanduser()).resolve()

    def existing_file(self, name: str, required: bool) -> Path | None:
        path = self.file_path(name, required)
        if path is None:
            return None
        try:
            is_file, exists = path.is_file(), path.exists()
        except OSError as exc:  # a name too long for the file system, a loop of links
            raise ConfigError(self.key(name), f"cannot read {path}: {exc.strerror}") from None
        if not is_file:
            raise ConfigError(self.key(name), f"{'is not a file' if exists else 'file not found'}: {path}")
        return path

    def required_file(self, name: str) -> Path:
        path = self.existing_file(name, required=True)
        if path is None:  # `path` raised already; this keeps the type exact
            raise ConfigError(self.key(name), "missing: expected the path of a file")
        return path
