"""PublicNode: one machine with a public address running k3s, on Linode or AWS.

The clouds differ in names only; what the node must be is the same everywhere and lives
in pure functions here: `firewall_rules` (443 to the world, 80 only for HTTP-01, SSH and
the Kubernetes API only to the admin CIDRs), `k3s_cloud_config` (k3s without Traefik, so
the vehicles' mTLS reaches the fleetwire server untouched), and `public_kubeconfig`.

The kubeconfig is fetched in the same `pulumi up`: cloud-init writes it to
/etc/rancher/k3s/k3s.yaml, a `pulumi_command` remote Command reads it over SSH (port 22
is open to the admin CIDRs, which include the machine running Pulumi), and
`public_kubeconfig` points it at the node's public address. It stays a secret output.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import yaml

__all__ = [
    "CLOUD_DEFAULTS",
    "K3S_CONFIG_PATH",
    "KUBECONFIG_FETCH_SCRIPT",
    "KUBE_API_PORT",
    "PortRule",
    "PublicNode",
    "PublicNodeArgs",
    "firewall_rules",
    "is_public_address",
    "k3s_cloud_config",
    "public_kubeconfig",
]

KUBE_API_PORT = 6443
K3S_CONFIG_PATH = "/etc/rancher/k3s/config.yaml"
K3S_KUBECONFIG_PATH = "/etc/rancher/k3s/k3s.yaml"
WORLD_V4 = "0.0.0.0/0"
WORLD_V6 = "::/0"

KUBECONFIG_FETCH_SCRIPT = (
    "set -e; "
    f"timeout 900 sh -c 'until sudo test -s {K3S_KUBECONFIG_PATH}; do sleep 5; done'; "
    "timeout 300 sh -c 'until sudo k3s kubectl get --raw /readyz >/dev/null 2>&1; do sleep 5; done'; "
    f"sudo cat {K3S_KUBECONFIG_PATH}"
)
"""Waits for cloud-init's k3s to write its kubeconfig and answer /readyz, then prints it."""


@dataclass(frozen=True)
class _CloudDefaults:
    region: str | None
    instance_type: str
    image: str | None
    ssh_user: str


CLOUD_DEFAULTS = {
    "linode": _CloudDefaults(region="us-ord", instance_type="g6-standard-2", image="linode/ubuntu24.04",
                             ssh_user="root"),
    # AWS takes its region from the provider config (aws:region); the image is looked up.
    "aws": _CloudDefaults(region=None, instance_type="t3.small", image=None, ssh_user="ubuntu"),
}
UBUNTU_OWNER = "099720109477"  # Canonical's AWS account, publisher of the official Ubuntu images
UBUNTU_AMI_NAME = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"


@dataclass(frozen=True)
class PortRule:
    """One inbound TCP port and who may reach it."""

    label: str
    port: int
    ipv4: tuple[str, ...]
    ipv6: tuple[str, ...]


def firewall_rules(admin_cidrs: Sequence[str], http01: bool) -> tuple[PortRule, ...]:
    """The node's whole inbound policy; everything not listed is dropped.

    443 is open to every address (vehicles connect from anywhere); 80 only while the
    HTTP-01 challenge needs it; SSH and the Kubernetes API only to `admin_cidrs`.
    """
    v4 = tuple(c for c in admin_cidrs if ipaddress.ip_network(c, strict=False).version == 4)
    v6 = tuple(c for c in admin_cidrs if ipaddress.ip_network(c, strict=False).version == 6)
    rules = [PortRule("telemetry-https", 443, (WORLD_V4,), (WORLD_V6,))]
    if http01:
        rules.append(PortRule("acme-http01", 80, (WORLD_V4,), (WORLD_V6,)))
    rules.append(PortRule("admin-ssh", 22, v4, v6))
    rules.append(PortRule("admin-kube-api", KUBE_API_PORT, v4, v6))
    return tuple(rules)


