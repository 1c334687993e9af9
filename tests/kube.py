"""A Kubernetes API for tests: kmock's emulator, extended where kopf, kubectl and the operator need it.

No real API server can be installed on the test machines, so operator tests run against
kmock's `KubernetesEmulator` (an in-memory Kubernetes-shaped store over HTTP, by kopf's
author), served on a free loopback port from a thread of its own, with a kubeconfig
pointing at it. kopf runs in another thread through `kopf.testing.KopfRunner`; `kubectl`
and the `kubernetes` client work too. The fixtures in conftest.py ("Kubernetes API
emulator and kopf") wire these together; this module holds the parts.

The emulator itself (kmock extended: discovery, CRDs, uids and resourceVersions, PUT,
JSON and apply patches, the status subresource, garbage collection, selectors, watches,
admission, RBAC) lives in `fleetwire.sim.kube_emulator`, which `fleetwire demo` uses too; its
docstring lists the kmock gaps it covers and what it still does not emulate. The end of
this module adds the `kubelet` fixture (the server's pods run by `fleetwire.sim.kubelet`),
`accept_any_spec` (a CRD without rules, to reach the operator's own checks) and the
`operator_rbac` fixture (the operator authorized as the chart's ServiceAccount). Here:

15. (kopf in tests) KopfRunner's CLI changes process-wide state: the default handler
    registry, the root logger (level, a handler bound to a buffer), the `asyncio` logger,
    sys.stdout/stderr (restored out of order when runners stop out of order); `kopf run
    FILE` puts the file's directory on sys.path; a plain `OperatorRegistry` has none of
    kopf's implicit logins; kopf 1.45 no longer posts log lines as events (only
    `kopf.event/info/warn` calls). → handlers are loaded into a fresh registry per run
    (module re-imported, no sys.path change) with an explicit kubeconfig login, and the
    fixture restores the logging, stream and registry state afterwards.
16. (kubernetes client) `load_kube_config()` reads $KUBECONFIG once, when the library is
    imported. → the kube_api fixture sets the variable and the library's default path.

Writing an operator test::

    async def test_something(kopf_runner, kube):          # kube_api comes with them
        operator = kopf_runner("fleetwire.operator.handlers.resource")   # or a .py path; started
        await kube.create({"apiVersion": FTC.api_version, "kind": FTC.kind,
                           "metadata": {"name": "fleet", "namespace": "default"}, "spec": {...}})
        obj = await kube.wait_for(FTC, "fleet", "default",
                                  lambda o: (condition(o, "SpecValid") or {}).get("status") == "True")
        await operator.logged("Handler 'spec_valid' succeeded")

`kube.wait_for` polls and, on timeout, fails with the last state and every running
operator's log. The emulator can be seeded or inspected synchronously through `kube_api`
(`create/get/find/list/patch/delete`, `call(fn)` on the emulator's loop). `kubectl` works
with `KUBECONFIG=kube_api.kubeconfig` (`--validate=false`: there is no OpenAPI document).
Peering: install `build_peering_crds()` with `kube_api.install_crds`, create the peering
object, and pass `peering=` and `priority=` to `kopf_runner`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib
import importlib.util
import itertools
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import kopf
from kopf.testing import KopfRunner

from fleetwire.sim.kube_emulator import (  # noqa: F401 - re-exported for the tests
    ALL_VERBS,
    CONFIGMAPS,
    CRDS,
    DEPLOYMENTS,
    EVENTS,
    LEASES,
    NAMESPACES,
    PODS,
    SECRETS,
    SERVICE_ACCOUNTS,
    SERVICES,
    STANDARD_RESOURCES,
    KubeApi,
    KubeApiError,
    KubeEmulator,
    Resource,
    Selector,
    _api_error,
    condition,
    find_in_discovery,
    merge_diff,
    merge_patch,
    write_kubeconfig,
)
from fleetwire.operator.resource import crd as _operator_crd

# The emulator serves the CRDs it is given, as an API server does: these are the operator's.
FTC = Resource.from_crd(_operator_crd.build_crd())[0]
"""FleetTelemetryConfig, as the operator's CRD defines it (discoverable once the CRD is created)."""
CLUSTER_KOPF_PEERINGS, KOPF_PEERINGS = (Resource.from_crd(d)[0] for d in _operator_crd.build_peering_crds())

