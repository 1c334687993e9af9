"""`fleetwire demo`: the whole loop on loopback, with nothing to configure.

`run_demo` (the default): an emulated Kubernetes API (`fleetwire.sim.kube_emulator`), the
operator (kopf with the project's handlers, in this process), the Fleet API simulator and
its vehicles, and the ingest server. A FleetTelemetryConfig with a private CA goes in; the
operator issues the certificate, configures the vehicles (an unpaired one and one on old
firmware are skipped, with their reasons), and the vehicles stream through the server.
A renewal under the same CA follows (a new leaf in the served Secret): every vehicle's `ca`
accepts it, so nothing is pushed and no handshake fails.
Then the private CA is replaced, as when a CA is rotated: the operator stages the certificate
from the new chain (the vehicles' `ca` would refuse it), pushes a `ca` accepting both chains to
every vehicle, promotes the certificate once they all hold it, and the running pod reloads it;
vehicles that reconnect afterwards are accepted at once; the pushes it cost and the TLS
failures during it (none) are printed. A timeline is printed as it happens; exit status 0
when every step happened.

The server is the operator's own Deployment: the kubelet stand-in (`fleetwire.sim.kubelet`)
runs its pod as a local process in a bubblewrap sandbox (the TLS Secret and the config
mounted where the pod spec says, the probes run as written), the vehicles reach it through
the vehicle Service's port on loopback, and the demo reads its metrics through the metrics
Service. The CA rotation reaches the running pod the way it does on a cluster: the
stand-in swaps the mounted Secret's `..data` link and the server reloads its certificate.

`run_server_demo` (`fleetwire demo --server-only`, and the fallback without kmock): the
ingest path alone: a throwaway PKI, the server, a handful of simulated vehicles streaming
for a few seconds plus one impostor whose certificate is not from a vehicle CA, the
decoded records, and a summary; exit status 0 when every record was acknowledged and the
impostor was refused.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib
import inspect
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from fleetwire.pki import Bundle, load_bundle, make_ca, make_test_fleet_pki, make_vehicle_cert, write_bundle
from fleetwire.server.app import TelemetryServer
from fleetwire.server.config import parse_config
from fleetwire.server.records import Record
from fleetwire.server.dispatchers.logger import LoggerDispatcher
from fleetwire.server.records import to_dict
from fleetwire.sim.fleet import Fleet, issue_vehicle_certs, sim_vin
from fleetwire.sim.vehicle import SimulatedVehicle, client_context

RECORD_TYPES = ("V", "V", "alerts", "V", "errors")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _short(value: Any) -> str:
    if isinstance(value, dict):
        if "latitude" in value:
            return f"{value['latitude']:.4f},{value['longitude']:.4f}"
        return ",".join(f"{k}={_short(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def describe(record: Record) -> str:
    """One readable line per record: what a person wants to see scroll by."""
    data = to_dict(record.message)
    if record.record_type == "V":
        parts = []
        for datum in data.get("data", []):
            value = datum.get("value", {})
            shown = _short(next(iter(value.values()))) if value else "-"
            parts.append(f"{datum.get('key')}={shown}")
        body = " ".join(parts)
    elif record.record_type == "alerts":
        body = " ".join(a.get("name", "?") for a in data.get("alerts", []))
    elif record.record_type == "errors":
        body = " ".join(f"{e.get('name')}: {e.get('body', '')}" for e in data.get("errors", []))
    else:
        body = f"{data.get('status')} via {data.get('networkInterface') or '?'} ({data.get('connectionId')})"
    return f"  {record.record_type:<12} {record.vin}  {body}"


class DemoLogger(LoggerDispatcher):
    """The real logger dispatcher (JSON lines to a file), echoing a readable line per record."""

    def __init__(self, stream: TextIO, console: TextIO, limit: int) -> None:
        super().__init__(stream, include_data=True)
        self._console = console
        self._limit = limit
        self.shown = 0
        self.by_type: dict[str, int] = {}

    async def publish(self, batch: Sequence[Record]) -> None:
        await super().publish(batch)
        for record in batch:
            self.by_type[record.record_type] = self.by_type.get(record.record_type, 0) + 1
            if self.shown < self._limit:
                line = describe(record)
                print(line if len(line) <= 160 else line[:157] + "...", file=self._console)
                self.shown += 1
                if self.shown == self._limit:
                    print("  ... (the rest goes to the log file only)", file=self._console)


async def run_server_demo(
    *, vehicles: int = 5, seconds: float = 4.0, rate: float = 2.0, out: TextIO = sys.stdout, workdir: Path | None = None
) -> bool:
    directory = workdir or Path(tempfile.mkdtemp(prefix="fleetwire-demo-"))
    print(f"fleetwire demo: throwaway PKI and logs in {directory}", file=out)
    pki = make_test_fleet_pki(directory / "pki")
    # A CA the server trusts that is not a vehicle CA (say, a company's internal CA):
    # TLS accepts its leaves, the identity rules must not.
    rogue_ca = make_ca("Corporate Issuing CA")
    with pki.ca_file.open("ab") as bundle:
        bundle.write(rogue_ca.cert_pem)
    config, _warnings = parse_config(
        {
            "host": "127.0.0.1",
            "port": free_port(),
            "status_port": free_port(),
            "namespace": "demo",
            "tls": {"server_cert": str(pki.server_cert), "server_key": str(pki.server_key), "ca_file": str(pki.ca_file)},
            "records": {"V": ["logger"], "alerts": ["logger"], "errors": ["logger"], "connectivity": ["logger"]},
            "logger": {"verbose": True},
        },
        directory,
    )
    log_path = directory / "records.jsonl"
    with log_path.open("w") as log_file:
        logger = DemoLogger(log_file, out, limit=40)
        server = TelemetryServer(config, dispatchers={"logger": logger})
        ports = await server.start()
        url = f"wss://127.0.0.1:{ports.vehicles}/"
        print(f"server: {url} (status on :{ports.status})", file=out)

        certs = issue_vehicle_certs(
            pki.vehicle_ca_cert, pki.vehicle_ca_key, [sim_vin(i) for i in range(vehicles)], directory / "vehicles"
        )
        fleet = Fleet(url, pki.server_ca_cert, certs)
        connected = await fleet.connect()
        impostor = await _impostor(rogue_ca, url, pki.server_ca_cert, directory)
        print(f"{connected} vehicles connected; streaming for {seconds:g} s at {rate:g} records/s each", file=out)
        started = time.monotonic()
        await fleet.stream(rate=rate, duration=seconds, record_types=RECORD_TYPES)
        await fleet.drain(timeout=10)
        elapsed = time.monotonic() - started
        await fleet.close()
        await asyncio.sleep(0.2)  # let the disconnect records reach the dispatcher
        await server.stop()

    summary = fleet.summary()
    refused = server.metrics.registry.get_sample_value(
        "fleetwire_connections_refused_total", {"reason": "unknown_issuer"}
    ) or 0
    print("\nsummary", file=out)
    rows = [
        ("vehicles connected", f"{connected} of {summary.vehicles}"),
        ("impostor refused", "yes" if (impostor and refused >= 1) else "NO"),
        ("records sent", str(summary.sent)),
        ("acks received", str(summary.acked)),
        ("error replies", str(summary.errors)),
        ("unanswered", str(summary.pending)),
        ("dispatched by type", ", ".join(f"{k}={v}" for k, v in sorted(logger.by_type.items()))),
        ("ack latency p50/p99", f"{summary.ack_p50_ms or 0:.2f} / {summary.ack_p99_ms or 0:.2f} ms"),
        ("records per second", f"{summary.acked / elapsed:.0f}"),
        ("log file", str(log_path)),
    ]
    for name, value in rows:
        print(f"  {name:<22} {value}", file=out)
    ok = (
        connected == vehicles
        and summary.sent > 0
        and summary.acked == summary.sent
        and summary.errors == 0
        and impostor
        and refused >= 1
    )
    print("\nresult: " + ("every record acknowledged, impostor refused" if ok else "FAILED"), file=out)
    return ok


async def _impostor(rogue_ca: Bundle, url: str, server_ca: Path, directory: Path) -> bool:
    """A client whose certificate verifies but whose issuer is not a vehicle CA.

    Trust alone is not enough: the issuer's name must be one of the vehicle CAs, so the
    server closes the connection (1008) without reading a record.
    """
    cert, key = directory / "impostor.pem", directory / "impostor.key"
    write_bundle(make_vehicle_cert(rogue_ca, "5YJ3IMPOSTOR00000"), cert, key)
    vehicle = SimulatedVehicle("5YJ3IMPOSTOR00000", url, client_context(cert, key, server_ca))
    try:
        await vehicle.connect()
    except Exception:
        return True
    await asyncio.sleep(0.3)
    refused = not vehicle.connected
    await vehicle.close()
    return refused


# ======================================================================================
# The whole loop: emulated cluster, operator, Fleet API simulator, server, a CA rotation
# ======================================================================================

DEMO_HOST = "telemetry.fleetwire.demo"
DEMO_NAME, DEMO_NAMESPACE = "demo", "default"
DEMO_OPERATOR_SETTINGS = {
    # How often the certificate pass runs, and the vehicle cadences, shortened to seconds.
    "FLEETWIRE_RECONCILE_SECONDS": "1",
    "FLEETWIRE_VEHICLES_POLL_FIRST": "0.3", "FLEETWIRE_VEHICLES_POLL_MOST": "2",
    "FLEETWIRE_VEHICLES_MEMBER_WAIT": "10", "FLEETWIRE_VEHICLES_ERRORS_FAST": "0.5",
    "FLEETWIRE_VEHICLES_ERROR_QUIET": "2.5", "FLEETWIRE_VEHICLES_RETRY_AFTER_FAILURE": "1",
    "FLEETWIRE_VEHICLES_JITTER": "0", "FLEETWIRE_VEHICLES_CA_CHECK_SECONDS": "1",
}
DEMO_SYNC_DELAY = 2.0  # seconds the simulated vehicles take to apply a pushed config


class SecretFiles:
    """A TLS Secret's `tls.crt` and `tls.key` as files, rewritten (key first, each atomically)
    whenever the Secret changes, as a kubelet does for a mounted Secret; a server watching
    the files reloads them. `fetch` returns the Secret as the API does (None: absent). For tests
    that run the server in-process; the demo runs the server's pod (`fleetwire.sim.kubelet`)."""

    def __init__(self, fetch: Callable[[], Awaitable[Mapping[str, Any] | None]], directory: Path) -> None:
        self.fetch = fetch
        self.directory = directory
        self.cert, self.key = directory / "tls.crt", directory / "tls.key"
        self.version: str | None = None
        self.ca_pem = ""  # the ca.crt that came with the certificate written last
        self.written_at = 0.0  # time.monotonic() of that write
        self.changes = 0
        self._task: asyncio.Task[None] | None = None

    async def sync(self) -> bool:
        """Write the files if the Secret changed; False while it does not exist."""
        found = await self.fetch()
        if found is None:
            return False
        version = str((found.get("metadata") or {}).get("resourceVersion"))
        if version != self.version:
            data = found.get("data") or {}
            for key, path in (("tls.key", self.key), ("tls.crt", self.cert)):
                tmp = path.with_name(f".{path.name}.tmp")
                tmp.write_bytes(base64.b64decode(data[key]))
                os.replace(tmp, path)
            self.version = version
            self.ca_pem = base64.b64decode(data.get("ca.crt", "")).decode()
            self.written_at = time.monotonic()
            self.changes += 1
        return True

    def follow(self, every: float = 0.1) -> None:
        async def loop() -> None:
            while True:
                await asyncio.sleep(every)
                await self.sync()

        self._task = asyncio.get_running_loop().create_task(loop(), name="secret files")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


