"""A small asyncio client for the objects the operator manages: get, server-side apply, delete.

kopf watches and patches FleetTelemetryConfigs itself; the handlers need a few more calls
for Secrets, the server's ConfigMap, Deployment and Services. The `kubernetes` package is
synchronous (a thread per call would also share its connection pool across kopf's
workers), so this speaks the API over aiohttp and borrows only the credentials from
`kubernetes.config`: the in-cluster service account, else $KUBECONFIG.

Writes are server-side apply (`PATCH` with `application/apply-patch+yaml`, field manager
`fleetwire-operator`, forced): one idempotent request creates or updates an object, and a
field the operator stops setting is removed, which a merge patch would leave behind. On
a real API server an apply that creates the object is authorised as `patch` and
`create`, so the chart's RBAC grants both.
"""

from __future__ import annotations

import base64
import binascii
import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import kubernetes

from fleetwire import __version__

__all__ = ["FIELD_MANAGER", "KINDS", "KubeError", "KubernetesApi", "Kind", "USER_AGENT", "load_configuration",
           "secret_value"]

FIELD_MANAGER = "fleetwire-operator"
USER_AGENT = f"fleetwire-operator/{__version__}"


@dataclass(frozen=True, slots=True)
class Kind:
    """Where a kind lives in the API (all namespaced here)."""

    api_version: str
    kind: str
    plural: str

    def path(self, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        path = f"{base}/namespaces/{namespace}/{self.plural}"
        if name is not None:
            path += f"/{name}" + (f"/{subresource}" if subresource else "")
        return path


KINDS: Mapping[str, Kind] = {
    kind.kind: kind for kind in (
        Kind("v1", "Secret", "secrets"),
        Kind("v1", "ConfigMap", "configmaps"),
        Kind("v1", "Service", "services"),
        Kind("apps/v1", "Deployment", "deployments"),
    )
}
"""What the operator creates; `KubernetesApi.apply` refuses anything else."""


class KubeError(Exception):
    """An API answer with an error status; `status` is the HTTP code."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"HTTP {status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


def secret_value(secret: Mapping[str, Any], key: str) -> str | None:
    """A Secret's `data[key]` decoded; None when absent, empty or not base64 of UTF-8 text."""
    value = (secret.get("data") or {}).get(key)
    if not value:
        return None
    try:
        return base64.b64decode(value, validate=True).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None


def load_configuration() -> kubernetes.client.Configuration:
    """Credentials as kopf's login finds them: in-cluster service account, else $KUBECONFIG."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=configuration)
    return configuration


class KubernetesApi:
    """Get, apply and delete namespaced objects; a custom resource's status by merge patch."""

    def __init__(self, configuration: kubernetes.client.Configuration, *, timeout: float = 30.0) -> None:
        self.configuration = configuration
        self.base = configuration.host.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:  # the token stays out of logs
        return f"KubernetesApi({self.base!r})"

    def _ssl(self) -> ssl.SSLContext | bool:
        if not self.base.startswith("https:"):
            return False
        config = self.configuration
        context = ssl.create_default_context(cafile=config.ssl_ca_cert) if config.ssl_ca_cert \
            else ssl.create_default_context()
        if config.cert_file:
            context.load_cert_chain(config.cert_file, config.key_file)
        if not config.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        # Calls the refresh hook first, so a rotated service-account token is re-read.
        token = self.configuration.get_api_key_with_prefix("BearerToken")  # "Bearer ..." already
        if token:
            headers["Authorization"] = token
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def request(self, method: str, path: str, body: Any = None, *, content_type: str | None = None,
                      params: Mapping[str, str] | None = None) -> Any:
        """One call; the decoded JSON answer, or `KubeError`."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, connector=aiohttp.TCPConnector(ssl=self._ssl()))
        data = None if body is None else json.dumps(body)
        async with self._session.request(method, self.base + path, data=data, params=params,
                                         headers=self._headers(content_type if body is not None else None)) as response:
            text = await response.text()
            try:
                payload = json.loads(text) if text else None
            except ValueError:
                payload = None
            if response.status >= 400:
                if isinstance(payload, Mapping):
                    raise KubeError(response.status, str(payload.get("reason", "")), str(payload.get("message", "")))
                raise KubeError(response.status, response.reason or "", text[:300])
            return payload

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return dict(await self.request("GET", KINDS[kind].path(namespace, name)))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply of a complete desired object; the object as stored."""
        kind = KINDS[obj["kind"]]
        if obj.get("apiVersion") != kind.api_version:
            raise ValueError(f"{obj['kind']} must be {kind.api_version}, not {obj.get('apiVersion')}")
        meta = obj["metadata"]
        path = kind.path(meta["namespace"], meta["name"])
        return dict(await self.request("PATCH", path, dict(obj), content_type="application/apply-patch+yaml",
                                       params={"fieldManager": FIELD_MANAGER, "force": "true"}))

    async def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete; False when it was already gone."""
        try:
            await self.request("DELETE", KINDS[kind].path(namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def patch_status(self, api_version: str, plural: str, namespace: str, name: str,
                           status: Mapping[str, Any]) -> None:
        """Merge `status` into a custom resource's status subresource at once (not at the end of
        the handler, as kopf's patch would)."""
        path = Kind(api_version, "", plural).path(namespace, name, "status")
        await self.request("PATCH", path, {"status": dict(status)}, content_type="application/merge-patch+json")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
