"""`KubeEmulator`: kmock's emulator with the API server behaviour of the package docstring,
composed of one mixin per concern (guards, writes, reads)."""

from __future__ import annotations

import asyncio
import collections
import copy
from typing import Any

import attrs
import kmock
from kmock._internal import k8s  # the emulator's extension points

from fleetwire.sim import admission, rbac
from fleetwire.sim.kube_emulator.guards import OPERATOR_USER_AGENTS, _Guards
from fleetwire.sim.kube_emulator.reads import _Reads
from fleetwire.sim.kube_emulator.resources import Resource
from fleetwire.sim.kube_emulator.writes import _Writes


@attrs.define(kw_only=True)
class KubeEmulator(_Guards, _Writes, _Reads, k8s.KubernetesEmulator):
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