class _Timeline:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:5.1f} s] {text}", file=self.out, flush=True)


async def _until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `check` (a plain or an async callable) until it returns something true; that."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)


def _b64(value: str | bytes) -> str:
    return base64.b64encode(value if isinstance(value, bytes) else value.encode()).decode()


async def run_demo(*, vehicles: int = 8, out: TextIO = sys.stdout, workdir: Path | None = None,
                   step_timeout: float = 40.0) -> bool:
    """The whole loop (see the module's docstring); True when every step happened."""
    try:
        from fleetwire.sim.kube_emulator import KubeApi
    except ImportError:
        print("fleetwire demo: kmock is not installed (pip install 'fleetwire[demo]'), so the operator cannot "
              "run against an emulated cluster; showing the ingest server alone\n", file=out)
        return await run_server_demo(out=out, workdir=workdir)
    directory = workdir or Path(tempfile.mkdtemp(prefix="fleetwire-demo-"))
    say = _Timeline(out).say
    print(f"fleetwire demo: the operator, the Fleet API simulator and the server on loopback (files in {directory})",
          file=out)
    from fleetwire.sim.kubelet import KubeletThread

    if shutil.which("bwrap") is None:
        print("fleetwire demo: bubblewrap (bwrap) is not installed, so the server's pod cannot run "
              "(apt-get install bubblewrap); showing the ingest server alone\n", file=out)
        return await run_server_demo(out=out, workdir=workdir)
    cluster = KubeApi(directory).start()
    node = KubeletThread(cluster.url, directory / "node").start()
    stack = contextlib.AsyncExitStack()
    try:
        return await _whole_loop(cluster, node, stack, directory, vehicles, say, out, step_timeout)
    except TimeoutError as exc:
        say(f"FAILED: {exc}")
        print("kubelet stand-in errors: " + ("; ".join(node.kubelet.errors[-3:]) or "none"), file=out)
        for pod in node.kubelet.pods.values():
            tail = pod.log.read_text(errors="replace")[-2000:] if pod.log.exists() else ""
            print(f"--- pod {pod.name} ({pod.waiting or 'started'}) ---\n{tail}", file=out)
        return False
    finally:
        await stack.aclose()
        await asyncio.to_thread(node.stop)
        cluster.stop()


