"""The Pulumi program under Pulumi's mocks (`pulumi.runtime.set_mocks`), for each cloud and an existing cluster.

No engine runs here: the mocks receive every resource the program declares, with its
inputs as the engine would get them (secrets still wrapped), and answer with outputs. The
tests check what a `pulumi up` would create: firewall rules, DNS records, the Helm values,
the FleetTelemetryConfig, which values stay secret, and that a wrong hostname stops the
program before any resource exists.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import runpy
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

from infra.components.node import firewall_rules, k3s_cloud_config, public_kubeconfig  # noqa: E402
from infra.program import build  # noqa: E402
from infra.settings import RootDomainError, SettingsError, check_root_domain, load_settings  # noqa: E402

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


@pytest.fixture(autouse=True, scope="module")
def event_loop_for_pulumi() -> Iterator[None]:
    """Pulumi's mocks run on the thread's current event loop and keep futures of it in
    global state between programs; async tests before these may have closed that loop,
    left none or installed uvloop's, so this module gets one plain asyncio loop of its own."""
    loop = asyncio.SelectorEventLoop()
    asyncio.set_event_loop(loop)
    yield
    asyncio.set_event_loop(None)
    loop.close()


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


# -- the root domain check -----------------------------------------------------------------

@pytest.mark.parametrize(("hostname", "app_domain", "root"), [
    ("telemetry.example.com", "example.com", "example.com"),
    ("telemetry.example.com", "app.example.com", "example.com"),
    ("a.b.example.co.uk", "fleet.example.co.uk", "example.co.uk"),
    ("Telemetry.Example.com.", "example.com", "example.com"),
])
def test_root_domain_shared(hostname: str, app_domain: str, root: str) -> None:
    assert check_root_domain(hostname, app_domain) == root


@pytest.mark.parametrize(("hostname", "app_domain"), [
    ("telemetry.example.net", "example.com"),
    ("telemetry.evil-example.com", "example.com"),
    ("example.com.attacker.net", "example.com"),
    ("telemetry.other.co.uk", "app.example.co.uk"),
])
def test_root_domain_refused(hostname: str, app_domain: str) -> None:
    with pytest.raises(RootDomainError) as info:
        check_root_domain(hostname, app_domain)
    message = str(info.value)
    assert hostname in message and "root domain" in message
    assert f"telemetry.{check_root_domain('x.' + app_domain, app_domain)}" in message  # suggests a valid name


def test_public_suffix_is_not_an_app_domain() -> None:
    with pytest.raises(RootDomainError, match="public suffix"):
        check_root_domain("telemetry.co.uk", "co.uk")


def test_wrong_root_domain_fails_before_any_resource() -> None:
    cloud = configure(base_config("linode", hostname="telemetry.example.net"))
    with pytest.raises(SettingsError) as info:
        build()
    assert "fleetwire:hostname" in str(info.value) and "example.com" in str(info.value)
    assert cloud.resources == []


def test_every_problem_is_reported_at_once() -> None:
    configure(base_config("aws", adminCidrs=["0.0.0.0/0"], vins=["short"], acmeEmail=None, logLevel="loud"))
    with pytest.raises(SettingsError) as info:
        load_settings()
    keys = {key for key, _ in info.value.problems}
    assert {"fleetwire:adminCidrs", "fleetwire:vins", "fleetwire:acmeEmail", "fleetwire:logLevel"} <= keys


_BROKEN_PEM = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"


@pytest.mark.parametrize(("value", "message"), [
    (None, "is required.*prod_ca.crt"),
    ("prod_ca.crt", "no readable PEM certificate"),
    (_BROKEN_PEM, "no readable PEM certificate"),
    (VEHICLE_CA + make_ca("Leaked").key_pem.decode(), "private key"),
], ids=["missing", "a-file-name", "broken-pem", "with-a-key"])
def test_vehicle_ca_is_checked_before_any_resource(value: str | None, message: str) -> None:
    cloud = configure(base_config("linode", vehicleCa=value))
    with pytest.raises(SettingsError) as info:
        build()
    problems = dict(info.value.problems)
    assert set(problems) == {"fleetwire:vehicleCa"}
    assert re.search(message, problems["fleetwire:vehicleCa"])
    assert cloud.resources == []


