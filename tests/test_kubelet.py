"""The kubelet stand-in: its pure decisions, and the operator's server Deployment run for real.

The integration tests build the server's objects with the operator's own builders and let
the stand-in run the pod: the command, mounts, environment, ports and probes the operator
writes are executed, so a wrong mount path or a probe on the wrong port fails here.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import os
import re
import shutil
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from kube import CONFIGMAPS, DEPLOYMENTS, PODS, SECRETS, KubeApi, KubeClient, kubelet  # noqa: F401

from fleetwire import pki
from fleetwire.image import IMAGE_REPOSITORY
from fleetwire.operator.resource import builders
from fleetwire.operator.environment import OperatorEnvironment
from fleetwire.operator.resource.spec_parse import parse_spec
from fleetwire.sim import kubelet as kl
from fleetwire.sim.fleet import issue_vehicle_certs
from fleetwire.sim import fleet_pki
from fleetwire.sim.kubelet import KubeletThread
from fleetwire.sim.vehicle import SimulatedVehicle, client_context

ROOT = Path(__file__).resolve().parents[1]
NS = "default"
IMAGE = "ghcr.io/fleetwire/fleetwire:test"
pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed (make test installs it)")


def server_objects(name: str = "fleet", **server: Any) -> list[dict[str, Any]]:
    spec = parse_spec({"hostname": "telemetry.example.com", "certificate": {"privateCA": {}},
                       "server": {"records": {"V": ["logger"]}, **server}})
    objects = builders.server_objects(builders.Owner(name, NS, "uid-1"), spec, OperatorEnvironment(image=IMAGE))
    for obj in objects:
        obj["metadata"].pop("ownerReferences")  # no FleetTelemetryConfig here to own them
    return objects


def deployment_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return next(obj for obj in objects if obj["kind"] == "Deployment")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def tls_secret(name: str, leaf: pki.Bundle, ca: pki.Bundle) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": NS},
            "data": {"tls.crt": _b64(leaf.cert_pem), "tls.key": _b64(leaf.key_pem), "ca.crt": _b64(ca.cert_pem)}}


# ======================================================================================
# Pure decisions
# ======================================================================================

SECRET = {"kind": "Secret", "metadata": {"name": "fleet-tls"}, "data": {"tls.crt": _b64(b"C"), "tls.key": _b64(b"K")}}
VEHICLE_CA = {"kind": "ConfigMap", "metadata": {"name": "fleet-vehicle-ca"}, "data": {"ca.crt": "PEM"}}


def plan(deployment: dict[str, Any], *, secrets: Any = None, config_maps: Any = None) -> kl.PodPlan | kl.Waiting:
    objects = server_objects()
    config = next(o for o in objects if o["kind"] == "ConfigMap")
    return kl.plan_pod(deployment, {"fleet-tls": SECRET} if secrets is None else secrets,
                       {"fleet-vehicle-ca": VEHICLE_CA, config["metadata"]["name"]: config}
                       if config_maps is None else config_maps, "fleet-server-abc")


def test_the_operators_pod_resolves_to_the_image_command_mounts_and_probes() -> None:
    found = plan(deployment_of(server_objects()))
    assert isinstance(found, kl.PodPlan), found
    assert found.argv[-5:] == ("serve", "--config", "/etc/fleetwire/config/config.json", "--workers", "auto")
    assert found.argv[:4] == kl.LOCAL_COMMANDS["fleetwire"][:4]
    assert (found.uid, found.gid, found.workdir) == (65532, 65532, "/tmp")
    assert found.ports == {"vehicles": 8443, "status": 8080, "metrics": 9090}
    assert found.readiness == kl.Probe("http", 8080, "/readyz", period=10, timeout=3)
    assert found.liveness is not None and (found.liveness.initial_delay, found.liveness.port) == (10, 8080)
    assert {m.path: m.volume for m in found.mounts} == {
        "/etc/fleetwire/config": "config", "/etc/fleetwire/tls": "tls", "/etc/fleetwire/vehicle-ca": "vehicle-ca",
        "/tmp": "tmp"}
    assert found.volumes["tls"] == {"tls.crt": (b"C", 0o440), "tls.key": (b"K", 0o440)}
    assert found.volumes["tmp"] is None
    env = dict(found.env)
    assert env["HOME"] == "/tmp" and env["PYTHONUNBUFFERED"] == "1" and env["HOSTNAME"] == "fleet-server-abc"


def test_what_keeps_a_pod_from_starting_is_named() -> None:
    deployment = deployment_of(server_objects())
    missing = plan(deployment, config_maps={})
    assert isinstance(missing, kl.Waiting) and missing.reason == "ContainerCreating"
    assert 'configmap "fleet-server-config" not found' in missing.message
    broken = json.loads(json.dumps(deployment))  # as the API returns it: the probes share nothing
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["httpGet"]["port"] = "statuz"
    unready = plan(broken)  # the kubelet starts it; the probe fails every time ("unknown port")
    assert isinstance(unready, kl.PodPlan) and unready.readiness is not None and unready.readiness.port is None
    assert unready.liveness is not None and unready.liveness.port == 8080
    root = copy.deepcopy(deployment)
    root["spec"]["template"]["spec"]["securityContext"]["runAsUser"] = 0
    assert plan(root) == kl.Waiting("CreateContainerConfigError",
                                    "container has runAsNonRoot and image will run as root")
    other = copy.deepcopy(deployment)
    other["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.27"
    assert isinstance(found := plan(other), kl.Waiting) and found.reason == "ErrImagePull"


def test_env_and_env_from_come_from_secrets_and_config_maps() -> None:
    deployment = deployment_of(server_objects())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["envFrom"] = [{"configMapRef": {"name": "fleet-vehicle-ca"}, "prefix": "CM_"}]
    container["env"] = [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "fleet-tls", "key": "tls.key"}}},
                        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "PLAIN", "value": "x"}]
    found = plan(deployment)
    assert isinstance(found, kl.PodPlan)
    env = dict(found.env)
    assert (env["PASSWORD"], env["POD"], env["PLAIN"], env["CM_ca.crt"]) == ("K", "fleet-server-abc", "x", "PEM")
    container["env"][0]["valueFrom"]["secretKeyRef"]["key"] = "password"
    assert plan(deployment) == kl.Waiting("CreateContainerConfigError",
                                          "couldn't find key password in Secret default/fleet-tls")


def test_the_image_config_is_the_dockerfiles() -> None:
    text = (ROOT / "Dockerfile").read_text()
    image = kl.IMAGES[IMAGE_REPOSITORY]
    final = text.rsplit("FROM ", 1)[1]
    assert f'ENTRYPOINT {list(image.entrypoint)}'.replace("'", '"') in final
    assert f'CMD {list(image.cmd)}'.replace("'", '"') in final
    assert f"USER {image.user}:{image.group}" in final and f"WORKDIR {image.workdir}" in final
    env_line = next(line for line in final.splitlines() if line.startswith("ENV "))
    assert dict(pair.split("=", 1) for pair in env_line[4:].split()) == dict(image.env)


def test_probe_thresholds() -> None:
    probe = kl.Probe("http", 8080, success_threshold=2, failure_threshold=3)
    state = kl.ProbeState(False)
    state = state.observe(True, probe)
    assert not state.passing
    state = state.observe(True, probe)
    assert state.passing
    for _ in range(2):
        state = state.observe(False, probe)
        assert state.passing
    assert not state.observe(False, probe).passing


def test_restart_back_off_doubles_to_a_cap() -> None:
    assert [kl.restart_delay(n) for n in range(7)] == [0, 10, 20, 40, 80, 160, 300]
    assert kl.restart_delay(3, base=0.5, cap=1.5) == 1.5


def test_rollout_surges_one_and_keeps_ready_pods_until_replaced() -> None:
    assert kl.rollout(1, "new", []) == kl.Rollout(1, ())
    old_ready = kl.PodView("a", "old", ready=True)
    assert kl.rollout(1, "new", [old_ready]) == kl.Rollout(1, ())
    starting = kl.PodView("b", "new", ready=False)
    assert kl.rollout(1, "new", [old_ready, starting]) == kl.Rollout(0, ())
    assert kl.rollout(1, "new", [old_ready, kl.PodView("b", "new", ready=True)]) == kl.Rollout(0, ("a",))
    crashing = kl.PodView("a", "old", ready=False)
    assert kl.rollout(1, "new", [crashing]) == kl.Rollout(1, ("a",))
    assert kl.rollout(0, "new", [old_ready]) == kl.Rollout(0, ("a",))
    assert kl.rollout(1, "new", [kl.PodView("b", "new", True), kl.PodView("c", "new", False)]) == kl.Rollout(0, ("c",))


def test_deployment_status_is_the_controllers() -> None:
    deployment = deployment_of(server_objects())
    deployment["metadata"]["generation"] = 3
    current = kl.template_hash(deployment["spec"]["template"])
    status = kl.deployment_status(deployment, [kl.PodView("p", current, ready=True)], now="T")
    assert {k: v for k, v in status.items() if k != "conditions"} == {
        "observedGeneration": 3, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}
    assert [(c["type"], c["status"], c["reason"]) for c in status["conditions"]] == [
        ("Available", "True", "MinimumReplicasAvailable"), ("Progressing", "True", "NewReplicaSetAvailable")]
    waiting = kl.deployment_status(deployment, [kl.PodView("p", current, ready=False)], now="T")
    assert "readyReplicas" not in waiting and waiting["unavailableReplicas"] == 1
    assert waiting["conditions"][0]["reason"] == "MinimumReplicasUnavailable"


def test_services_reach_ready_pods_by_target_port_name() -> None:
    service = next(o for o in server_objects() if o["kind"] == "Service")
    labels = deployment_of(server_objects())["spec"]["template"]["metadata"]["labels"]
    pods = [(labels, {"vehicles": 8443}, True, "ready"), (labels, {"vehicles": 8443}, False, "starting"),
            ({"app": "other"}, {"vehicles": 8443}, True, "other")]
    assert kl.service_endpoints(service, 443, pods) == [("ready", 8443)]
    assert kl.service_endpoints(service, "vehicles", pods) == [("ready", 8443)]
    assert kl.service_endpoints(service, 80, pods) == []


def test_sandbox_puts_volumes_at_their_mount_paths_without_touching_etc(tmp_path: Path) -> None:
    found = plan(deployment_of(server_objects()))
    assert isinstance(found, kl.PodPlan)
    dirs = {name: tmp_path / name for name in found.volumes}
    args = kl.sandbox_args(found, dirs, tmp_path / "sockets", "pod", exists=lambda p: p in ("/", "/etc", "/tmp"),
                           entries=lambda d: [("passwd", None), ("mtab", "../proc/self/mounts")])
    text = " ".join(args)
    assert "--ro-bind / /" in text and "--tmpfs /etc --ro-bind /etc/passwd /etc/passwd " \
                                      "--symlink ../proc/self/mounts /etc/mtab" in text
    assert f"--ro-bind {dirs['tls']} /etc/fleetwire/tls" in text and f"--bind {dirs['tmp']} /tmp" in text
    assert text.index("--tmpfs /etc") < text.index("/etc/fleetwire/tls") < text.index("--remount-ro /etc")
    assert "--uid 65532 --gid 65532" in text and "--unshare-net" in text and "--clearenv" in text

    # The "image" (this interpreter, its venv, the project) stays visible wherever it lives,
    # even under a volume's mountPath: a clone under /tmp, whose pod mounts an emptyDir there.
    args = kl.sandbox_args(found, dirs, tmp_path / "sockets", "pod", exists=lambda p: p in ("/", "/etc", "/tmp"),
                           entries=lambda d: [], image=("/tmp/clone/.venv", "/usr/lib/python3.11"))
    text = " ".join(args)
    assert "--ro-bind /tmp/clone/.venv /tmp/clone/.venv" in text and "/usr/lib/python3.11" not in text
    assert text.index(f"--bind {dirs['tmp']} /tmp") < text.index("--ro-bind /tmp/clone/.venv")


def test_volumes_are_swapped_through_dot_dot_data(tmp_path: Path) -> None:
    assert kl.write_volume(tmp_path, {"tls.crt": (b"one", 0o440)})
    first = os.readlink(tmp_path / "..data")
    assert os.readlink(tmp_path / "tls.crt") == "..data/tls.crt" and (tmp_path / "tls.crt").read_bytes() == b"one"
    assert not kl.write_volume(tmp_path, {"tls.crt": (b"one", 0o440)})  # unchanged: nothing written
    assert kl.write_volume(tmp_path, {"tls.crt": (b"two", 0o440), "ca.crt": (b"ca", 0o440)})
    assert os.readlink(tmp_path / "..data") != first and not (tmp_path / first).exists()
    assert (tmp_path / "tls.crt").read_bytes() == b"two" and (tmp_path / "ca.crt").read_bytes() == b"ca"
    assert kl.write_volume(tmp_path, {"ca.crt": (b"ca", 0o440)})
    assert not (tmp_path / "tls.crt").is_symlink()  # a key that went away goes


# ======================================================================================
# The operator's Deployment, run
# ======================================================================================


@pytest.fixture
def fleet(tmp_path: Path) -> fleet_pki.FleetPki:
    return fleet_pki.make_test_fleet_pki(tmp_path / "pki")


async def install(kube: KubeClient, fleet: fleet_pki.FleetPki, objects: list[dict[str, Any]]) -> None:
    ca = pki.make_ca("Server CA")
    leaf = pki.make_server_cert(ca, ["localhost", "127.0.0.1"])
    await kube.create(tls_secret("fleet-tls", leaf, ca))
    (fleet.directory / "served-ca.pem").write_bytes(ca.cert_pem)
    await kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fleet-vehicle-ca",
                                                                            "namespace": NS},
                       "data": {"ca.crt": fleet.ca_file.read_text()}})
    for obj in objects:
        await kube.create(obj)


def ready(obj: dict[str, Any]) -> bool:
    return int((obj.get("status") or {}).get("readyReplicas") or 0) >= 1


async def served_certificate(address: tuple[str, int], fleet: fleet_pki.FleetPki, vin: str = "5YJ3SIM0000000001",
                             ) -> x509.Certificate:
    cert, key = issue_vehicle_certs(fleet.vehicle_ca_cert, fleet.vehicle_ca_key, [vin], fleet.directory / "v")[vin]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.load_cert_chain(str(cert), str(key))
    _reader, writer = await asyncio.open_connection(*address, ssl=ctx, server_hostname="localhost")
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return x509.load_der_x509_certificate(der)


async def stream_one(address: tuple[str, int], fleet: fleet_pki.FleetPki, vin: str = "5YJ3SIM0000000001") -> int:
    cert, key = issue_vehicle_certs(fleet.vehicle_ca_cert, fleet.vehicle_ca_key, [vin], fleet.directory / "v")[vin]
    vehicle = SimulatedVehicle(vin, f"wss://localhost:{address[1]}/",
                               client_context(cert, key, fleet.directory / "served-ca.pem"))
    await vehicle.connect()
    for _ in range(3):
        vehicle.send_record("V")
    assert await vehicle.drain(10)
    await vehicle.close()
    return vehicle.stats.acked


async def test_the_operators_deployment_runs_serves_vehicles_and_reloads_a_renewed_secret(
    kube: KubeClient, kube_api: KubeApi, kubelet: KubeletThread, fleet: fleet_pki.FleetPki,
) -> None:
    started = time.monotonic()
    await install(kube, fleet, server_objects())
    deployment = await kube.wait_for(DEPLOYMENTS, "fleet-server", NS, ready, what="ready by its readiness probe")
    took = time.monotonic() - started
    assert deployment["status"]["observedGeneration"] == 1 and deployment["status"]["updatedReplicas"] == 1
    assert {c["type"]: c["status"] for c in deployment["status"]["conditions"]} == {"Available": "True",
                                                                                    "Progressing": "True"}
    (pod,) = kubelet.pods(NS, "fleet-server")
    stored = await kube.get(PODS, pod.name, NS)
    assert stored["status"]["containerStatuses"][0]["ready"] and stored["metadata"]["labels"][
        "app.kubernetes.io/component"] == "server"
    assert not kubelet.kubelet.errors  # every Pod and status it wrote passed the official schemas

    vehicles = await kubelet.wait_address(NS, "fleet-server", 443)
    assert await stream_one(vehicles, fleet) == 3
    metrics = await kubelet.wait_address(NS, "fleet-server-metrics", "metrics")
    _r, w = await asyncio.open_connection(*metrics)
    w.write(b"GET /metrics HTTP/1.0\r\n\r\n")
    text = (await _r.read()).decode()
    w.close()
    assert 'fleetwire_records_total{record_type="V"} 3.0' in text

    # A renewal: the Secret changes, the stand-in swaps ..data, the server reloads in place.
    before = await served_certificate(vehicles, fleet)
    ca = pki.make_ca("Server CA 2")
    await kube.patch(SECRETS, "fleet-tls", {"data": tls_secret("x", pki.make_server_cert(ca, ["localhost"]), ca)[
        "data"]}, NS)
    deadline = time.monotonic() + 20
    while (after := await served_certificate(vehicles, fleet)).serial_number == before.serial_number:
        assert time.monotonic() < deadline, "the pod never served the renewed certificate"
        await asyncio.sleep(0.25)
    assert after.issuer != before.issuer and pod.restarts == 0 and pod.volume_updates == 1
    print(f"pod ready {took:.1f} s after the objects were created")


async def test_a_wrong_mount_path_crash_loops_and_never_gets_ready(
    kube: KubeClient, kubelet: KubeletThread, fleet: fleet_pki.FleetPki,
) -> None:
    objects = server_objects()
    container = deployment_of(objects)["spec"]["template"]["spec"]["containers"][0]
    container["volumeMounts"][0]["mountPath"] = "/etc/fleetwire/conf"  # the args still say .../config/config.json
    await install(kube, fleet, objects)
    deadline = time.monotonic() + 20
    while not (pods := kubelet.pods(NS, "fleet-server")) or pods[0].restarts < 2:
        assert time.monotonic() < deadline, "the pod did not crash and restart"
        await asyncio.sleep(0.1)
    (pod,) = pods
    assert pod.last_exit == 2 and "cannot read the configuration file" in pod.log.read_text()
    stored = await kube.get(PODS, pod.name, NS)
    assert stored["status"]["containerStatuses"][0]["restartCount"] >= 1
    deployment = await kube.get(DEPLOYMENTS, "fleet-server", NS)
    assert "readyReplicas" not in deployment["status"] and deployment["status"]["unavailableReplicas"] == 1


async def test_probes_on_the_wrong_port_fail_readiness_and_liveness_restarts(
    kube: KubeClient, kubelet: KubeletThread, fleet: fleet_pki.FleetPki,
) -> None:
    objects = server_objects()
    container = deployment_of(objects)["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["httpGet"]["port"] = "vehicles"  # TLS only: a plain GET gets no status line
    container["livenessProbe"]["httpGet"]["port"] = 8081  # nothing listens
    await install(kube, fleet, objects)
    deadline = time.monotonic() + 60  # a loaded machine starts the pod late
    while not (pods := kubelet.pods(NS, "fleet-server")) or pods[0].restarts < 1:
        assert time.monotonic() < deadline, "liveness never restarted the container"
        await asyncio.sleep(0.1)
    assert pods[0].last_reason == "Unhealthy" and not pods[0].ready
    assert not ready(await kube.get(DEPLOYMENTS, "fleet-server", NS))


async def test_a_template_change_rolls_the_pod_and_the_service_follows(
    kube: KubeClient, kubelet: KubeletThread, fleet: fleet_pki.FleetPki,
) -> None:
    await install(kube, fleet, server_objects())
    await kube.wait_for(DEPLOYMENTS, "fleet-server", NS, ready)
    (first,) = kubelet.pods(NS, "fleet-server")
    vehicles = await kubelet.wait_address(NS, "fleet-server", 443)
    changed = server_objects(records={"V": ["logger"], "alerts": ["logger"]})
    await kube.replace(next(o for o in changed if o["kind"] == "ConfigMap"))
    template = deployment_of(changed)["spec"]["template"]
    rolled = await kube.patch(DEPLOYMENTS, "fleet-server", {"spec": {"template": template}}, NS)
    await kube.wait_for(DEPLOYMENTS, "fleet-server", NS, lambda d: d["status"].get("observedGeneration") == rolled[
        "metadata"]["generation"] and d["status"].get("updatedReplicas") == 1 and d["status"]["replicas"] == 1
        and ready(d), what="rolled out", timeout=20)
    (second,) = kubelet.pods(NS, "fleet-server")
    assert second.name != first.name and first.name not in {p.name for p in kubelet.kubelet.pods.values()}
    assert await stream_one(vehicles, fleet) == 3  # the Service's address stayed, its endpoint moved
    assert re.search(r'"alerts"', (second.directory / "volumes" / "config" / "config.json").read_text())
    await kube.wait_gone(PODS, first.name, NS)
