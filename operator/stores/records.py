"""Where per-vehicle records live between passes and restarts: sharded maps of VIN → JSON.

The records never live in the resource itself (10,000 of them would not fit in one object):
`ShardedRecordStore` lays them out in shards of `SHARD_SIZE`, sorted by VIN so the layout is
stable while the fleet is unchanged, and writes only the changed keys of the shards that
changed. Subclasses give one shard's I/O: `MemoryRecordStore` (tests, the benchmark) here,
`ConfigMapRecordStore` (`fleetwire.operator.stores.configmap_records`) under kopf.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Protocol

from fleetwire.operator.policies.vehicles import FAILING, SKIPPED, VehicleRecord, explain

__all__ = [
    "BUNDLES",
    "SHARD_SIZE",
    "MemoryRecordStore",
    "RecordStore",
    "ShardedRecordStore",
    "decode_record",
    "encode_record",
    "shard_layout",
    "shard_name",
]

SHARD_SIZE = 500
"""Records per ConfigMap: at most about 350 KB with the longest errors and reasons, a third of
the 1 MiB object limit (20 ConfigMaps for 10,000 vehicles)."""


class RecordStore(Protocol):
    """Where per-vehicle records live between passes and restarts (never the resource itself:
    10,000 records would not fit in one object)."""

    async def load(self) -> dict[str, VehicleRecord]: ...

    async def save(self, records: Mapping[str, VehicleRecord], changed: Collection[str]) -> None:
        """Make `records` durable; `changed` names the VINs whose record differs from the last save."""
        ...

    async def load_bundles(self) -> dict[str, str]:
        """The `ca` bundles (fingerprint → PEM) the records name: a vehicle's `ca` is judged by
        what it accepts, so its certificates must survive a restart, once per distinct bundle."""
        ...

    async def save_bundles(self, bundles: Mapping[str, str]) -> None: ...

    @property
    def names(self) -> list[str]:
        """The objects holding the records now (for the status and `fleetwire vehicles`)."""
        ...


BUNDLES = -1
"""The shard index of the `ca` bundles the records name by fingerprint (`<resource>-vehicle-cas`)."""


def shard_name(resource: str, index: int) -> str:
    """The ConfigMap holding shard `index` of a resource's vehicle records (`BUNDLES`: the `ca`s)."""
    return f"{resource}-vehicle-cas" if index == BUNDLES else f"{resource}-vehicles-{index}"


def shard_layout(vins: Iterable[str], size: int = SHARD_SIZE) -> list[list[str]]:
    """VINs in sorted order, cut into shards of `size`: a stable layout while the fleet is
    unchanged, so a pass rewrites only the shards whose vehicles changed."""
    ordered = sorted(vins)
    return [ordered[i:i + size] for i in range(0, len(ordered), size)] or [[]]


def encode_record(record: VehicleRecord) -> str:
    """One record as compact JSON, without what can be derived: its VIN (the key it is stored
    under) and a reason that only repeats the skip's meaning or the error."""
    data = record.as_dict()
    data.pop("vin", None)
    if record.reason == _derived_reason(record):
        data.pop("reason", None)
    for key in ("pushed_at", "applied_at"):
        if key in data:
            data[key] = round(data[key], 3)
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def decode_record(vin: str, text: str) -> VehicleRecord | None:
    """A stored record; None when it cannot be read (it is then rebuilt from the Fleet API)."""
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            return None
        record = VehicleRecord.from_dict({**data, "vin": vin})
    except (ValueError, TypeError):
        return None
    derived = _derived_reason(record)
    return replace(record, reason=derived) if "reason" not in data and derived else record


def _derived_reason(record: VehicleRecord) -> str | None:
    if record.state == SKIPPED and record.skip:
        return explain(record.skip)
    if record.state == FAILING and record.last_error:
        return record.last_error
    return None


