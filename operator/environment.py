"""What the operator learns from its own Deployment: environment variables, read in one place.

Settings that belong to the installation rather than to one FleetTelemetryConfig (which
image servers run, where the HTTP-01 responder listens, how to trust a private ACME
server) come from the operator pod's environment, which the Helm chart sets. Parsing is
pure (`from_env` takes a mapping) so every default and every error is tested without a
process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from fleetwire.image import image_reference

__all__ = [
    "DEFAULT_HTTP01_PORT",
    "DEFAULT_OPERATOR_SELECTOR",
    "DEFAULT_RECONCILE_SECONDS",
    "OperatorEnvironment",
    "SettingError",
    "from_env",
]

DEFAULT_HTTP01_PORT = 8089
"""Unprivileged: the operator runs as non-root without capabilities; a Service maps port 80 here."""

DEFAULT_OPERATOR_SELECTOR: Mapping[str, str] = MappingProxyType(
    {"app.kubernetes.io/name": "fleetwire", "app.kubernetes.io/component": "operator"})
"""Labels of the operator's pods (the chart's), which the HTTP-01 solver Service selects."""

DEFAULT_RECONCILE_SECONDS = 60.0


class SettingError(ValueError):
    """A variable the operator cannot start with; the message names it and the expected form."""


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
    )
