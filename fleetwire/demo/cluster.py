"""The cluster demo: the emulated API, the operator in this process, the Fleet API simulator and
its vehicles, the server's pod from the operator's Deployment; then the renewal and the chain
rotation (`fleetwire.demo.chain_rotation`)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from fleetwire.pki import load_bundle
from fleetwire.sim.fleet_pki import make_test_fleet_pki
from fleetwire.sim.fleet import sim_vin
from fleetwire.demo.chain_rotation import renew_and_rotate
from fleetwire.demo.probes import _scrape, _until, ca_of
from fleetwire.demo.stage import DEMO_HOST, DEMO_NAME, DEMO_NAMESPACE, DEMO_OPERATOR_SETTINGS, DEMO_SYNC_DELAY, Stage


def _b64(value: str | bytes) -> str:
    return base64.b64encode(value if isinstance(value, bytes) else value.encode()).decode()


async def whole_loop(cluster: Any, node: Any, stack: contextlib.AsyncExitStack, directory: Path, vehicles: int,
                     say: Callable[[str], None], out: TextIO, step_timeout: float) -> bool:
    """Set the cluster up, configure the vehicles, stream; then renew and rotate; True when all happened."""
    import kubernetes.config.kube_config
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from fleetwire.operator.resource import crd
    from fleetwire.operator.stores.records import decode_record
    from fleetwire.operator.clients.kube import KINDS, KubernetesApi, load_configuration
    from fleetwire.operator.commands.vehicles import format_table
    from fleetwire.operator.policies.vehicles import ca_fingerprint
    from fleetwire.sim.fleetapi import FleetApiSimulator

    cluster.install_crds([crd.build_crd()])
    os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
    kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(cluster.kubeconfig)
    os.environ.update(DEMO_OPERATOR_SETTINGS)
    say(f"Kubernetes API emulator on {cluster.url}, FleetTelemetryConfig CRD installed; "
        "kubelet stand-in running its pods")

    api = KubernetesApi(load_configuration())
    stack.push_async_callback(api.close)
    ns, name = DEMO_NAMESPACE, DEMO_NAME
    resource_path = f"/apis/{crd.GROUP}/{crd.VERSION}/namespaces/{ns}/{crd.PLURAL}/{name}"

    async def create(obj: dict[str, Any]) -> None:
        await api.request("POST", KINDS[obj["kind"]].path(ns), obj)

    async def resource() -> dict[str, Any]:
        return dict(await api.request("GET", resource_path))

    async def vehicles_status() -> dict[str, Any]:
        return dict(((await resource()).get("status") or {}).get("vehicles") or {})

    async def records() -> dict[str, Any]:
        shard = await api.get("ConfigMap", ns, f"{name}-vehicles-0")
        found = {vin: decode_record(vin, text) for vin, text in ((shard or {}).get("data") or {}).items()}
        return {vin: record for vin, record in found.items() if record is not None}

    # The fleet: vehicles that can stream, one whose owner never paired the app's key, one on old firmware.
    pki = make_test_fleet_pki(directory / "pki")
    app_key = ec.generate_private_key(ec.SECP256R1())
    sim = FleetApiSimulator(vehicle_ca=load_bundle(pki.vehicle_ca_cert, pki.vehicle_ca_key),
                            public_key=app_key.public_key(), sync_delay=DEMO_SYNC_DELAY, time_scale=0.05,
                            connect_timeout=1.0, reconnect_delay=(0.1, 0.5))
    healthy = [sim_vin(i) for i in range(vehicles)]
    unpaired, outdated = sim_vin(vehicles), sim_vin(vehicles + 1)
    for vin in healthy:
        sim.add_vehicle(vin)
    sim.add_vehicle(unpaired, key_paired=False)
    sim.add_vehicle(outdated, firmware="2024.14.3")
    await sim.start()
    stack.push_async_callback(sim.stop)
    say(f"Fleet API simulator at {sim.base_url('na')}: {vehicles} vehicles ready, 1 unpaired, 1 on firmware 2024.14")

    tokens = sim.issue_user_tokens()
    key_pem = app_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    for secret_name, data in (
        ("tesla-partner", {"client_id": sim.client_id, "client_secret": sim.apps[sim.client_id].client_secret,
                           "auth_url": sim.auth_url}),
        ("tesla-user", {"refresh_token": tokens["refresh_token"]}),
        ("tesla-app-key", {"private-key.pem": key_pem}),
    ):
        await create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret_name, "namespace": ns},
                      "data": {k: _b64(v) for k, v in data.items()}})
    await create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{name}-vehicle-ca", "namespace": ns},
                  "data": {"ca.crt": pki.ca_file.read_text()}})

    # The operator: kopf with the project's handlers, in this process.
    import logging

    import kopf

    # The timeline says what happens; the failed handshakes of the gap are expected, and kopf's
    # retries while everything shuts down are not news.
    for logger in ("kopf", "asyncio", "fleetwire.operator", "fleetwire.fleetapi", "fleetwire.server"):
        logging.getLogger(logger).setLevel(logging.CRITICAL)
    importlib.import_module("fleetwire.operator.handlers.resource")
    stop = asyncio.Event()
    operator = asyncio.get_running_loop().create_task(
        kopf.operator(standalone=True, clusterwide=True, stop_flag=stop, liveness_endpoint=None), name="operator")

    async def stop_operator() -> None:
        stop.set()
        try:
            await asyncio.wait_for(operator, 15)
        except (TimeoutError, asyncio.CancelledError):
            operator.cancel()

    stack.push_async_callback(stop_operator)
    say("operator started: kopf running fleetwire.operator.handlers.resource")

    spec = {"hostname": DEMO_HOST, "certificate": {"privateCA": {}}, "server": {"records": {"V": ["logger"]}},
            "vehicles": [*healthy, unpaired, outdated],
            "fields": {"VehicleSpeed": {"interval_seconds": 1}, "Soc": {"interval_seconds": 2}},
            "fleetApi": {"baseUrl": sim.base_url("na"), "partnerCredentialsSecretRef": {"name": "tesla-partner"},
                         "userTokenSecretRef": {"name": "tesla-user"},
                         "signingKeySecretRef": {"name": "tesla-app-key"}}}
    await api.request("POST", resource_path.rsplit("/", 1)[0], {
        "apiVersion": f"{crd.GROUP}/{crd.VERSION}", "kind": crd.KIND, "metadata": {"name": name, "namespace": ns},
        "spec": spec})
    say(f"applied FleetTelemetryConfig {ns}/{name}: private CA, {vehicles + 2} vehicles, Fleet API = the simulator")

    # The server: the operator's Deployment, its pod started by the kubelet stand-in.
    first_ca = ca_of(await _until(lambda: api.get("Secret", ns, f"{name}-tls"), step_timeout, "the certificate"))
    say(f"certificate issued for {DEMO_HOST} by the operator's private CA (ca {ca_fingerprint(first_ca)[:16]})")

    async def server_ready() -> dict[str, Any] | None:
        found = {c["type"]: c for c in ((await resource()).get("status") or {}).get("conditions") or []}
        ready = found.get("ServerReady") or {}
        return ready if ready.get("status") == "True" and ready.get("reason") == "Available" else None

    ready = await _until(server_ready, step_timeout, "ServerReady from the pod's readiness probe")
    pod = node.pods(ns, f"{name}-server")[0]
    started = (pod.ready_at or time.monotonic()) - pod.created_at
    say(f"ServerReady: {ready['message']} (pod {pod.name} ready {started:.1f} s after it was created, "
        "by its readiness probe)")
    vehicles_at = await node.wait_address(ns, f"{name}-server", 443)
    metrics_at = await node.wait_address(ns, f"{name}-server-metrics", "metrics")
    stack.push_async_callback(sim.stop)  # first: connected vehicles would hold the pod's stop
    sim.set_host(DEMO_HOST, vehicles_at)
    say(f"Service {name}-server port 443 answers on {vehicles_at[0]}:{vehicles_at[1]} "
        f"(the simulator resolves {DEMO_HOST} there)")

    async def metric(sample: str) -> float:
        try:
            return (await _scrape(metrics_at)).get(sample, 0.0)
        except Exception:
            return 0.0

    async def configured() -> dict[str, Any] | None:
        status = await vehicles_status()
        return status if status.get("applied") == vehicles and status.get("skipped") == 2 else None

    await _until(configured, step_timeout, f"{vehicles} vehicles configured")
    found = {c["type"]: c for c in (await resource()).get("status", {}).get("conditions", [])}
    say(f"vehicles configured: {found['VehiclesConfigured']['message']}")
    await _until(lambda: all(sim.vehicle(v).stats.acked > 0 for v in healthy), step_timeout, "streaming")
    records_v = await metric('fleetwire_records_total{record_type="V"}')
    say(f"streaming: {vehicles} vehicles connected with the pushed ca, {records_v:.0f} records through the pod")

    # The renewal and the chain rotation (fleetwire.demo.chain_rotation).
    stage = Stage(api, sim, node, ns, name, healthy, vehicles, say, step_timeout,
                  resource, vehicles_status, records, metric)
    new_ca, errors = await renew_and_rotate(stage)
    table = format_table(list((await records()).values()), (await resource()).get("status") or {})
    print("\n`fleetwire vehicles demo`:\n" + table, file=out)
    ok = (all(new_ca in sim.vehicle(v).config()["ca"] for v in healthy)  # type: ignore[operator,index]
          and not errors and sim.tls.count == 0)
    print("\nresult: " + ("certificate issued, vehicles configured and streaming, a new chain rolled out to every "
                          "vehicle before the server switched to it, without a human" if ok else "FAILED"), file=out)
    return ok
