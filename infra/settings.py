"""Stack configuration, read once and checked before any resource is declared.

Every problem is reported at once, each naming its config key and the expected form, so a
`pulumi preview` that fails tells the user everything to fix; values are read with
`fleetwire.strictjson`, as the server's config.json is (see `stack_config`). The check that matters most
is `check_root_domain`: Tesla configures vehicles only with a telemetry hostname under the
root domain the app registered, and a wrong name would otherwise surface days later as
vehicles that never connect.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
from cryptography import x509
from publicsuffixlist import PublicSuffixList

from fleetwire.strictjson import ConfigError, Reader, show, suggest
from infra.components.node import is_public_address
from infra.stack_config import StackConfig, alternatives

__all__ = [
    "CHALLENGES",
    "CLOUDS",
    "DNS_PROVIDERS",
    "SECRET_KEYS",
    "ChartSettings",
    "DnsSettings",
    "NodeSettings",
    "RootDomainError",
    "SettingsError",
    "StackSettings",
    "TelemetrySettings",
    "check_root_domain",
    "load_settings",
]

CLOUDS = ("linode", "aws", "existing")
"""Where the cluster comes from: a new k3s node on Linode or AWS, or a cluster you already run."""
DNS_PROVIDERS = ("cloudflare", "linode", "route53", "none")
CHALLENGES = ("http01", "dns01")
SECRET_KEYS = (
    "kubeconfig",
    "sshPrivateKey",
    "fleetApiClientSecret",
    "fleetApiRefreshToken",
    "fleetApiPrivateKey",
    "dns01ApiToken",
)
"""Keys that must be set with `pulumi config set --secret`: plain text would sit in the stack file."""

_DEFAULT_DNS = {"linode": "linode", "aws": "route53"}
_HOSTNAME = re.compile(r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_VIN = re.compile(r"^[A-Z0-9]{17}$")
_FIELD = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_LOG_LEVELS = ("info", "debug")
_FLEET_REGIONS = ("na", "eu", "cn")
_PSL = PublicSuffixList()


class RootDomainError(ValueError):
    """The telemetry hostname is outside the app's registered root domain."""


class SettingsError(ValueError):
    """Stack configuration the program cannot deploy; `problems` holds (key, message) pairs."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = tuple(problems)
        super().__init__("invalid stack configuration:\n" + "\n".join(f"  {k}: {m}" for k, m in self.problems))


def check_root_domain(hostname: str, app_domain: str) -> str:
    """Return the root domain `hostname` shares with `app_domain`, or raise RootDomainError.

    The root domain is the registrable domain (one label under a public suffix, by the
    Public Suffix List shipped with `publicsuffixlist`), so `telemetry.example.co.uk`
    shares `example.co.uk` with `app.example.co.uk`, while `telemetry.other.co.uk` does not.
    """
    host = hostname.strip().rstrip(".").lower()
    app = app_domain.strip().rstrip(".").lower()
    app_root = _PSL.privatesuffix(app)
    if app_root is None:
        raise RootDomainError(
            f"appDomain {app_domain!r} is a public suffix or not a domain name; give the domain "
            "the app registered with the Fleet API (partner_accounts), e.g. example.com")
    host_root = _PSL.privatesuffix(host)
    if host_root != app_root:
        raise RootDomainError(
            f"hostname {hostname!r} does not share the app's registered root domain {app_root!r} "
            f"(appDomain {app_domain!r}): vehicles are configured only with a telemetry server under "
            f"that domain; use a name such as telemetry.{app_root}")
    return app_root


@dataclass(frozen=True)
class NodeSettings:
    """The public node for a new k3s cluster (clouds `linode` and `aws`)."""

    admin_cidrs: tuple[str, ...]
    ssh_public_key: str
    ssh_private_key: pulumi.Output[str]
    region: str | None = None
    instance_type: str | None = None
    image: str | None = None
    k3s_version: str | None = None


@dataclass(frozen=True)
class DnsSettings:
    """Where the hostname's A/AAAA records are written; provider `none` leaves DNS to the user."""

    provider: str
    zone: str
    zone_id: str | None = None
    publish_ipv6: bool = False


