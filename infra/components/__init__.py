"""Reusable component resources: a public k3s node, its DNS records, and the fleetwire install.

Each takes a small frozen `*Args` dataclass and exposes its results as outputs, so another
Pulumi program can use one without the others (e.g. `FleetwireInstall` on a cluster it
made itself, or `DnsRecord` for any address).
"""

from infra.components.dns import DnsRecord, DnsRecordArgs
from infra.components.install import FleetwireInstall, FleetwireInstallArgs
from infra.components.node import PublicNode, PublicNodeArgs

__all__ = ["DnsRecord", "DnsRecordArgs", "FleetwireInstall", "FleetwireInstallArgs", "PublicNode", "PublicNodeArgs"]
