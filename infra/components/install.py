"""FleetwireInstall: the Helm release of charts/fleetwire and the first FleetTelemetryConfig.

Given a kubeconfig (from a PublicNode or from stack config), this installs the chart from
the local checkout (CRDs, operator, RBAC), writes the Fleet API credentials into
Kubernetes Secrets (their values stay Pulumi secrets end to end) and creates one
FleetTelemetryConfig whose hostname is the DNS record's name. The resource refers to the
Secrets by name only: no credential ever appears in a custom resource or in Helm values.
The vehicles' CA bundle goes into the ConfigMap `<resource name>-vehicle-ca` (key `ca.crt`)
that the operator mounts into the server it runs: without it the server cannot verify
vehicles and the resource stays `ServerReady=False` (`VehicleCaMissing`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

__all__ = [
    "API_VERSION",
    "CHART_PATH",
    "KIND",
    "VEHICLE_CA_KEY",
    "FleetwireInstall",
    "FleetwireInstallArgs",
    "SecretNames",
    "chart_values",
    "telemetry_spec",
    "vehicle_ca_name",
]

CHART_PATH = Path(__file__).resolve().parents[2] / "charts" / "fleetwire"
"""The chart in this checkout: the release always matches the code beside it."""
API_VERSION = "fleetwire.io/v1alpha1"
KIND = "FleetTelemetryConfig"
RELEASE_NAME = "fleetwire"
VEHICLE_CA_KEY = "ca.crt"
"""The key of the vehicle-CA ConfigMap the operator mounts (`fleetwire.operator.resource.builders`)."""


@dataclass(frozen=True)
class SecretNames:
    """Names of the Secrets the resource refers to (keys are the operator's defaults)."""

    partner: str
    user_token: str
    signing_key: str
    dns01: str

    @classmethod
    def for_resource(cls, name: str) -> SecretNames:
        return cls(partner=f"{name}-fleet-api-partner", user_token=f"{name}-fleet-api-user",
                   signing_key=f"{name}-fleet-api-signing-key", dns01=f"{name}-dns01")


def vehicle_ca_name(resource_name: str) -> str:
    """The ConfigMap the operator mounts into the resource's server (`fleetwire.operator.resource.builders.Names`)."""
    return f"{resource_name}-vehicle-ca"


@dataclass(frozen=True)
class FleetwireInstallArgs:
    """Chart values and the first FleetTelemetryConfig; secret inputs must be secret Outputs."""

    kubeconfig: pulumi.Input[str]
    hostname: pulumi.Input[str]
    acme_email: str
    vehicle_ca: str
    """PEM: the CAs that issue the vehicles' client certificates."""
    namespace: str = "fleetwire"
    watch_namespace: str = ""
    image_repository: str | None = None
    image_tag: str | None = None
    replicas: int = 1
    log_level: str = "info"
    challenge: str = "http01"
    acme_directory: str | None = None
    dns_zone: str | None = None
    resource_name: str = "fleetwire"
    vins: Sequence[str] = ()
    fields: Mapping[str, Mapping[str, int | float]] = field(default_factory=dict)
    fleet_region: str = "na"
    fleet_client_id: str | None = None
    fleet_client_secret: pulumi.Input[str] | None = None
    fleet_refresh_token: pulumi.Input[str] | None = None
    fleet_private_key: pulumi.Input[str] | None = None
    dns01_api_token: pulumi.Input[str] | None = None

    @property
    def resource_namespace(self) -> str:
        """The watched namespace when the operator is limited to one, else the release's."""
        return self.watch_namespace or self.namespace


def chart_values(args: FleetwireInstallArgs) -> dict[str, Any]:
    """Helm values from stack config; unset keys keep the chart's defaults."""
    values: dict[str, Any] = {
        "replicas": args.replicas,
        "logLevel": args.log_level,
        "watchNamespace": args.watch_namespace,
        "acmeHttp01": {"enabled": args.challenge == "http01"},
    }
    image = {k: v for k, v in (("repository", args.image_repository), ("tag", args.image_tag)) if v}
    if image:
        values["image"] = image
    return values


def telemetry_spec(hostname: str, args: FleetwireInstallArgs, secrets: SecretNames) -> dict[str, Any]:
    """The FleetTelemetryConfig spec: references to Secrets, never their values."""
    acme: dict[str, Any] = {"email": args.acme_email, "challenge": args.challenge}
    if args.acme_directory:
        acme["directoryUrl"] = args.acme_directory
    if args.challenge == "dns01":
        acme["dns01"] = {"provider": "cloudflare", "zone": args.dns_zone,
                         "apiTokenSecretRef": {"name": secrets.dns01}}
    spec: dict[str, Any] = {"hostname": hostname, "port": 443, "certificate": {"acme": acme}}
    if args.fields:
        spec["fields"] = {name: dict(value) for name, value in args.fields.items()}
    if args.fleet_client_id is not None:
        spec["vehicles"] = list(args.vins)
        spec["fleetApi"] = {
            "region": args.fleet_region,
            "partnerCredentialsSecretRef": {"name": secrets.partner},
            "userTokenSecretRef": {"name": secrets.user_token},
            "signingKeySecretRef": {"name": secrets.signing_key},
        }
    return spec


class FleetwireInstall(pulumi.ComponentResource):
    """The chart, the credentials as Secrets, the vehicles' CA, and the first FleetTelemetryConfig.

    Outputs: `release` (Helm release name), `namespace`, `resource_name`, `hostname`.
    """

    hostname: pulumi.Output[str]
    release: k8s.helm.v3.Release
    resource: k8s.apiextensions.CustomResource
    secrets: dict[str, k8s.core.v1.Secret]
    vehicle_ca: k8s.core.v1.ConfigMap

    def __init__(self, name: str, args: FleetwireInstallArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("fleetwire:infra:FleetwireInstall", name, None, opts)
        provider = k8s.Provider(f"{name}-cluster", kubeconfig=args.kubeconfig,
                                opts=pulumi.ResourceOptions(parent=self))
        on_cluster = pulumi.ResourceOptions(parent=self, provider=provider)
        resource_ns = args.resource_namespace

        prerequisites: list[pulumi.Resource] = []
        if resource_ns != args.namespace:
            # The chart's Role lives in the watched namespace, so it must exist before the release.
            prerequisites.append(k8s.core.v1.Namespace(
                f"{name}-watched", metadata={"name": resource_ns, "labels": {"app.kubernetes.io/part-of": "fleetwire"}},
                opts=on_cluster))

        self.release = k8s.helm.v3.Release(
            f"{name}-chart",
            name=RELEASE_NAME,
            chart=str(CHART_PATH),
            namespace=args.namespace,
            create_namespace=True,
            values=chart_values(args),
            opts=pulumi.ResourceOptions.merge(on_cluster, pulumi.ResourceOptions(depends_on=prerequisites)),
        )

        names = SecretNames.for_resource(args.resource_name)
        self.secrets = {}
        after_chart = pulumi.ResourceOptions.merge(on_cluster, pulumi.ResourceOptions(depends_on=[self.release]))
        if args.fleet_client_id is not None:
            self._secret(name, "partner", names.partner, resource_ns,
                         {"client_id": args.fleet_client_id, "client_secret": args.fleet_client_secret}, after_chart)
            # The operator rotates the refresh token (Tesla's are single-use) and keeps the access
            # token here: Pulumi creates this Secret once and never writes the stale token back.
            self._secret(name, "user-token", names.user_token, resource_ns,
                         {"refresh_token": args.fleet_refresh_token},
                         pulumi.ResourceOptions.merge(after_chart, pulumi.ResourceOptions(
                             ignore_changes=["stringData", "data"])))
            self._secret(name, "signing-key", names.signing_key, resource_ns,
                         {"private-key.pem": args.fleet_private_key}, after_chart)
        if args.challenge == "dns01":
            self._secret(name, "dns01", names.dns01, resource_ns, {"api-token": args.dns01_api_token}, after_chart)

        self.vehicle_ca = k8s.core.v1.ConfigMap(
            f"{name}-vehicle-ca",
            metadata={"name": vehicle_ca_name(args.resource_name), "namespace": resource_ns,
                      "labels": {"app.kubernetes.io/part-of": "fleetwire"}},
            data={VEHICLE_CA_KEY: args.vehicle_ca},
            opts=after_chart,
        )

        self.hostname = pulumi.Output.from_input(args.hostname)
        self.resource = k8s.apiextensions.CustomResource(
            f"{name}-telemetry",
            api_version=API_VERSION,
            kind=KIND,
            metadata={"name": args.resource_name, "namespace": resource_ns},
            spec=self.hostname.apply(lambda host: telemetry_spec(host, args, names)),
            opts=pulumi.ResourceOptions.merge(on_cluster, pulumi.ResourceOptions(
                depends_on=[self.release, *self.secrets.values(), self.vehicle_ca])),
        )
        self.register_outputs({"release": self.release.name, "namespace": args.namespace,
                               "resource_name": args.resource_name, "hostname": self.hostname})

    def _secret(self, name: str, suffix: str, secret_name: str, namespace: str,
                data: Mapping[str, pulumi.Input[str] | None], opts: pulumi.ResourceOptions) -> None:
        values = {key: pulumi.Output.secret(value) for key, value in data.items() if value is not None}
        self.secrets[suffix] = k8s.core.v1.Secret(
            f"{name}-{suffix}",
            metadata={"name": secret_name, "namespace": namespace,
                      "labels": {"app.kubernetes.io/part-of": "fleetwire"}},
            type="Opaque",
            string_data=values,
            opts=opts,
        )