def test_fields_accept_seconds_written_as_text() -> None:
    configure(base_config("linode", fields={"VehicleSpeed": "10", "Location": {"interval_seconds": "30",
                                                                              "minimum_delta": "25.5"}}))
    assert load_settings().telemetry.fields == {"VehicleSpeed": {"interval_seconds": 10},
                                                "Location": {"interval_seconds": 30, "minimum_delta": 25.5}}
    configure(base_config("linode", fields={"VehicleSpeed": True}))
    with pytest.raises(SettingsError, match="VehicleSpeed"):
        load_settings()


def test_secret_config_in_plain_text_is_refused() -> None:
    configure(base_config("linode"), plain={"fleetApiClientSecret"})
    with pytest.raises(SettingsError, match=r"pulumi config set --secret fleetApiClientSecret"):
        load_settings()


# -- pure parts of the node ----------------------------------------------------------------

def test_firewall_policy() -> None:
    rules = {r.port: r for r in firewall_rules(ADMIN, http01=True)}
    assert set(rules) == {443, 80, 22, 6443}
    for port in (443, 80):
        assert (rules[port].ipv4, rules[port].ipv6) == (("0.0.0.0/0",), ("::/0",))
    for port in (22, 6443):
        assert (rules[port].ipv4, rules[port].ipv6) == (("198.51.100.7/32",), ("2001:db8:aa::/64",))
    assert {r.port for r in firewall_rules(ADMIN, http01=False)} == {443, 22, 6443}


def test_cloud_init_installs_k3s_without_traefik() -> None:
    text = k3s_cloud_config("telemetry.example.com")
    assert text.startswith("#cloud-config\n")
    document = yaml.safe_load(text)
    (k3s_file,) = [f for f in document["write_files"] if f["path"] == "/etc/rancher/k3s/config.yaml"]
    k3s = yaml.safe_load(k3s_file["content"])
    assert k3s["disable"] == ["traefik"]
    assert k3s["tls-san"] == ["telemetry.example.com"]
    assert any("get.k3s.io" in cmd for cmd in document["runcmd"])
    assert "INSTALL_K3S_VERSION=v1.33.5+k3s1" in k3s_cloud_config("t.example.com", "v1.33.5+k3s1")


def test_public_kubeconfig_reaches_the_node_by_address() -> None:
    doc = yaml.safe_load(public_kubeconfig(K3S_KUBECONFIG, LINODE_V4, "telemetry.example.com"))
    cluster = doc["clusters"][0]["cluster"]
    assert cluster["server"] == f"https://{LINODE_V4}:6443"
    assert cluster["tls-server-name"] == "telemetry.example.com"
    assert cluster["certificate-authority-data"] == "Q0E="
    assert doc["current-context"] == "fleetwire"
    assert doc["contexts"][0]["context"] == {"cluster": "fleetwire", "user": "fleetwire"}


# -- whole stacks ----------------------------------------------------------------------------

@pytest.mark.parametrize("challenge", ["http01", "dns01"])
@pytest.mark.parametrize("cloud", ["linode", "aws"])
def test_only_telemetry_ports_are_open_to_the_world(cloud: str, challenge: str) -> None:
    extra: dict[str, Any] = {"challenge": challenge}
    if challenge == "dns01":
        extra.update(dns01ApiToken=SECRETS["dns01ApiToken"], dnsProvider="cloudflare")
    stack = deploy(base_config(cloud, **extra))
    rules = inbound(stack)
    world = {port for port, (v4, v6) in rules.items() if "0.0.0.0/0" in v4 or "::/0" in v6}
    assert world == ({443, 80} if challenge == "http01" else {443})
    for port in world:
        assert rules[port] == ({"0.0.0.0/0"}, {"::/0"})
    assert rules[22] == rules[6443] == ({"198.51.100.7/32"}, {"2001:db8:aa::/64"})
    assert set(rules) == world | {22, 6443}


def test_linode_node() -> None:
    stack = deploy(base_config("linode", region="eu-central", instanceType="g6-standard-4"))
    instance = stack.one("linode:index/instance:Instance")
    firewall = stack.one("linode:index/firewall:Firewall")
    assert instance.inputs["region"] == "eu-central" and instance.inputs["type"] == "g6-standard-4"
    assert instance.inputs["authorizedKeys"] == ["ssh-ed25519 AAAAC3Nza admin@example.com"]
    assert int(instance.inputs["firewallId"]) == int(firewall.id)  # attached at creation: no open window
    user_data = base64.b64decode(instance.inputs["metadatas"][0]["userData"]).decode()
    assert "traefik" in yaml.safe_load(yaml.safe_load(user_data)["write_files"][0]["content"])["disable"]
    record = stack.one("linode:index/domainRecord:DomainRecord")
    assert (record.inputs["recordType"], record.inputs["name"], record.inputs["target"]) == ("A", "telemetry", LINODE_V4)
    assert record.inputs["domainId"] == 4242
    assert stack.outputs["nodeAddress"] == LINODE_V4
    assert stack.outputs["sshCommand"] == f"ssh root@{LINODE_V4}"


