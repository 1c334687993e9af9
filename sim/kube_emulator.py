"""A Kubernetes API on loopback: kmock's emulator, extended where kopf, kubectl and the operator need it.

No real API server can be installed on the machines fleetwire is developed and demonstrated
on, so the operator's tests and `fleetwire demo` run against kmock's `KubernetesEmulator`
(an in-memory Kubernetes-shaped store over HTTP, by kopf's author), served on a free
loopback port from a thread of its own (`KubeApi`), with a kubeconfig pointing at it. kmock
is an optional dependency (the `demo` and `test` extras): the operator itself never needs it.

kmock 0.8 gaps met while building this emulator, and how it covers each:

1. Discovery names the core group's version "/v1", so kubectl cannot map core kinds
   ("no matches for kind ConfigMap in version v1"); resources it was not told about have
   no kind, scope or verbs, and kopf waits forever without v1/namespaces and v1/events.
   → `KubeEmulator._serve_version` is rewritten; `STANDARD_RESOURCES` declares the core,
   apps, coordination and apiextensions resources with kind, scope, verbs, subresources.
2. A CustomResourceDefinition created through the API does not make its resource
   discoverable. → creating, changing or deleting a CRD (re)declares its served versions,
   so `kubectl apply -f crd.yaml` then a custom object works, and kopf's CRD scanning
   finds new resources as on a real cluster.
3. No uid, resourceVersion, generation or creationTimestamp; the URL's namespace is not
   copied into metadata (so namespaced watches miss the object); generateName is
   ignored (every second kopf event collides with 409). → stamped on create: uuid4 uid,
   a global revision counter, generation 1, RFC 3339 timestamp, namespace, generated
   names, apiVersion/kind; resourceVersion bumps on every change, generation when
   anything but metadata and status changes (and when deletion starts).
4. Create answers 200. → 201.
5. PUT is not supported. → replace, keeping status on the main resource and everything
   but status on /status, as the API server does.
6. PATCH is always a recursive merge: a JSON patch (list body) fails, apply-patch on a
   missing object is 404, no-op patches still produce a MODIFIED event, and a
   `metadata.resourceVersion` precondition is ignored. → JSON patches are applied with
   `jsonpatch`; apply-patch creates when absent; unchanged objects answer without an
   event or a new resourceVersion; a stale resourceVersion (PATCH or PUT) is 409.
7. The status subresource is not separated: a PATCH of the main resource writes status
   and a PATCH of /status writes spec. → split as the API server does for resources that
   declare the status subresource (so an operator that writes status the wrong way fails
   here as it would on a cluster); status sent on create is dropped likewise.
8. DELETE of an object with finalizers sets deletionTimestamp without a new
   resourceVersion. → done as an update (new resourceVersion and generation).
9. No garbage collection. → objects whose every ownerReference points to a gone uid are
   deleted (or marked for deletion if they hold finalizers), in cascade.
10. Lists lack `kind`/`apiVersion` and a real resourceVersion ("Object 'Kind' is missing"
    in kubectl). → added.
11. Watches replay every object whatever the resourceVersion, lose the events between
    that snapshot and the bus subscription, and ignore timeoutSeconds. → snapshot and
    subscription are taken atomically under the store's lock; with a resourceVersion
    only newer objects are replayed; timeoutSeconds ends the stream (kopf reconnects, as
    against a real server).
12. labelSelector and fieldSelector are ignored. → applied to lists and watches
    (equality, inequality, existence, in/notin; field selectors on any dotted path).
13. Create accepts resources nobody declared. → 404, as for a CRD not installed.
14. `kmock.Server` replaces aiohttp's resolver process-wide (a hazard with other aiohttp
    users in the same test), and the emulator serves from the test's event loop, which
    `KopfRunner.__exit__` blocks while joining kopf's thread. → served with aiohttp's
    low-level server from a dedicated thread and loop; the test's loop stays free.

15. No admission. → a custom resource is pruned, defaulted and validated against its CRD's
    `openAPIV3Schema`, CEL rules included, on create, replace and every patch
    (`fleetwire.sim.admission`); a refusal is the API server's 422 Status (`reason:
    Invalid`, `details.causes[].field`). `fieldValidation=Strict` turns pruning into
    refusal. Built-in objects (Events, ConfigMaps, Secrets, Services, Pods, Deployments,
    ...) are checked against the official schemas of the oldest Kubernetes the chart
    supports and the newest one kubernetes-validate knows (`builtin_versions`), strict.

16. No RBAC. → with a `policy` (`fleetwire.sim.rbac.Policy`, e.g. from the chart's rendered
    Role/ClusterRole and bindings), every request from the operator's user agents is
    authorized as that ServiceAccount (verb, group, resource/subresource, namespace; a
    server-side apply that creates needs create too); without a grant it is a 403 Status,
    and recorded in `denials`.

Still not emulated (tests must not rely on them): authentication (identity is the user
agent), namespace existence, strategic-merge semantics (lists are
replaced whole, not merged by key), server-side-apply field ownership, delete-collection,
deleting a CRD's objects with it,
foreground/orphan deletion, chunked lists (limit/continue), watch bookmarks, the
aggregated discovery format (clients fall back), Table output for kubectl (plain lists).
"""

