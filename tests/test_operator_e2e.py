"""The operator end to end against the Kubernetes API emulator: handlers, peering, the command."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes
import pytest
from conftest import KopfRunnerFactory, free_port
from kube import (  # noqa: F401 - operator_rbac is a fixture
    CLUSTER_KOPF_PEERINGS,
    FTC,
    KubeApi,
    KubeApiError,
    KubeClient,
    accept_any_spec,
    condition,
    operator_rbac,
)

from fleetwire.operator.resource import crd
from fleetwire.operator.main import PeeringError, ensure_peering

HANDLERS = "fleetwire.operator.handlers.resource"


@pytest.fixture(autouse=True)
def as_the_charts_service_account(operator_rbac: Any) -> Any:
    """The operator runs with the chart's cluster-wide RBAC: a request without a grant is a 403
    and fails the test."""
    return operator_rbac


def ftc(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": FTC.api_version, "kind": FTC.kind, "metadata": {"name": name, "namespace": "default"},
            "spec": {"hostname": "telemetry.example.com", "certificate": {"privateCA": {}}, **spec}}


def spec_valid_is(status: str, generation: int | None = None) -> Any:
    def check(obj: dict[str, Any]) -> bool:
        found = condition(obj, "SpecValid")
        return (found is not None and found["status"] == status
                and (generation is None or found.get("observedGeneration") == generation))
    return check


async def reasons(kube: KubeClient, name: str) -> list[str]:
    return [event.get("reason", "") for event in await kube.events("default", name)]


async def wait_event(kube: KubeClient, name: str, reason: str) -> None:
    for _ in range(200):  # kopf posts events from a background queue
        if reason in await reasons(kube, name):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {reason} event for {name}: {await reasons(kube, name)}")


async def test_the_api_refuses_what_its_schema_refuses(kube: KubeClient) -> None:
    """The CRD's schema and CEL rules, applied by the emulator as by an API server: a 422 naming the field."""
    with pytest.raises(KubeApiError) as refused:
        await kube.create(ftc("fleet", port="443"))
    assert refused.value.status == 422 and refused.value.reason == "Invalid"
    assert refused.value.message == ('FleetTelemetryConfig.fleetwire.io "fleet" is invalid: spec.port: Invalid value: '
                                     '"443": spec.port in body must be of type integer: "string"')
    assert refused.value.body["details"]["causes"] == [{
        "reason": "FieldValueTypeInvalid", "field": "spec.port",
        "message": 'Invalid value: "443": spec.port in body must be of type integer: "string"'}]
    with pytest.raises(KubeApiError) as cel:
        await kube.create(ftc("fleet", certificate={"privateCA": {"validityDays": 30, "leafValidityDays": 60}}))
    assert [c["field"] for c in cel.value.body["details"]["causes"]] == ["spec.certificate.privateCA"]
    assert "leafValidityDays must not exceed validityDays" in cel.value.message
    created = await kube.create(ftc("fleet", certificate={"privateCA": {}}, vehicleSpeed=1))
    assert "vehicleSpeed" not in created["spec"]  # unknown fields are pruned, as the API server does
    assert created["spec"]["port"] == 443 and created["spec"]["certificate"]["privateCA"]["validityDays"] > 0
    with pytest.raises(KubeApiError) as patched:
        await kube.patch(FTC, "fleet", {"spec": {"port": 0}}, "default")
    assert patched.value.status == 422 and patched.value.body["details"]["causes"][0]["field"] == "spec.port"


async def test_spec_valid_condition_follows_the_spec(kopf_runner: KopfRunnerFactory, kube: KubeClient,
                                                     kube_api: KubeApi) -> None:
    """Behind a CRD that accepts anything (an older release's), the operator's own checks decide."""
    accept_any_spec(kube_api)
    kopf_runner(HANDLERS)
    await kube.create(ftc("fleet", port="443"))
    invalid = await kube.wait_for(FTC, "fleet", "default", spec_valid_is("False", 1))
    found = condition(invalid, "SpecValid")
    assert found is not None and found["reason"] == "InvalidSpec"
    assert found["message"].startswith("spec.port: must be an integer, not the string '443'")
    await wait_event(kube, "fleet", "InvalidSpec")

    await kube.patch(FTC, "fleet", {"spec": {"port": 443}}, "default")
    valid = await kube.wait_for(FTC, "fleet", "default", spec_valid_is("True", 2))
    assert valid["status"]["observedGeneration"] == 2
    annotations = valid["metadata"]["annotations"]
    assert f"{crd.GROUP}/last-handled-configuration" in annotations
    assert not [key for key in annotations if key.startswith("kopf.zalando.org/")]
    await wait_event(kube, "fleet", "Valid")