def test_linode_aaaa_record_when_ipv6_is_asked_for() -> None:
    stack = deploy(base_config("linode", ipv6="true"))
    records = {r.inputs["recordType"]: r.inputs for r in stack.of_type("linode:index/domainRecord:DomainRecord")}
    assert records["A"]["target"] == LINODE_V4
    assert records["AAAA"]["target"] == LINODE_V6
    assert records["AAAA"]["name"] == "telemetry"


def test_aws_node() -> None:
    stack = deploy(base_config("aws"))
    instance = stack.one("aws:ec2/instance:Instance")
    eip = stack.one("aws:ec2/eip:Eip")
    assert instance.inputs["ami"] == "ami-0ubuntu"
    assert instance.inputs["metadataOptions"]["httpTokens"] == "required"
    assert "traefik" in instance.inputs["userData"]
    assert eip.inputs["domain"] == "vpc"
    record = stack.one("aws:route53/record:Record")
    assert record.inputs["zoneId"] == "Z0EXAMPLE"
    assert (record.inputs["name"], record.inputs["type"], record.inputs["records"]) == (
        "telemetry.example.com", "A", [AWS_EIP])
    assert not stack.of_type("linode:index/instance:Instance")
    assert stack.outputs["nodeAddress"] == AWS_EIP
    assert stack.outputs["sshCommand"] == f"ssh ubuntu@{AWS_EIP}"


def test_cloudflare_record_points_at_the_node_and_is_not_proxied() -> None:
    stack = deploy(base_config("aws", dnsProvider="cloudflare"))
    record = stack.one("cloudflare:index/dnsRecord:DnsRecord")
    assert record.inputs["zoneId"] == "cf0zone"
    assert (record.inputs["name"], record.inputs["type"], record.inputs["content"]) == (
        "telemetry.example.com", "A", AWS_EIP)
    assert record.inputs["proxied"] is False
    assert not stack.of_type("aws:route53/record:Record")


def test_kubeconfig_is_fetched_over_ssh_and_stays_secret() -> None:
    stack = deploy(base_config("linode"))
    command = stack.one("command:remote:Command")
    assert "stdout" in command.additional_secret_outputs
    assert rpc.is_rpc_secret(command.inputs["connection"])
    connection = unwrap(command.inputs["connection"])
    assert (connection["host"], connection["user"]) == (LINODE_V4, "root")
    assert "/etc/rancher/k3s/k3s.yaml" in command.inputs["create"]
    provider = stack.one("pulumi:providers:kubernetes")
    assert rpc.is_rpc_secret(provider.inputs["kubeconfig"])
    server = yaml.safe_load(unwrap(provider.inputs["kubeconfig"]))["clusters"][0]["cluster"]["server"]
    assert server == f"https://{LINODE_V4}:6443"
    assert "kubeconfig" in stack.secret_outputs


def test_existing_cluster_mode() -> None:
    stack = deploy(base_config("existing"))
    assert not [r for r in stack.resources if r.typ.startswith(("linode:", "aws:", "command:"))]
    provider = stack.one("pulumi:providers:kubernetes")
    assert rpc.is_rpc_secret(provider.inputs["kubeconfig"])
    assert unwrap(provider.inputs["kubeconfig"]) == EXISTING_KUBECONFIG
    record = stack.one("cloudflare:index/dnsRecord:DnsRecord")
    assert record.inputs["content"] == EXISTING_V4
    assert stack.outputs["nodeAddress"] == EXISTING_V4
    assert "kubeconfig" in stack.secret_outputs and "sshCommand" not in stack.outputs


def test_existing_cluster_without_dns() -> None:
    stack = deploy(base_config("existing", dnsProvider="none", address=None))
    assert not [r for r in stack.resources if r.typ.startswith(("cloudflare:", "linode:", "aws:"))]
    spec = unwrap(stack.one("kubernetes:fleetwire.io/v1alpha1:FleetTelemetryConfig").inputs["spec"])
    assert spec["hostname"] == "telemetry.example.com"