from __future__ import annotations

import asyncio
import collections
import copy
import dataclasses
import datetime as dt
import json
import re
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import aiohttp.web
import attrs
import jsonpatch
import kmock
import yaml
from kmock._internal import aiobus, enums, k8s, rendering  # the emulator's extension points

from fleetwire.operator.resource import crd as ftc_crd
from fleetwire.sim import admission, rbac

T = TypeVar("T")

OPERATOR_USER_AGENTS = ("kopf/", "fleetwire-operator/")
"""kopf's own client and `fleetwire.operator.clients.kube`: the requests RBAC attributes to the operator."""

# ======================================================================================
# Resources
# ======================================================================================

ALL_VERBS = ("create", "delete", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class Resource:
    """A Kubernetes resource (group, version, plural) with what discovery says about it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    subresources: frozenset[str] = frozenset()
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS

    @property
    def api_version(self) -> str:
        return self.version if not self.group else f"{self.group}/{self.version}"

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def key(self) -> kmock.resource:
        """The emulator's key for this resource."""
        return kmock.resource(self.group, self.version, self.plural)

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        """The API path: /api/v1/namespaces/NS/configmaps/NAME/status and the like."""
        parts = ["/api", self.version] if not self.group else ["/apis", self.group, self.version]
        if self.namespaced and namespace is not None:
            parts += ["namespaces", namespace]
        parts.append(self.plural)
        if name is not None:
            parts.append(name)
            if subresource:
                parts.append(subresource)
        return "/".join(parts)

    @classmethod
    def from_crd(cls, definition: Mapping[str, Any]) -> list[Resource]:
        """One Resource per served version of a CustomResourceDefinition."""
        spec = definition.get("spec", {})
        names = spec.get("names", {})
        return [
            cls(
                group=spec["group"], version=version["name"], plural=names["plural"], kind=names["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                subresources=frozenset(version.get("subresources") or {}),
                short_names=tuple(names.get("shortNames", ())),
            )
            for version in spec.get("versions", [])
            if version.get("served", True)
        ]


NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False, short_names=("ns",))
EVENTS = Resource("", "v1", "events", "Event", short_names=("ev",))
CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap", short_names=("cm",))
SECRETS = Resource("", "v1", "secrets", "Secret")
SERVICES = Resource("", "v1", "services", "Service", subresources=frozenset({"status"}), short_names=("svc",))
SERVICE_ACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount", short_names=("sa",))
PODS = Resource("", "v1", "pods", "Pod", subresources=frozenset({"status"}), short_names=("po",))
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment", subresources=frozenset({"status", "scale"}),
                       short_names=("deploy",))
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease")
CRDS = Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition",
                namespaced=False, subresources=frozenset({"status"}), short_names=("crd", "crds"))
