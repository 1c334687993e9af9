"""What the operator learns from its own Deployment: environment variables, read in one place.

Settings that belong to the installation rather than to one FleetTelemetryConfig (which
image servers run, where the HTTP-01 responder listens, how to trust a private ACME
server) come from the operator pod's environment, which the Helm chart sets. Every
`FLEETWIRE_*` variable the operator reads is read here, and nowhere else: the vehicle
daemons' batch sizes and cadences (`FLEETWIRE_VEHICLES_<FIELD>`, `VehicleSettings`) too.
Parsing is pure (`from_env` takes a mapping) so every default and every error is tested
without a process; an error names the variable and the expected form.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from fleetwire.image import image_reference

__all__ = [
    "DEFAULT_HTTP01_PORT",
    "DEFAULT_OPERATOR_SELECTOR",
    "DEFAULT_RECONCILE_SECONDS",
    "DEFAULT_VEHICLES_CA_CHECK_SECONDS",
    "OperatorEnvironment",
    "SettingError",
    "VehicleSettings",
    "from_env",
]

DEFAULT_HTTP01_PORT = 8089
"""Unprivileged: the operator runs as non-root without capabilities; a Service maps port 80 here."""

DEFAULT_OPERATOR_SELECTOR: Mapping[str, str] = MappingProxyType(
    {"app.kubernetes.io/name": "fleetwire", "app.kubernetes.io/component": "operator"})
"""Labels of the operator's pods (the chart's), which the HTTP-01 solver Service selects."""

DEFAULT_RECONCILE_SECONDS = 60.0
DEFAULT_VEHICLES_CA_CHECK_SECONDS = 5.0
"""Longest sleep between vehicle passes: a TLS Secret someone else manages (secretRef) is not watched."""


class SettingError(ValueError):
    """A variable the operator cannot start with; the message names it and the expected form."""


@dataclass(frozen=True)
class VehicleSettings:
    """The vehicle reconciler's batch sizes, concurrency and cadences; the defaults suit Tesla's
    service, tests shorten them."""

    status_batch: int = 100  # VINs per fleet_status call (the API's limit)
    push_batch: int = 100  # VINs per push call
    concurrency: int = 8  # Fleet API calls in flight, all kinds together
    rate: float = 0.0  # Fleet API calls started per second at most (0: no pacing beyond `concurrency`)
    probes_per_batch: int = 2  # vehicles of each push batch polled before the others
    poll_first: float = 5.0  # seconds from a push to the first look at its probes
    poll_most: float = 600.0  # longest gap between looks at a syncing vehicle
    member_wait: float = 8.0  # the rest of a batch is read after this many `poll_first`s at the latest
    drift_every: float = 6 * 3600.0  # re-read an applied vehicle's config (drift, freed slots)
    recheck_every: float = 3600.0  # fleet_status again for vehicles skipped by the pre-flight
    firmware_every: float = 86_400.0  # fleet_status again for vehicles too old for a configured field
    errors_fast: float = 10.0  # telemetry errors while vehicles sync or fail
    errors_slow: float = 300.0  # telemetry errors when all is quiet
    error_quiet: float = 300.0  # a connection error not repeated for this long is over
    retry_after_failure: float = 30.0  # next push attempt after a failed one
    idle: float = 300.0  # longest sleep between passes
    jitter: float = 0.1  # spread of the slow schedules, so reads do not bunch up

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> VehicleSettings:
        """Defaults overridden by `FLEETWIRE_VEHICLES_<FIELD>` variables (e.g.
        `FLEETWIRE_VEHICLES_PUSH_BATCH=50`); a value that is not a positive number (zero for
        `rate` and `jitter`) is refused with the variable's name (`SettingError`)."""
        values: dict[str, Any] = {}
        for name, default in cls().__dict__.items():
            variable = f"FLEETWIRE_VEHICLES_{name.upper()}"
            text = env.get(variable, "").strip()
            if not text:
                continue
            try:
                value = type(default)(text)
            except ValueError:
                value = -1
            if not value > 0 and not (name in ("rate", "jitter") and value == 0):
                raise SettingError(f"{variable}: expected a positive {type(default).__name__}, got {text!r}")
            values[name] = value
        return cls(**values)


