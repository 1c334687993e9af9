"""Admission and RBAC wiring: who a request comes from (the operator's user agents), the 403 a
ServiceAccount without a grant gets, and a write's admission (`fleetwire.sim.admission`)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import aiohttp
import aiohttp.web
import kmock
from kmock._internal import k8s, rendering  # the emulator's extension points

from fleetwire.sim import admission, rbac
from fleetwire.sim.kube_emulator.objects import _content_type
from fleetwire.sim.kube_emulator.resources import (
    CONFIGMAPS,
    DEPLOYMENTS,
    EVENTS,
    LEASES,
    NAMESPACES,
    PODS,
    SECRETS,
    SERVICE_ACCOUNTS,
    SERVICES,
)

OPERATOR_USER_AGENTS = ("kopf/", "fleetwire-operator/")
"""kopf's own client and the operator's Kubernetes client: the requests RBAC attributes to the operator."""

_BUILTIN_CHECKED = frozenset(r.key for r in (EVENTS, CONFIGMAPS, SECRETS, SERVICES, SERVICE_ACCOUNTS, PODS,
                                             DEPLOYMENTS, LEASES, NAMESPACES))
"""Built-in resources whose writes are checked against the official Kubernetes schemas."""


class _Guards:
    """Mixin of `KubeEmulator`: RBAC on every request, admission on every write."""


    def identify(self, request: rendering.Request) -> str | None:
        """Who sent the request: the policy's ServiceAccount for the operator's user agents (kopf's
        client and the operator's Kubernetes client), None (unrestricted) for tests, kubectl, kubelet."""
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