STANDARD_RESOURCES: tuple[Resource, ...] = (
    NAMESPACES, EVENTS, CONFIGMAPS, SECRETS, SERVICES, SERVICE_ACCOUNTS, PODS, DEPLOYMENTS, LEASES, CRDS,
)
"""Declared in every emulator: what kopf needs to start and what the operator manages."""

FTC = Resource.from_crd(ftc_crd.build_crd())[0]
"""FleetTelemetryConfig, as the operator's CRD defines it (discoverable once the CRD is created)."""
CLUSTER_KOPF_PEERINGS, KOPF_PEERINGS = (Resource.from_crd(d)[0] for d in ftc_crd.build_peering_crds())


def find_in_discovery(document: Mapping[str, Any], kind: str) -> Resource | None:
    """The resource serving `kind` in an APIResourceList (subresources skipped)."""
    group_version = document.get("groupVersion", "")
    group, _, version = group_version.rpartition("/")
    for entry in document.get("resources", []):
        if entry.get("kind") == kind and "/" not in entry.get("name", ""):
            subresources = frozenset(
                other["name"].split("/", 1)[1] for other in document.get("resources", [])
                if other.get("name", "").startswith(entry["name"] + "/")
            )
            return Resource(group, version, entry["name"], kind, namespaced=bool(entry.get("namespaced")),
                            subresources=subresources, short_names=tuple(entry.get("shortNames") or ()),
                            verbs=tuple(entry.get("verbs") or ALL_VERBS))
    return None


