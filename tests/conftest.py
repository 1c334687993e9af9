"""Shared pytest fixtures and helpers, one section per component; append new sections below."""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# ======================================================================================
# MQTT broker (Debian's mosquitto) on loopback
# ======================================================================================


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def _mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if os.access(p, os.X_OK)), None
    )


class Mosquitto:
    """A mosquitto broker on 127.0.0.1:`port` with on-disk persistence in `workdir`.

    `stop()` ends it with SIGTERM (it saves its database, as a broker being restarted
    does), `kill()` with SIGKILL; `start()` brings it back on the same port with the
    same database. `passwords` (user → password) turns anonymous access off.
    """

    def __init__(self, binary: str, workdir: Path, passwords: dict[str, str] | None = None) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_file = workdir / "mosquitto.log"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "persistence true",
            f"persistence_location {workdir}/",
            # Run as root, mosquitto drops to user "mosquitto", which cannot write here.
            f"user {getpass.getuser()}",
            "max_queued_messages 100000",
        ]
        if passwords:
            password_file = workdir / "passwords"
            password_file.write_text("")
            for user, password in passwords.items():
                subprocess.run(
                    [shutil.which("mosquitto_passwd") or "mosquitto_passwd", "-b", str(password_file), user, password],
                    check=True, capture_output=True,
                )
            lines += ["allow_anonymous false", f"password_file {password_file}"]
        else:
            lines.append("allow_anonymous true")
        self.config_file = workdir / "mosquitto.conf"
        self.config_file.write_text("\n".join(lines) + "\n")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        assert not self.running
        log = self.log_file.open("ab")
        self.proc = subprocess.Popen([self.binary, "-c", str(self.config_file)], stdout=log, stderr=log)
        log.close()
        if not _wait_listening(self.port, 10):
            self.stop()
            raise RuntimeError(f"mosquitto did not start; log:\n{self.log_file.read_text()}")

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        self._end(signal.SIGKILL)

    def _end(self, sig: signal.Signals) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


MosquittoFactory = Callable[..., Mosquitto]


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[MosquittoFactory]:
    """Makes started brokers: `mosquitto_factory(passwords=None) -> Mosquitto`; all are
    stopped at the end of the test."""
    binary = _mosquitto_binary()
    if binary is None:
        pytest.skip("mosquitto is not installed (`make test` installs it: apt-get install mosquitto)")
    brokers: list[Mosquitto] = []

    def make(passwords: dict[str, str] | None = None) -> Mosquitto:
        workdir = tmp_path / f"mosquitto-{len(brokers)}"
        workdir.mkdir()
        broker = Mosquitto(binary, workdir, passwords)
        brokers.append(broker)
        broker.start()
        return broker

    yield make
    for broker in brokers:
        broker.kill()


@pytest.fixture
def mosquitto(mosquitto_factory: MosquittoFactory) -> Mosquitto:
    """A started anonymous mosquitto broker on a free loopback port."""
    return mosquitto_factory()


# ======================================================================================
# Ingest server end to end: test PKI, an in-process server, a recording dispatcher
# ======================================================================================

import asyncio  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence  # noqa: E402
from typing import Any  # noqa: E402

import pytest_asyncio  # noqa: E402
from fleetwire.pki import load_bundle, make_vehicle_cert, write_bundle  # noqa: E402
from fleetwire.sim.fleet_pki import FleetPki, make_test_fleet_pki  # noqa: E402
from fleetwire.server.app import Ports, TelemetryServer  # noqa: E402
from fleetwire.server.config import ServerConfig, parse_config  # noqa: E402
from fleetwire.server.dispatchers.base import Record  # noqa: E402
from fleetwire.sim.fleet import Fleet, issue_vehicle_certs, sim_vin  # noqa: E402


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], Any]]:
    """Async tests run on asyncio's default loop; a module may name another factory in
    `ASYNCIO_LOOP_FACTORY` (the server tests use uvloop, as `fleetwire serve` does)."""
    module = getattr(item, "module", None)
    factory = getattr(module, "ASYNCIO_LOOP_FACTORY", None) or asyncio.new_event_loop
    return {getattr(factory, "__module__", "asyncio").split(".")[0]: factory}


