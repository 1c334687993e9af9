"""Vehicle records in ConfigMaps `<name>-vehicles-<n>` (and `<name>-vehicle-cas`), owned by the
resource so they go with it: the Kubernetes shard I/O of `ShardedRecordStore`."""

from __future__ import annotations

from collections.abc import Mapping

from fleetwire.operator.clients.kube import KINDS, KubeError, KubernetesApi
from fleetwire.operator.resource import builders
from fleetwire.operator.resource.builders import Owner
from fleetwire.operator.stores.records import ShardedRecordStore, shard_name

__all__ = ["ConfigMapRecordStore"]


class ConfigMapRecordStore(ShardedRecordStore):
    """Vehicle records in ConfigMaps `<name>-vehicles-<n>`, owned by the resource.

    Changed records are merge-patched key by key (a removed VIN is a null), so a pass
    that changed 50 vehicles sends 50 records, whatever the fleet's size.
    """

    def __init__(self, api: KubernetesApi, owner: Owner, shard_size: int | None = None) -> None:
        super().__init__(owner.name, **({"shard_size": shard_size} if shard_size else {}))
        self.api, self.owner = api, owner

    def _path(self, index: int) -> str:
        return KINDS["ConfigMap"].path(self.owner.namespace, shard_name(self.owner.name, index))

    async def _read(self, index: int) -> dict[str, str] | None:
        found = await self.api.get("ConfigMap", self.owner.namespace, shard_name(self.owner.name, index))
        return None if found is None else dict(found.get("data") or {})

    async def _patch(self, index: int, data: Mapping[str, str | None]) -> bool:
        try:
            await self.api.request("PATCH", self._path(index), {"data": dict(data)},
                                   content_type="application/merge-patch+json")
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def _create(self, index: int, data: Mapping[str, str]) -> None:
        body = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": shard_name(self.owner.name, index), "namespace": self.owner.namespace,
                             "labels": builders.labels(self.owner, "vehicles"),
                             "ownerReferences": [builders.owner_reference(self.owner)]},
                "data": dict(data)}
        try:
            await self.api.request("POST", KINDS["ConfigMap"].path(self.owner.namespace), body)
        except KubeError as exc:
            if exc.status != 409:
                raise
            await self.api.request("PATCH", self._path(index), {"data": dict(data)},
                                   content_type="application/merge-patch+json")

    async def _delete(self, index: int) -> None:
        await self.api.delete("ConfigMap", self.owner.namespace, shard_name(self.owner.name, index))
