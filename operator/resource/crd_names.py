"""The FleetTelemetryConfig's names, modes and patterns: what the CRD schema (`crd_schema`),
the spec parser and the handlers must agree on, with no schema code around it."""

from __future__ import annotations

from fleetwire.proto.record_types import RECORD_TYPES as _RECORD_TYPES
from fleetwire.server.dispatchers.registry import BACKENDS

__all__ = [
    "ALERT_TYPES_HINT",
    "CERTIFICATE_MODES",
    "CHALLENGES",
    "DEFAULT_ACME_DIRECTORY",
    "DELIVERY_POLICIES",
    "DISPATCHERS",
    "DNS01_PROVIDERS",
    "DURATION_PATTERN",
    "FIELD_NAME_PATTERN",
    "FLEET_REGIONS",
    "GROUP",
    "HOSTNAME_PATTERN",
    "HTTPS_URL_PATTERN",
    "KIND",
    "PLURAL",
    "RECORD_TYPES",
    "SERVICE_TYPES",
    "SHORT_NAMES",
    "SINGULAR",
    "VERSION",
    "VIN_PATTERN",
]

GROUP = "fleetwire.io"
VERSION = "v1alpha1"
KIND = "FleetTelemetryConfig"
PLURAL = "fleettelemetryconfigs"
SINGULAR = "fleettelemetryconfig"
SHORT_NAMES = ("ftc",)

DEFAULT_ACME_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory"
CERTIFICATE_MODES = ("acme", "secretRef", "privateCA")
SERVICE_TYPES = ("LoadBalancer", "NodePort", "ClusterIP")
DELIVERY_POLICIES = ("latest",)
FLEET_REGIONS = ("na", "eu", "cn")
CHALLENGES = ("http01", "dns01")
DNS01_PROVIDERS = ("cloudflare",)
ALERT_TYPES_HINT = "service"

RECORD_TYPES = tuple(_RECORD_TYPES)
"""Record types the server routes; the server's own configuration check is the final word."""
DISPATCHERS = BACKENDS
"""Dispatcher names the server knows; their settings pass through to its config.json."""

HOSTNAME_PATTERN = r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
"""Lower-case DNS name with at least two labels (vehicles reach a public name, never a bare host).
RE2 syntax: the API server evaluates patterns with Go's regexp, which has no look-ahead."""
VIN_PATTERN = r"^[A-Z0-9]{17}$"
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(h|m|s|ms))+$"
FIELD_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9]*$"
HTTPS_URL_PATTERN = r"^https?://[^\s/]+(/\S*)?$"
