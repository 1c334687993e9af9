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
this module re-exports, from `tests/fixtures/`, kopf runs (`kopf_runs`), the `kubelet`
fixture (the server's pods run by `fleetwire.sim.kubelet`), `accept_any_spec` (a CRD
without rules, to reach the operator's own checks) and the `operator_rbac` fixture (the operator authorized as the chart's ServiceAccount). Here:

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
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aiohttp

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


# The rest lives in tests/fixtures/ (kopf runs, the kubelet stand-in, the chart's RBAC); re-exported
# here, so tests import every helper and fixture of the cluster from `kube`.
from fixtures.kopf_runs import (  # noqa: E402, F401 - re-exported for the tests
    _default_registry,
    kopf_test_settings,
    KopfOperator,
    load_handlers,
    ProcessState,
    _target_counter,
    _ThreadLogs,
)
from fixtures.node import (  # noqa: E402, F401 - re-exported for the tests
    accept_any_spec,
    kubelet,
    node_report,
)
from fixtures.chart_rbac import (  # noqa: E402, F401 - re-exported for the tests
    chart_policy,
    CLUSTER_WIDE,
    ONE_NAMESPACE,
    operator_rbac,
    OperatorRbac,
    _RENDERED,
    TOLERATED_DENIALS,
    unexpected_denials,
)
