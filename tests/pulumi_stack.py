"""What the infra tests share: Pulumi's mocks standing in for the providers, a complete stack
config per cloud, and readers of what a program registered.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import sys
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

import pulumi  # noqa: E402
# The provider SDKs announce their own deprecated resources when imported: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
from pulumi.runtime import rpc  # noqa: E402
from pulumi.runtime.mocks import MockCallArgs, MockMonitor, MockResourceArgs, Mocks  # noqa: E402
from pulumi.runtime.sync_await import _sync_await  # noqa: E402

from infra.program import build  # noqa: E402

from fleetwire.pki import make_ca  # noqa: E402


LINODE_V4, LINODE_V6 = "203.0.113.10", "2001:db8::10"
AWS_EIP = "198.51.100.20"
EXISTING_V4 = "192.0.2.30"
ADMIN = ["198.51.100.7/32", "2001:db8:aa::/64"]
SECRETS = {
    "sshPrivateKey": "-----BEGIN OPENSSH PRIVATE KEY-----\nsecret-ssh-key\n-----END OPENSSH PRIVATE KEY-----",
    "fleetApiClientSecret": "secret-client-secret-value",
    "fleetApiRefreshToken": "secret-refresh-token-value",
    "fleetApiPrivateKey": "-----BEGIN EC PRIVATE KEY-----\nsecret-signing-key\n-----END EC PRIVATE KEY-----",
    "dns01ApiToken": "secret-cloudflare-token-value",
}
K3S_KUBECONFIG = yaml.safe_dump({
    "apiVersion": "v1", "kind": "Config", "current-context": "default",
    "clusters": [{"name": "default", "cluster": {"server": "https://127.0.0.1:6443",
                                                 "certificate-authority-data": "Q0E="}}],
    "contexts": [{"name": "default", "context": {"cluster": "default", "user": "default"}}],
    "users": [{"name": "default", "user": {"client-certificate-data": "Q0VSVA==", "client-key-data": "S0VZ"}}],
})
EXISTING_KUBECONFIG = K3S_KUBECONFIG.replace("127.0.0.1", "k8s.example.com")
VEHICLE_CA = "".join(make_ca(cn).cert_pem.decode() for cn in ("Test Vehicle Root CA", "Test Vehicle Issuing CA"))
"""Stands in for Tesla's bundle (prod_ca.crt): two PEM certificates."""


def base_config(cloud: str, **extra: Any) -> dict[str, Any]:
    """A complete stack config; `extra` overrides or adds keys (None removes one)."""
    config: dict[str, Any] = {
        "cloud": cloud,
        "hostname": "telemetry.example.com",
        "appDomain": "example.com",
        "acmeEmail": "ops@example.com",
        "vehicleCa": VEHICLE_CA,
        "vins": ["5YJ3E1EA7KF000001", "5YJ3E1EA7KF000002"],
        "fields": {"VehicleSpeed": 10, "Odometer": {"interval_seconds": 60}},
        "fleetApiClientId": "client-id-1",
        "fleetApiClientSecret": SECRETS["fleetApiClientSecret"],
        "fleetApiRefreshToken": SECRETS["fleetApiRefreshToken"],
        "fleetApiPrivateKey": SECRETS["fleetApiPrivateKey"],
    }
    if cloud == "existing":
        config.update(kubeconfig=EXISTING_KUBECONFIG, address=EXISTING_V4, dnsProvider="cloudflare")
    else:
        config.update(adminCidrs=ADMIN, sshPublicKey="ssh-ed25519 AAAAC3Nza admin@example.com",
                      sshPrivateKey=SECRETS["sshPrivateKey"])
    config.update(extra)
    return {k: v for k, v in config.items() if v is not None}


@dataclass
class Registered:
    typ: str
    name: str
    inputs: dict[str, Any]
    id: str = ""
    additional_secret_outputs: tuple[str, ...] = ()
    ignore_changes: tuple[str, ...] = ()