class RecordingDispatcher:
    """An in-memory dispatcher: keeps every record it is given.

    `hold()` makes `publish` wait until `release()`; `wait_for(n)` waits until `n`
    records (of `record_type`, if given) arrived.
    """

    def __init__(self, name: str = "logger") -> None:
        self.name = name
        self.records: list[Record] = []
        self.publishing = 0  # publish calls currently waiting on the gate
        self._gate = asyncio.Event()
        self._gate.set()
        self._arrived = asyncio.Event()

    def hold(self) -> None:
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    async def start(self) -> None:
        return None

    async def publish(self, batch: Sequence[Record]) -> None:
        self.publishing += 1
        try:
            await self._gate.wait()
        finally:
            self.publishing -= 1
        self.records.extend(batch)
        self._arrived.set()

    async def close(self) -> None:
        self._gate.set()

    def of_type(self, record_type: str) -> list[Record]:
        return [r for r in self.records if r.record_type == record_type]

    async def wait_for(self, count: int, record_type: str | None = None, timeout: float = 5.0) -> list[Record]:
        """The records (of `record_type`) once at least `count` arrived; fails on timeout."""

        def matching() -> list[Record]:
            return self.records if record_type is None else self.of_type(record_type)

        async def enough() -> None:
            while len(matching()) < count:
                self._arrived.clear()
                await self._arrived.wait()

        await asyncio.wait_for(enough(), timeout)
        return matching()


@dataclasses.dataclass
class RunningServer:
    """A started `TelemetryServer` on loopback, its ports and the vehicles' URL."""

    server: TelemetryServer
    ports: Ports
    url: str
    recorder: RecordingDispatcher
    pki: FleetPki

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the server's registry, 0.0 when it was never set."""
        value = self.server.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def vehicle_cert(self, vin: str, **kwargs: Any) -> tuple[Path, Path]:
        """A client certificate for `vin` from the fleet's vehicle CA (see `issue_vehicle_cert`)."""
        return issue_vehicle_cert(self.pki, vin, **kwargs)


def issue_vehicle_cert(pki: FleetPki, vin: str, **kwargs: Any) -> tuple[Path, Path]:
    """Certificate and key files for `vin`, signed by the fleet's issuing CA ("Tesla
    Issuing CA"); `kwargs` go to `make_vehicle_cert` (ou, eku_oid)."""
    directory = pki.directory / "vehicles"
    directory.mkdir(exist_ok=True)
    n = len(list(directory.glob("*.pem")))
    ca = load_bundle(pki.vehicle_ca_cert, pki.vehicle_ca_key)
    return write_bundle(make_vehicle_cert(ca, vin, **kwargs), directory / f"{n}.pem", directory / f"{n}.key")


ServerFactory = Callable[..., Awaitable[RunningServer]]


@pytest.fixture
def fleet_pki(tmp_path: Path) -> FleetPki:
    """A fresh test fleet PKI: vehicle CAs the server trusts, a server certificate for
    localhost and 127.0.0.1, and the CA vehicles trust it by."""
    return make_test_fleet_pki(tmp_path / "pki")


def server_config_data(pki: FleetPki, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A configuration file's content for a loopback server: V, alerts and errors go to
    the logger; sections in `overrides` replace the defaults' whole."""
    data: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": free_port(),
        "status_port": free_port(),
        "namespace": "test",
        "tls": {"server_cert": str(pki.server_cert), "server_key": str(pki.server_key), "ca_file": str(pki.ca_file)},
        "records": {"V": ["logger"], "alerts": ["logger"], "errors": ["logger"]},
    }
    data.update(overrides or {})
    return data


@contextlib.asynccontextmanager
async def streaming_fleet(
    server: TelemetryServer | ServerConfig, pki: FleetPki, directory: Path, vehicles: int, **options: Any
) -> AsyncIterator[tuple[TelemetryServer, Fleet]]:
    """A started server and `vehicles` simulated vehicles connected to it over mTLS, each
    with a certificate of its own from `pki`'s vehicle CA; both are closed at the end."""
    if not isinstance(server, TelemetryServer):
        server = TelemetryServer(server)
    ports = await server.start()
    try:
        vins = [sim_vin(i) for i in range(vehicles)]
        certs = issue_vehicle_certs(pki.vehicle_ca_cert, pki.vehicle_ca_key, vins, directory / "vehicles")
        fleet = Fleet(f"wss://127.0.0.1:{ports.vehicles}/", pki.server_ca_cert, certs, **options)
        assert await fleet.connect() == vehicles
        try:
            yield server, fleet
        finally:
            await fleet.close()
    finally:
        await server.stop()