def test_existing_cluster_needs_a_secret_kubeconfig() -> None:
    configure(base_config("existing", kubeconfig=None))
    with pytest.raises(SettingsError, match="fleetwire:kubeconfig"):
        load_settings()


@pytest.mark.parametrize("cloud", ["linode", "aws", "existing"])
def test_helm_release_gets_values_from_stack_config(cloud: str) -> None:
    stack = deploy(base_config(cloud, replicas="2", logLevel="debug", watchNamespace="vehicles",
                               imageRepository="registry.example.com/fleetwire", imageTag="0.1.0-rc1",
                               namespace="fleetwire-system"))
    release = stack.one("kubernetes:helm.sh/v3:Release")
    assert Path(release.inputs["chart"]) == ROOT / "charts" / "fleetwire"
    assert (Path(release.inputs["chart"]) / "Chart.yaml").is_file()
    assert release.inputs["namespace"] == "fleetwire-system" and release.inputs["createNamespace"] is True
    values = release.inputs["values"]
    assert values["replicas"] == 2
    assert values["logLevel"] == "debug"
    assert values["watchNamespace"] == "vehicles"
    assert values["image"] == {"repository": "registry.example.com/fleetwire", "tag": "0.1.0-rc1"}
    assert values["acmeHttp01"] == {"enabled": True}
    # The watched namespace exists before the chart puts its Role there; the resource lives in it.
    namespace = stack.one("kubernetes:core/v1:Namespace")
    assert namespace.inputs["metadata"]["name"] == "vehicles"
    resource = stack.one("kubernetes:fleetwire.io/v1alpha1:FleetTelemetryConfig")
    assert resource.inputs["metadata"]["namespace"] == "vehicles"
    assert stack.outputs["statusCommand"] == "kubectl -n vehicles get fleettelemetryconfigs"


def test_chart_defaults_stay_when_config_is_unset() -> None:
    stack = deploy(base_config("linode", challenge="dns01", dns01ApiToken=SECRETS["dns01ApiToken"]))
    values = stack.one("kubernetes:helm.sh/v3:Release").inputs["values"]
    assert "image" not in values
    assert values["acmeHttp01"] == {"enabled": False}
    assert not stack.of_type("kubernetes:core/v1:Namespace")


@pytest.mark.parametrize("cloud", ["linode", "aws", "existing"])
def test_resource_hostname_is_the_dns_name(cloud: str) -> None:
    stack = deploy(base_config(cloud))
    records = [r for r in stack.resources if r.typ in (
        "linode:index/domainRecord:DomainRecord", "aws:route53/record:Record", "cloudflare:index/dnsRecord:DnsRecord")]
    assert len(records) == 1
    record = records[0].inputs
    dns_name = record["name"] if "." in record["name"] else f"{record['name']}.example.com"
    resource = stack.one("kubernetes:fleetwire.io/v1alpha1:FleetTelemetryConfig")
    assert resource.inputs["apiVersion"] == "fleetwire.io/v1alpha1"
    assert resource.inputs["kind"] == "FleetTelemetryConfig"
    spec = unwrap(resource.inputs["spec"])
    assert spec["hostname"] == dns_name == stack.outputs["hostname"] == "telemetry.example.com"
    assert spec["port"] == 443
    assert spec["vehicles"] == ["5YJ3E1EA7KF000001", "5YJ3E1EA7KF000002"]
    assert spec["fields"] == {"VehicleSpeed": {"interval_seconds": 10}, "Odometer": {"interval_seconds": 60}}
    assert spec["certificate"] == {"acme": {"email": "ops@example.com", "challenge": "http01"}}
    assert stack.outputs["pairingUrl"] == "https://tesla.com/_ak/example.com"
    assert "{.data.ca\\.crt}" in stack.outputs["caCommand"]


def test_resource_spec_is_accepted_by_the_operator() -> None:
    spec_module = pytest.importorskip("fleetwire.operator.resource.spec_parse", reason="operator/resource/spec_parse.py is not there yet")
    stack = deploy(base_config("linode", challenge="dns01", dns01ApiToken=SECRETS["dns01ApiToken"],
                               fleetApiRegion="eu", acmeDirectory="https://acme-staging-v02.api.letsencrypt.org/directory"))
    spec = unwrap(stack.one("kubernetes:fleetwire.io/v1alpha1:FleetTelemetryConfig").inputs["spec"])
    parsed = spec_module.parse_spec(as_json(spec))
    assert parsed.hostname == "telemetry.example.com"
    assert parsed.certificate.dns01.zone == "example.com"
    assert parsed.certificate.dns01.api_token.name == "fleetwire-dns01"
    assert parsed.fleet_api.partner_credentials_secret == "fleetwire-fleet-api-partner"


