"""DnsRecord: the telemetry hostname's A (and AAAA) records, at Cloudflare, Linode or Route53.

One interface whatever the provider, so the rest of the program never branches on it: give
the zone, the full name and the addresses; read back `fqdn`, the name vehicles are told
to connect to. Cloudflare records are never proxied: Cloudflare's proxy would terminate
TLS, and vehicles must present their client certificates to the fleetwire server itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

__all__ = ["DNS_TTL", "PROVIDERS", "DnsRecord", "DnsRecordArgs", "relative_name"]

PROVIDERS = ("cloudflare", "linode", "route53")
DNS_TTL = 300
"""Five minutes: short enough to move the node, long enough not to matter to vehicles."""


def relative_name(fqdn: str, zone: str) -> str:
    """The record name inside `zone` ("" for the apex), as Linode Domains expects it."""
    if fqdn == zone:
        return ""
    suffix = "." + zone
    if not fqdn.endswith(suffix):
        raise ValueError(f"{fqdn!r} is not inside the zone {zone!r}")
    return fqdn[: -len(suffix)]


@dataclass(frozen=True)
class DnsRecordArgs:
    """`zone_id` skips the lookup of the zone by name (Cloudflare zone ID, Route53 hosted zone ID, Linode domain ID)."""

    provider: str
    zone: str
    fqdn: str
    ipv4: pulumi.Input[str]
    ipv6: pulumi.Input[str] | None = None
    zone_id: str | None = None


class DnsRecord(pulumi.ComponentResource):
    """A (and, when `ipv6` is given, AAAA) records for `fqdn`; output `fqdn`."""

    fqdn: pulumi.Output[str]

    def __init__(self, name: str, args: DnsRecordArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("fleetwire:infra:DnsRecord", name, None, opts)
        if args.provider not in PROVIDERS:
            raise ValueError(f"DnsRecord: provider must be one of {', '.join(PROVIDERS)}, not {args.provider!r}")
        relative_name(args.fqdn, args.zone)  # refuse a name outside the zone before anything is created
        self._name = name
        self._args = args
        self._child = pulumi.ResourceOptions(parent=self)
        create = {"cloudflare": self._cloudflare, "linode": self._linode, "route53": self._route53}[args.provider]
        records = [create("A", args.ipv4)]
        if args.ipv6 is not None:
            records.append(create("AAAA", args.ipv6))
        # The name is an output of the records so that whatever uses it waits for them.
        self.fqdn = pulumi.Output.all(*[r.id for r in records]).apply(lambda _: args.fqdn)
        self.register_outputs({"fqdn": self.fqdn})

    def _cloudflare(self, kind: str, value: pulumi.Input[str]) -> pulumi.CustomResource:
        import pulumi_cloudflare as cloudflare

        zone_id: pulumi.Input[str] = self._args.zone_id or cloudflare.get_zone_output(
            filter=cloudflare.GetZoneFilterArgs(name=self._args.zone, match="all"),
            opts=pulumi.InvokeOptions(parent=self)).id
        return cloudflare.DnsRecord(
            f"{self._name}-{kind.lower()}", zone_id=zone_id, name=self._args.fqdn, type=kind,
            content=value, ttl=DNS_TTL, proxied=False, comment="fleetwire telemetry server", opts=self._child)

    def _linode(self, kind: str, value: pulumi.Input[str]) -> pulumi.CustomResource:
        import pulumi_linode as linode

        domain_id: pulumi.Input[int] = int(self._args.zone_id) if self._args.zone_id else linode.get_domain_output(
            domain=self._args.zone, opts=pulumi.InvokeOptions(parent=self)).id.apply(int)
        return linode.DomainRecord(
            f"{self._name}-{kind.lower()}", domain_id=domain_id, record_type=kind,
            name=relative_name(self._args.fqdn, self._args.zone), target=value, ttl_sec=DNS_TTL, opts=self._child)

    def _route53(self, kind: str, value: pulumi.Input[str]) -> pulumi.CustomResource:
        import pulumi_aws as aws

        zone_id: pulumi.Input[str] = self._args.zone_id or aws.route53.get_zone_output(
            name=self._args.zone, private_zone=False, opts=pulumi.InvokeOptions(parent=self)).zone_id
        return aws.route53.Record(
            f"{self._name}-{kind.lower()}", zone_id=zone_id, name=self._args.fqdn, type=kind, ttl=DNS_TTL,
            records=[value], opts=self._child)
