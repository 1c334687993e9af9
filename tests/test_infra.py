"""The Pulumi program under Pulumi's mocks (`pulumi.runtime.set_mocks`), for each cloud and an existing cluster.

No engine runs here: the mocks receive every resource the program declares, with its
inputs as the engine would get them (secrets still wrapped), and answer with outputs. The
tests check what a `pulumi up` would create: firewall rules, DNS records, the Helm values,
the FleetTelemetryConfig, which values stay secret, and that a wrong hostname stops the
program before any resource exists.

Here: the stack settings' checks and the node's pure parts; whole stacks: test_infra_stacks.py.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

# The provider SDKs announce their own deprecated resources when imported: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

from infra.components.node import firewall_rules, k3s_cloud_config, public_kubeconfig  # noqa: E402
from infra.program import build  # noqa: E402
from infra.settings import RootDomainError, SettingsError, check_root_domain, load_settings  # noqa: E402

from fleetwire.pki import make_ca  # noqa: E402
from pulumi_stack import (  # noqa: E402
    ADMIN,
    K3S_KUBECONFIG,
    LINODE_V4,
    VEHICLE_CA,
    base_config,
    configure,
)
from pulumi_stack import event_loop_for_pulumi  # noqa: E402, F401 - an autouse fixture


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