async def test_a_restarted_operator_resumes_quietly(kopf_runner: KopfRunnerFactory, kube: KubeClient) -> None:
    first = kopf_runner(HANDLERS)
    await kube.create(ftc("fleet"))
    await kube.wait_for(FTC, "fleet", "default", spec_valid_is("True"))
    await wait_event(kube, "fleet", "Valid")
    await asyncio.to_thread(first.stop)
    second = kopf_runner(HANDLERS)
    await second.logged("Handler 'spec_valid' succeeded")  # the resume handler ran
    await asyncio.sleep(0.5)  # room for an event that should not come
    assert (await reasons(kube, "fleet")).count("Valid") == 1


def _client(kube_api: KubeApi) -> kubernetes.client.ApiClient:
    return kubernetes.config.new_client_from_config(str(kube_api.kubeconfig))


def test_ensure_peering_creates_once_and_explains_missing_crds(kube_api: KubeApi) -> None:
    api = _client(kube_api)
    with pytest.raises(PeeringError, match="kopfpeerings.yaml"):
        ensure_peering("fleetwire", ("ops",), api)
    kube_api.install_crds(crd.build_peering_crds())
    assert ensure_peering("fleetwire", ("ops", "edge"), api) == ["ops/fleetwire", "edge/fleetwire"]
    assert ensure_peering("fleetwire", ("ops", "edge"), api) == []
    assert ensure_peering("fleetwire", (), api) == ["fleetwire"]
    assert kube_api.find(CLUSTER_KOPF_PEERINGS, "fleetwire") is not None


async def _peer_priorities(kube: KubeClient) -> list[int]:
    peering = await kube.get(CLUSTER_KOPF_PEERINGS, "fleetwire")
    return sorted(int(peer["priority"]) for peer in (peering.get("status") or {}).values() if peer)


async def test_two_replicas_one_works_and_the_other_takes_over(
    kopf_runner: KopfRunnerFactory, kube_api: KubeApi, kube: KubeClient
) -> None:
    kube_api.install_crds(crd.build_peering_crds())
    ensure_peering("fleetwire", (), _client(kube_api))
    leader = kopf_runner(HANDLERS, peering="fleetwire", priority=20)
    await leader.logged("Resuming operations after the pause")
    follower = kopf_runner(HANDLERS, peering="fleetwire", priority=10)
    for _ in range(200):  # both keep-alives are in: the follower saw the leader and stays paused
        if await _peer_priorities(kube) == [10, 20]:
            break
        await asyncio.sleep(0.05)
    assert await _peer_priorities(kube) == [10, 20]

    await kube.create(ftc("first"))
    await kube.wait_for(FTC, "first", "default", spec_valid_is("True"))
    assert any("[default/first] Handler 'spec_valid' succeeded" in line for line in leader.logs)
    assert not any("default/first" in line for line in follower.logs)

    await asyncio.to_thread(leader.stop)  # it removes its keep-alive on the way out
    await follower.logged("Resuming operations after the pause")
    await kube.create(ftc("second"))
    await kube.wait_for(FTC, "second", "default", spec_valid_is("True"))
    assert any("[default/second] Handler 'spec_valid' succeeded" in line for line in follower.logs)
    assert await _peer_priorities(kube) == [10]


async def test_fleetwire_operator_command(kube_api: KubeApi, kube: KubeClient, tmp_path: Path) -> None:
    kube_api.install_crds(crd.build_peering_crds())
    liveness = f"http://127.0.0.1:{free_port()}/healthz"
    log = tmp_path / "operator.log"
    env = {**os.environ, "KUBECONFIG": str(kube_api.kubeconfig)}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "fleetwire.cli", "operator", "--all-namespaces", "--liveness", liveness,
             "--priority", "7"], env=env, stdout=out, stderr=subprocess.STDOUT)
    kube.diagnostics = [lambda: "--- fleetwire operator output ---\n" + log.read_text()]
    try:
        for _ in range(600):  # imports and login take a few seconds
            peering = await kube.find(CLUSTER_KOPF_PEERINGS, "fleetwire")
            if peering is not None and await _peer_priorities(kube) == [7]:
                break
            assert process.poll() is None, log.read_text()
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"no keep-alive from the operator\n{log.read_text()}")
        async with aiohttp.ClientSession() as session:
            async with session.get(liveness) as response:
                assert response.status == 200
        accept_any_spec(kube_api)  # the API's schema would refuse the typo itself
        await kube.create(ftc("fleet", fields={"VehicleSpede": {"interval_seconds": 10}}))
        invalid = await kube.wait_for(FTC, "fleet", "default", spec_valid_is("False"), timeout=30)
        assert condition(invalid, "SpecValid")["message"] == (  # type: ignore[index]
            "spec.fields.VehicleSpede: unknown field (did you mean 'VehicleSpeed'?)")
    finally:
        process.send_signal(signal.SIGTERM)
        exit_code = await asyncio.to_thread(process.wait, 30)
    assert exit_code == 0, log.read_text()
    assert await _peer_priorities(kube) == []  # it left the peering on its way out