@dataclass(frozen=True)
class ChartSettings:
    """Helm values taken from stack config; unset ones keep the chart's defaults."""

    namespace: str = "fleetwire"
    image_repository: str | None = None
    image_tag: str | None = None
    replicas: int = 1
    log_level: str = "info"
    watch_namespace: str = ""


@dataclass(frozen=True)
class TelemetrySettings:
    """The first FleetTelemetryConfig and the Fleet API credentials it refers to."""

    acme_email: str
    vehicle_ca: str
    """PEM: the CAs that issue the vehicles' client certificates (Tesla's, not shipped here)."""
    challenge: str = "http01"
    acme_directory: str | None = None
    resource_name: str = "fleetwire"
    vins: tuple[str, ...] = ()
    fields: Mapping[str, Mapping[str, int | float]] = field(default_factory=dict)
    fleet_region: str = "na"
    fleet_client_id: str | None = None
    fleet_client_secret: pulumi.Output[str] | None = None
    fleet_refresh_token: pulumi.Output[str] | None = None
    fleet_private_key: pulumi.Output[str] | None = None
    dns01_api_token: pulumi.Output[str] | None = None

    @property
    def fleet_api(self) -> bool:
        """True when the operator is given the Fleet API credentials to configure vehicles."""
        return self.fleet_client_id is not None


@dataclass(frozen=True)
class StackSettings:
    """Everything the program needs, checked."""

    cloud: str
    hostname: str
    app_domain: str
    root_domain: str
    dns: DnsSettings
    chart: ChartSettings
    telemetry: TelemetrySettings
    node: NodeSettings | None = None
    kubeconfig: pulumi.Output[str] | None = None
    address: str | None = None
    address_v6: str | None = None

    @property
    def http01(self) -> bool:
        """Port 80 must reach the operator's HTTP-01 responder."""
        return self.telemetry.challenge == "http01"

    @property
    def pairing_url(self) -> str:
        """Where a vehicle owner pairs the app's key (the registered domain, not the telemetry host)."""
        return f"https://tesla.com/_ak/{self.app_domain}"


def _listed(stack: StackConfig, name: str) -> list[Any] | None:
    """A list, or text of comma-separated items (`pulumi config set vins "A, B"` as JSON text)."""
    raw = stack.obj(name, [])
    if isinstance(raw, str):
        raw = [part.strip() for part in raw.split(",") if part.strip()]
    return raw if isinstance(raw, list) else None


def _cidr(item: Any) -> str:
    try:
        network = ipaddress.ip_network(str(item), strict=False)
    except ValueError:
        raise ConfigError("adminCidrs", f"expected CIDRs such as 203.0.113.7/32 or 2001:db8::/64, "
                          f"got {show(item)}") from None
    if network.prefixlen == 0:
        raise ConfigError("adminCidrs", f"expected your own addresses, got {show(item)}, which opens SSH "
                          "and the Kubernetes API to the whole internet")
    return str(network)


def _cidrs(stack: StackConfig, name: str) -> tuple[str, ...]:
    raw = _listed(stack, name)
    if not raw:
        stack.fail(name, "missing: expected the CIDRs that may reach SSH and the Kubernetes API, "
                         "e.g. pulumi config set --path 'adminCidrs[0]' 203.0.113.7/32")
        return ()
    checked = [stack.check(lambda item=item: _cidr(item), None) for item in raw]
    return tuple(c for c in checked if c is not None)


def _number(value: Any) -> Any:
    """`pulumi config set --path fields.X 10` may store "10": read digits as the number they are."""
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return value
    return value


_FIELD_KEYS = ("interval_seconds", "minimum_delta", "resend_interval_seconds")


def _field(fields: Reader, name: str) -> dict[str, int | float]:
    key = fields.key(name)
    if not _FIELD.match(name):
        raise ConfigError(key, "expected a field name (vehicle_data.proto Field enum, e.g. VehicleSpeed)")
    value = fields.data[name]
    item = {key: _number(v) for key, v in value.items()} if isinstance(value, dict) else \
        {"interval_seconds": _number(value)}
    interval = item.get("interval_seconds")
    if type(interval) is not int or interval < 1:
        raise ConfigError(key, 'expected a whole number of seconds of at least 1, or {"interval_seconds": N, …}, '
                          f"got {show(value, key)}")
    unknown = sorted(set(item) - set(_FIELD_KEYS))
    if unknown:
        raise ConfigError(key, f"unknown keys {', '.join(unknown)}{suggest(unknown[0], _FIELD_KEYS)}; expected "
                          f"{alternatives(_FIELD_KEYS)}")
    return dict(item)


