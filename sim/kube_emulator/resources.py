"""Resources as discovery describes them (group, version, plural, kind, scope, verbs,
subresources), the standard ones every emulator declares, and a CRD's served versions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kmock

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