def k3s_cloud_config(hostname: str, k3s_version: str | None = None) -> str:
    """cloud-init user data that installs a single-node k3s server.

    Traefik is disabled so that nothing but the fleetwire server terminates TLS on 443
    (k3s's ServiceLB still exposes LoadBalancer Services on the node's address); the
    telemetry hostname is added to the API certificate because the fetched kubeconfig
    verifies the API by that name; Secrets are encrypted at rest.
    """
    k3s_config = {
        "disable": ["traefik"],
        "tls-san": [hostname],
        "secrets-encryption": True,
        "write-kubeconfig-mode": "0600",
    }
    install_env = f"INSTALL_K3S_VERSION={k3s_version}" if k3s_version else "INSTALL_K3S_CHANNEL=stable"
    document = {
        "package_update": True,
        "packages": ["curl"],
        "write_files": [{
            "path": K3S_CONFIG_PATH,
            "permissions": "0600",
            "content": str(yaml.safe_dump(k3s_config, sort_keys=False)),
        }],
        "runcmd": [
            "curl -sfL https://get.k3s.io -o /root/k3s-install.sh",
            f"{install_env} sh /root/k3s-install.sh",
        ],
    }
    return "#cloud-config\n" + str(yaml.safe_dump(document, sort_keys=False))


def public_kubeconfig(raw: str, address: str, server_name: str, name: str = "fleetwire") -> str:
    """k3s's kubeconfig (server 127.0.0.1) rewritten to reach the API at `address`.

    The API certificate names `server_name` (k3s `tls-san`), not necessarily the address,
    so `tls-server-name` verifies by that name while connecting by IP: no wait for DNS.
    k3s calls everything `default`; renaming to `name` lets the file be merged into a
    user's own kubeconfig.
    """
    doc: dict[str, Any] = yaml.safe_load(raw)
    for cluster in doc.get("clusters", []):
        cluster["name"] = name
        cluster["cluster"]["server"] = f"https://{address}:{KUBE_API_PORT}"
        cluster["cluster"]["tls-server-name"] = server_name
    for user in doc.get("users", []):
        user["name"] = name
    for context in doc.get("contexts", []):
        context["name"] = name
        context["context"]["cluster"] = name
        context["context"]["user"] = name
    doc["current-context"] = name
    return str(yaml.safe_dump(doc, sort_keys=False))


_NOT_REACHABLE = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "0.0.0.0/8", "fc00::/7", "fe80::/10", "::1/128", "::/128"))


def is_public_address(address: str) -> bool:
    """False for private, shared (CGNAT), loopback and link-local addresses: vehicles cannot reach those."""
    ip = ipaddress.ip_address(address)
    return not any(ip.version == net.version and ip in net for net in _NOT_REACHABLE)


def _first_public(addresses: Sequence[str]) -> str:
    """The public IPv4 among a Linode's addresses (a private one may be listed too)."""
    for address in addresses:
        if is_public_address(address.split("/")[0]):
            return address.split("/")[0]
    raise ValueError(f"the node has no public IPv4 address among {list(addresses)}")


@dataclass(frozen=True)
class PublicNodeArgs:
    """What a node needs, whatever the cloud."""

    cloud: str
    hostname: str
    admin_cidrs: Sequence[str]
    ssh_public_key: str
    ssh_private_key: pulumi.Input[str]
    http01: bool = True
    region: str | None = None
    instance_type: str | None = None
    image: str | None = None
    k3s_version: str | None = None