@pytest_asyncio.fixture
async def running_server(fleet_pki: FleetPki) -> AsyncIterator[ServerFactory]:
    """Starts servers: `await running_server(overrides=None, *, recorder=None, replace=None)`.

    `overrides` are top-level configuration keys (parsed like a file); `replace` sets
    fields of the parsed `ServerConfig` (for settings the file format refuses). Every
    dispatcher name in use is served by `recorder` (a fresh `RecordingDispatcher` by
    default). All servers are stopped at the end of the test.
    """
    started: list[TelemetryServer] = []

    async def start(
        overrides: Mapping[str, Any] | None = None,
        *,
        recorder: RecordingDispatcher | None = None,
        replace: Mapping[str, Any] | None = None,
    ) -> RunningServer:
        config, _warnings = parse_config(server_config_data(fleet_pki, overrides), fleet_pki.directory)
        if replace:
            config = dataclasses.replace(config, **replace)
        recorder = recorder or RecordingDispatcher()
        server = TelemetryServer(config, dispatchers={name: recorder for name in config.dispatchers_in_use()})
        ports = await server.start()
        started.append(server)
        return RunningServer(server, ports, f"wss://127.0.0.1:{ports.vehicles}/", recorder, fleet_pki)

    yield start
    for server in started:
        await server.stop()



# ======================================================================================
# Kubernetes API emulator (kmock) and kopf operators against it — parts in tests/kube.py
# ======================================================================================

from typing import TYPE_CHECKING  # noqa: E402

if TYPE_CHECKING:  # imported by the fixtures: kopf and kmock load only for tests that use them
    from kube import KopfOperator, KubeApi, KubeClient


@pytest.fixture
def kube_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[KubeApi]:
    """A started Kubernetes API emulator on a free loopback port, the FleetTelemetryConfig
    CRD installed, and KUBECONFIG (for kubectl, the `kubernetes` client and kopf's login)
    pointing at it. Stopped at the end of the test."""
    import kubernetes.config.kube_config
    from fleetwire.operator.resource.crd import build_crd
    from kube import KubeApi

    directory = tmp_path / "kube"
    directory.mkdir()
    api = KubeApi(directory).start()
    monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig))
    # The client library reads $KUBECONFIG once, at import: point its default there too.
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(api.kubeconfig))
    api.install_crds([build_crd()])
    yield api
    api.stop()


@pytest_asyncio.fixture
async def kube(kube_api: KubeApi) -> AsyncIterator[KubeClient]:
    """An async client of `kube_api`; its waits print the running operators' logs on timeout."""
    from kube import KubeClient

    client = KubeClient(kube_api.url, kube_api.diagnostics)
    yield client
    await client.close()


KopfRunnerFactory = Callable[..., "KopfOperator"]


@pytest.fixture
def kopf_runner(kube_api: KubeApi) -> Iterator[KopfRunnerFactory]:
    """Starts operators against `kube_api`: `kopf_runner(target, **options) -> KopfOperator`.

    `target` is a handlers module, dotted ("fleetwire.operator.handlers.resource") or a .py path;
    options (namespaces, peering, priority, liveness, settings, verbose, extra_args) are
    `KopfOperator`'s. Runs `kopf run -A --standalone` by default. At the end every operator
    is stopped (a crash inside one is re-raised here) and the process-wide state kopf's
    runner changes (logging, std streams, default registry) is restored.
    """
    from kube import KopfOperator, ProcessState

    state = ProcessState.capture()
    operators: list[KopfOperator] = []

    def start(target: str | Path, **options: Any) -> KopfOperator:
        operator = KopfOperator(target, **options)
        operators.append(operator)
        kube_api.diagnostics.append(operator.log_tail)
        return operator.start()

    try:
        yield start
    finally:
        failures: list[BaseException] = []
        for operator in reversed(operators):
            try:
                operator.stop()
            except BaseException as exc:  # stop the others first, then report
                failures.append(exc)
        state.restore()
        if failures:
            raise failures[0]


# ======================================================================================
# ACME: pebble (Let's Encrypt's test CA) and the local DNS resolver it asks
# ======================================================================================

import json as _json  # noqa: E402

import requests  # noqa: E402
from cryptography import x509 as _x509  # noqa: E402
from dnslib import QTYPE, RR, A, DNSRecord, TXT  # noqa: E402
from dnslib.server import BaseResolver, DNSLogger, DNSServer  # noqa: E402

from fleetwire import pki as _pki  # noqa: E402
from fleetwire.operator.clients.acme import AcmeClient, PebbleRoots  # noqa: E402

