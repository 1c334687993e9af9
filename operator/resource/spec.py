"""A FleetTelemetryConfig spec, parsed and checked; the configuration it asks vehicles to run.

The API server checks the CRD schema, but not every cluster enforces it the same way (an
old server, `--validate=false`, a hand-made object), and a schema cannot know the field
catalog. So `parse_spec` checks everything again and reports every problem at once, each
with its dotted path and the expected form, e.g.
``spec.fields.VehicleSpede: unknown field (did you mean 'VehicleSpeed'?)``. The handlers
put that text into the resource's `SpecValid` condition, where `kubectl describe` shows it.

What is accepted but deserves a word (a provisional field, whose number may still change)
is not an error: it comes back in `FleetTelemetrySpec.warnings`, with its path.

`desired_vehicle_config` is a pure function from a parsed spec and the `ca` PEM to the
config object pushed through the Fleet API, in the key names vehicles expect.

This module holds the parsed spec's types; the parser is `spec_parse.parse_spec`, on the
reader helpers of `spec_reader`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from fleetwire.operator.resource import crd


__all__ = [
    "FLEET_API_BASE_URLS",
    "AcmeCertificate",
    "CertificateSource",
    "Dns01Challenge",
    "FieldConfig",
    "FleetApiSpec",
    "FleetTelemetrySpec",
    "PrivateCaCertificate",
    "Rotation",
    "RateLimit",
    "SecretCertificate",
    "SecretKeyRef",
    "ServerSpec",
    "SpecError",
    "desired_vehicle_config",
]

FLEET_API_BASE_URLS: Mapping[str, str] = MappingProxyType({
    "na": "https://fleet-api.prd.na.vn.cloud.tesla.com",
    "eu": "https://fleet-api.prd.eu.vn.cloud.tesla.com",
    "cn": "https://fleet-api.prd.cn.vn.cloud.tesla.cn",
})
"""Fleet API base URL per region (North America and Asia-Pacific share `na`)."""


EMPTY: Mapping[str, Any] = MappingProxyType({})
PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----")




class SpecError(ValueError):
    """A spec the operator cannot act on.

    `path` and `message` name the first problem ("spec.port", "must be an integer ...");
    `problems` holds every (path, message) found, and `str()` joins them all, so one
    status update tells the user everything to fix.
    """

    def __init__(self, path: str, message: str, problems: Sequence[tuple[str, str]] = ()) -> None:
        self.path = path
        self.message = message
        self.problems: tuple[tuple[str, str], ...] = tuple(problems) or ((path, message),)
        super().__init__("; ".join(f"{p}: {m}" for p, m in self.problems))


# -- the parsed spec ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SecretKeyRef:
    """One key of a Secret in the resource's namespace."""

    name: str
    key: str


@dataclass(frozen=True, slots=True)
class EnvVar:
    """One variable of the server container: a plain value, or one key of a Secret."""

    name: str
    value: str = ""
    secret: SecretKeyRef | None = None


@dataclass(frozen=True, slots=True)
class Dns01Challenge:
    """DNS-01 through a provider's API; the token sits in a Secret."""

    provider: str
    zone: str
    api_token: SecretKeyRef


@dataclass(frozen=True, slots=True)
class AcmeCertificate:
    """Issue and renew through ACME; `renew_before` None means after two thirds of the lifetime."""

    directory_url: str = crd.DEFAULT_ACME_DIRECTORY
    email: str | None = None
    challenge: str = "http01"
    dns01: Dns01Challenge | None = None
    renew_before: timedelta | None = None
    root_certificates: str | None = None
    account_secret_name: str | None = None


@dataclass(frozen=True, slots=True)
class SecretCertificate:
    """A kubernetes.io/tls Secret someone else keeps valid (cert-manager, a person)."""

    secret_name: str


@dataclass(frozen=True, slots=True)
class PrivateCaCertificate:
    """A private CA whose root is the vehicles' `ca`; leaves renew without touching vehicles."""

    validity_days: int = 3650
    leaf_validity_days: int = 365


CertificateSource = AcmeCertificate | SecretCertificate | PrivateCaCertificate


