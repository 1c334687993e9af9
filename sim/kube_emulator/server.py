"""The emulator on a port, in a thread and loop of its own, a kubeconfig pointing at it, and a
small synchronous client for fixtures and synchronous tests."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import aiohttp.web
import yaml

from fleetwire.sim import rbac
from fleetwire.sim.kube_emulator.emulator import KubeEmulator
from fleetwire.sim.kube_emulator.resources import CRDS, STANDARD_RESOURCES, Resource

T = TypeVar("T")


class KubeApiError(Exception):
    """An API answer with an error status; `status` is the HTTP code, `reason` Kubernetes' reason."""

    def __init__(self, status: int, reason: str, message: str, body: Any = None) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body
        super().__init__(f"{status} {reason}: {message}")


def _api_error(status: int, body: Any) -> KubeApiError:
    if isinstance(body, Mapping):
        return KubeApiError(status, str(body.get("reason", "")), str(body.get("message", "")), body)
    return KubeApiError(status, "", str(body)[:500], body)


def write_kubeconfig(path: Path, url: str, namespace: str = "default") -> Path:
    """A kubeconfig with one context pointing at `url` without credentials."""
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
        "clusters": [{"name": "emulator", "cluster": {"server": url}}],
        "users": [{"name": "emulator", "user": {}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "emulator",
                                                       "namespace": namespace}}],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class KubeApi:
    """The emulator listening on 127.0.0.1 in a thread and loop of its own, and a kubeconfig.

    `call(fn)` runs `fn(emulator)` on the emulator's loop (thread-safe reads and direct
    seeding); `create/get/find/list/patch/delete` are blocking HTTP calls for fixtures and
    synchronous tests (async tests use `KubeClient`). `diagnostics` collects callables
    (e.g. a running operator's log tail) that waits print when they time out.
    """

    def __init__(self, directory: Path, resources: Iterable[Resource] = STANDARD_RESOURCES) -> None:
        self.directory = directory
        self.kubeconfig = directory / "kubeconfig"
        self.diagnostics: list[Callable[[], str]] = []
        self._resources = tuple(resources)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._emulator: KubeEmulator | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> KubeApi:
        self._thread = threading.Thread(target=self._run, name="kube-api-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self._failure is not None:
            raise RuntimeError(f"the Kubernetes API emulator did not start: {self._failure!r}")
        write_kubeconfig(self.kubeconfig, self.url)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start() or left for the thread's end
            self._failure = exc
            self._ready.set()
        finally:
            leftovers = asyncio.all_tasks(loop)  # connections still streaming watches
            for task in leftovers:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        emulator = KubeEmulator()
        for resource in self._resources:
            emulator.declare(resource)
        self._stop = asyncio.Event()
        async def handler(raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
            if raw.method == "GET" and raw.path.rstrip("/") == "/api/v1/namespaces":
                return await emulator.serve_namespace_collection(raw)
            return await emulator(raw)

        async with emulator:
            server = aiohttp.web.Server(handler, access_log=None)
            listener = await asyncio.get_running_loop().create_server(server, "127.0.0.1", 0)
            self.port = int(listener.sockets[0].getsockname()[1])
            self._emulator = emulator
            self._ready.set()
            await self._stop.wait()
            listener.close()
            await server.shutdown(0.2)

    def call(self, fn: Callable[[KubeEmulator], T]) -> T:
        """`fn(emulator)` on the emulator's loop, its result returned here."""
        assert self._loop is not None and self._emulator is not None, "not started"
        emulator = self._emulator

        async def run() -> T:
            return fn(emulator)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def enforce(self, policy: rbac.Policy | None) -> None:
        """Authorize the operator's requests with `policy` from now on (None: no RBAC)."""
        def set_policy(emu: KubeEmulator) -> None:
            emu.policy = policy
        self.call(set_policy)

    def denials(self) -> list[rbac.Access]:
        """The requests refused with 403 so far."""
        return self.call(lambda emu: list(emu.denials))

    def watchers(self, resource: Resource) -> int:
        """How many watch requests for `resource` the emulator has served so far."""
        return self.call(lambda emu: emu.watch_starts[f"{resource.group}/{resource.version}/{resource.plural}"])

    def resource_for(self, obj: Mapping[str, Any]) -> Resource:
        found = self.call(lambda emu: emu.resource(obj["apiVersion"], obj["kind"]))
        if found is None:
            raise KubeApiError(404, "NotFound", f"no resource serves {obj['kind']} in {obj['apiVersion']}")
        return found

    # -- synchronous HTTP ------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, *, params: Mapping[str, str] | None = None,
                content_type: str = "application/json") -> Any:
        url = self.url + path + (("?" + urllib.parse.urlencode(params)) if params else "")
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, timeout=10) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            text = exc.read()
            try:
                payload: Any = json.loads(text)
            except ValueError:
                payload = text.decode(errors="replace")
            raise _api_error(exc.code, payload) from None

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        resource = self.resource_for(obj)
        namespace = obj.get("metadata", {}).get("namespace", "default") if resource.namespaced else None
        return dict(self.request("POST", resource.path(namespace), dict(obj)))

    def get(self, resource: Resource, name: str, namespace: str | None = None) -> dict[str, Any]:
        return dict(self.request("GET", resource.path(namespace, name)))

    def find(self, resource: Resource, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        try:
            return self.get(resource, name, namespace)
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, resource: Resource, namespace: str | None = None) -> list[dict[str, Any]]:
        return list(self.request("GET", resource.path(namespace))["items"])

    def patch(self, resource: Resource, name: str, patch: Mapping[str, Any], namespace: str | None = None,
              *, subresource: str | None = None) -> dict[str, Any]:
        return dict(self.request("PATCH", resource.path(namespace, name, subresource), dict(patch),
                                 content_type="application/merge-patch+json"))

    def delete(self, resource: Resource, name: str, namespace: str | None = None) -> dict[str, Any]:
        return dict(self.request("DELETE", resource.path(namespace, name)))

    def install_crds(self, definitions: Iterable[Mapping[str, Any]]) -> None:
        """Create CustomResourceDefinitions (their resources become discoverable)."""
        for definition in definitions:
            if self.find(CRDS, definition["metadata"]["name"]) is None:
                self.create(definition)
