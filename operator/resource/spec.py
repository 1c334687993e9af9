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
"""

from __future__ import annotations

import difflib
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from fleetwire.operator.resource import crd
from fleetwire.proto import catalog
from fleetwire.strictjson import SECRET_KEY

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
    "parse_duration",
    "parse_spec",
]

FLEET_API_BASE_URLS: Mapping[str, str] = MappingProxyType({
    "na": "https://fleet-api.prd.na.vn.cloud.tesla.com",
    "eu": "https://fleet-api.prd.eu.vn.cloud.tesla.com",
    "cn": "https://fleet-api.prd.cn.vn.cloud.tesla.cn",
})
"""Fleet API base URL per region (North America and Asia-Pacific share `na`)."""

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_HOSTNAME = re.compile(crd.HOSTNAME_PATTERN)
_VIN = re.compile(crd.VIN_PATTERN)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_URL = re.compile(crd.HTTPS_URL_PATTERN)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----")


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
    resources: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    service_type: str = "LoadBalancer"
    records: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: _EMPTY)
    reliable_ack_sources: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    dispatchers: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: _EMPTY)
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
    fields: Mapping[str, FieldConfig] = field(default_factory=lambda: _EMPTY)
    alert_types: tuple[str, ...] = ()
    exp_days: int | None = None
    delivery_policy: str | None = None
    fleet_api: FleetApiSpec | None = None
    rotation: Rotation = field(default_factory=Rotation)
    warnings: tuple[tuple[str, str], ...] = ()
    """(dotted path, message) of what is accepted but may not behave as hoped, e.g. a
    provisional field: for the user to read beside the SpecValid condition, never a reason to refuse."""


# -- parsing -----------------------------------------------------------------------------


def parse_duration(text: str) -> timedelta:
    """A Go-style duration ("720h", "1h30m", "90s", "250ms") as a timedelta."""
    if not isinstance(text, str) or not text or _DURATION_PART.sub("", text):
        raise ValueError(f"expected a duration such as 720h or 1h30m, got {text!r}")
    seconds = sum(float(n) * _DURATION_UNITS[unit] for n, unit in _DURATION_PART.findall(text))
    return timedelta(seconds=seconds)


def _suggest(word: str, candidates: Iterable[str]) -> str:
    candidates = list(candidates)
    folded = {c.casefold(): c for c in candidates}
    match = folded.get(word.casefold()) or next(iter(difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)), None)
    return f" (did you mean {match!r}?)" if match else ""


def _show(value: Any) -> str:
    return f"the string {value!r}" if isinstance(value, str) else f"{type(value).__name__} {value!r}"


class _Parser:
    """Walks the spec, collecting every problem instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []
        self.warnings: list[tuple[str, str]] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append((path, message))

    def warn(self, path: str, message: str) -> None:
        """Something the operator acts on but the user should know (not an error)."""
        self.warnings.append((path, message))

    def mapping(self, value: Any, path: str) -> Mapping[str, Any] | None:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            self.fail(path, f"must be an object, not {_show(value)}")
            return None
        return value

    def known(self, data: Mapping[str, Any], path: str, keys: Iterable[str]) -> None:
        keys = list(keys)
        for key in data:
            if key not in keys:
                self.fail(f"{path}.{key}", "unknown key" + _suggest(str(key), keys))

    def string(self, data: Mapping[str, Any], key: str, path: str, *, required: bool = False,
               default: str | None = None, choices: Sequence[str] | None = None,
               pattern: re.Pattern[str] | None = None, form: str = "") -> str | None:
        where = f"{path}.{key}"
        value = data.get(key)
        if value is None:
            if required:
                self.fail(where, "required" + (f": {form}" if form else ""))
            return default
        if not isinstance(value, str) or not value:
            self.fail(where, f"must be a non-empty string, not {_show(value)}")
            return default
        if choices is not None and value not in choices:
            self.fail(where, f"must be one of {', '.join(choices)}, not {value!r}" + _suggest(value, choices))
            return default
        if pattern is not None and not pattern.match(value):
            self.fail(where, f"{value!r} is not {form or 'of the expected form'}")
            return default
        return value

    def integer(self, data: Mapping[str, Any], key: str, path: str, *, required: bool = False,
                default: int | None = None, minimum: int | None = None, maximum: int | None = None,
                unit: str = "") -> int | None:
        where = f"{path}.{key}"
        value = data.get(key)
        if value is None:
            if required:
                self.fail(where, "required" + (f": a whole number of {unit}" if unit else ""))
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                self.fail(where, f"must be a whole number{' of ' + unit if unit else ''}, written without "
                          f"a decimal point (got {value!r})")
            else:
                self.fail(where, f"must be an integer{' number of ' + unit if unit else ''}, not {_show(value)}")
            return default
        if minimum is not None and value < minimum or maximum is not None and value > maximum:
            bounds = (f"between {minimum} and {maximum}" if minimum is not None and maximum is not None
                      else f"at least {minimum}" if minimum is not None else f"at most {maximum}")
            self.fail(where, f"must be {bounds}, not {value}")
            return default
        return value

    def number(self, data: Mapping[str, Any], key: str, path: str, *, minimum: float,
               exclusive: bool = False) -> int | float | None:
        where = f"{path}.{key}"
        value = data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(where, f"must be a number, not {_show(value)}")
            return None
        if value < minimum or exclusive and value == minimum:
            self.fail(where, f"must be {'greater than' if exclusive else 'at least'} {minimum}, not {value}")
            return None
        return value

    def boolean(self, data: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        value = data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(f"{path}.{key}", f"must be true or false, not {_show(value)}")
            return default
        return value

    def string_list(self, data: Mapping[str, Any], key: str, path: str, *,
                    pattern: re.Pattern[str] | None = None, form: str = "") -> tuple[str, ...]:
        where = f"{path}.{key}"
        value = data.get(key)
        if value is None:
            return ()
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            self.fail(where, f"must be a list, not {_show(value)}")
            return ()
        items: list[str] = []
        for index, item in enumerate(value):
            item_path = f"{where}[{index}]"
            if not isinstance(item, str) or not item:
                self.fail(item_path, f"must be a non-empty string, not {_show(item)}")
            elif pattern is not None and not pattern.match(item):
                hint = " (upper-case)" if pattern.match(item.upper()) else ""
                self.fail(item_path, f"{item!r} is not {form}{hint}")
            elif item in items:
                self.fail(item_path, f"{item!r} is listed twice")
            else:
                items.append(item)
        return tuple(items)

    def secret_ref(self, value: Any, path: str, default_key: str | None) -> SecretKeyRef | None:
        data = self.mapping(value, path)
        if data is None:
            return None
        self.known(data, path, ["name", "key"] if default_key is not None else ["name"])
        name = self.string(data, "name", path, required=True, form="the Secret's name")
        key = self.string(data, "key", path, default=default_key) if default_key is not None else ""
        return SecretKeyRef(name, key or "") if name else None

    # -- sections --------------------------------------------------------------------

    def spec(self, data: Mapping[str, Any]) -> FleetTelemetrySpec | None:
        path = "spec"
        self.known(data, path, ["hostname", "port", "certificate", "server", "vehicles", "fields",
                                "alertTypes", "exp", "deliveryPolicy", "fleetApi"])
        hostname = self.hostname(data.get("hostname"))
        port = self.port(data)
        certificate = self.certificate(data.get("certificate"))
        rotation = self.rotation(data.get("certificate"))
        server_data = self.mapping(data.get("server"), f"{path}.server")
        server = self.server(server_data) if server_data is not None else ServerSpec()
        vehicles = self.string_list(data, "vehicles", path, pattern=_VIN, form="a VIN (17 letters and digits)")
        fields = self.fields(data.get("fields"))
        alert_types = self.string_list(data, "alertTypes", path)
        exp_days = self.integer(data, "exp", path, minimum=1, unit="days")
        delivery = self.string(data, "deliveryPolicy", path, choices=crd.DELIVERY_POLICIES)
        fleet_data = self.mapping(data.get("fleetApi"), f"{path}.fleetApi")
        fleet_api = self.fleet_api(fleet_data) if fleet_data is not None else None
        if vehicles and fleet_data is None:
            self.fail(f"{path}.fleetApi", "required: spec.vehicles are configured through the Fleet API")
        if vehicles and not fields and not alert_types:
            self.fail(f"{path}.fields", "nothing to stream: give fields or alertTypes for the vehicles")
        if hostname is None or port is None or certificate is None or self.problems:
            return None
        return FleetTelemetrySpec(
            hostname=hostname, port=port, certificate=certificate, server=server, vehicles=vehicles,
            fields=fields, alert_types=alert_types, exp_days=exp_days, delivery_policy=delivery,
            fleet_api=fleet_api, rotation=rotation,
        )

    def hostname(self, value: Any) -> str | None:
        path = "spec.hostname"
        if value is None:
            self.fail(path, "required: the server's public DNS name, e.g. telemetry.example.com")
            return None
        if not isinstance(value, str):
            self.fail(path, f"must be a DNS name, not {_show(value)}")
            return None
        if len(value) > 253 or not _HOSTNAME.match(value):
            hint = " (use lower case)" if _HOSTNAME.match(value.lower()) else ""
            self.fail(path, f"{value!r} is not a DNS name such as telemetry.example.com{hint}")
            return None
        return value

    def port(self, data: Mapping[str, Any]) -> int | None:
        value = data.get("port")
        if isinstance(value, str):
            self.fail("spec.port", f"must be an integer, not the string {value!r}: vehicles given a "
                      "string port in their config stop streaming")
            return None
        return self.integer(data, "port", "spec", default=443, minimum=1, maximum=65535)

    def certificate(self, value: Any) -> CertificateSource | None:
        path = "spec.certificate"
        if value is None:
            self.fail(path, f"required: exactly one of {', '.join(crd.CERTIFICATE_MODES)}")
            return None
        data = self.mapping(value, path)
        if data is None:
            return None
        self.known(data, path, [*crd.CERTIFICATE_MODES, "rotation"])
        given = [mode for mode in crd.CERTIFICATE_MODES if mode in data]
        if len(given) != 1:
            got = f"got {' and '.join(given)}" if given else "got none"
            self.fail(path, f"give exactly one of {', '.join(crd.CERTIFICATE_MODES)} ({got})")
            return None
        mode = given[0]
        section = self.mapping(data[mode], f"{path}.{mode}")
        section = section if section is not None else _EMPTY
        if mode == "acme":
            return self.acme(section, f"{path}.acme")
        if mode == "secretRef":
            ref = self.secret_ref(section, f"{path}.secretRef", default_key=None)
            return SecretCertificate(ref.name) if ref else None
        return self.private_ca(section, f"{path}.privateCA")

    def rotation(self, value: Any) -> Rotation:
        path = "spec.certificate.rotation"
        section = value.get("rotation") if isinstance(value, Mapping) else None
        data = self.mapping(section, path) if section is not None else None
        if data is None:
            return Rotation()
        self.known(data, path, ["maxWait", "safetyMargin"])
        values: dict[str, timedelta] = {}
        for key, name in (("maxWait", "max_wait"), ("safetyMargin", "safety_margin")):
            text = self.string(data, key, path)
            if text is None:
                continue
            try:
                values[name] = parse_duration(text)
            except ValueError as exc:
                self.fail(f"{path}.{key}", str(exc))
        return Rotation(**values)

    def acme(self, data: Mapping[str, Any], path: str) -> AcmeCertificate | None:
        self.known(data, path, ["directoryUrl", "email", "challenge", "dns01", "renewBefore",
                                "rootCertificates", "accountSecretName"])
        directory = self.string(data, "directoryUrl", path, default=crd.DEFAULT_ACME_DIRECTORY,
                                pattern=_URL, form="an http(s) URL")
        email = self.string(data, "email", path, pattern=_EMAIL, form="an e-mail address")
        challenge = self.string(data, "challenge", path, default="http01", choices=crd.CHALLENGES)
        dns01 = None
        dns_data = self.mapping(data.get("dns01"), f"{path}.dns01")
        if dns_data is not None:
            dns01 = self.dns01(dns_data, f"{path}.dns01")
        elif challenge == "dns01":
            self.fail(f"{path}.dns01", "required when challenge is dns01: provider, zone, apiTokenSecretRef")
        renew_before = None
        renew_text = self.string(data, "renewBefore", path)
        if renew_text is not None:
            try:
                renew_before = parse_duration(renew_text)
            except ValueError as exc:
                self.fail(f"{path}.renewBefore", str(exc))
            else:
                if renew_before <= timedelta(0):
                    self.fail(f"{path}.renewBefore", "must be longer than zero")
        roots = self.string(data, "rootCertificates", path)
        if roots is not None and not _PEM_CERT.search(roots):
            self.fail(f"{path}.rootCertificates", "must hold PEM certificates (-----BEGIN CERTIFICATE-----)")
        account = self.string(data, "accountSecretName", path)
        return AcmeCertificate(
            directory_url=directory or crd.DEFAULT_ACME_DIRECTORY, email=email,
            challenge=challenge or "http01", dns01=dns01, renew_before=renew_before,
            root_certificates=roots, account_secret_name=account,
        )

    def dns01(self, data: Mapping[str, Any], path: str) -> Dns01Challenge | None:
        self.known(data, path, ["provider", "zone", "apiTokenSecretRef"])
        provider = self.string(data, "provider", path, required=True, choices=crd.DNS01_PROVIDERS,
                               form=" or ".join(crd.DNS01_PROVIDERS))
        zone = self.string(data, "zone", path, required=True, pattern=_HOSTNAME, form="a DNS zone such as example.com")
        token_path = f"{path}.apiTokenSecretRef"
        if data.get("apiTokenSecretRef") is None:
            self.fail(token_path, "required: the Secret (name, key) holding the provider's API token")
        token = self.secret_ref(data.get("apiTokenSecretRef"), token_path, default_key="api-token")
        if provider is None or zone is None or token is None:
            return None
        return Dns01Challenge(provider, zone, token)

    def private_ca(self, data: Mapping[str, Any], path: str) -> PrivateCaCertificate | None:
        self.known(data, path, ["validityDays", "leafValidityDays"])
        ca_days = self.integer(data, "validityDays", path, default=3650, minimum=1, unit="days")
        leaf_days = self.integer(data, "leafValidityDays", path, default=365, minimum=1, unit="days")
        if ca_days is None or leaf_days is None:
            return None
        if leaf_days > ca_days:
            self.fail(f"{path}.leafValidityDays", f"{leaf_days} days outlives the CA ({ca_days} days)")
            return None
        return PrivateCaCertificate(ca_days, leaf_days)

    def server(self, data: Mapping[str, Any]) -> ServerSpec:
        path = "spec.server"
        self.known(data, path, ["replicas", "image", "resources", "serviceType", "records",
                                "reliableAckSources", "namespace", "rateLimit", "vins", "env", *crd.DISPATCHERS])
        replicas = self.integer(data, "replicas", path, default=1, minimum=1)
        image = self.string(data, "image", path)
        resources = self.mapping(data.get("resources"), f"{path}.resources")
        service_type = self.string(data, "serviceType", path, default="LoadBalancer", choices=crd.SERVICE_TYPES)
        dispatchers: dict[str, Mapping[str, Any]] = {}
        for name in crd.DISPATCHERS:
            settings = self.mapping(data.get(name), f"{path}.{name}")
            if settings is not None:
                dispatchers[name] = MappingProxyType(self.dispatcher_settings(settings, f"{path}.{name}"))
        env = self.env(data.get("env"), f"{path}.env")
        records = self.records(data.get("records"), f"{path}.records", dispatchers)
        reliable = self.reliable(data.get("reliableAckSources"), f"{path}.reliableAckSources", records)
        namespace = self.string(data, "namespace", path)
        rate_limit = None
        rate_data = self.mapping(data.get("rateLimit"), f"{path}.rateLimit")
        if rate_data is not None:
            rate_path = f"{path}.rateLimit"
            self.known(rate_data, rate_path, ["enabled", "messageLimit", "messageIntervalTime"])
            interval = self.number(rate_data, "messageIntervalTime", rate_path, minimum=0, exclusive=True)
            rate_limit = RateLimit(
                enabled=self.boolean(rate_data, "enabled", rate_path, False),
                message_limit=self.integer(rate_data, "messageLimit", rate_path, minimum=1),
                message_interval_time=None if interval is None else float(interval),
            )
        allow: tuple[str, ...] = ()
        deny: tuple[str, ...] = ()
        vins_data = self.mapping(data.get("vins"), f"{path}.vins")
        if vins_data is not None:
            self.known(vins_data, f"{path}.vins", ["allow", "deny"])
            form = "a VIN (17 letters and digits)"
            allow = self.string_list(vins_data, "allow", f"{path}.vins", pattern=_VIN, form=form)
            deny = self.string_list(vins_data, "deny", f"{path}.vins", pattern=_VIN, form=form)
        return ServerSpec(
            replicas=replicas or 1, image=image,
            resources=MappingProxyType(dict(resources or {})),
            service_type=service_type or "LoadBalancer", records=records, reliable_ack_sources=reliable,
            dispatchers=MappingProxyType(dispatchers), namespace=namespace, rate_limit=rate_limit,
            vins_allow=allow, vins_deny=deny, env=env,
        )

    def dispatcher_settings(self, data: Mapping[str, Any], path: str) -> dict[str, Any]:
        """A backend's settings with every `{secretKeyRef: {name, key}}` read as a `SecretKeyRef`.

        A credential written in place would be readable by anyone who can read the
        resource, and would land in the server's ConfigMap: it is refused.
        """
        settings: dict[str, Any] = {}
        for key, value in data.items():
            where = f"{path}.{key}"
            if isinstance(value, Mapping) and "secretKeyRef" in value:
                self.known(value, where, ["secretKeyRef"])
                settings[key] = self.secret_ref(value["secretKeyRef"], f"{where}.secretKeyRef", default_key="")
                if settings[key] is not None and not settings[key].key:
                    self.fail(f"{where}.secretKeyRef.key", "required: the key of the Secret that holds the value")
            elif isinstance(value, Mapping):
                settings[key] = self.dispatcher_settings(value, where)
            elif SECRET_KEY.search(str(key)) and value not in ("", None, False):
                self.fail(where, "a credential is never written in the resource (anyone who can read it, and the "
                          "server's ConfigMap, would show it): give {secretKeyRef: {name: <Secret>, key: <key>}}")
            else:
                settings[key] = value
        return settings

    def env(self, value: Any, path: str) -> tuple[EnvVar, ...]:
        """The server container's environment (e.g. REDIS_PASSWORD, AWS_* for kinesis):
        `{name, value}`, or `{name, valueFrom: {secretKeyRef: {name, key}}}` for credentials."""
        if value is None:
            return ()
        if not isinstance(value, list):
            self.fail(path, f"must be a list of {{name, value}} or {{name, valueFrom}}, not {_show(value)}")
            return ()
        variables: list[EnvVar] = []
        for index, item in enumerate(value):
            where = f"{path}[{index}]"
            entry = self.mapping(item, where)
            if entry is None:
                continue
            self.known(entry, where, ["name", "value", "valueFrom"])
            name = self.string(entry, "name", where, required=True, pattern=_ENV_NAME,
                               form="an environment variable name (letters, digits, _)")
            if name is None:
                continue
            if "valueFrom" in entry:
                source = self.mapping(entry["valueFrom"], f"{where}.valueFrom") or {}
                self.known(source, f"{where}.valueFrom", ["secretKeyRef"])
                ref = self.secret_ref(source.get("secretKeyRef"), f"{where}.valueFrom.secretKeyRef", default_key="")
                if ref is None or not ref.key:
                    self.fail(f"{where}.valueFrom.secretKeyRef", "required: {name: <Secret>, key: <key>}")
                    continue
                variables.append(EnvVar(name, secret=ref))
            elif SECRET_KEY.search(name):
                self.fail(f"{where}.value", f"{name} holds a credential: give valueFrom.secretKeyRef instead of a value")
            else:
                text = entry.get("value", "")
                if not isinstance(text, str):
                    self.fail(f"{where}.value", f"must be a string, not {_show(text)}")
                    continue
                variables.append(EnvVar(name, value=text))
        return tuple(variables)

    def records(self, value: Any, path: str, dispatchers: Mapping[str, Any]) -> Mapping[str, tuple[str, ...]]:
        data = self.mapping(value, path)
        if data is None:
            return _EMPTY
        out: dict[str, tuple[str, ...]] = {}
        for record_type, names in data.items():
            where = f"{path}.{record_type}"
            if record_type not in crd.RECORD_TYPES:
                self.fail(where, f"unknown record type; expected one of {', '.join(crd.RECORD_TYPES)}"
                          + _suggest(str(record_type), crd.RECORD_TYPES))
                continue
            listed = self.string_list(data, record_type, path)
            for index, name in enumerate(listed):
                if name not in crd.DISPATCHERS:
                    self.fail(f"{where}[{index}]", f"unknown dispatcher {name!r}; expected one of "
                              f"{', '.join(crd.DISPATCHERS)}" + _suggest(name, crd.DISPATCHERS))
                elif name != "logger" and name not in dispatchers:
                    self.fail(f"{where}[{index}]", f"{name} needs its settings in spec.server.{name}")
            out[record_type] = listed
        return MappingProxyType(out)

    def reliable(self, value: Any, path: str, records: Mapping[str, tuple[str, ...]]) -> Mapping[str, str]:
        data = self.mapping(value, path)
        if data is None:
            return _EMPTY
        out: dict[str, str] = {}
        for record_type, name in data.items():
            where = f"{path}.{record_type}"
            if record_type not in crd.RECORD_TYPES:
                self.fail(where, f"unknown record type; expected one of {', '.join(crd.RECORD_TYPES)}"
                          + _suggest(str(record_type), crd.RECORD_TYPES))
            elif record_type == "connectivity":
                self.fail(where, "connectivity records are produced by the server itself and never acked")
            elif name == "logger":
                self.fail(where, "the logger stores nothing, so it cannot confirm records; name a backend")
            elif not isinstance(name, str) or name not in records.get(record_type, ()):
                self.fail(where, f"must name a dispatcher that spec.server.records.{record_type} lists, "
                          f"not {_show(name)}")
            else:
                out[record_type] = name
        return MappingProxyType(out)

    def fields(self, value: Any) -> Mapping[str, FieldConfig]:
        path = "spec.fields"
        data = self.mapping(value, path)
        if data is None:
            return _EMPTY
        out: dict[str, FieldConfig] = {}
        for name in sorted(data, key=str):
            where = f"{path}.{name}"
            try:
                info = catalog.validate_field_name(str(name))
            except catalog.UnknownFieldError as exc:
                info = catalog.BY_NAME.get(str(name))
                if info is not None and info.number == 0:
                    self.fail(where, "is the Field enum's zero value, not a streamable field")
                else:
                    hint = f" (did you mean {exc.suggestion!r}?)" if exc.suggestion else ""
                    self.fail(where, f"unknown field{hint}")
                continue
            config = self.mapping(data[name], where)
            if config is None:
                if data[name] is None:
                    self.fail(where, "needs at least interval_seconds")
                continue
            self.known(config, where, ["interval_seconds", "minimum_delta", "resend_interval_seconds"])
            interval = self.integer(config, "interval_seconds", where, required=True, minimum=1, unit="seconds")
            delta = self.number(config, "minimum_delta", where, minimum=0)
            if info.min_delta is not None and (delta is not None or "minimum_delta" not in config):
                delta = self.delta_floor(delta, info.min_delta, f"{where}.minimum_delta")
            resend = self.integer(config, "resend_interval_seconds", where, minimum=1, unit="seconds")
            if info.provisional:
                self.warn(where, f"provisional field (number {info.number}): its number may still change, "
                          "so vehicles may stream it under another number or not at all")
            if interval is not None:
                out[str(name)] = FieldConfig(interval, delta, resend)
        return MappingProxyType(out)

    def delta_floor(self, delta: int | float | None, floor: float, where: str) -> int | float | None:
        """A field whose `minimum_delta` the vehicles require, and require to be at least `floor`."""
        if delta is None:
            self.fail(where, f"required for this field: a number of at least {floor:g} (vehicles refuse a smaller one)")
        elif delta < floor:
            self.fail(where, f"must be at least {floor:g} for this field, not {delta:g} (vehicles refuse a smaller one)")
            return None
        return delta

    def fleet_api(self, data: Mapping[str, Any]) -> FleetApiSpec | None:
        path = "spec.fleetApi"
        self.known(data, path, ["region", "baseUrl", "partnerCredentialsSecretRef", "userTokenSecretRef",
                                "signingKeySecretRef", "proxyUrl"])
        region = self.string(data, "region", path, choices=crd.FLEET_REGIONS)
        base_url = self.string(data, "baseUrl", path, pattern=_URL, form="an http(s) URL")
        if ("region" in data) == ("baseUrl" in data):
            self.fail(path, f"give exactly one of region ({', '.join(crd.FLEET_REGIONS)}) or baseUrl")
        partner = self.required_ref(data, "partnerCredentialsSecretRef", path, "client_id and client_secret")
        user = self.required_ref(data, "userTokenSecretRef", path, "refresh_token")
        signing = self.secret_ref(data.get("signingKeySecretRef"), f"{path}.signingKeySecretRef",
                                  default_key="private-key.pem")
        proxy = self.string(data, "proxyUrl", path, pattern=_URL, form="an http(s) URL")
        if data.get("signingKeySecretRef") is None and proxy is None:
            self.fail(f"{path}.signingKeySecretRef", "required unless proxyUrl is set: configurations "
                      "must be signed with the app's key")
        url = base_url or (FLEET_API_BASE_URLS[region] if region else None)
        if url is None or partner is None or user is None:
            return None
        return FleetApiSpec(base_url=url.rstrip("/"), region=region, partner_credentials_secret=partner,
                            user_token_secret=user, signing_key=signing, proxy_url=proxy)

    def required_ref(self, data: Mapping[str, Any], key: str, path: str, holds: str) -> str | None:
        if data.get(key) is None:
            self.fail(f"{path}.{key}", f"required: the Secret holding {holds}")
            return None
        ref = self.secret_ref(data.get(key), f"{path}.{key}", default_key=None)
        return ref.name if ref else None


def parse_spec(spec: Mapping[str, Any]) -> FleetTelemetrySpec:
    """Check a FleetTelemetryConfig's `spec` and apply the schema's defaults.

    Raises `SpecError` listing every problem with its dotted path.
    """
    parser = _Parser()
    if not isinstance(spec, Mapping):
        raise SpecError("spec", f"must be an object, not {_show(spec)}")
    parsed = parser.spec(spec)
    if parser.problems or parsed is None:
        problems = parser.problems or [("spec", "invalid")]
        raise SpecError(problems[0][0], problems[0][1], problems)
    return replace(parsed, warnings=tuple(parser.warnings)) if parser.warnings else parsed


# -- the config pushed to vehicles -------------------------------------------------------


def desired_vehicle_config(spec: FleetTelemetrySpec, ca_pem: str, *, issued_at: float | None = None) -> dict[str, Any]:
    """The config object the vehicles should run (Fleet API `fleet_telemetry_config`).

    `ca_pem` is the chain the vehicles verify the server with. `exp` (when the spec sets
    `exp` days) counts from `issued_at` (epoch seconds, default now): pass the time of the
    push being prepared, and compare configs without `exp` when deciding whether a
    vehicle already runs the desired one.
    """
    if not isinstance(ca_pem, str) or not _PEM_CERT.search(ca_pem):
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
