"""`Kubelet`, the thin asyncio shell that polls the API and runs the Deployments' pods, and
`KubeletThread`, which runs it on a loop of its own for synchronous callers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from fleetwire.sim.kubelet.decisions import deployment_status, rollout
from fleetwire.sim.kubelet.model import PodPlan, Waiting, template_hash
from fleetwire.sim.kubelet.plan import plan_pod
from fleetwire.sim.kubelet.processes import Pod, _Processes
from fleetwire.sim.kubelet.services import _Services
from fleetwire.sim.kubelet.status import _essence, _Status
from fleetwire.sim.kubelet.volumes import volume_files, write_volume


class Kubelet(_Processes, _Status, _Services):
    """Runs the Deployments of an emulated cluster (see the module docstring).

    `base_url` is the API; `workdir` holds each pod's volumes, sockets and log. Timings
    are a node's, scaled by `period` (how often the API is read) and `backoff`.
    """

    def __init__(self, base_url: str, workdir: Path, *, namespace: str | None = None, period: float = 0.25,
                 backoff: tuple[float, float] = (0.5, 8.0), probe_scale: float = 0.1,
                 headers: Mapping[str, str] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.workdir = workdir
        self.namespace = namespace
        self.period = period
        self.backoff = backoff
        self.probe_scale = probe_scale
        """Probe periods and delays are multiplied by this (a 10 s period probes each second)."""
        self.headers = {"User-Agent": "kubelet-stand-in/1", **(headers or {})}
        self.pods: dict[str, Pod] = {}
        self.errors: list[str] = []
        self._services: dict[tuple[str, str], dict[Any, tuple[asyncio.Server, int]]] = {}
        self._service_objects: dict[tuple[str, str], dict[str, Any]] = {}
        self._written: dict[tuple[str, str], dict[str, Any]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._bwrap = shutil.which("bwrap")

    # -- life ------------------------------------------------------------------------------

    async def start(self) -> Kubelet:
        if self._bwrap is None:
            raise RuntimeError("bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._session = aiohttp.ClientSession(headers=self.headers)
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="kubelet")
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*(self._kill(pod, grace=2.0) for pod in list(self.pods.values())),
                             return_exceptions=True)
        for pod in self.pods.values():
            shutil.rmtree(pod.sockets, ignore_errors=True)
        for listeners in self._services.values():
            for server, _port in listeners.values():
                server.close()
        self._services.clear()
        if self._session is not None:
            await self._session.close()


    def pods_of(self, namespace: str, deployment: str) -> list[Pod]:
        return [p for p in self.pods.values() if p.namespace == namespace and p.deployment == deployment
                and not p.terminating]

    # -- the API ---------------------------------------------------------------------------

    async def _request(self, method: str, path: str, body: Any = None,
                       content_type: str = "application/merge-patch+json") -> Any:
        assert self._session is not None
        async with self._session.request(method, self.base_url + path, json=body,
                                         headers={"Content-Type": content_type}) as response:
            payload = await response.json(content_type=None)
            if response.status >= 400:
                raise RuntimeError(f"{method} {path}: {response.status} {payload}")
            return payload

    def _path(self, api: str, plural: str, namespace: str | None = None, name: str | None = None,
              sub: str | None = None) -> str:
        parts = [api] + (["namespaces", namespace] if namespace else []) + [plural]
        parts += [name] if name else []
        parts += [sub] if sub else []
        return "/".join(parts)

    async def _list(self, api: str, plural: str) -> list[dict[str, Any]]:
        return list((await self._request("GET", self._path(api, plural, self.namespace)))["items"])

    # -- the loop --------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            try:
                await self._sync()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the API is down for a moment, or a write conflicted: next pass
                self.errors.append(repr(exc))
                del self.errors[:-20]
            await asyncio.sleep(self.period)

    async def _sync(self) -> None:
        deployments = await self._list("/apis/apps/v1", "deployments")
        secrets_ = await self._list("/api/v1", "secrets")
        config_maps = await self._list("/api/v1", "configmaps")
        services = await self._list("/api/v1", "services")
        by_ns: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        for obj in secrets_:
            by_ns.setdefault(obj["metadata"]["namespace"], ({}, {}))[0][obj["metadata"]["name"]] = obj
        for obj in config_maps:
            by_ns.setdefault(obj["metadata"]["namespace"], ({}, {}))[1][obj["metadata"]["name"]] = obj
        seen: set[tuple[str, str]] = set()
        for deployment in deployments:
            meta = deployment["metadata"]
            key = (meta["namespace"], meta["name"])
            seen.add(key)
            if meta.get("deletionTimestamp"):
                continue
            objects = by_ns.get(key[0], ({}, {}))
            await self._reconcile(deployment, objects[0], objects[1])
        for pod in list(self.pods.values()):
            if (pod.namespace, pod.deployment) not in seen and not pod.terminating:
                await self._terminate(pod)
        await self._sync_services(services)

    async def _reconcile(self, deployment: dict[str, Any], secrets_: Mapping[str, Any],
                         config_maps: Mapping[str, Any]) -> None:
        meta, spec = deployment["metadata"], deployment.get("spec") or {}
        namespace, name = meta["namespace"], meta["name"]
        wanted = template_hash(spec.get("template") or {})
        pods = self.pods_of(namespace, name)
        for pod in pods:  # the kubelet's volume manager: mounted Secrets and ConfigMaps follow their objects
            if pod.plan is not None and pod.process is not None:
                volumes = {v["name"]: v for v in (pod.template.get("spec") or {}).get("volumes") or []}
                for volume, files in pod.plan.volumes.items():
                    fresh = volume_files(volumes[volume], secrets_, config_maps) if files is not None else None
                    if isinstance(fresh, Mapping) and write_volume(pod.directory / "volumes" / volume, fresh):
                        pod.volume_updates += 1
            elif pod.plan is None:  # waiting for a Secret, a ConfigMap, a fixed spec
                plan = plan_pod(deployment, secrets_, config_maps, pod.name)
                if isinstance(plan, PodPlan) and pod.template_hash == wanted:
                    pod.plan, pod.waiting = plan, None
                    pod.tasks.append(asyncio.get_running_loop().create_task(self._supervise(pod)))
                elif isinstance(plan, Waiting):
                    pod.waiting = plan
        step = rollout(int(spec.get("replicas", 1)), wanted, [p.view() for p in pods])
        for pod_name in step.stop:
            await self._terminate(self.pods[pod_name])
        for _ in range(step.start):
            await self._create_pod(deployment, secrets_, config_maps, wanted)
        pods = self.pods_of(namespace, name)
        status = deployment_status(deployment, [p.view() for p in pods])
        await self._write_pods(deployment, pods)
        old = deployment.get("status") or {}
        if _essence(old) != _essence(status):
            await self._request("PATCH", self._path("/apis/apps/v1", "deployments", namespace, name, "status"),
                                {"status": {**{k: None for k in old if k not in status}, **status}})

    async def _create_pod(self, deployment: Mapping[str, Any], secrets_: Mapping[str, Any],
                          config_maps: Mapping[str, Any], wanted: str) -> None:
        meta = deployment["metadata"]
        suffix = "".join(secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
        name = f"{meta['name']}-{wanted}-{suffix}"
        template = (deployment.get("spec") or {}).get("template") or {}
        pod = Pod(name, meta["namespace"], meta["name"], wanted,
                  dict((template.get("metadata") or {}).get("labels") or {}),
                  self.workdir / f"{meta['namespace']}_{name}", json.loads(json.dumps(template)))
        pod.directory.mkdir(parents=True)
        self.pods[name] = pod
        plan = plan_pod(deployment, secrets_, config_maps, name)
        if isinstance(plan, Waiting):
            pod.waiting = plan
            return
        pod.plan = plan
        pod.tasks.append(asyncio.get_running_loop().create_task(self._supervise(pod), name=f"pod {name}"))


class KubeletThread:
    """A `Kubelet` on a loop and thread of its own, for synchronous code and other loops."""

    def __init__(self, base_url: str, workdir: Path, **options: Any) -> None:
        self.kubelet = Kubelet(base_url, workdir, **options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kubelet-stand-in", daemon=True)

    def start(self) -> KubeletThread:
        self._thread.start()
        self.call(self.kubelet.start)
        return self

    def stop(self) -> None:
        async def everything() -> None:
            await self.kubelet.stop()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:  # connections still forwarded by the Services
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.call(everything, timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    def call(self, fn: Callable[[], Any], timeout: float = 10) -> Any:
        """`fn()` on the kubelet's loop (awaited if it returns an awaitable)."""
        async def run() -> Any:
            value = fn()
            if asyncio.iscoroutine(value):
                value = await value
            return value
        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def address(self, namespace: str, service: str, port: int | str) -> tuple[str, int]:
        return self.call(lambda: self.kubelet.address(namespace, service, port))  # type: ignore[no-any-return]

    def pods(self, namespace: str, deployment: str) -> list[Pod]:
        return self.call(lambda: list(self.kubelet.pods_of(namespace, deployment)))  # type: ignore[no-any-return]

    async def wait_address(self, namespace: str, service: str, port: int | str,
                           timeout: float = 15.0) -> tuple[str, int]:
        """`address()` once the Service is seen (async callers: the test's or demo's loop)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.address(namespace, service, port)
            except LookupError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