PEBBLE = shutil.which("pebble")


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalDns(BaseResolver):
    """Authoritative for everything: A 127.0.0.1 for any name, TXT from `records`."""

    def __init__(self) -> None:
        self.records: dict[str, list[str]] = {}
        self.queries: list[tuple[str, str]] = []
        self.port = _free_udp_port()
        self._server = DNSServer(self, address="127.0.0.1", port=self.port, logger=DNSLogger(logf=lambda *_: None))

    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        reply = request.reply()
        qname = request.q.qname
        name, qtype = str(qname).rstrip(".").lower(), QTYPE[request.q.qtype]
        self.queries.append((name, qtype))
        if qtype == "A":
            reply.add_answer(RR(qname, QTYPE.A, rdata=A("127.0.0.1"), ttl=0))
        elif qtype == "TXT":
            for value in self.records.get(name, []):
                reply.add_answer(RR(qname, QTYPE.TXT, rdata=TXT(value), ttl=0))
        return reply

    async def set_txt(self, name: str, value: str) -> None:
        values = self.records.setdefault(name.lower(), [])
        if value not in values:
            values.append(value)

    async def clear_txt(self, name: str, value: str) -> None:
        values = self.records.get(name.lower(), [])
        if value in values:
            values.remove(value)

    def start(self) -> None:
        self._server.start_thread()

    def stop(self) -> None:
        self._server.stop()


@pytest.fixture(scope="session")
def local_dns() -> Iterator[LocalDns]:
    dns = LocalDns()
    dns.start()
    yield dns
    dns.stop()


