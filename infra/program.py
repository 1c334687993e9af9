"""Wiring: settings → node (or existing cluster) → DNS → install → stack outputs.

`build` returns the outputs as a dict so tests can inspect them under Pulumi's mocks;
`export_outputs` is what `pulumi up` runs. Settings are checked first, so a bad config
(a hostname outside the app's root domain above all) fails `pulumi preview` before any
resource is declared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import pulumi

from infra.components.dns import DnsRecord, DnsRecordArgs
from infra.components.install import FleetwireInstall, FleetwireInstallArgs
from infra.components.node import PublicNode, PublicNodeArgs
from infra.settings import StackSettings, load_settings

__all__ = ["Deployment", "build", "ca_command", "export_outputs"]


@dataclass(frozen=True)
class Deployment:
    """What `build` created; `outputs` are the stack outputs."""

    settings: StackSettings
    node: PublicNode | None
    dns: DnsRecord | None
    install: FleetwireInstall
    outputs: dict[str, pulumi.Output[object]]


def ca_command(namespace: str, resource_name: str) -> str:
    """The command that prints the `ca` vehicles are given.

    The certificate does not exist during `pulumi up`: the operator issues it after the
    FleetTelemetryConfig appears, minutes later. Reading the Secret from Pulumi would fail
    the first run, so the program hands out the command instead.
    """
    return (f"kubectl -n {namespace} get secret {resource_name}-tls "
            "-o jsonpath='{.data.ca\\.crt}' | base64 -d")


def build(settings: StackSettings | None = None) -> Deployment:
    """Declare every resource of the stack and return them with the outputs."""
    settings = settings or load_settings()
    node = None
    if settings.node is not None:
        node = PublicNode("fleetwire-node", PublicNodeArgs(
            cloud=settings.cloud, hostname=settings.hostname, admin_cidrs=settings.node.admin_cidrs,
            ssh_public_key=settings.node.ssh_public_key, ssh_private_key=settings.node.ssh_private_key,
            http01=settings.http01, region=settings.node.region, instance_type=settings.node.instance_type,
            image=settings.node.image, k3s_version=settings.node.k3s_version))
        address: pulumi.Input[str] = node.address
        # Every Linode has a public IPv6 address; the default VPC of AWS gives none.
        address_v6: pulumi.Input[str] | None = (
            cast(pulumi.Output[str], node.address_v6) if settings.cloud == "linode" else None)
        kubeconfig: pulumi.Input[str] = node.kubeconfig
    else:
        assert settings.kubeconfig is not None  # load_settings requires it without a node
        address = settings.address or ""
        address_v6 = settings.address_v6
        kubeconfig = settings.kubeconfig

    dns = None
    hostname: pulumi.Input[str] = settings.hostname
    if settings.dns.provider != "none":
        dns = DnsRecord("fleetwire-dns", DnsRecordArgs(
            provider=settings.dns.provider, zone=settings.dns.zone, fqdn=settings.hostname, ipv4=address,
            ipv6=address_v6 if settings.dns.publish_ipv6 else None, zone_id=settings.dns.zone_id))
        hostname = dns.fqdn

    telemetry = settings.telemetry
    install = FleetwireInstall("fleetwire", FleetwireInstallArgs(
        kubeconfig=kubeconfig, hostname=hostname, acme_email=telemetry.acme_email, vehicle_ca=telemetry.vehicle_ca,
        namespace=settings.chart.namespace, watch_namespace=settings.chart.watch_namespace,
        image_repository=settings.chart.image_repository, image_tag=settings.chart.image_tag,
        replicas=settings.chart.replicas, log_level=settings.chart.log_level, challenge=telemetry.challenge,
        acme_directory=telemetry.acme_directory, dns_zone=settings.dns.zone or settings.root_domain,
        resource_name=telemetry.resource_name, vins=telemetry.vins, fields=telemetry.fields,
        fleet_region=telemetry.fleet_region, fleet_client_id=telemetry.fleet_client_id,
        fleet_client_secret=telemetry.fleet_client_secret, fleet_refresh_token=telemetry.fleet_refresh_token,
        fleet_private_key=telemetry.fleet_private_key, dns01_api_token=telemetry.dns01_api_token))

    resource_ns = settings.chart.watch_namespace or settings.chart.namespace
    outputs: dict[str, pulumi.Output[object]] = {
        "hostname": install.hostname,
        "nodeAddress": pulumi.Output.from_input(address),
        "kubeconfig": pulumi.Output.secret(kubeconfig),
        "caCommand": pulumi.Output.from_input(ca_command(resource_ns, telemetry.resource_name)),
        "pairingUrl": pulumi.Output.from_input(settings.pairing_url),
        "statusCommand": pulumi.Output.from_input(f"kubectl -n {resource_ns} get fleettelemetryconfigs"),
    }
    if node is not None:
        outputs["sshCommand"] = pulumi.Output.concat("ssh ", node.ssh_user, "@", node.address)
    return Deployment(settings=settings, node=node, dns=dns, install=install, outputs=outputs)


def export_outputs() -> None:
    """Run by `pulumi up`: build the stack and export its outputs."""
    for key, value in build().outputs.items():
        pulumi.export(key, value)