@pytest.mark.parametrize(("extra", "namespace", "name"), [
    ({}, "fleetwire", "fleetwire-vehicle-ca"),
    ({"watchNamespace": "vehicles", "resourceName": "garage"}, "vehicles", "garage-vehicle-ca"),
], ids=["release-namespace", "watched-namespace"])
def test_vehicle_ca_reaches_the_operator(extra: dict[str, str], namespace: str, name: str) -> None:
    stack = deploy(base_config("existing", **extra))
    config_map = stack.one("kubernetes:core/v1:ConfigMap")
    assert config_map.inputs["metadata"]["namespace"] == namespace
    assert config_map.inputs["metadata"]["name"] == name
    assert config_map.inputs["data"] == {"ca.crt": VEHICLE_CA}
    resource = stack.one("kubernetes:fleetwire.io/v1alpha1:FleetTelemetryConfig")
    assert resource.inputs["metadata"]["namespace"] == namespace
    builders = pytest.importorskip("fleetwire.operator.resource.builders", reason="operator/resource/builders.py is not there yet")
    # The names the operator's server mounts: `<resource name>-vehicle-ca`, key ca.crt.
    assert name == builders.Names(resource.inputs["metadata"]["name"]).vehicle_ca
    assert set(config_map.inputs["data"]) == {builders.VEHICLE_CA_KEY}


@pytest.mark.parametrize("cloud", ["linode", "aws", "existing"])
def test_secrets_stay_secret(cloud: str) -> None:
    stack = deploy(base_config(cloud, challenge="dns01", dns01ApiToken=SECRETS["dns01ApiToken"]))
    secrets = {r.inputs["metadata"]["name"]: r for r in stack.of_type("kubernetes:core/v1:Secret")}
    assert set(secrets) == {"fleetwire-fleet-api-partner", "fleetwire-fleet-api-user",
                            "fleetwire-fleet-api-signing-key", "fleetwire-dns01"}
    for secret in secrets.values():
        assert rpc.is_rpc_secret(secret.inputs["stringData"]), secret.name
        assert secret.inputs["metadata"]["namespace"] == "fleetwire"
    assert unwrap(secrets["fleetwire-fleet-api-partner"].inputs["stringData"]) == {
        "client_id": "client-id-1", "client_secret": SECRETS["fleetApiClientSecret"]}
    assert unwrap(secrets["fleetwire-fleet-api-user"].inputs["stringData"]) == {
        "refresh_token": SECRETS["fleetApiRefreshToken"]}
    assert unwrap(secrets["fleetwire-fleet-api-signing-key"].inputs["stringData"]) == {
        "private-key.pem": SECRETS["fleetApiPrivateKey"]}
    assert unwrap(secrets["fleetwire-dns01"].inputs["stringData"]) == {"api-token": SECRETS["dns01ApiToken"]}
    # The operator rotates the single-use refresh token: Pulumi must not write the old one back.
    assert set(secrets["fleetwire-fleet-api-user"].ignore_changes) >= {"stringData", "data"}
    # Nothing secret is stored in clear anywhere: not in Helm values, the resource, DNS or the node.
    for registered in stack.resources:
        clear = "\n".join(plain_strings(registered.inputs))
        for value in SECRETS.values():
            assert value not in clear, f"{registered.typ} {registered.name} holds a secret in clear"
    assert "kubeconfig" in stack.secret_outputs
    assert not {"hostname", "nodeAddress", "pairingUrl", "caCommand"} & stack.secret_outputs


def test_pulumi_runs_the_program_from_pulumi_yaml() -> None:
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert project["runtime"]["name"] == "python"
    assert project["main"].rstrip("/") == "infra"
    cloud = configure(base_config("aws"))
    main = ROOT / project["main"] / "__main__.py"

    @pulumi.runtime.test
    def program() -> Any:
        runpy.run_path(str(main), run_name="__main__")
        return pulumi.Output.from_input(None)

    program()
    assert {r.typ for r in cloud.resources} >= {"aws:ec2/instance:Instance", "kubernetes:helm.sh/v3:Release",
                                                "kubernetes:fleetwire.io/v1alpha1:FleetTelemetryConfig"}
