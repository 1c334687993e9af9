"""RBAC enforced by the emulator: the operator authorized as the chart's ServiceAccount.

The Role/ClusterRole come from a real `helm template` of the chart (both modes). A grant
taken out of the chart turns the operator's call into a 403 and the story into a failure.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import KopfRunnerFactory
from kube import (  # noqa: F401 - kubelet is a fixture
    CLUSTER_WIDE,
    FTC,
    ONE_NAMESPACE,
    KubeApi,
    KubeClient,
    OperatorRbac,
    chart_policy,
    condition,
    kubelet,
    unexpected_denials,
)

import helm_chart
from fleetwire.sim.rbac import Access, Policy, access_of

HANDLERS = "fleetwire.operator.handlers.resource"
NS = "default"


@pytest.fixture(scope="module")
def chart_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("chart-rbac")
    try:
        helm_chart.find_helm(directory / "helm-cache")
    except helm_chart.HelmUnavailable as exc:
        pytest.skip(str(exc))
    return directory


def ftc(name: str, namespace: str = NS) -> dict[str, Any]:
    return {"apiVersion": FTC.api_version, "kind": FTC.kind, "metadata": {"name": name, "namespace": namespace},
            "spec": {"hostname": "telemetry.example.com", "certificate": {"privateCA": {}},
                     "server": {"records": {"V": ["logger"]}}}}


async def vehicle_ca(kube: KubeClient, name: str, namespace: str = NS) -> None:
    from fleetwire import pki

    await kube.create({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": f"{name}-vehicle-ca", "namespace": namespace},
                       "data": {"ca.crt": pki.make_ca("Vehicle Root").cert_pem.decode()}})


def ready(obj: dict[str, Any]) -> bool:
    return all((condition(obj, t) or {}).get("status") == "True" for t in ("SpecValid", "CertificateReady",
                                                                           "ServerReady"))


# -- the policy, pure -----------------------------------------------------------------------


def test_verbs_are_the_api_servers() -> None:
    assert access_of("GET", "", "secrets", None, "ns", "x", {}).verb == "get"
    assert access_of("GET", "", "secrets", None, "ns", None, {}).verb == "list"
    assert access_of("GET", "", "secrets", None, "ns", None, {"watch": "true"}).verb == "watch"
    assert access_of("DELETE", "", "secrets", None, "ns", None, {}).verb == "deletecollection"
    assert access_of("PATCH", "fleetwire.io", "fleettelemetryconfigs", "status", "ns", "x", {}).triple == (
        "patch", "fleetwire.io", "fleettelemetryconfigs/status")


def test_the_charts_two_modes(chart_dir: Path) -> None:
    cluster = chart_policy(CLUSTER_WIDE, chart_dir)
    assert cluster.user == "system:serviceaccount:fleetwire:fleetwire"
    status = Access("patch", "fleetwire.io", "fleettelemetryconfigs", "status", "anywhere", "fleet")
    assert cluster.denial(status) is None
    assert cluster.denial(Access("list", "apiextensions.k8s.io", "customresourcedefinitions")) is None
    assert cluster.denial(Access("update", "fleetwire.io", "fleettelemetryconfigs", None, NS, "fleet")) == (
        'fleettelemetryconfigs.fleetwire.io "fleet" is forbidden: User "system:serviceaccount:fleetwire:fleetwire" '
        'cannot update resource "fleettelemetryconfigs" in API group "fleetwire.io" in the namespace "default"')
    one = chart_policy(ONE_NAMESPACE, chart_dir)
    assert one.denial(Access("patch", "fleetwire.io", "fleettelemetryconfigs", "status", NS, "fleet")) is None
    assert one.denial(Access("patch", "fleetwire.io", "fleettelemetryconfigs", "status", "other", "fleet"))
    assert one.denial(Access("list", "apiextensions.k8s.io", "customresourcedefinitions")) == (
        'customresourcedefinitions.apiextensions.k8s.io is forbidden: User "system:serviceaccount:fleetwire:fleetwire"'
        ' cannot list resource "customresourcedefinitions" in API group "apiextensions.k8s.io" at the cluster scope')
    less = cluster.without("create", "apps", "deployments")
    assert less.denial(Access("create", "apps", "deployments", None, NS)) and \
        less.denial(Access("patch", "apps", "deployments", None, NS, "x")) is None


# -- stories under the chart's RBAC ------------------------------------------------------------


async def test_one_namespace_mode_story(kopf_runner: KopfRunnerFactory, kube: KubeClient, kube_api: KubeApi,
                                        kubelet: Any, chart_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """watchNamespace: a Role in that namespace only; the operator serves it (`-n`) and nothing else,
    without the cluster-scoped scans a Role cannot grant (`main.scoped`)."""
    started = time.monotonic()
    monkeypatch.setenv("FLEETWIRE_RECONCILE_SECONDS", "1")
    monkeypatch.setenv("FLEETWIRE_IMAGE", "ghcr.io/fleetwire/fleetwire:test")
    rbac = OperatorRbac(kube_api, chart_dir)
    rbac.enforce(ONE_NAMESPACE)
    kopf_runner(HANDLERS, namespaces=[NS])
    await vehicle_ca(kube, "fleet")
    await kube.create(ftc("fleet"))
    obj = await kube.wait_for(FTC, "fleet", NS, lambda o: ready(o) and condition(o, "ServerReady")["reason"]
                              == "Available", timeout=120, what="ready with the pod's readiness")
    assert obj["status"]["server"]["readyReplicas"] == 1
    print(f"one-namespace mode: ready {time.monotonic() - started:.0f} s after the operator started")
    rbac.check()  # nothing refused at all


async def test_a_grant_removed_from_the_chart_fails_the_story_with_a_403(
    kopf_runner: KopfRunnerFactory, kube: KubeClient, kube_api: KubeApi, chart_dir: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The chart's rbac.yaml without `create` on deployments: the operator's server-side apply of
    the server's Deployment (which creates it) is refused, ServerReady says so, the check fails."""
    monkeypatch.setenv("FLEETWIRE_RECONCILE_SECONDS", "1")
    chart = tmp_path / "chart"
    shutil.copytree(helm_chart.CHART, chart)
    rbac_file = chart / "templates" / "rbac.yaml"
    text = rbac_file.read_text()
    grant = '''  - apiGroups: ["apps"]
    resources: ["deployments"]
    verbs: ["create", "patch"]'''
    assert grant in text
    rbac_file.write_text(text.replace(grant, grant.replace('"create", ', "")))
    policy: Policy = chart_policy(CLUSTER_WIDE, chart_dir, chart=chart)
    rbac = OperatorRbac(kube_api, chart_dir)
    rbac.enforce(CLUSTER_WIDE, policy=policy)
    kopf_runner(HANDLERS)
    await vehicle_ca(kube, "fleet")
    await kube.create(ftc("fleet"))
    deadline = time.monotonic() + 20
    while not any(a.triple == ("create", "apps", "deployments") for a in kube_api.denials()):
        assert time.monotonic() < deadline, "the operator was never refused"
        await asyncio.sleep(0.1)
    assert unexpected_denials(kube_api.denials(), CLUSTER_WIDE) == ["create apps deployments (namespace default)"]
    with pytest.raises(AssertionError, match=r"refused \(403\).*create apps deployments"):
        rbac.check()
    kube_api.enforce(None)  # the test has seen what it wanted: let the operator stop in peace