# ======================================================================================
# Pure helpers: merge patches, selectors, conditions
# ======================================================================================


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def merge_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch that turns `old` into `new`."""
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        if key in old and isinstance(old[key], Mapping) and isinstance(value, Mapping):
            sub = merge_diff(old[key], value)
            if sub:
                patch[key] = sub
        elif key not in old or old[key] != value:
            patch[key] = copy.deepcopy(value)
    return patch


def _split_requirements(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += char == "("
        depth -= char == ")"
        current += char
    parts.append(current)
    return [part.strip() for part in parts if part.strip()]


_REQUIREMENT = re.compile(
    r"^(?P<neg>!)?\s*(?P<key>[A-Za-z0-9./_-]+)\s*"
    r"(?:(?P<op>==|=|!=)\s*(?P<value>[A-Za-z0-9._-]*)|\s+(?P<set>in|notin)\s*\((?P<values>[^)]*)\))?$"
)


@dataclass(frozen=True)
class Selector:
    """A label or field selector as the API server parses it."""

    requirements: tuple[tuple[str, str, tuple[str, ...]], ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> Selector:
        requirements = []
        for part in _split_requirements(text or ""):
            match = _REQUIREMENT.match(part)
            if match is None:
                raise k8s.KubernetesError(400, "BadRequest", f"unable to parse requirement: {part!r}")
            key = match["key"]
            if match["neg"]:
                requirements.append((key, "!exists", ()))
            elif match["op"]:
                requirements.append((key, "!=" if match["op"] == "!=" else "=", (match["value"],)))
            elif match["set"]:
                values = tuple(v.strip() for v in match["values"].split(",") if v.strip())
                requirements.append((key, match["set"], values))
            else:
                requirements.append((key, "exists", ()))
        return cls(tuple(requirements))

    def matches(self, values: Callable[[str], str | None]) -> bool:
        for key, op, operands in self.requirements:
            value = values(key)
            if op == "exists" and value is None or op == "!exists" and value is not None:
                return False
            if op == "=" and value != operands[0] or op == "!=" and value == operands[0]:
                return False
            if op == "in" and value not in operands or op == "notin" and value in operands:
                return False
        return True


def _labels_of(obj: Mapping[str, Any]) -> Callable[[str], str | None]:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return lambda key: labels.get(key)


def _fields_of(obj: Mapping[str, Any]) -> Callable[[str], str | None]:
    def value(path: str) -> str | None:
        node: Any = obj
        for part in path.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return None
            node = node[part]
        return None if node is None else str(node)
    return value


def condition(obj: Mapping[str, Any], type_: str) -> dict[str, Any] | None:
    """The status condition of type `type_`, or None."""
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item.get("type") == type_:
            return dict(item)
    return None


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _content_type(request: rendering.Request) -> str:
    headers = {key.lower(): value for key, value in request.headers.items()}
    return headers.get("content-type", "application/json").split(";")[0].strip().lower()


# ======================================================================================
# The emulator
# ======================================================================================

_WRITES = {enums.method.POST, enums.method.PUT, enums.method.PATCH, enums.method.DELETE}
_BUILTIN_CHECKED = frozenset(r.key for r in (EVENTS, CONFIGMAPS, SECRETS, SERVICES, SERVICE_ACCOUNTS, PODS,
                                             DEPLOYMENTS, LEASES, NAMESPACES))
"""Built-in resources whose writes are checked against the official Kubernetes schemas."""


@attrs.define(kw_only=True)
class KubeEmulator(k8s.KubernetesEmulator):
    """kmock's emulator with the API server behaviour the module docstring lists.

    Runs on one event loop (the KubeApi thread's); read it from elsewhere through
    `KubeApi.call`.
    """

    revision: int = attrs.field(default=0, init=False)
    watch_starts: collections.Counter[str] = attrs.field(factory=collections.Counter, init=False)
    _writes: asyncio.Lock = attrs.field(factory=asyncio.Lock, init=False)
    _crd_resources: set[kmock.resource] = attrs.field(factory=set, init=False)
    _crds: dict[kmock.resource, dict[str, Any]] = attrs.field(factory=dict, init=False)
    builtin_versions: tuple[str, ...] = attrs.field(default=(admission.OLDEST_KUBERNETES, admission.NEWEST_KUBERNETES))
    """Kubernetes releases whose official schemas every built-in object written must satisfy."""
    policy: rbac.Policy | None = attrs.field(default=None)
    """RBAC for the requests `identify` attributes to the policy's ServiceAccount (None: no RBAC)."""
    operator_user_agents: tuple[str, ...] = attrs.field(default=OPERATOR_USER_AGENTS)
    denials: list[rbac.Access] = attrs.field(factory=list, init=False)
    """Every request refused with 403, in order."""

    # -- declarations ------------------------------------------------------------------

    def declare(self, resource: Resource) -> None:
        """Make `resource` discoverable (and creatable)."""
        self.resources[resource.key] = kmock.ResourceInfo(
            kind=resource.kind, singular=resource.singular, namespaced=resource.namespaced,
            verbs=set(resource.verbs), shortnames=set(resource.short_names),
            subresources=set(resource.subresources),
        )

    def info(self, key: kmock.resource) -> kmock.ResourceInfo | None:
        return self.resources[key] if key in self.resources else None

    def resource(self, api_version: str, kind: str) -> Resource | None:
        """The declared resource serving `kind` in `api_version`."""
        group, _, version = api_version.rpartition("/")
        for key in self.resources:
            info = self.resources[key]
            if key.group == group and key.version == version and info.kind == kind:
                return Resource(group, version, key.plural or "", kind, namespaced=bool(info.namespaced),
                                subresources=frozenset(info.subresources))
        return None

    def live(self, key: kmock.resource, namespace: str | None, name: str | None) -> dict[str, Any] | None:
        """A copy of the stored object, None if absent or deleted."""
        obj_key = (key, namespace, name)
        if obj_key not in self.objects or self.objects[obj_key].deleted:
            return None
        return copy.deepcopy(dict(self.objects[obj_key].raw))

    def live_objects(self, key: kmock.resource | None = None) -> list[tuple[tuple[Any, str | None, str], dict[str, Any]]]:
        return [(obj_key, dict(obj.raw)) for obj_key, obj in self.objects.items()
                if not obj.deleted and (key is None or obj_key[0] == key)]

    def _next_revision(self) -> str:
        self.revision += 1
        return str(self.revision)

    # -- writes --------------------------------------------------------------------------

    def identify(self, request: rendering.Request) -> str | None:
        """Who sent the request: the policy's ServiceAccount for the operator's user agents (kopf's
        client and `fleetwire.operator.clients.kube`), None (unrestricted) for tests, kubectl, kubelet."""
        if self.policy is None:
            return None
        headers = {key.lower(): value for key, value in (request.headers or {}).items()}
        return self.policy.user if headers.get("user-agent", "").startswith(self.operator_user_agents) else None

    def _forbidden(self, request: rendering.Request) -> aiohttp.web.StreamResponse | None:
        """The 403 the API server answers when the ServiceAccount has no grant for the request."""
        if self.policy is None or request.resource is None or not request.resource.plural:
            return None  # discovery is open to every authenticated client
        if self.identify(request) != self.policy.user:
            return None
        key = request.resource
        namespace = request.namespace if self.info(key) is None or self.info(key).namespaced else None
        access = rbac.access_of(request.method.value, key.group or "", key.plural or "", request.subresource,
                                namespace, request.name, request.params)
        wanted = [access]
        if (access.verb == "patch" and _content_type(request) == "application/apply-patch+yaml"
                and self.live(key, request.namespace, request.name) is None):
            wanted.append(dataclasses.replace(access, verb="create"))
        for item in wanted:
            denial = self.policy.denial(item)
            if denial is not None:
                self.denials.append(item)
                return aiohttp.web.json_response(
                    {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": denial,
                     "reason": "Forbidden", "details": {"name": request.name or "", "group": key.group or "",
                                                        "kind": key.plural}, "code": 403}, status=403)
        return None

    async def serve_namespace_collection(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """GET /api/v1/namespaces, which kmock cannot parse (it takes `namespaces` for the start of
        a namespaced path): the list, or a watch that stays silent until its timeout; RBAC applies."""
        watch = raw.query.get("watch") in ("true", "1")
        user_agent = raw.headers.get("User-Agent", "")
        if self.policy is not None and user_agent.startswith(self.operator_user_agents):
            access = rbac.Access("watch" if watch else "list", "", "namespaces")
            denial = self.policy.denial(access)
            if denial is not None:
                self.denials.append(access)
                return aiohttp.web.json_response(
                    {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": denial,
                     "reason": "Forbidden", "details": {"kind": "namespaces"}, "code": 403}, status=403)
        items = [obj for _key, obj in self.live_objects(NAMESPACES.key)]
        if not watch:
            return aiohttp.web.json_response({"apiVersion": "v1", "kind": "NamespaceList",
                                              "metadata": {"resourceVersion": str(self.revision)}, "items": items})
        response = aiohttp.web.StreamResponse()
        await response.prepare(raw)
        await asyncio.sleep(float(raw.query.get("timeoutSeconds") or 60))
        return response

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

    def _admit(self, request: rendering.Request, info: kmock.ResourceInfo, obj: dict[str, Any],
               current: dict[str, Any] | None) -> dict[str, Any]:
        """The object as stored (a custom resource pruned and defaulted by its CRD's schema), or
        the API server's 422 (`fleetwire.sim.admission`)."""
        key = request.resource
        definition = self._crds.get(key)
        strict = request.params.get("fieldValidation") == "Strict"
        if definition is not None:
            stored, causes = admission.admit(obj, definition, current, strict=strict)
        elif key in _BUILTIN_CHECKED and self.builtin_versions:
            stored, causes = obj, admission.builtin_causes(obj, self.builtin_versions)
        else:
            return obj
        if causes:
            name = str((obj.get("metadata") or {}).get("name", ""))
            status = admission.invalid_status(info.kind, key.group or "", name, causes)
            raise k8s.KubernetesError(422, "Invalid", status["message"], status["details"])
        return stored

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


# ======================================================================================
# The emulator on a port, in a thread; a small synchronous client
# ======================================================================================


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
