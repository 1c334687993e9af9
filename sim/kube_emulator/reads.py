"""Reads: discovery (each group version's APIResourceList), lists with selectors and a real
resourceVersion, and watches that replay and stream without losing events in between."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from kmock._internal import aiobus, k8s, rendering  # the emulator's extension points

from fleetwire.sim.kube_emulator.selectors import Selector, _fields_of, _labels_of


class _Reads:
    """Mixin of `KubeEmulator`: discovery, lists, watches."""


    async def _serve_create(self, request: rendering.Request) -> rendering.Payload:
        return rendering.Response(status=201, payload=await super()._serve_create(request))

    async def _serve_version(self, request: rendering.Request) -> rendering.Payload:
        assert request.resource is not None
        group, version = request.resource.group, request.resource.version
        keys = [key for key in self.resources if key.group == group and key.version == version]
        if not keys and group != "":
            raise k8s.KubernetesResourceNotFoundError()
        entries = []
        for key in keys:
            info = self.resources[key]
            entry = {"name": key.plural, "singularName": info.singular or "", "kind": info.kind,
                     "namespaced": bool(info.namespaced), "verbs": sorted(info.verbs),
                     "shortNames": sorted(info.shortnames), "categories": sorted(info.categories)}
            entries.append(entry)
            entries += [{**entry, "name": f"{key.plural}/{sub}", "verbs": ["get", "patch", "update"],
                         "shortNames": [], "categories": []} for sub in sorted(info.subresources)]
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": version if group == "" else f"{group}/{version}", "resources": entries}

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        assert request.resource is not None
        info = self.info(request.resource)
        if info is None:
            raise k8s.KubernetesResourceNotFoundError()
        labels = Selector.parse(request.params.get("labelSelector"))
        fields = Selector.parse(request.params.get("fieldSelector"))
        async with self._lock:
            items = [obj for (key, namespace, _name), obj in self.live_objects(request.resource)
                     if request.namespace is None or namespace == request.namespace]
            revision = str(self.revision)
        items = [obj for obj in items if labels.matches(_labels_of(obj)) and fields.matches(_fields_of(obj))]
        key = request.resource
        return {"apiVersion": key.version if not key.group else f"{key.group}/{key.version}",
                "kind": f"{info.kind}List", "metadata": {"resourceVersion": revision}, "items": items}

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        yield b""  # send the headers now: a watch may stay silent for long
        assert request.resource is not None
        key = request.resource
        self.watch_starts[f"{key.group}/{key.version}/{key.plural}"] += 1
        labels = Selector.parse(request.params.get("labelSelector"))
        fields = Selector.parse(request.params.get("fieldSelector"))
        since_text = request.params.get("resourceVersion") or "0"
        since = int(since_text) if since_text.isdigit() else 0
        timeout_text = request.params.get("timeoutSeconds")
        deadline = time.monotonic() + float(timeout_text) if timeout_text else None

        def wanted(obj: Mapping[str, Any]) -> bool:
            meta = obj.get("metadata", {})
            return ((request.namespace is None or meta.get("namespace") == request.namespace)
                    and (request.name is None or meta.get("name") == request.name)
                    and labels.matches(_labels_of(obj)) and fields.matches(_fields_of(obj)))

        bus: aiobus.Bus[Any] = self._buses[key]
        async with self._lock:  # every write announces under this lock: no event falls in between
            mark = await bus.mark()
            snapshot = [obj for _key, obj in self.live_objects(key)
                        if int(obj["metadata"].get("resourceVersion", "0")) > since]
        stream = bus.stream(since=mark)
        try:
            for obj in snapshot:
                if wanted(obj):
                    yield {"type": "ADDED", "object": obj}
            while True:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return
                try:
                    event = await asyncio.wait_for(anext(stream), remaining)
                except (TimeoutError, StopAsyncIteration):
                    return
                if wanted(event.get("object", {})):
                    yield event
        finally:
            await stream.aclose()
            await bus.unmark(mark)