async def _scrape(address: tuple[str, int]) -> dict[str, float]:
    """The server's Prometheus samples (name{labels} -> value), read as Prometheus would."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://{address[0]}:{address[1]}/metrics",
                               timeout=aiohttp.ClientTimeout(total=3)) as response:
            text = await response.text()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


async def _whole_loop(cluster: Any, node: Any, stack: contextlib.AsyncExitStack, directory: Path, vehicles: int,
                      say: Callable[[str], None], out: TextIO, step_timeout: float) -> bool:
    import kubernetes.config.kube_config
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from fleetwire.operator.resource import crd
    from fleetwire.operator.reconcilers.vehicles import decode_record
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
    def ca_of(secret: Mapping[str, Any] | None) -> str:
        return base64.b64decode(((secret or {}).get("data") or {}).get("ca.crt", "")).decode()

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

    # A renewal under the same root, as at two thirds of a leaf's life: the private CA signs a new
    # leaf into the served Secret. The vehicles' ca accepts it, so nothing is pushed.
    import datetime as dt

    from fleetwire.operator.resource.builders import Owner
    from fleetwire.operator.reconcilers.certificates import ca_from_secret, private_leaf, tls_secret

    push_calls = ("/api/1/vehicles/fleet_telemetry_config_jws", 200)
    reloaded = 'fleetwire_certificate_reloads_total{outcome="reloaded"}'
    pushes_at, failures_at, reloads = sim.requests.get(push_calls, 0), sim.tls.count, await metric(reloaded)
    now = dt.datetime.now(dt.UTC)
    private_ca = ca_from_secret(await api.get("Secret", ns, f"{name}-ca") or {}, f"{ns}/{name}-ca", now)
    await api.apply(tls_secret(Owner.of(await resource()), f"{name}-tls", private_leaf(private_ca, DEMO_HOST, 30, now),
                               hostname=DEMO_HOST, reason="renewal under the same CA"))

    async def renewed_served() -> bool:
        return await metric(reloaded) > reloads

    await _until(renewed_served, step_timeout, "the pod on the renewed leaf")
    acked = {v: sim.vehicle(v).stats.acked for v in healthy}
    sim.reconnect(healthy)  # every vehicle meets the renewed leaf
    await _until(lambda: all(sim.vehicle(v).stats.acked > acked[v] and sim.vehicle(v).connected for v in healthy),
                 step_timeout, "streaming on the renewed leaf")
    await asyncio.sleep(2.0)  # two passes of the vehicles' daemon, which would push a vehicle its ca refuses
    say(f"renewal under the same root: the pod serves a new leaf, every vehicle reconnected; pushes: "
        f"{sim.requests.get(push_calls, 0) - pushes_at}, TLS failures: {sim.tls.count - failures_at}")

    # The chain rotates: a new private CA (as after a compromise, or a CA's end of life).
    acked = {v: sim.vehicle(v).stats.acked for v in healthy}
    pushes_at, failures_at, rotation_at = sim.requests.get(push_calls, 0), sim.tls.count, time.time()
    await api.delete("Secret", ns, f"{name}-ca")
    say(f"chain rotation: Secret {name}-ca (the private CA) deleted; the operator makes a new CA and certificate")

    async def rotating() -> dict[str, Any] | None:
        found = {c["type"]: c for c in ((await resource()).get("status") or {}).get("conditions") or []}
        return found.get("CertificateRotating")

    staged = await _until(rotating, step_timeout, "the new certificate staged")
    say(f"staged, not served: the vehicles' ca would refuse the new chain, so the pod keeps the current one "
        f"and every vehicle is sent a ca accepting both ({staged['message'][:90]})")
    reloaded = 'fleetwire_certificate_reloads_total{outcome="reloaded"}'
    reloads = await metric(reloaded)

    async def promoted() -> dict[str, Any] | None:
        found = await rotating()
        return found if found and found.get("status") == "False" and found.get("reason") == "VehiclesReady" else None

    await _until(promoted, step_timeout, "the promotion")
    new_ca = ca_of(await api.get("Secret", ns, f"{name}-tls"))
    say(f"promoted once every vehicle held both: Secret {name}-tls now carries the new chain "
        f"(ca {ca_fingerprint(new_ca)[:16]})")

    async def serving_new_chain() -> bool:
        return await metric(reloaded) > reloads

    await _until(serving_new_chain, step_timeout, "the pod on the new chain")
    pod = node.pods(ns, f"{name}-server")[0]
    say(f"the pod reloaded it from its mounted Secret ({pod.volume_updates} ..data swap(s), {pod.restarts} restarts); "
        "connected vehicles keep streaming")
    gap = healthy[:3]
    sim.reconnect(gap)
    await _until(lambda: all(sim.vehicle(v).stats.acked > acked[v] and sim.vehicle(v).connected for v in gap),
                 step_timeout, "the reconnected vehicles streaming")
    current = await records()
    errors = [current[v].last_error for v in healthy if v in current and current[v].last_error]
    say(f"{len(gap)} vehicles reconnected after the switch and were accepted at once (their ca holds both chains); "
        f"TLS errors reported by vehicles: {len(errors)}")

    async def applied_new_ca() -> dict[str, Any] | None:
        status = await vehicles_status()
        return status if (status.get("caFingerprint") == ca_fingerprint(new_ca)
                          and status.get("applied") == vehicles and status.get("failing") == 0) else None

    await _until(applied_new_ca, step_timeout, "the new ca applied")
    held = await records()
    pushed_vehicles = sum(1 for v in healthy if v in held and (held[v].pushed_at or 0.0) >= rotation_at)
    say(f"rotated without a human and without a gap: all {vehicles} vehicles hold the new ca; the rotation cost "
        f"{sim.requests.get(push_calls, 0) - pushes_at} push call(s) to {pushed_vehicles} vehicles (once each), "
        f"TLS failures during the rotation: {sim.tls.count - failures_at}")
    await _until(lambda: all(sim.vehicle(v).stats.acked > acked[v] + 3 and sim.vehicle(v).connected for v in healthy),
                 step_timeout, "streaming again")
    say(f"streaming throughout: {vehicles} vehicles, {sum(sim.vehicle(v).stats.acked - acked[v] for v in healthy)} "
        "records acknowledged since the rotation")
    table = format_table(list((await records()).values()), (await resource()).get("status") or {})
    print("\n`fleetwire vehicles demo`:\n" + table, file=out)
    ok = (all(new_ca in sim.vehicle(v).config()["ca"] for v in healthy)  # type: ignore[operator,index]
          and not errors and sim.tls.count == 0)
    print("\nresult: " + ("certificate issued, vehicles configured and streaming, a new chain rolled out to every "
                          "vehicle before the server switched to it, without a human" if ok else "FAILED"), file=out)
    return ok