class ShardedRecordStore(ABC):
    """Records as `<resource>-vehicles-<n>` maps of VIN → JSON, at most `shard_size` each.

    Subclasses provide the I/O of one shard: read it, merge-patch it (a key set to None is
    removed), create it, delete it. Only shards holding changed records are written, and
    only their changed keys, so a pass that touched 50 vehicles of 10,000 sends 50 records.
    """

    def __init__(self, resource: str, shard_size: int = SHARD_SIZE) -> None:
        self.resource = resource
        self.shard_size = shard_size
        self._layout: list[list[str]] = [[]]
        self._shard_of: dict[str, int] = {}
        self._created: set[int] = set()

    @property
    def names(self) -> list[str]:
        return [shard_name(self.resource, i) for i in range(len(self._layout))]

    @abstractmethod
    async def _read(self, index: int) -> dict[str, str] | None:
        """One shard's I/O: see the class docstring."""

    @abstractmethod
    async def _patch(self, index: int, data: Mapping[str, str | None]) -> bool:
        """Merge `data` into shard `index`; False when the shard does not exist."""

    @abstractmethod
    async def _create(self, index: int, data: Mapping[str, str]) -> None:
        """One shard's I/O: see the class docstring."""

    @abstractmethod
    async def _delete(self, index: int) -> None:
        """One shard's I/O: see the class docstring."""

    async def load(self) -> dict[str, VehicleRecord]:
        records: dict[str, VehicleRecord] = {}
        layout: list[list[str]] = []
        while (data := await self._read(len(layout))) is not None:
            layout.append(sorted(data))
            for vin, text in data.items():
                record = decode_record(vin, text)
                if record is not None:
                    records[vin] = record
        self._created = set(range(len(layout)))
        self._layout = layout or [[]]
        self._shard_of = {vin: i for i, vins in enumerate(self._layout) for vin in vins}
        return records

    async def load_bundles(self) -> dict[str, str]:
        found = await self._read(BUNDLES)
        self._bundles = dict(found or {})
        return dict(self._bundles)

    async def save_bundles(self, bundles: Mapping[str, str]) -> None:
        """Write the bundles when they changed (a few per rotation)."""
        current = getattr(self, "_bundles", None)
        if current == dict(bundles):
            return
        patch: dict[str, str | None] = {**{fp: None for fp in current or {} if fp not in bundles}, **bundles}
        if current is None or not await self._patch(BUNDLES, patch):
            await self._create(BUNDLES, dict(bundles))
        self._bundles = dict(bundles)

    async def save(self, records: Mapping[str, VehicleRecord], changed: Collection[str]) -> None:
        if set(records) != set(self._shard_of):
            await self._relayout(records)
            return
        by_shard: dict[int, dict[str, str | None]] = {}
        for vin in changed:
            if vin in records:
                by_shard.setdefault(self._shard_of[vin], {})[vin] = encode_record(records[vin])
        for index, patch in sorted(by_shard.items()):
            await self._write(index, patch, records)

    async def _relayout(self, records: Mapping[str, VehicleRecord]) -> None:
        """The fleet changed: lay the shards out again and write each one whole."""
        old = self._layout
        new = shard_layout(records, self.shard_size)
        for index, vins in enumerate(new):
            data: dict[str, str | None] = {vin: encode_record(records[vin]) for vin in vins}
            if index < len(old):
                data.update({vin: None for vin in old[index] if vin not in records or vin not in set(vins)})
            await self._write(index, data, records, vins)
        for index in range(len(new), len(old)):
            if index in self._created:
                await self._delete(index)
                self._created.discard(index)
        self._layout = new
        self._shard_of = {vin: i for i, vins in enumerate(new) for vin in vins}

    async def _write(self, index: int, data: Mapping[str, str | None], records: Mapping[str, VehicleRecord],
                     vins: Sequence[str] | None = None) -> None:
        if index in self._created and await self._patch(index, data):
            return
        members = vins if vins is not None else self._layout[index]
        await self._create(index, {vin: encode_record(records[vin]) for vin in members if vin in records})
        self._created.add(index)


class MemoryRecordStore(ShardedRecordStore):
    """Shards in a dict: for tests and the benchmark (same layout as the ConfigMaps)."""

    def __init__(self, resource: str = "fleet", shard_size: int = SHARD_SIZE) -> None:
        super().__init__(resource, shard_size)
        self.objects: dict[str, dict[str, str]] = {}
        self.writes = 0

    async def _read(self, index: int) -> dict[str, str] | None:
        found = self.objects.get(shard_name(self.resource, index))
        return dict(found) if found is not None else None

    async def _patch(self, index: int, data: Mapping[str, str | None]) -> bool:
        target = self.objects.get(shard_name(self.resource, index))
        if target is None:
            return False
        for key, value in data.items():
            if value is None:
                target.pop(key, None)
            else:
                target[key] = value
        self.writes += 1
        return True

    async def _create(self, index: int, data: Mapping[str, str]) -> None:
        self.objects[shard_name(self.resource, index)] = dict(data)
        self.writes += 1

    async def _delete(self, index: int) -> None:
        self.objects.pop(shard_name(self.resource, index), None)
        self.writes += 1