@dataclass(frozen=True, slots=True)
class Rotation:
    """How long a staged certificate waits for the vehicles to hold a `ca` accepting it.

    Promoted when every vehicle holds one, else at the earlier of `max_wait` after staging
    and `safety_margin` before the current certificate expires: a parked car syncs when it
    wakes, which owners report takes hours to a day.
    """

    max_wait: timedelta = timedelta(hours=72)
    safety_margin: timedelta = timedelta(hours=12)


@dataclass(frozen=True, slots=True)
class FieldConfig:
    """How often one field is sent, in the vehicles' own key names."""

    interval_seconds: int
    minimum_delta: int | float | None = None
    resend_interval_seconds: int | None = None

    def as_config(self) -> dict[str, int | float]:
        """The per-field object of the vehicle config (unset keys left out)."""
        out: dict[str, int | float] = {"interval_seconds": self.interval_seconds}
        if self.minimum_delta is not None:
            out["minimum_delta"] = self.minimum_delta
        if self.resend_interval_seconds is not None:
            out["resend_interval_seconds"] = self.resend_interval_seconds
        return out


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Per-connection message limit of the server."""

    enabled: bool = False
    message_limit: int | None = None
    message_interval_time: float | None = None


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """The managed server; dispatcher settings pass through to its config.json, credentials
    as `SecretKeyRef`s that the pod mounts."""

    replicas: int = 1
    image: str | None = None
    resources: Mapping[str, Any] = field(default_factory=lambda: EMPTY)
    service_type: str = "LoadBalancer"
    records: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: EMPTY)
    reliable_ack_sources: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    dispatchers: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: EMPTY)
    namespace: str | None = None
    rate_limit: RateLimit | None = None
    vins_allow: tuple[str, ...] = ()
    vins_deny: tuple[str, ...] = ()
    env: tuple[EnvVar, ...] = ()


@dataclass(frozen=True, slots=True)
class FleetApiSpec:
    """Where and as whom the operator calls the Fleet API."""

    base_url: str
    region: str | None
    partner_credentials_secret: str
    user_token_secret: str
    signing_key: SecretKeyRef | None = None
    proxy_url: str | None = None

    @property
    def signed_by_proxy(self) -> bool:
        """True when tesla-http-proxy signs configurations (the operator then sends them unsigned)."""
        return self.proxy_url is not None


@dataclass(frozen=True, slots=True)
class FleetTelemetrySpec:
    """A checked FleetTelemetryConfig spec with the schema's defaults applied."""

    hostname: str
    certificate: CertificateSource
    port: int = 443
    server: ServerSpec = field(default_factory=ServerSpec)
    vehicles: tuple[str, ...] = ()
    fields: Mapping[str, FieldConfig] = field(default_factory=lambda: EMPTY)
    alert_types: tuple[str, ...] = ()
    exp_days: int | None = None
    delivery_policy: str | None = None
    fleet_api: FleetApiSpec | None = None
    rotation: Rotation = field(default_factory=Rotation)
    warnings: tuple[tuple[str, str], ...] = ()
    """(dotted path, message) of what is accepted but may not behave as hoped, e.g. a
    provisional field: for the user to read beside the SpecValid condition, never a reason to refuse."""



# -- the config pushed to vehicles -------------------------------------------------------


def desired_vehicle_config(spec: FleetTelemetrySpec, ca_pem: str, *, issued_at: float | None = None) -> dict[str, Any]:
    """The config object the vehicles should run (Fleet API `fleet_telemetry_config`).

    `ca_pem` is the chain the vehicles verify the server with. `exp` (when the spec sets
    `exp` days) counts from `issued_at` (epoch seconds, default now): pass the time of the
    push being prepared, and compare configs without `exp` when deciding whether a
    vehicle already runs the desired one.
    """
    if not isinstance(ca_pem, str) or not PEM_CERT.search(ca_pem):
        raise ValueError("ca_pem must hold at least one PEM certificate")
    config: dict[str, Any] = {
        "hostname": spec.hostname,
        "port": int(spec.port),
        "ca": ca_pem if ca_pem.endswith("\n") else ca_pem + "\n",
        "fields": {name: spec.fields[name].as_config() for name in sorted(spec.fields)},
    }
    if spec.alert_types:
        config["alert_types"] = list(spec.alert_types)
    if spec.exp_days is not None:
        start = time.time() if issued_at is None else issued_at
        config["exp"] = int(start) + spec.exp_days * 86_400
    if spec.delivery_policy is not None:
        config["delivery_policy"] = spec.delivery_policy
    return config
