"""The process environment the server reads: read once, at start, into typed values.

Every variable the server itself takes is parsed here, and a bad value is a
`ConfigError` naming the variable, as a bad config key is named. The backends' own
variables (`NATS_PASSWORD`, `AWS_REGION`, `KINESIS_STREAM_<TYPE>`, …) and config values
written `{"env": "<VARIABLE>"}` are read from the same mapping, handed to
`config.parse_config` as `env`; nothing else in `server/` touches `os.environ`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from fleetwire.server.drain import DEFAULT_DRAIN_SECONDS, DRAIN_ENV
from fleetwire.strictjson import ConfigError

__all__ = [
    "DEFAULT_LOG_INTERVAL",
    "DRAIN_ENV",
    "LOG_INTERVAL_ENV",
    "SUPPRESS_ENV",
    "ServerEnvironment",
    "log_interval",
    "parse_drain_seconds",
    "process_environment",
    "read_environment",
    "suppress_logging",
]

SUPPRESS_ENV = "SUPPRESS_TLS_HANDSHAKE_ERROR_LOGGING"
LOG_INTERVAL_ENV = "FLEETWIRE_TLS_HANDSHAKE_LOG_INTERVAL"
DEFAULT_LOG_INTERVAL = 60.0

_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def process_environment() -> Mapping[str, str]:
    """The process's environment: the one place the server reads `os.environ`."""
    return os.environ


def suppress_logging(environ: Mapping[str, str]) -> bool:
    """Whether `SUPPRESS_TLS_HANDSHAKE_ERROR_LOGGING` asks for silence.

    The reference server parses it as a Go boolean and refuses to start on any other
    value; so does this one (an empty value counts as unset). Only the log line is
    suppressed: failures are still counted.
    """
    value = environ.get(SUPPRESS_ENV, "")
    if value == "" or value in _FALSE:
        return False
    if value in _TRUE:
        return True
    raise ValueError(f"{value!r} is not a boolean: use true or false (or 1/0, t/f, TRUE/FALSE, True/False)")


def positive_seconds(value: str, default: float) -> float:
    """A number of seconds from the environment: empty means `default`; else positive and finite."""
    if value == "":
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{value!r} is not a positive number of seconds (default {default:g})")
    return seconds


def log_interval(environ: Mapping[str, str]) -> float:
    """Seconds between two summary lines (`FLEETWIRE_TLS_HANDSHAKE_LOG_INTERVAL`, default 60)."""
    return positive_seconds(environ.get(LOG_INTERVAL_ENV, ""), DEFAULT_LOG_INTERVAL)


def parse_drain_seconds(value: str) -> float:
    """`FLEETWIRE_DRAIN_SECONDS`: the graceful drain's budget (default 20 s)."""
    return positive_seconds(value, DEFAULT_DRAIN_SECONDS)


@dataclass(frozen=True, slots=True)
class ServerEnvironment:
    """What the server takes from its environment, checked."""

    suppress_handshake_logging: bool = False
    """Failed TLS handshakes are counted but not logged (`SUPPRESS_TLS_HANDSHAKE_ERROR_LOGGING`)."""
    handshake_log_interval: float = DEFAULT_LOG_INTERVAL
    """Seconds between two summary lines of failed handshakes (`FLEETWIRE_TLS_HANDSHAKE_LOG_INTERVAL`)."""
    drain_seconds: float = DEFAULT_DRAIN_SECONDS
    """The graceful drain's budget on SIGTERM (`FLEETWIRE_DRAIN_SECONDS`, see `server.drain`)."""


def read_environment(environ: Mapping[str, str] | None = None) -> ServerEnvironment:
    """`environ` (default: the process's) checked; raises ConfigError naming the variable."""
    env = process_environment() if environ is None else environ
    try:
        quiet = suppress_logging(env)
    except ValueError as exc:
        raise ConfigError(SUPPRESS_ENV, str(exc)) from None
    try:
        interval = log_interval(env)
    except ValueError as exc:
        raise ConfigError(LOG_INTERVAL_ENV, str(exc)) from None
    try:
        drain = parse_drain_seconds(env.get(DRAIN_ENV, ""))
    except ValueError as exc:
        raise ConfigError(DRAIN_ENV, str(exc)) from None
    return ServerEnvironment(suppress_handshake_logging=quiet, handshake_log_interval=interval, drain_seconds=drain)
