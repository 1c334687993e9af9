"""Whole stacks under Pulumi's mocks: what a `pulumi up` would create for each cloud and an
existing cluster, which values stay secret, and the program Pulumi.yaml names.
"""

from __future__ import annotations

import base64
import importlib
import runpy
import sys
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

from infra.settings import SettingsError, load_settings  # noqa: E402

from pulumi_stack import (  # noqa: E402
    AWS_EIP,
    EXISTING_KUBECONFIG,
    EXISTING_V4,
    LINODE_V4,
    LINODE_V6,
    SECRETS,
    VEHICLE_CA,
    as_json,
    base_config,
    configure,
    deploy,
    inbound,
    plain_strings,
    unwrap,
)
from pulumi_stack import event_loop_for_pulumi  # noqa: E402, F401 - an autouse fixture


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
    spec_module = importlib.import_module("fleetwire.operator.resource.spec_parse")
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
    builders = importlib.import_module("fleetwire.operator.resource.builders")
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