class Pebble:
    """A pebble process on fixed loopback ports; `restart()` gives a new root and intermediate.

    `certificate_validity` (seconds) shortens the leaves' lifetime, so renewals fall due in a test.
    """

    def __init__(self, binary: str, workdir: Path, dns_port: int, *, certificate_validity: int | None = None,
                 **env: str) -> None:
        self.binary, self.workdir, self.dns_port, self.extra_env = binary, workdir, dns_port, env
        self.acme_port, self.mgmt_port, self.http_port = free_port(), free_port(), free_port()
        ca = _pki.make_ca("fleetwire test TLS CA")
        tls = _pki.make_server_cert(ca, ["localhost", "127.0.0.1"])
        self.ca_file = str(_pki.write_pem(workdir / "tls-ca.pem", ca.cert_pem))
        _pki.write_bundle(tls, workdir / "tls.pem", workdir / "tls-key.pem")
        config = {
            "pebble": {
                "listenAddress": f"127.0.0.1:{self.acme_port}",
                "managementListenAddress": f"127.0.0.1:{self.mgmt_port}",
                "certificate": str(workdir / "tls.pem"),
                "privateKey": str(workdir / "tls-key.pem"),
                "httpPort": self.http_port,
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
            }
        }
        if certificate_validity is not None:
            config["pebble"]["certificateValidityPeriod"] = certificate_validity
        self.config = workdir / "pebble.json"
        self.config.write_text(_json.dumps(config))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def directory(self) -> str:
        return f"https://127.0.0.1:{self.acme_port}/dir"

    @property
    def management(self) -> str:
        return f"https://127.0.0.1:{self.mgmt_port}"

    def start(self) -> None:
        env = {
            **os.environ,
            "PEBBLE_VA_NOSLEEP": "1",  # validate at once instead of after a random pause
            "PEBBLE_WFE_NONCEREJECT": "0",  # no random badNonce: tests must not be flaky
            "PEBBLE_AUTHZREUSE": "0",  # every order validates for real
            **self.extra_env,
        }
        env.pop("PEBBLE_VA_ALWAYS_VALID", None)
        log = open(self.workdir / "pebble.log", "ab")
        self.proc = subprocess.Popen(
            [self.binary, "-config", str(self.config), "-dnsserver", f"127.0.0.1:{self.dns_port}"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pebble exited: {(self.workdir / 'pebble.log').read_text()[-2000:]}")
            try:
                if requests.get(self.directory, verify=self.ca_file, timeout=1).ok:
                    return
            except requests.RequestException:
                time.sleep(0.05)
        raise RuntimeError("pebble did not answer within 15 s")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def root(self) -> _x509.Certificate:
        response = requests.get(f"{self.management}/roots/0", verify=self.ca_file, timeout=5)
        return _x509.load_pem_x509_certificate(response.content)

    def client(self, **kwargs: Any) -> AcmeClient:
        kwargs.setdefault("root_fetcher", PebbleRoots(self.management, verify=self.ca_file))
        return AcmeClient(self.directory, verify=self.ca_file, **kwargs)


@pytest.fixture(scope="session")
def pebble(tmp_path_factory: pytest.TempPathFactory, local_dns: LocalDns) -> Iterator[Pebble]:
    if PEBBLE is None:
        pytest.skip("pebble not installed (make test installs it)")
    server = Pebble(PEBBLE, tmp_path_factory.mktemp("pebble"), local_dns.port)
    server.start()
    yield server
    server.stop()


# ======================================================================================
# The Kubernetes API requests the fleetwire operator makes (what the chart's RBAC must allow)
# ======================================================================================

API_REQUESTS_FILE = Path(__file__).parent / "data" / "operator-api-requests.json"
"""(verb, apiGroup, resource) of every request the operator made in the operator tests."""
OPERATOR_USER_AGENTS = ("kopf/", "fleetwire-operator/")
"""kopf's own client and `fleetwire.operator.clients.kube`; test clients and kubectl announce otherwise."""
_API_REQUESTS = pytest.StashKey[set[tuple[str, str, str]]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--record-api-requests", action="store_true", default=False,
                     help=f"write the operator's Kubernetes API requests seen in this run to "
                          f"tests/data/{API_REQUESTS_FILE.name} (run every operator test)")


def api_request_rules(method: str, group: str, plural: str, subresource: str | None, name: str | None,
                      params: Mapping[str, str], created: bool = False) -> set[tuple[str, str, str]]:
    """The RBAC (verb, apiGroup, resource) pairs one request needs.

    GET is get, list or watch; a server-side apply that created its object (`created`)
    needs create besides patch, as the API server authorises it.
    """
    resource = f"{plural}/{subresource}" if subresource else plural
    if method == "GET":
        verb = "watch" if params.get("watch") in ("true", "1") else "get" if name else "list"
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch",
                "DELETE": "delete" if name else "deletecollection"}.get(method, method.lower())
    rules = {(verb, group, resource)}
    if created and verb == "patch":
        rules.add(("create", group, resource))
    return rules


def operator_api_requests(emulator: Any) -> set[tuple[str, str, str]]:
    """What the operator asked of the emulator so far, read from its request log."""
    rules: set[tuple[str, str, str]] = set()
    for request in emulator:
        headers = {key.lower(): value for key, value in (request.headers or {}).items()}
        if request.resource is None or not request.resource.plural:
            continue  # discovery (/api, /apis/GROUP/VERSION) is open to every authenticated client
        if not headers.get("user-agent", "").startswith(OPERATOR_USER_AGENTS):
            continue
        raw = getattr(request, "_raw_request", None)  # the method as sent: the emulator rewrites some
        method = raw.method if raw is not None else request.method.value
        rules |= api_request_rules(method, request.resource.group or "", request.resource.plural or "",
                                   request.subresource, request.name, request.params,
                                   created=method == "PATCH" and request.method.value == "POST")
    return rules


def load_api_requests() -> set[tuple[str, str, str]]:
    if not API_REQUESTS_FILE.exists():
        return set()
    return {(r["verb"], r["apiGroup"], r["resource"]) for r in _json.loads(API_REQUESTS_FILE.read_text())}


@pytest.fixture(autouse=True)
def _operator_api_requests(request: pytest.FixtureRequest) -> Iterator[None]:
    """In tests that run the fleetwire operator against the emulator: collect its API requests,
    and fail when one is missing from tests/data/operator-api-requests.json, so a new call
    forces re-recording (`--record-api-requests`) and a look at the chart's RBAC."""
    if "kube_api" not in request.fixturenames:
        yield
        return
    api = request.getfixturevalue("kube_api")
    yield
    operators = [getattr(source, "__self__", None) for source in api.diagnostics]
    if not any(getattr(op, "target", None) == "fleetwire.operator.handlers.resource" for op in operators):
        return
    seen = api.call(operator_api_requests)
    request.config.stash.setdefault(_API_REQUESTS, set()).update(seen)
    if not request.config.getoption("--record-api-requests"):
        missing = sorted(seen - load_api_requests())
        if missing:
            pytest.fail(f"the operator made Kubernetes API requests not in tests/data/{API_REQUESTS_FILE.name}: "
                        f"{missing}; re-record with `pytest --record-api-requests tests/test_operator_*.py` and "
                        "grant them in charts/fleetwire/templates/rbac.yaml")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    seen = session.config.stash.get(_API_REQUESTS, set())
    if session.config.getoption("--record-api-requests") and seen:
        API_REQUESTS_FILE.parent.mkdir(exist_ok=True)
        rows = [_json.dumps({"apiGroup": g, "resource": r, "verb": v})
                for v, g, r in sorted(seen, key=lambda rule: (rule[1], rule[2], rule[0]))]
        API_REQUESTS_FILE.write_text("[\n  " + ",\n  ".join(rows) + "\n]\n")
