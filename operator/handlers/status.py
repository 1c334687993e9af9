"""Writing a FleetTelemetryConfig's status: each writer merges only the condition types it owns.

`status.conditions` is a list, which a merge patch replaces whole; so a writer reads the
resource, sets its own types in the list as it is (`conditions.patch_for`), and writes it
guarded by resourceVersion, reading again on a conflict. The resource handlers and the
vehicles' daemon thus never revert each other's conditions (the owners:
`fleetwire.operator.policies.conditions`), and nobody has to repair anybody's write.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from fleetwire.operator.clients.kube import KubeError, KubernetesApi
from fleetwire.operator.policies.conditions import Condition, patch_for
from fleetwire.operator.resource import crd
from fleetwire.operator.resource.builders import Owner

__all__ = ["resource_path", "write_status"]

ATTEMPTS = 4


def resource_path(owner: Owner) -> str:
    """The API path of the FleetTelemetryConfig."""
    return f"/apis/{crd.GROUP}/{crd.VERSION}/namespaces/{owner.namespace}/{crd.PLURAL}/{owner.name}"


Extra = Mapping[str, Any] | Callable[[Mapping[str, Any]], Mapping[str, Any]]


async def write_status(api: KubernetesApi, owner: Owner, owned: Collection[str], conditions: Sequence[Condition],
                       extra: Extra | None = None, *, body: Mapping[str, Any] | None = None) -> None:
    """Set `conditions` (of the `owned` types) and the status keys `extra` (merge-patch values:
    None deletes; or a function of the current status giving them) on the resource, starting
    from `body` (else read); a conflict reads it again."""
    path = resource_path(owner)
    current = body if body is not None else await api.request("GET", path)
    for attempt in range(ATTEMPTS):
        status = (current or {}).get("status") or {}
        keys = extra(status) if callable(extra) else extra
        patch: dict[str, Any] = {"status": {**(keys or {})}}
        if conditions:
            patch["status"]["conditions"] = patch_for(owned, status.get("conditions"), conditions,
                                                      dt.datetime.now(dt.UTC))
        version = ((current or {}).get("metadata") or {}).get("resourceVersion")
        if version is not None:
            patch["metadata"] = {"resourceVersion": version}
        try:
            await api.request("PATCH", path + "/status", patch, content_type="application/merge-patch+json")
            return
        except KubeError as exc:
            if exc.status != 409 or attempt == ATTEMPTS - 1:
                raise
        current = await api.request("GET", path)