class PublicNode(pulumi.ComponentResource):
    """A k3s node with a public address, a firewall and its kubeconfig.

    Outputs: `address` (public IPv4), `address_v6` (public IPv6 or None), `kubeconfig`
    (secret, reaching the API at `address`), `ssh_user`.
    """

    address: pulumi.Output[str]
    address_v6: pulumi.Output[str | None]
    kubeconfig: pulumi.Output[str]
    ssh_user: str

    def __init__(self, name: str, args: PublicNodeArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("fleetwire:infra:PublicNode", name, None, opts)
        if args.cloud not in CLOUD_DEFAULTS:
            raise ValueError(f"PublicNode: cloud must be one of {', '.join(CLOUD_DEFAULTS)}, not {args.cloud!r}")
        defaults = CLOUD_DEFAULTS[args.cloud]
        self.ssh_user = defaults.ssh_user
        rules = firewall_rules(args.admin_cidrs, args.http01)
        user_data = k3s_cloud_config(args.hostname, args.k3s_version)
        child = pulumi.ResourceOptions(parent=self)
        if args.cloud == "linode":
            depends = self._linode(name, args, defaults, rules, user_data, child)
        else:
            depends = self._aws(name, args, defaults, rules, user_data, child)

        from pulumi_command import remote

        fetch = remote.Command(
            f"{name}-kubeconfig",
            connection=remote.ConnectionArgs(
                host=self.address, user=self.ssh_user, private_key=args.ssh_private_key,
                dial_error_limit=60),
            create=KUBECONFIG_FETCH_SCRIPT,
            triggers=[depends[0].id],
            opts=pulumi.ResourceOptions(parent=self, depends_on=depends, additional_secret_outputs=["stdout"]),
        )
        self.kubeconfig = pulumi.Output.secret(
            pulumi.Output.all(fetch.stdout, self.address).apply(
                lambda values: public_kubeconfig(values[0], values[1], args.hostname)))
        self.register_outputs({"address": self.address, "address_v6": self.address_v6,
                               "kubeconfig": self.kubeconfig})

    def _linode(self, name: str, args: PublicNodeArgs, defaults: _CloudDefaults, rules: Sequence[PortRule],
                user_data: str, child: pulumi.ResourceOptions) -> list[pulumi.CustomResource]:
        import pulumi_linode as linode

        # The firewall exists before the instance and is attached at creation: no open window.
        firewall = linode.Firewall(
            f"{name}-firewall",
            label=f"{name}-firewall"[:32],
            inbound_policy="DROP",
            outbound_policy="ACCEPT",
            inbounds=[linode.FirewallInboundArgs(
                label=rule.label, action="ACCEPT", protocol="TCP", ports=str(rule.port),
                ipv4s=list(rule.ipv4) or None, ipv6s=list(rule.ipv6) or None)
                for rule in rules if rule.ipv4 or rule.ipv6],
            tags=["fleetwire"],
            opts=child,
        )
        instance = linode.Instance(
            name,
            label=name,
            region=args.region or defaults.region,
            type=args.instance_type or defaults.instance_type,
            image=args.image or defaults.image,
            authorized_keys=[args.ssh_public_key],
            metadatas=[linode.InstanceMetadataArgs(
                user_data=base64.b64encode(user_data.encode()).decode())],
            firewall_id=firewall.id.apply(int),
            tags=["fleetwire"],
            opts=child,
        )
        self.address = instance.ipv4s.apply(_first_public)
        self.address_v6 = instance.ipv6.apply(lambda v: v.split("/")[0] if v else None)
        return [instance, firewall]

    def _aws(self, name: str, args: PublicNodeArgs, defaults: _CloudDefaults, rules: Sequence[PortRule],
             user_data: str, child: pulumi.ResourceOptions) -> list[pulumi.CustomResource]:
        import pulumi_aws as aws

        group = aws.ec2.SecurityGroup(
            f"{name}-firewall",
            description="fleetwire node: 443 to the world, 80 for HTTP-01, SSH and Kubernetes API to admins",
            ingress=[aws.ec2.SecurityGroupIngressArgs(
                protocol="tcp", from_port=rule.port, to_port=rule.port, description=rule.label,
                cidr_blocks=list(rule.ipv4), ipv6_cidr_blocks=list(rule.ipv6))
                for rule in rules if rule.ipv4 or rule.ipv6],
            egress=[aws.ec2.SecurityGroupEgressArgs(
                protocol="-1", from_port=0, to_port=0, cidr_blocks=[WORLD_V4], ipv6_cidr_blocks=[WORLD_V6],
                description="all outbound (packages, ACME, Fleet API, backends)")],
            tags={"Name": f"{name}-firewall", "app": "fleetwire"},
            opts=child,
        )
        key = aws.ec2.KeyPair(f"{name}-ssh", public_key=args.ssh_public_key, tags={"app": "fleetwire"}, opts=child)
        ami: pulumi.Input[str]
        if args.image:
            ami = args.image
        else:
            ami = aws.ec2.get_ami_output(
                owners=[UBUNTU_OWNER], most_recent=True,
                filters=[aws.ec2.GetAmiFilterArgs(name="name", values=[UBUNTU_AMI_NAME]),
                         aws.ec2.GetAmiFilterArgs(name="architecture", values=["x86_64"])],
                opts=pulumi.InvokeOptions(parent=self)).id
        instance = aws.ec2.Instance(
            name,
            ami=ami,
            instance_type=args.instance_type or defaults.instance_type,
            vpc_security_group_ids=[group.id],
            key_name=key.key_name,
            user_data=user_data,
            metadata_options=aws.ec2.InstanceMetadataOptionsArgs(http_tokens="required"),
            root_block_device=aws.ec2.InstanceRootBlockDeviceArgs(volume_size=20, volume_type="gp3",
                                                                  encrypted=True),
            tags={"Name": name, "app": "fleetwire"},
            opts=child,
        )
        eip = aws.ec2.Eip(f"{name}-address", domain="vpc", instance=instance.id,
                          tags={"Name": name, "app": "fleetwire"}, opts=child)
        self.address = eip.public_ip
        self.address_v6 = pulumi.Output.from_input(None)
        return [instance, group, eip]