def _fields(stack: StackConfig) -> dict[str, dict[str, int | float]]:
    raw = stack.obj("fields", {})
    if not isinstance(raw, dict):
        stack.fail("fields", "expected an object: field name → seconds, or → {interval_seconds, …}, "
                             f"got {show(raw)}")
        return {}
    fields = stack.section("fields")
    if fields is None:
        return {}
    out: dict[str, dict[str, int | float]] = {}
    for name in fields.data:
        item = stack.check(lambda name=name: _field(fields, str(name)), None)
        if item is not None:
            out[str(name)] = item
    return out


def _vins(stack: StackConfig) -> tuple[str, ...]:
    raw = _listed(stack, "vins")
    if raw is None:
        stack.fail("vins", f"expected a list of VINs, got {show(stack.obj('vins', None))}")
        return ()
    bad = [v for v in raw if not isinstance(v, str) or not _VIN.match(v)]
    if bad:
        stack.fail("vins", "expected VINs (17 upper-case letters and digits), got "
                           f"{', '.join(show(v) for v in bad)}")
    return tuple(v for v in raw if isinstance(v, str) and _VIN.match(v))


def _vehicle_ca(stack: StackConfig) -> str:
    """The vehicles' CA bundle: PEM text holding at least one certificate and no private key."""
    hint = ("the vehicles' CA bundle, which is required: the reference server's repository publishes it as "
            "config/files/prod_ca.crt; pulumi config set vehicleCa \"$(cat prod_ca.crt)\"")
    value = stack.text("vehicleCa", required=True, hint=hint)
    if value is None:
        return ""
    if "PRIVATE KEY" in value:
        stack.fail("vehicleCa", "expected CA certificates only, got text that holds a private key (not shown): "
                                "it would be stored in a ConfigMap, which is not secret")
        return ""
    try:
        x509.load_pem_x509_certificates(value.encode())
    except ValueError:
        stack.fail("vehicleCa", f"expected {hint.replace(', which is required', '')}, got {show(value)}, "
                                "which holds no readable PEM certificate")
        return ""
    return value


def _address(stack: StackConfig, name: str, version: int, required: bool) -> str | None:
    value = stack.text(name, required=required, hint=f"the public IPv{version} address vehicles reach")
    if value is None:
        return None
    try:
        parsed = ipaddress.ip_address(value)
    except ValueError:
        stack.fail(name, f"expected an IP address, got {show(value)}")
        return None
    if parsed.version != version or not is_public_address(str(parsed)):
        stack.fail(name, f"expected a public IPv{version} address (vehicles cannot reach private ones), "
                         f"got {show(value)}")
        return None
    return str(parsed)