class Cloud(Mocks):
    """Answers like the providers would: addresses for nodes, zone IDs for lookups."""

    def __init__(self) -> None:
        self.resources: list[Registered] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def new_resource(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        registered = Registered(args.typ, args.name, args.inputs, id=str(1001 + len(self.resources)))
        self.resources.append(registered)
        outputs = dict(args.inputs)
        if args.typ == "linode:index/instance:Instance":
            outputs.update(ipv4s=["192.168.140.5", LINODE_V4], ipv6=f"{LINODE_V6}/128")
        elif args.typ == "aws:ec2/eip:Eip":
            outputs["publicIp"] = AWS_EIP
        elif args.typ == "aws:ec2/keyPair:KeyPair":
            outputs["keyName"] = "fleetwire-node-ssh"
        elif args.typ == "command:remote:Command":
            outputs["stdout"] = K3S_KUBECONFIG
        return registered.id, outputs

    def call(self, args: MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        self.calls.append((args.token, dict(args.args)))
        answers: dict[str, dict[str, Any]] = {
            "linode:index/getDomain:getDomain": {"id": 4242, "domain": "example.com"},
            "aws:route53/getZone:getZone": {"id": "Z0EXAMPLE", "zoneId": "Z0EXAMPLE", "name": "example.com"},
            "cloudflare:index/getZone:getZone": {"id": "cf0zone", "name": "example.com"},
            "aws:ec2/getAmi:getAmi": {"id": "ami-0ubuntu", "architecture": "x86_64"},
        }
        return answers.get(args.token, {}), []


class RecordingMonitor(MockMonitor):
    """The mock monitor, also keeping the resource options the engine would act on."""

    def __init__(self, mocks: Cloud) -> None:
        super().__init__(mocks)
        self.cloud = mocks

    def RegisterResource(self, request: Any) -> Any:  # the gRPC method it overrides
        response = super().RegisterResource(request)
        for registered in reversed(self.cloud.resources):
            if registered.name == request.name and registered.typ == request.type:
                registered.additional_secret_outputs = tuple(request.additionalSecretOutputs)
                registered.ignore_changes = tuple(request.ignoreChanges)
                break
        return response


@dataclass
class Stack:
    resources: list[Registered]
    outputs: dict[str, Any] = field(default_factory=dict)
    secret_outputs: set[str] = field(default_factory=set)

    def of_type(self, typ: str) -> list[Registered]:
        return [r for r in self.resources if r.typ == typ]

    def one(self, typ: str) -> Registered:
        found = self.of_type(typ)
        assert len(found) == 1, f"expected one {typ}, got {[r.name for r in found]}"
        return found[0]


_PULUMI_LOOP: list[asyncio.AbstractEventLoop] = []


@pytest.fixture(autouse=True, scope="module")
def event_loop_for_pulumi() -> Iterator[None]:
    """Pulumi's mocks run on the thread's current event loop and keep futures of it in
    global state between programs; async tests before these may have closed that loop,
    left none or installed uvloop's, so the infra test modules get one plain asyncio loop
    of their own, the same for all of them (closed when the process exits)."""
    if not _PULUMI_LOOP:
        _PULUMI_LOOP.append(asyncio.SelectorEventLoop())
        atexit.register(_PULUMI_LOOP[0].close)
    asyncio.set_event_loop(_PULUMI_LOOP[0])
    yield
    asyncio.set_event_loop(None)


def configure(config: Mapping[str, Any], plain: Collection[str] = ()) -> Cloud:
    """Install fresh mocks and the stack config; keys in SECRETS are secret unless listed in `plain`."""
    cloud = Cloud()
    pulumi.runtime.set_mocks(cloud, project="fleetwire", stack="test", preview=False, monitor=RecordingMonitor(cloud))
    values = {f"fleetwire:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}
    secret = [f"fleetwire:{k}" for k in config if (k in SECRETS or k == "kubeconfig") and k not in plain]
    pulumi.runtime.set_all_config(values, secret)
    return cloud


def deploy(config: Mapping[str, Any]) -> Stack:
    """Run the program under the mocks; returns what was registered and the resolved outputs."""
    cloud = configure(config)
    stack = Stack(cloud.resources)

    @pulumi.runtime.test
    def program() -> Any:
        outputs = build().outputs
        keys = list(outputs)

        def collect(values: list[Any]) -> None:
            stack.outputs.update(zip(keys, values))
            for key in keys:
                if _sync_await(outputs[key].is_secret()):
                    stack.secret_outputs.add(key)

        return pulumi.Output.all(*outputs.values()).apply(collect)

    program()
    return stack


def unwrap(value: Any) -> Any:
    """Inputs with secret markers removed (to read values)."""
    if rpc.is_rpc_secret(value):
        return unwrap(rpc.unwrap_rpc_secret(value))
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


def as_json(value: Any) -> Any:
    """Numbers as the API server receives them: the engine carries every number as a double,
    and a whole double is written as an integer in the JSON sent to Kubernetes."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_json(v) for v in value]
    return value


def plain_strings(value: Any) -> Iterator[str]:
    """Every string in `value` that is not inside a secret: what would be stored in clear."""
    if rpc.is_rpc_secret(value):
        return
    if isinstance(value, dict):
        for item in value.values():
            yield from plain_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from plain_strings(item)
    elif isinstance(value, str):
        yield value


def inbound(stack: Stack) -> dict[int, tuple[set[str], set[str]]]:
    """Port → (IPv4 sources, IPv6 sources), from the Linode firewall or the AWS security group."""
    rules: dict[int, tuple[set[str], set[str]]] = {}
    for fw in stack.of_type("linode:index/firewall:Firewall"):
        assert fw.inputs["inboundPolicy"] == "DROP"
        for rule in fw.inputs["inbounds"]:
            assert rule["action"] == "ACCEPT" and rule["protocol"] == "TCP"
            rules[int(rule["ports"])] = (set(rule.get("ipv4s") or ()), set(rule.get("ipv6s") or ()))
    for group in stack.of_type("aws:ec2/securityGroup:SecurityGroup"):
        for rule in group.inputs["ingress"]:
            assert rule["protocol"] == "tcp" and rule["fromPort"] == rule["toPort"]
            rules[int(rule["fromPort"])] = (set(rule.get("cidrBlocks") or ()), set(rule.get("ipv6CidrBlocks") or ()))
    return rules