@dataclass(frozen=True, slots=True)
class OperatorEnvironment:
    """Installation-wide settings.

    `namespace` is the operator's own (None outside a pod): an HTTP-01 solver Service can
    only select operator pods in its own namespace. `acme_ca_bundle` trusts a private ACME
    server's TLS certificate; `acme_roots_url` is a pebble-style endpoint (`/roots/0`)
    where such a CA publishes the root it never puts into chains; `cloudflare_api_url`
    points DNS-01 at a proxy of Cloudflare's API.
    """

    image: str
    namespace: str | None = None
    http01_port: int = DEFAULT_HTTP01_PORT
    http01_service: bool = True
    operator_selector: Mapping[str, str] = field(default_factory=lambda: DEFAULT_OPERATOR_SELECTOR)
    acme_ca_bundle: str | None = None
    acme_roots_url: str | None = None
    cloudflare_api_url: str | None = None
    reconcile_seconds: float = DEFAULT_RECONCILE_SECONDS
    vehicles: VehicleSettings = field(default_factory=VehicleSettings)
    vehicles_ca_check_seconds: float = DEFAULT_VEHICLES_CA_CHECK_SECONDS


def _port(name: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise SettingError(f"{name}: expected a port number from 1 to 65535, got {text!r}")
    return int(text)


def _boolean(name: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise SettingError(f"{name}: expected true or false, got {text!r}")


def _selector(name: str, text: str) -> Mapping[str, str]:
    labels: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise SettingError(f"{name}: expected key=value pairs separated by commas, got {text!r}")
        labels[key.strip()] = value.strip()
    if not labels:
        raise SettingError(f"{name}: empty; a Service without a selector reaches no pod")
    return MappingProxyType(labels)


def _seconds(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise SettingError(f"{name}: expected a number of seconds greater than 0, got {text!r}")
    return value


def from_env(env: Mapping[str, str] | None = None) -> OperatorEnvironment:
    """Read the settings (from `os.environ` by default); raises `SettingError`."""
    env = os.environ if env is None else env

    def text(name: str) -> str | None:
        value = env.get(name, "").strip()
        return value or None

    port = text("FLEETWIRE_ACME_HTTP01_PORT")
    service = text("FLEETWIRE_ACME_HTTP01_SERVICE")
    selector = text("FLEETWIRE_OPERATOR_SELECTOR")
    interval = text("FLEETWIRE_RECONCILE_SECONDS")
    ca_check = text("FLEETWIRE_VEHICLES_CA_CHECK_SECONDS")
    return OperatorEnvironment(
        image=text("FLEETWIRE_IMAGE") or image_reference(),
        namespace=text("POD_NAMESPACE"),
        http01_port=_port("FLEETWIRE_ACME_HTTP01_PORT", port) if port else DEFAULT_HTTP01_PORT,
        http01_service=_boolean("FLEETWIRE_ACME_HTTP01_SERVICE", service) if service else True,
        operator_selector=_selector("FLEETWIRE_OPERATOR_SELECTOR", selector) if selector
        else DEFAULT_OPERATOR_SELECTOR,
        acme_ca_bundle=text("FLEETWIRE_ACME_CA_BUNDLE"),
        acme_roots_url=text("FLEETWIRE_ACME_ROOTS_URL"),
        cloudflare_api_url=text("FLEETWIRE_CLOUDFLARE_API_URL"),
        reconcile_seconds=_seconds("FLEETWIRE_RECONCILE_SECONDS", interval) if interval else DEFAULT_RECONCILE_SECONDS,
        vehicles=VehicleSettings.from_env(env),
        vehicles_ca_check_seconds=_seconds("FLEETWIRE_VEHICLES_CA_CHECK_SECONDS", ca_check) if ca_check
        else DEFAULT_VEHICLES_CA_CHECK_SECONDS,
    )