def load_settings(config: pulumi.Config | None = None,
                  on_warning: Callable[[str], None] = pulumi.log.warn) -> StackSettings:
    """Read and check the stack's config (namespace `fleetwire`); raise SettingsError listing every problem."""
    reader = StackConfig(config or pulumi.Config("fleetwire"))
    cloud = reader.text("cloud", required=True, choices=CLOUDS,
                        hint="linode, aws or existing") or "existing"
    hostname = reader.text("hostname", required=True, pattern=_HOSTNAME,
                           hint="a lower-case DNS name such as telemetry.example.com") or ""
    app_domain = reader.text("appDomain", required=True,
                             hint="the domain registered with the Fleet API, e.g. example.com") or ""
    root_domain = ""
    if hostname and app_domain:
        try:
            root_domain = check_root_domain(hostname, app_domain)
        except RootDomainError as exc:
            reader.fail("hostname", str(exc))

    node = None
    kubeconfig = None
    if cloud in ("linode", "aws"):
        admin = _cidrs(reader, "adminCidrs")
        public_key = reader.text("sshPublicKey", required=True, hint="an OpenSSH public key line") or ""
        private_key = reader.secret("sshPrivateKey", required=True,
                                    hint="the private half, used by Pulumi to fetch the kubeconfig over SSH")
        if private_key is not None:
            node = NodeSettings(
                admin_cidrs=admin, ssh_public_key=public_key, ssh_private_key=private_key,
                region=reader.text("region"), instance_type=reader.text("instanceType"),
                image=reader.text("nodeImage"), k3s_version=reader.text("k3sVersion"))
    else:
        kubeconfig = reader.secret("kubeconfig", required=True,
                                   hint="the cluster's kubeconfig, e.g. \"$(cat ~/.kube/config)\"")

    dns_provider = reader.text("dnsProvider", _DEFAULT_DNS.get(cloud), choices=DNS_PROVIDERS)
    if dns_provider is None:
        reader.fail("dnsProvider", "missing: expected cloudflare, linode, route53 or none with cloud existing "
                                    "(pulumi config set dnsProvider …)")
        dns_provider = "none"
    default_zone = _PSL.privatesuffix(hostname) if hostname else None
    zone = reader.text("dnsZone", default_zone or "")
    if zone and hostname and hostname != zone and not hostname.endswith("." + zone):
        reader.fail("dnsZone", f"expected the DNS zone that holds {hostname}, got {show(zone)}")
    dns = DnsSettings(provider=dns_provider, zone=zone or "", zone_id=reader.text("dnsZoneId"),
                      publish_ipv6=reader.boolean("ipv6", False))

    address = address_v6 = None
    if cloud == "existing":
        address = _address(reader, "address", 4, required=dns_provider != "none")
        address_v6 = _address(reader, "addressV6", 6, required=False)

    chart = ChartSettings(
        namespace=reader.text("namespace", "fleetwire", pattern=_K8S_NAME, hint="a namespace name") or "fleetwire",
        image_repository=reader.text("imageRepository"),
        image_tag=reader.text("imageTag"),
        replicas=reader.integer("replicas", 1, minimum=1),
        log_level=reader.text("logLevel", "info", choices=_LOG_LEVELS) or "info",
        watch_namespace=reader.text("watchNamespace", "", pattern=_K8S_NAME, hint="a namespace name") or "",
    )

    challenge = reader.text("challenge", "http01", choices=CHALLENGES) or "http01"
    client_id = reader.text("fleetApiClientId")
    vins = _vins(reader)
    if vins and client_id is None:
        reader.fail("fleetApiClientId", "missing: expected the app's client ID, which vins need: the operator pushes their "
                                        "configuration through the Fleet API")
    need_fleet = client_id is not None
    telemetry = TelemetrySettings(
        acme_email=reader.text("acmeEmail", required=True, pattern=_EMAIL,
                               hint="an e-mail address for certificate expiry notices") or "",
        vehicle_ca=_vehicle_ca(reader),
        challenge=challenge,
        acme_directory=reader.text("acmeDirectory"),
        resource_name=reader.text("resourceName", "fleetwire", pattern=_K8S_NAME,
                                  hint="a Kubernetes object name") or "fleetwire",
        vins=vins,
        fields=_fields(reader),
        fleet_region=reader.text("fleetApiRegion", "na", choices=_FLEET_REGIONS) or "na",
        fleet_client_id=client_id,
        fleet_client_secret=reader.secret("fleetApiClientSecret", required=need_fleet,
                                          hint="the app's client secret from the developer dashboard"),
        fleet_refresh_token=reader.secret("fleetApiRefreshToken", required=need_fleet,
                                          hint="a user refresh token with scope offline_access"),
        fleet_private_key=reader.secret("fleetApiPrivateKey", required=need_fleet,
                                        hint="the app's P-256 private key, PEM, that signs configurations"),
        dns01_api_token=reader.secret("dns01ApiToken", required=challenge == "dns01",
                                      hint="a Cloudflare API token allowed to edit the zone's DNS"),
    )
    if challenge == "dns01" and dns_provider not in ("cloudflare", "none"):
        on_warning(f"challenge dns01 writes TXT records through Cloudflare; dnsProvider is {dns_provider}, "
                   "so the zone must be served by Cloudflare too")

    if reader.problems:
        raise SettingsError(reader.problems)
    return StackSettings(cloud=cloud, hostname=hostname, app_domain=app_domain, root_domain=root_domain,
                         dns=dns, chart=chart, telemetry=telemetry, node=node, kubeconfig=kubeconfig,
                         address=address, address_v6=address_v6)
