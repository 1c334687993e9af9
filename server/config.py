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
- ``nats: {...}`` — settings of the NATS dispatcher.

Each backend's own section is read by its module (see `dispatchers.registry`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetwire.proto.record_types import RECORD_TYPES
from fleetwire.server.environment import process_environment
from fleetwire.server.dispatchers.registry import BACKENDS, parse_backend_settings, unavailable_reason
from fleetwire.strictjson import ConfigError, Reader, suggest


KNOWN_DISPATCHERS = BACKENDS
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
    """The queue in front of every dispatcher (see `dispatch_queue.DispatchQueue`)."""

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
    backends: Mapping[str, Any] = field(default_factory=dict)
    monitoring: MonitoringConfig = MonitoringConfig()
    log_level: str = "info"
    json_log_enable: bool = False
    vins: VinPolicy = VinPolicy()
    dispatch: DispatchConfig = DispatchConfig()

    def backend(self, name: str) -> Any:
        """The settings the backend `name` read from its section (see `dispatchers.registry`)."""
        try:
            return self.backends[name]
        except KeyError:
            raise ConfigError(name, f"missing: the '{name}' dispatcher needs a \"{name}\" section") from None

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


def parse_config(
    data: Any, base_dir: Path, env: Mapping[str, str] | None = None
) -> tuple[ServerConfig, list[str]]:
    """Check a decoded configuration; returns it with the warnings worth showing the user.

    `env` is the environment some backends and `{"env": ...}` secrets read (default: the
    process's, see `environment`).
    """
    root = Reader(data, "", [], base_dir, process_environment() if env is None else env)
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

    users: dict[str, list[str]] = {}
    for record_type, names in records.items():
        for name in names:
            users.setdefault(name, []).append(record_type)
    backends = parse_backend_settings(root, users, root.env)

    log_level = root.string("log_level", "info").lower()
    if log_level not in LOG_LEVELS:
        raise ConfigError("log_level", f"expected one of {', '.join(LOG_LEVELS)}, got {log_level!r}"
                          + suggest(log_level, LOG_LEVELS))

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
        backends=backends,
        monitoring=_monitoring(root),
        log_level=log_level,
        json_log_enable=root.boolean("json_log_enable", False),
        vins=_vins(root),
        dispatch=dispatch,
    )
    return config, warnings


# -- sections ------------------------------------------------------------------------

_TOP_LEVEL_KEYS = (
    "host", "port", "status_port", "tls", "use_default_eng_ca", "namespace", "records",
    "reliable_ack_sources", "reliable_ack", "transmit_decoded_records", "rate_limit", "kafka",
    "kinesis", "pubsub", "zmq", "mqtt", "redis", "monitoring", "logger", "log_level",
    "json_log_enable", "vins_signal_tracking_enabled", "airbrake",
    # extensions of this project
    "vins", "dispatch", "nats",
)


def _records(root: Reader) -> dict[str, tuple[str, ...]]:
    section = root.section("records", required=False)
    records: dict[str, tuple[str, ...]] = {}
    for record_type in section.data:
        key = section.key(record_type)
        if record_type not in RECORD_TYPES:
            raise ConfigError(key, f"unknown record type {record_type!r}; expected one of "
                              f"{', '.join(RECORD_TYPES)}" + suggest(record_type, RECORD_TYPES))
        names = section.string_list(record_type)
        unique: dict[str, None] = {}
        for name in names:
            if name not in KNOWN_DISPATCHERS:
                raise ConfigError(key, f"unknown dispatcher {name!r}; expected one of "
                                  f"{', '.join(KNOWN_DISPATCHERS)}" + suggest(name, KNOWN_DISPATCHERS))
            if name in unique:
                root.warnings.append(f"{key}: dispatcher {name!r} is listed twice; records go to it once")
            unique.setdefault(name)
        for name in unique:
            reason = unavailable_reason(name)
            if reason is not None:
                raise ConfigError(key, f"dispatcher {name!r} is not available in this build ({reason})")
        records[record_type] = tuple(unique)
    if not records:
        root.warnings.append("records: no record type is routed to a dispatcher; vehicles' records are acked "
                             'and discarded (add e.g. "records": {"V": ["logger"]})')
    return records


def _reliable_ack_sources(
    root: Reader, records: Mapping[str, tuple[str, ...]], dispatch: DispatchConfig
) -> dict[str, str]:
    section = root.section("reliable_ack_sources", required=False)
    result: dict[str, str] = {}
    for record_type in section.data:
        key = section.key(record_type)
        name = section.string(record_type, "")
        if record_type not in RECORD_TYPES:
            raise ConfigError(key, f"unknown record type {record_type!r}; expected one of "
                              f"{', '.join(RECORD_TYPES)}" + suggest(record_type, RECORD_TYPES))
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


def _tls(root: Reader) -> TlsConfig:
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


def _rate_limit(root: Reader) -> RateLimitConfig:
    s = root.section("rate_limit", required=False)
    s.known(("enabled", "message_limit", "message_interval_time"))
    return RateLimitConfig(
        enabled=s.boolean("enabled", False),
        message_limit=s.integer("message_limit", DEFAULT_RATE_LIMIT_MESSAGES, minimum=1),
        message_interval_time=s.number(
            "message_interval_time", DEFAULT_RATE_LIMIT_INTERVAL_SECONDS, minimum=0, exclusive=True
        ),
    )


def _monitoring(root: Reader) -> MonitoringConfig:
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


def _vins(root: Reader) -> VinPolicy:
    s = root.section("vins", required=False)
    s.known(("allow", "deny"))
    allow = frozenset(v.strip() for v in s.string_list("allow"))
    deny = frozenset(v.strip() for v in s.string_list("deny"))
    for vin in sorted(allow & deny):
        root.warnings.append(f"vins: {vin!r} is both allowed and denied; deny wins")
    return VinPolicy(allow=allow, deny=deny)


def _dispatch(root: Reader, in_use: set[str]) -> DispatchConfig:
    s = root.section("dispatch", required=False)
    s.known(("queue_size", "batch_size", "lossy", "close_timeout_seconds"))
    lossy = s.string_list("lossy")
    for name in lossy:
        if name not in KNOWN_DISPATCHERS:
            raise ConfigError("dispatch.lossy", f"unknown dispatcher {name!r}; expected one of "
                              f"{', '.join(KNOWN_DISPATCHERS)}" + suggest(name, KNOWN_DISPATCHERS))
        if name not in in_use:
            root.warnings.append(f"dispatch.lossy: {name!r} is not used by any record type")
    return DispatchConfig(
        queue_size=s.integer("queue_size", DEFAULT_QUEUE_SIZE, minimum=1),
        batch_size=s.integer("batch_size", DEFAULT_BATCH_SIZE, minimum=1),
        lossy=frozenset(lossy),
        close_timeout_seconds=s.number("close_timeout_seconds", DEFAULT_CLOSE_TIMEOUT_SECONDS, minimum=0),
    )