# ======================================================================================
# The asynchronous client for tests
# ======================================================================================


class KubeClient:
    """A minimal async Kubernetes client (aiohttp) for tests: CRUD, wait, events.

    Resources are `Resource` values; `create`/`apply` find an object's resource through
    discovery, as kubectl does.
    """

    def __init__(self, url: str, diagnostics: Sequence[Callable[[], str]] = ()) -> None:
        self.url = url.rstrip("/")
        self.diagnostics = diagnostics
        self._session: aiohttp.ClientSession | None = None
        self._discovered: dict[tuple[str, str], Resource] = {}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(self, method: str, path: str, body: Any = None, *, params: Mapping[str, str] | None = None,
                      content_type: str = "application/json") -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        data = None if body is None else json.dumps(body)
        async with self._session.request(method, self.url + path, data=data, params=params,
                                         headers={"Content-Type": content_type}) as response:
            text = await response.text()
            try:
                payload: Any = json.loads(text) if text else None
            except ValueError:
                payload = text
            if response.status >= 400:
                raise _api_error(response.status, payload)
            return payload

    async def resource_for(self, api_version: str, kind: str) -> Resource:
        """The resource serving `kind`, from discovery (cached)."""
        cached = self._discovered.get((api_version, kind))
        if cached is not None:
            return cached
        path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        found = find_in_discovery(await self.request("GET", path), kind)
        if found is None:
            raise KubeApiError(404, "NotFound", f"no resource serves {kind} in {api_version} (CRD not installed?)")
        self._discovered[(api_version, kind)] = found
        return found

    async def _resource_and_namespace(self, obj: Mapping[str, Any], namespace: str | None) -> tuple[Resource, str | None]:
        resource = await self.resource_for(obj["apiVersion"], obj["kind"])
        if not resource.namespaced:
            return resource, None
        return resource, namespace or obj.get("metadata", {}).get("namespace") or "default"

    async def create(self, obj: Mapping[str, Any], namespace: str | None = None) -> dict[str, Any]:
        resource, ns = await self._resource_and_namespace(obj, namespace)
        return dict(await self.request("POST", resource.path(ns), dict(obj)))

    async def apply(self, obj: Mapping[str, Any], namespace: str | None = None) -> dict[str, Any]:
        """Create, or merge-patch an existing object with `obj` (kubectl apply without history)."""
        resource, ns = await self._resource_and_namespace(obj, namespace)
        name = obj["metadata"]["name"]
        if await self.find(resource, name, ns) is None:
            return await self.create(obj, ns)
        return await self.patch(resource, name, {k: v for k, v in obj.items() if k != "status"}, ns)

    async def get(self, resource: Resource, name: str, namespace: str | None = None) -> dict[str, Any]:
        return dict(await self.request("GET", resource.path(namespace, name)))

    async def find(self, resource: Resource, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return await self.get(resource, name, namespace)
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(self, resource: Resource, namespace: str | None = None, *,
                   labels: str | Mapping[str, str] | None = None, fields: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, str] = {}
        if labels:
            params["labelSelector"] = labels if isinstance(labels, str) else ",".join(f"{k}={v}" for k, v in labels.items())
        if fields:
            params["fieldSelector"] = fields
        return list((await self.request("GET", resource.path(namespace), params=params or None))["items"])

    async def patch(self, resource: Resource, name: str, patch: Any, namespace: str | None = None, *,
                    subresource: str | None = None, content_type: str = "application/merge-patch+json") -> dict[str, Any]:
        return dict(await self.request("PATCH", resource.path(namespace, name, subresource), patch,
                                       content_type=content_type))

    async def patch_status(self, resource: Resource, name: str, status: Mapping[str, Any],
                           namespace: str | None = None) -> dict[str, Any]:
        return await self.patch(resource, name, {"status": dict(status)}, namespace, subresource="status")

    async def replace(self, obj: Mapping[str, Any], namespace: str | None = None) -> dict[str, Any]:
        resource, ns = await self._resource_and_namespace(obj, namespace)
        return dict(await self.request("PUT", resource.path(ns, obj["metadata"]["name"]), dict(obj)))

    async def delete(self, resource: Resource, name: str, namespace: str | None = None) -> dict[str, Any]:
        return dict(await self.request("DELETE", resource.path(namespace, name)))

    async def events(self, namespace: str, involved: str | None = None) -> list[dict[str, Any]]:
        """Kubernetes events in `namespace` (about the object named `involved`)."""
        return await self.list(EVENTS, namespace, fields=f"involvedObject.name={involved}" if involved else None)

    async def wait_for(self, resource: Resource, name: str, namespace: str | None = None,
                       until: Callable[[dict[str, Any]], bool] = lambda obj: True, *,
                       timeout: float = 15.0, what: str = "") -> dict[str, Any]:
        """Poll until the object exists and `until(obj)` holds; the object then.

        On timeout it fails naming `what`, the last state seen, and the diagnostics
        (the operator's log tail when a kopf_runner is active).
        """
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while True:
            last = await self.find(resource, name, namespace)
            if last is not None and until(last):
                return last
            if time.monotonic() > deadline:
                raise AssertionError(self._timeout_report(f"{resource.plural}/{name} {what}".strip(), timeout, last))
            await asyncio.sleep(0.05)

    async def wait_gone(self, resource: Resource, name: str, namespace: str | None = None, *,
                        timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while (last := await self.find(resource, name, namespace)) is not None:
            if time.monotonic() > deadline:
                raise AssertionError(self._timeout_report(f"{resource.plural}/{name} to be deleted", timeout, last))
            await asyncio.sleep(0.05)

    def _timeout_report(self, what: str, timeout: float, last: Any) -> str:
        parts = [f"waited {timeout:.0f} s for {what}", "last seen: " + json.dumps(last, indent=1, default=str)]
        parts += [source() for source in self.diagnostics]
        return "\n".join(parts)


# ======================================================================================
# kopf against the emulator
# ======================================================================================


def kopf_test_settings() -> kopf.OperatorSettings:
    """Operator settings for tests: short watch timeouts (the emulator ends streams as a
    server does, so reconnects are exercised) and quick reconnects."""
    settings = kopf.OperatorSettings()
    settings.watching.server_timeout = 10
    settings.watching.client_timeout = 20
    settings.watching.connect_timeout = 5
    settings.watching.reconnect_backoff = 0.1
    settings.networking.request_timeout = 10
    return settings


_target_counter = itertools.count()


@contextlib.contextmanager
def _default_registry(registry: kopf.OperatorRegistry) -> Any:
    previous = kopf.get_default_registry()
    kopf.set_default_registry(registry)
    try:
        yield
    finally:
        kopf.set_default_registry(previous)


def load_handlers(target: str | Path, registry: kopf.OperatorRegistry) -> Callable[[], None]:
    """Execute a handlers module (a dotted name or a .py path) so its decorators register
    into `registry`; returns the cleanup that forgets the fresh module again.

    A dotted module is imported anew even if imported before (kopf would otherwise see no
    decorator run), then the original module object is put back.
    """
    with _default_registry(registry):
        if isinstance(target, Path) or str(target).endswith(".py"):
            path = Path(target).resolve()
            name = f"_kopf_handlers_{next(_target_counter)}_{path.stem}"
            spec = importlib.util.spec_from_file_location(name, path)
            assert spec is not None and spec.loader is not None, f"cannot load {path}"
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)

            def forget() -> None:
                sys.modules.pop(name, None)

            return forget
        name = str(target)
        original = sys.modules.pop(name, None)
        parent_name, _, child = name.rpartition(".")
        importlib.import_module(name)

        def restore() -> None:
            if original is not None:
                sys.modules[name] = original
                if parent_name in sys.modules:
                    setattr(sys.modules[parent_name], child, original)
            else:
                sys.modules.pop(name, None)

        return restore


class _ThreadLogs(logging.Handler):
    """Keeps every formatted record with the thread that logged it (filtered when read)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[tuple[int | None, str, str]] = []
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # a bad record must not break the operator under test
            line = f"{record.levelname} {record.name}: {record.msg!r}"
        ref = getattr(record, "k8s_ref", None)  # kopf's per-object loggers name the object
        if isinstance(ref, Mapping) and ref.get("name"):
            where = f"{ref['namespace']}/{ref['name']}" if ref.get("namespace") else ref["name"]
            line = line.replace(f"{record.name}: ", f"{record.name}: [{where}] ", 1)
        self.records.append((record.thread, record.threadName or "", line))


class KopfOperator:
    """An operator (handlers module) running in kopf's test runner against the emulator.

    Handlers are loaded into a fresh registry; the run is `kopf run` with `-A` (or
    `-n NS...`), `--standalone` unless a peering name is given, and `kopf_test_settings()`
    unless `settings` is passed. `logs` holds what this operator (its loop thread and its
    sync-handler threads) logged; `stop()` ends it and re-raises a crash.
    """

    def __init__(self, target: str | Path, *, namespaces: Sequence[str] = (), peering: str | None = None,
                 priority: int | None = None, liveness: str | None = None,
                 settings: kopf.OperatorSettings | None = None, verbose: bool = False,
                 extra_args: Sequence[str] = ()) -> None:
        self.target = target
        from fleetwire.operator.main import scoped  # the scope settings `fleetwire operator` runs with

        self.settings = scoped(settings if settings is not None else kopf_test_settings(), clusterwide=not namespaces)
        self.registry = kopf.OperatorRegistry()
        self._prefix = f"kopf-op-{next(_target_counter)}"
        self.settings.execution.executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix=self._prefix)
        args = ["run", *([arg for ns in namespaces for arg in ("-n", ns)] or ["-A"])]
        args += ["--peering", peering] if peering else ["--standalone"]
        args += ["--priority", str(priority)] if priority is not None else []
        args += ["--liveness", liveness] if liveness else []
        args += ["--verbose"] if verbose else []
        self.args = [*args, *extra_args]
        self.runner: KopfRunner | None = None
        self.started = threading.Event()
        self._thread_id: int | None = None
        self._logs = _ThreadLogs()
        self._forget: Callable[[], None] | None = None

        @kopf.on.startup(registry=self.registry, id="kopf-operator-test-probe")
        async def note_loop_thread(**_: Any) -> None:
            """Runs first, on kopf's loop thread: tells which log records are this operator's."""
            self._thread_id = threading.get_ident()
            self.started.set()

        @kopf.on.login(registry=self.registry, id="kopf-operator-test-login")
        def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
            """A fresh registry lacks kopf's implicit logins: log in from the kubeconfig."""
            return kopf.login_via_client(**kwargs)

    @property
    def logs(self) -> list[str]:
        """What this operator logged: its loop thread and its sync-handler threads."""
        return [line for thread, name, line in list(self._logs.records)
                if thread == self._thread_id or name.startswith(self._prefix)]

    def log_tail(self, lines: int = 80) -> str:
        return f"--- operator {self.target} log (last {lines} lines) ---\n" + "\n".join(self.logs[-lines:])

    def start(self) -> KopfOperator:
        self._forget = load_handlers(self.target, self.registry)
        logging.getLogger().addHandler(self._logs)
        self.runner = KopfRunner(self.args, registry=self.registry, settings=self.settings, timeout=30)
        self.runner.__enter__()
        return self

    def wait_started(self, timeout: float = 15.0) -> None:
        """Block until kopf runs its startup handlers (it logs in and watches right after)."""
        if not self.started.wait(timeout):
            raise AssertionError(f"the operator did not start within {timeout:.0f} s\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop the operator; re-raises what made it crash, if anything."""
        runner, self.runner = self.runner, None
        if runner is None:
            return
        try:
            runner.__exit__(None, None, None)
        finally:
            self.settings.execution.executor.shutdown(wait=False, cancel_futures=True)
            logging.getLogger().removeHandler(self._logs)
            if self._forget is not None:
                self._forget()

    def wait_log(self, text: str | re.Pattern[str], timeout: float = 15.0) -> str:
        """Block until a log line contains `text` (or matches the pattern); that line."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.logs:
                if (text.search(line) if isinstance(text, re.Pattern) else text in line):
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"no log line with {text!r} within {timeout:.0f} s\n{self.log_tail()}")
            time.sleep(0.05)

    async def logged(self, text: str | re.Pattern[str], timeout: float = 15.0) -> str:
        """`wait_log` for async tests (does not block the test's loop)."""
        return await asyncio.to_thread(self.wait_log, text, timeout)


@dataclass
class ProcessState:
    """Process-wide state kopf's CLI runner changes, captured to be put back."""

    root_level: int
    root_handlers: list[logging.Handler]
    asyncio_propagate: bool
    asyncio_handlers: list[logging.Handler]
    streams: tuple[Any, Any, Any]
    registry: kopf.OperatorRegistry

    @classmethod
    def capture(cls) -> ProcessState:
        root, aio = logging.getLogger(), logging.getLogger("asyncio")
        return cls(root.level, list(root.handlers), aio.propagate, list(aio.handlers),
                   (sys.stdin, sys.stdout, sys.stderr), kopf.get_default_registry())

    def restore(self) -> None:
        root, aio = logging.getLogger(), logging.getLogger("asyncio")
        root.setLevel(self.root_level)
        root.handlers[:] = self.root_handlers
        aio.propagate = self.asyncio_propagate
        aio.handlers[:] = self.asyncio_handlers
        sys.stdin, sys.stdout, sys.stderr = self.streams
        kopf.set_default_registry(self.registry)



# ======================================================================================
# The kubelet stand-in: the cluster's Deployments run as sandboxed local processes
# ======================================================================================

import pytest  # noqa: E402

from fleetwire.sim.kubelet import Kubelet, KubeletThread  # noqa: E402


def node_report(kubelet: Kubelet, lines: int = 30) -> str:
    """Each pod's state and the tail of its container's output (printed when a wait times out)."""
    parts = ["--- kubelet stand-in: " + ("; ".join(kubelet.errors[-3:]) or "no API errors") + " ---"]
    for pod in list(kubelet.pods.values()):
        tail = pod.log.read_text(errors="replace").splitlines()[-lines:] if pod.log.exists() else []
        parts.append(f"pod {pod.namespace}/{pod.name}: ready={pod.ready} restarts={pod.restarts} "
                     f"waiting={pod.waiting} last_exit={pod.last_exit}\n  " + "\n  ".join(tail))
    return "\n".join(parts)


@pytest.fixture
def kubelet(kube_api: KubeApi, tmp_path: Path) -> Any:
    """The kubelet stand-in against `kube_api` (import it into a test module to use it):
    pods of every Deployment run as local processes, Services answer on loopback
    (`kubelet.address(namespace, service, port)`), Deployment status comes from real probes."""
    import shutil

    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (bwrap) is not installed: make test installs it")
    node = KubeletThread(kube_api.url, tmp_path / "node").start()
    kube_api.diagnostics.append(lambda: node_report(node.kubelet))
    yield node
    node.stop()


def accept_any_spec(kube_api: KubeApi) -> None:
    """Replace the FleetTelemetryConfig CRD's schema with one that accepts any spec, as the CRD
    of an older release does (`helm upgrade` never upgrades a chart's CRDs): what the API would
    refuse then reaches the operator, whose own checks (parse_spec) must catch it."""
    from fleetwire.operator.resource import crd as ftc_crd

    name = f"{ftc_crd.PLURAL}.{ftc_crd.GROUP}"
    current = kube_api.get(CRDS, name)
    for version in current["spec"]["versions"]:
        version["schema"] = {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}
    current.pop("status", None)
    kube_api.request("PUT", CRDS.path(None, name), current)


# ======================================================================================
# RBAC: the operator's requests authorized as the chart's ServiceAccount
# ======================================================================================

from fleetwire.sim.rbac import Access, Policy  # noqa: E402

CLUSTER_WIDE, ONE_NAMESPACE = "cluster-wide", "one-namespace"
_RENDERED: dict[str, list[dict[str, Any]]] = {}
TOLERATED_DENIALS: dict[str, set[tuple[str, str, str]]] = {}
"""Refusals a story may meet and still pass: none. Serving one namespace, the operator runs
without kopf's cluster-scoped scans (`fleetwire.operator.main.scoped`), so it asks nothing
a Role cannot grant."""


def chart_policy(mode: str, work_dir: Path, namespace: str = "default", chart: Path | None = None) -> Policy:
    """What `helm template` of the chart (or of a copy at `chart`) grants the operator's
    ServiceAccount: every namespace (a ClusterRole) or `namespace` only (watchNamespace: a Role there)."""
    import helm_chart

    key = f"{mode}:{chart}"
    if key not in _RENDERED:
        work_dir.mkdir(parents=True, exist_ok=True)
        helm = helm_chart.find_helm(work_dir / "helm-cache")
        values = {} if mode == CLUSTER_WIDE else {"watchNamespace": namespace}
        _RENDERED[key] = helm_chart.render(helm, values, work_dir=work_dir, chart=chart or helm_chart.CHART)
    objects = _RENDERED[key]
    deployment = next(o for o in objects if o.get("kind") == "Deployment")
    return Policy.from_objects(objects, deployment["metadata"]["namespace"],
                               deployment["spec"]["template"]["spec"]["serviceAccountName"])


def unexpected_denials(denials: Sequence[Access], mode: str) -> list[str]:
    tolerated = TOLERATED_DENIALS.get(mode, set())
    return sorted({" ".join(a.triple) + (f" (namespace {a.namespace})" if a.namespace else " (cluster)")
                   for a in denials if a.triple not in tolerated})


class OperatorRbac:
    """The chart's RBAC enforced on the operator's requests; `check()` fails on any 403."""

    def __init__(self, kube_api: KubeApi, work_dir: Path) -> None:
        self.kube_api = kube_api
        self.work_dir = work_dir
        self.mode: str | None = None

    def enforce(self, mode: str = CLUSTER_WIDE, *, policy: Policy | None = None) -> Policy:
        self.mode = mode
        policy = policy or chart_policy(mode, self.work_dir)
        self.kube_api.enforce(policy)
        return policy

    def check(self) -> None:
        if self.mode is None:
            return
        found = unexpected_denials(self.kube_api.denials(), self.mode)
        if found:
            raise AssertionError(f"the operator was refused (403) with the chart's RBAC ({self.mode}): {found}; "
                                 "grant what it needs in charts/fleetwire/templates/rbac.yaml")


@pytest.fixture
def operator_rbac(kube_api: KubeApi, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The operator runs as the chart's ServiceAccount (cluster-wide RBAC unless the test calls
    `operator_rbac.enforce(ONE_NAMESPACE)`): a request without a grant is a 403, as on a cluster,
    and fails the test at its end. Skipped (no RBAC) where helm cannot run."""
    import helm_chart

    rbac = OperatorRbac(kube_api, tmp_path_factory.getbasetemp() / "chart-rbac")
    try:
        rbac.enforce(CLUSTER_WIDE)
    except helm_chart.HelmUnavailable:
        rbac.mode = None
    yield rbac
    rbac.check()
