"""Writes as the API server answers them: create (201, generated names, uid and revision
stamped), replace, merge/JSON/apply patches with resourceVersion preconditions, the status
subresource split, finalizers on delete, CRDs (re)declared, garbage collection."""

from __future__ import annotations

import copy
import secrets
import uuid
from typing import Any

import aiohttp
import aiohttp.web
import attrs
import jsonpatch
import kmock
import yaml
from kmock._internal import enums, k8s, rendering  # the emulator's extension points

from fleetwire.sim.kube_emulator.objects import (
    _content_type,
    _now,
    merge_diff,
    merge_patch,
)
from fleetwire.sim.kube_emulator.resources import CRDS, Resource

_WRITES = {enums.method.POST, enums.method.PUT, enums.method.PATCH, enums.method.DELETE}


class _Writes:
    """Mixin of `KubeEmulator`: every write, serialized under one lock."""


    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        forbidden = self._forbidden(request)
        if forbidden is not None:
            return forbidden
        if request.resource is None or request.method not in _WRITES:
            return await super()._handle(request)
        async with self._writes:
            prepared = self._prepare(request)
            if isinstance(prepared, dict):  # nothing changes: answer without an event
                return aiohttp.web.json_response(prepared)
            if prepared is not request:  # kmock routes requests it has recorded, by identity
                self._requests[next(i for i in range(len(self._requests) - 1, -1, -1)
                                    if self._requests[i] is request)] = prepared
            response = await super()._handle(prepared)
            if prepared.resource == CRDS.key:
                self._redeclare_crds()
            await self._collect_garbage()
            return response

    def _prepare(self, request: rendering.Request) -> rendering.Request | dict[str, Any]:
        info = self.info(request.resource)
        if info is None:
            raise k8s.KubernetesResourceNotFoundError()
        if request.method == enums.method.POST and request.name is None:
            return self._prepare_create(request, info)
        if request.name is None:
            raise k8s.KubernetesError(405, "MethodNotAllowed", f"{request.method.value} needs an object name")
        current = self.live(request.resource, request.namespace, request.name)
        content_type = _content_type(request)
        if current is None:
            if request.method == enums.method.PATCH and content_type == "application/apply-patch+yaml":
                body = self._body_object(request, yaml_ok=True)
                body.setdefault("metadata", {})["name"] = request.name
                created = attrs.evolve(request, method=enums.method.POST, action=enums.action.CREATE,
                                       name=None, subresource=None, data=body)
                return self._prepare_create(created, info)
            raise k8s.KubernetesObjectNotFoundError()
        if request.method == enums.method.DELETE:
            return self._prepare_delete(request, current)
        if request.method == enums.method.PUT:
            body = self._body_object(request)
            return self._prepare_update(request, info, current, body, body.get("metadata", {}).get("resourceVersion"))
        if content_type == "application/json-patch+json":
            if not isinstance(request.data, list):
                raise k8s.KubernetesError(400, "BadRequest", "a JSON patch must be a list of operations")
            try:
                new = jsonpatch.apply_patch(current, request.data)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                raise k8s.KubernetesError(422, "Invalid", f"the JSON patch does not apply: {exc}") from None
            return self._prepare_update(request, info, current, new, None)
        patch = self._body_object(request, yaml_ok=content_type == "application/apply-patch+yaml")
        precondition = (patch.get("metadata") or {}).get("resourceVersion")
        return self._prepare_update(request, info, current, merge_patch(current, patch), precondition)

    @staticmethod
    def _body_object(request: rendering.Request, yaml_ok: bool = False) -> dict[str, Any]:
        body = request.data
        if body is None and yaml_ok and request.text:
            body = yaml.safe_load(request.text)
        if not isinstance(body, dict):
            raise k8s.KubernetesError(400, "BadRequest", "the request body must be an object")
        return body

    def _prepare_create(self, request: rendering.Request, info: kmock.ResourceInfo) -> rendering.Request:
        body = self._body_object(request)
        meta = body.setdefault("metadata", {})
        if not meta.get("name"):
            prefix = meta.get("generateName")
            if not prefix:
                raise k8s.KubernetesError(422, "Invalid", "metadata.name or metadata.generateName is required")
            namespace = request.namespace or meta.get("namespace")
            while True:
                meta["name"] = prefix + "".join(secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
                if self.live(request.resource, namespace if info.namespaced else None, meta["name"]) is None:
                    break
        if info.namespaced:
            if request.namespace and meta.get("namespace", request.namespace) != request.namespace:
                raise k8s.KubernetesError(400, "BadRequest", "the namespace of the object does not match the "
                                                             "namespace of the request")
            if not (request.namespace or meta.get("namespace")):
                raise k8s.KubernetesError(400, "BadRequest", "a namespaced object needs a namespace")
            meta["namespace"] = request.namespace or meta["namespace"]
        else:
            meta.pop("namespace", None)
        key = request.resource
        if self.live(key, meta.get("namespace"), meta["name"]) is not None:
            raise k8s.KubernetesObjectConflictError()
        body.setdefault("apiVersion", key.version if not key.group else f"{key.group}/{key.version}")
        body.setdefault("kind", info.kind)
        if "status" in info.subresources:
            body.pop("status", None)
        body = self._admit(request, info, body, None)
        body["metadata"].update(uid=str(uuid.uuid4()), resourceVersion=self._next_revision(),
                                creationTimestamp=_now(), generation=1)
        return attrs.evolve(request, namespace=body["metadata"].get("namespace"), data=body)

    def _prepare_update(self, request: rendering.Request, info: kmock.ResourceInfo, current: dict[str, Any],
                        new: Any, precondition: str | None) -> rendering.Request | dict[str, Any]:
        if not isinstance(new, dict):
            raise k8s.KubernetesError(422, "Invalid", "the result must be an object")
        new = copy.deepcopy(new)
        if "status" in info.subresources:
            if request.subresource == "status":
                new = {**copy.deepcopy(current), "status": new.get("status")}
                if new["status"] is None:
                    del new["status"]
            else:
                new.pop("status", None)
                if "status" in current:
                    new["status"] = copy.deepcopy(current["status"])
        meta = new.setdefault("metadata", {})
        for fixed in ("uid", "creationTimestamp", "name", "namespace", "generation", "deletionTimestamp"):
            if fixed in current["metadata"]:
                meta[fixed] = current["metadata"][fixed]
            else:
                meta.pop(fixed, None)
        if precondition and precondition != current["metadata"].get("resourceVersion"):
            raise k8s.KubernetesError(409, "Conflict", "the object has been modified; please apply your "
                                                       "changes to the latest version and try again")
        meta["resourceVersion"] = current["metadata"].get("resourceVersion")
        if new == current:
            return current
        new = self._admit(request, info, new, current)
        meta = new["metadata"]
        if new == current:
            return current
        essence = lambda obj: {k: v for k, v in obj.items() if k not in ("metadata", "status")}  # noqa: E731
        if essence(new) != essence(current):
            meta["generation"] = int(current["metadata"].get("generation", 0)) + 1
        meta["resourceVersion"] = self._next_revision()
        return attrs.evolve(request, method=enums.method.PATCH, action=enums.action.UPDATE,
                            data=merge_diff(current, new))

    def _prepare_delete(self, request: rendering.Request, current: dict[str, Any]) -> rendering.Request | dict[str, Any]:
        meta = current["metadata"]
        if meta.get("deletionTimestamp"):
            return current
        if not meta.get("finalizers"):
            return request  # kmock deletes and announces it
        patch = {"metadata": {"deletionTimestamp": _now(), "deletionGracePeriodSeconds": 0,
                              "resourceVersion": self._next_revision(),
                              "generation": int(meta.get("generation", 0)) + 1}}
        return attrs.evolve(request, method=enums.method.PATCH, action=enums.action.UPDATE, data=patch)

    def _redeclare_crds(self) -> None:
        wanted: dict[kmock.resource, Resource] = {}
        self._crds = {}
        for _key, definition in self.live_objects(CRDS.key):
            for resource in Resource.from_crd(definition):
                wanted[resource.key] = resource
                self._crds[resource.key] = definition
        for key in self._crd_resources - set(wanted):
            del self.resources[key]
        for resource in wanted.values():
            self.declare(resource)
        self._crd_resources = set(wanted)

    async def _collect_garbage(self) -> None:
        """Delete objects whose owners are all gone, in cascade."""
        while True:
            async with self._lock:
                live = self.live_objects()
                uids = {obj["metadata"].get("uid") for _key, obj in live}
                orphans = [
                    (key, obj) for key, obj in live
                    if (owners := obj["metadata"].get("ownerReferences"))
                    and not any(owner.get("uid") in uids for owner in owners)
                    and not obj["metadata"].get("deletionTimestamp")
                ]
                for key, obj in orphans:
                    stored = self.objects[key]
                    if obj["metadata"].get("finalizers"):
                        stored.patch({"metadata": {"deletionTimestamp": _now(),
                                                   "resourceVersion": self._next_revision()}})
                        await self._buses[key[0]].put({"type": "MODIFIED", "object": dict(stored.raw)})
                    else:
                        stored.delete()
                        await self._buses[key[0]].put({"type": "DELETED", "object": obj})
            if not orphans:
                return

    # -- reads ---------------------------------------------------------------------------
