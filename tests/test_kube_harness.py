"""The Kubernetes test harness: the extended emulator behaves as an API server where the
operator relies on it, kopf runs against it, and kubectl talks to it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from conftest import KopfRunnerFactory
from kube import (
    CLUSTER_KOPF_PEERINGS,
    CONFIGMAPS,
    CRDS,
    FTC,
    KOPF_PEERINGS,
    SECRETS,
    SERVICES,
    KubeApi,
    KubeApiError,
    KubeClient,
    Selector,
    merge_diff,
    merge_patch,
)

from fleetwire.operator.resource import crd

HERE = Path(__file__).parent
MINIMAL_OPERATOR = HERE / "kopf_minimal_operator.py"
CHART_CRDS = HERE.parent / "charts" / "fleetwire" / "crds"


def ftc(name: str = "fleet", hostname: str = "telemetry.example.com", namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": FTC.api_version,
        "kind": FTC.kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"hostname": hostname, "certificate": {"privateCA": {}}},
    }


def config_map(name: str, labels: dict[str, str] | None = None, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels or {}}, "data": data}


# -- pure helpers ------------------------------------------------------------------------


def test_merge_patch_and_diff_round_trip() -> None:
    old = {"a": 1, "b": {"c": 2, "d": [1, 2]}, "e": "x"}
    new = {"a": 1, "b": {"c": 3, "d": [1]}, "f": {"g": True}}
    patch = merge_diff(old, new)
    assert patch == {"e": None, "b": {"c": 3, "d": [1]}, "f": {"g": True}}
    assert merge_patch(old, patch) == new


def test_selectors() -> None:
    labels = {"app": "server", "tier": "edge"}.get
    assert Selector.parse("app=server,tier in (edge, core)").matches(labels)
    assert Selector.parse("app==server,!missing").matches(labels)
    assert not Selector.parse("app!=server").matches(labels)
    assert not Selector.parse("tier notin (edge)").matches(labels)
    assert not Selector.parse("missing").matches(labels)


# -- the emulator as an API server -------------------------------------------------------


async def test_create_stamps_metadata_and_answers_201(kube_api: KubeApi) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{kube_api.url}/api/v1/namespaces/ns1/configmaps", json=config_map("one")) as rsp:
            assert rsp.status == 201
            body = await rsp.json()
    meta = body["metadata"]
    assert meta["namespace"] == "ns1" and meta["uid"] and meta["generation"] == 1
    assert int(meta["resourceVersion"]) > 0 and meta["creationTimestamp"].endswith("Z")


async def test_generate_name_conflict_and_unknown_resource(kube: KubeClient) -> None:
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"generateName": "ev-"},
             "involvedObject": {"kind": "ConfigMap", "namespace": "default", "name": "cm"}}  # required by the API
    first = await kube.create(event)
    second = await kube.create(event)
    assert first["metadata"]["name"].startswith("ev-") and first["metadata"]["name"] != second["metadata"]["name"]
    await kube.create(config_map("dup"))
    with pytest.raises(KubeApiError) as conflict:
        await kube.create(config_map("dup"))
    assert conflict.value.status == 409
    with pytest.raises(KubeApiError) as missing:
        await kube.request("POST", "/apis/example.com/v1/namespaces/default/widgets", {"metadata": {"name": "w"}})
    assert missing.value.status == 404


async def test_versions_generation_and_noop_patches(kube: KubeClient) -> None:
    created = await kube.create(ftc())
    version = int(created["metadata"]["resourceVersion"])
    same = await kube.patch(FTC, "fleet", {"spec": {"hostname": "telemetry.example.com"}}, "default")
    assert same["metadata"]["resourceVersion"] == str(version)  # nothing changed: no new version
    labelled = await kube.patch(FTC, "fleet", {"metadata": {"labels": {"a": "b"}}}, "default")
    assert int(labelled["metadata"]["resourceVersion"]) > version and labelled["metadata"]["generation"] == 1
    changed = await kube.patch(FTC, "fleet", {"spec": {"hostname": "t2.example.com"}}, "default")
    assert changed["metadata"]["generation"] == 2
    with pytest.raises(KubeApiError) as stale:
        await kube.patch(FTC, "fleet", {"metadata": {"resourceVersion": str(version)}, "spec": {"port": 1}}, "default")
    assert stale.value.status == 409


async def test_status_subresource_is_separate(kube: KubeClient) -> None:
    await kube.create({**ftc(), "status": {"ignored": True}})
    fresh = await kube.get(FTC, "fleet", "default")
    assert "status" not in fresh
    await kube.patch(FTC, "fleet", {"spec": {"port": 8443}, "status": {"sneaked": True}}, "default")
    await kube.patch(FTC, "fleet", {"spec": {"port": 1}, "status": {"phase": "Ready"}}, "default", subresource="status")
    obj = await kube.get(FTC, "fleet", "default")
    assert obj["spec"]["port"] == 8443 and obj["status"] == {"phase": "Ready"}


async def test_put_json_patch_and_apply_patch(kube: KubeClient) -> None:
    created = await kube.create(config_map("cm", a="1", b="2"))
    replaced = await kube.replace({**created, "data": {"c": "3"}})
    assert replaced["data"] == {"c": "3"}
    with pytest.raises(KubeApiError) as stale:
        await kube.replace({**created, "data": {"d": "4"}})
    assert stale.value.status == 409
    patched = await kube.patch(CONFIGMAPS, "cm", [{"op": "add", "path": "/data/e", "value": "5"}], "default",
                               content_type="application/json-patch+json")
    assert patched["data"] == {"c": "3", "e": "5"}
    applied = await kube.patch(CONFIGMAPS, "new", config_map("new", z="26"), "default",
                               content_type="application/apply-patch+yaml")
    assert applied["data"] == {"z": "26"} and applied["metadata"]["uid"]


async def test_lists_filter_by_selectors(kube: KubeClient) -> None:
    await kube.create(config_map("a", {"app": "server"}))
    await kube.create(config_map("b", {"app": "operator"}))
    await kube.create(config_map("c", {"app": "server"}), namespace="other")
    listing = await kube.request("GET", CONFIGMAPS.path("default"))
    assert listing["kind"] == "ConfigMapList" and int(listing["metadata"]["resourceVersion"]) >= 3
    assert [o["metadata"]["name"] for o in await kube.list(CONFIGMAPS, labels={"app": "server"})] == ["a", "c"]
    assert [o["metadata"]["name"] for o in await kube.list(CONFIGMAPS, "default", fields="metadata.name!=a")] == ["b"]


async def test_watch_resumes_from_version_and_ends_at_timeout(kube_api: KubeApi, kube: KubeClient) -> None:
    first = await kube.create(config_map("first"))
    since = first["metadata"]["resourceVersion"]
    await kube.create(config_map("second", {"watched": "yes"}))
    url = f"{kube_api.url}{CONFIGMAPS.path('default')}"
    params = {"watch": "true", "resourceVersion": since, "timeoutSeconds": "1", "labelSelector": "watched"}
    async with aiohttp.ClientSession() as session:
        async with session.get(url, params=params) as rsp:
            reading = asyncio.ensure_future(rsp.content.read())
            await asyncio.sleep(0.2)
            await kube.patch(CONFIGMAPS, "second", {"data": {"x": "1"}}, "default")
            await kube.patch(CONFIGMAPS, "first", {"data": {"x": "1"}}, "default")  # not selected
            body = await asyncio.wait_for(reading, 5)  # the stream ends by itself after 1 s
    events = [json.loads(line) for line in body.splitlines() if line.strip()]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "second"), ("MODIFIED", "second")]


async def test_finalizers_and_garbage_collection(kube: KubeClient) -> None:
    owner = await kube.create(ftc())
    reference = {"apiVersion": FTC.api_version, "kind": FTC.kind, "name": "fleet", "uid": owner["metadata"]["uid"]}
    await kube.create({**config_map("owned"), "metadata": {"name": "owned", "ownerReferences": [reference]}})
    child = await kube.create({"apiVersion": "v1", "kind": "Secret",
                               "metadata": {"name": "owned-secret", "finalizers": ["example.com/keep"],
                                            "ownerReferences": [reference]}})
    await kube.patch(FTC, "fleet", {"metadata": {"finalizers": ["example.com/hold"]}}, "default")
    held = await kube.delete(FTC, "fleet", "default")
    assert held["metadata"]["deletionTimestamp"]
    assert await kube.find(CONFIGMAPS, "owned", "default") is not None  # the owner still exists
    await kube.patch(FTC, "fleet", {"metadata": {"finalizers": None}}, "default")
    await kube.wait_gone(FTC, "fleet", "default", timeout=2)
    await kube.wait_gone(CONFIGMAPS, "owned", "default", timeout=2)
    marked = await kube.get(SECRETS, "owned-secret", "default")
    assert marked["metadata"]["deletionTimestamp"] and marked["metadata"]["uid"] == child["metadata"]["uid"]


async def test_created_crd_becomes_discoverable(kube: KubeClient) -> None:
    for definition in yaml.safe_load_all((CHART_CRDS / "kopfpeerings.yaml").read_text()):
        await kube.create(definition)
    peering = await kube.create({"apiVersion": "kopf.dev/v1", "kind": "KopfPeering",
                                 "metadata": {"name": "fleetwire", "namespace": "ops"}})
    assert peering["metadata"]["namespace"] == "ops"
    assert (await kube.resource_for("kopf.dev/v1", "ClusterKopfPeering")) == CLUSTER_KOPF_PEERINGS
    assert (await kube.resource_for("kopf.dev/v1", "KopfPeering")).path("ops") == KOPF_PEERINGS.path("ops")
    await kube.delete(CRDS, "kopfpeerings.kopf.dev")
    listing = await kube.request("GET", "/apis/kopf.dev/v1")
    assert [entry["name"] for entry in listing["resources"]] == ["clusterkopfpeerings"]
    with pytest.raises(KubeApiError) as gone:
        await kube.request("POST", KOPF_PEERINGS.path("ops"), {"metadata": {"name": "again"}})
    assert gone.value.status == 404


# -- kopf against the emulator -----------------------------------------------------------


async def test_kopf_handler_creates_configmap_and_patches_status(
    kopf_runner: KopfRunnerFactory, kube: KubeClient
) -> None:
    operator = kopf_runner(MINIMAL_OPERATOR)
    owner = await kube.create(ftc())
    made = await kube.wait_for(CONFIGMAPS, "fleet-hostname", "default", what="to be created by the handler")
    assert made["data"] == {"hostname": "telemetry.example.com"}
    assert made["metadata"]["ownerReferences"][0]["uid"] == owner["metadata"]["uid"]
    status = await kube.wait_for(FTC, "fleet", "default", lambda o: "configMap" in o.get("status", {}))
    assert status["status"]["configMap"] == "fleet-hostname"
    assert "kopf.zalando.org/last-handled-configuration" in status["metadata"]["annotations"]
    for _ in range(100):  # kopf posts events from a background queue
        if any(e.get("reason") == "ConfigMapCreated" for e in await kube.events("default", "fleet")):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"no event from kopf: {await kube.events('default')}")

    await kube.patch(FTC, "fleet", {"spec": {"hostname": "t2.example.com"}}, "default")
    await kube.wait_for(CONFIGMAPS, "fleet-hostname", "default", lambda o: o["data"]["hostname"] == "t2.example.com")

    await kube.delete(FTC, "fleet", "default")
    await kube.wait_gone(FTC, "fleet", "default")  # kopf ran the delete handler, released its finalizer
    await kube.wait_gone(CONFIGMAPS, "fleet-hostname", "default")  # garbage-collected
    await operator.logged("letting fleet go")


async def test_kopf_handles_objects_that_existed_before_it_started(
    kopf_runner: KopfRunnerFactory, kube_api: KubeApi, kube: KubeClient
) -> None:
    kube_api.create(ftc("early"))
    operator = kopf_runner(MINIMAL_OPERATOR)
    await asyncio.to_thread(operator.wait_started)
    await kube.wait_for(CONFIGMAPS, "early-hostname", "default")
    assert kube_api.watchers(FTC) >= 1


# -- kubectl ------------------------------------------------------------------------------


def _kubectl(kube_api: KubeApi, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kube_api.kubeconfig), "HOME": str(kube_api.directory)}
    return subprocess.run(["kubectl", *args], env=env, input=stdin, capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_apply_get_and_server_side_apply(kube_api: KubeApi, tmp_path: Path) -> None:
    example = tmp_path / "example.yaml"
    example.write_text(yaml.safe_dump_all([config_map("settings", a="1"), ftc("from-kubectl")]))
    applied = _kubectl(kube_api, "apply", "-f", str(example), "--validate=false")
    assert applied.returncode == 0, applied.stderr
    assert "configmap/settings created" in applied.stdout
    assert f"{crd.SINGULAR}.{crd.GROUP}/from-kubectl created" in applied.stdout

    again = _kubectl(kube_api, "apply", "-f", str(example), "--validate=false")
    assert again.returncode == 0 and "unchanged" in again.stdout, again.stderr
    example.write_text(yaml.safe_dump_all([config_map("settings", a="2"), ftc("from-kubectl", "t3.example.com")]))
    changed = _kubectl(kube_api, "apply", "-f", str(example), "--validate=false")
    assert changed.returncode == 0 and changed.stdout.count("configured") == 2, changed.stderr + changed.stdout
    assert kube_api.get(CONFIGMAPS, "settings", "default")["data"] == {"a": "2"}

    listed = _kubectl(kube_api, "get", "ftc", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert [item["spec"]["hostname"] for item in json.loads(listed.stdout)["items"]] == ["t3.example.com"]

    crds = _kubectl(kube_api, "apply", "-f", str(CHART_CRDS), "--validate=false")
    assert crds.returncode == 0 and "kopfpeerings.kopf.dev created" in crds.stdout, crds.stderr
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "server"},
               "spec": {"ports": [{"port": 443}]}}
    server_side = _kubectl(kube_api, "apply", "--server-side", "--validate=false", "-f", "-", stdin=json.dumps(service))
    assert server_side.returncode == 0, server_side.stderr
    assert kube_api.get(SERVICES, "server", "default")["spec"]["ports"] == [{"port": 443}]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_shows_the_api_servers_refusal(kube_api: KubeApi, tmp_path: Path) -> None:
    """Admission: the CRD's schema refuses a string port; kubectl prints the 422 as from a cluster."""
    bad = ftc("refused")
    bad["spec"]["port"] = "443"
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(yaml.safe_dump(bad))
    refused = _kubectl(kube_api, "apply", "-f", str(manifest), "--validate=false")
    assert refused.returncode == 1
    assert refused.stderr.strip() == ('The FleetTelemetryConfig "refused" is invalid: spec.port: Invalid value: "443": '
                                      'spec.port in body must be of type integer: "string"')
    config = config_map("typed")
    config["data"] = {"retries": 3}  # ConfigMap data holds strings only
    typed = _kubectl(kube_api, "apply", "-f", "-", "--validate=false", stdin=json.dumps(config))
    assert typed.returncode == 1 and 'The ConfigMap "typed" is invalid' in typed.stderr, typed.stderr
    assert "* data.retries: Invalid value: 3 is not of type 'string', 'null' (Kubernetes 1.25.0)" in typed.stderr
