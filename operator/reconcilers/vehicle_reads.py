"""The reads of a vehicle pass: the pre-flight (`fleet_status`), the config reads of vehicles
syncing or applied (`get_config`), and the telemetry errors.

A mixin of `VehicleReconciler` (which owns the state named below and the pass's order):
each read turns an answer of the Fleet API into records through the policies of
`fleetwire.operator.policies.vehicles`, and schedules the next read of each vehicle.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fleetwire.operator.clients.fleetapi_errors import FleetApiError
from fleetwire.operator.environment import VehicleSettings
from fleetwire.operator.policies.vehicles import (
    APPLIED,
    FAILING,
    PUSHED,
    SKIPPED,
    VehicleRecord,
    cleared,
    current_error,
    error_time,
    observe,
    poll_delay,
    preflight,
    recheck_passed,
    refused,
    with_error,
    with_firmware,
)
from fleetwire.operator.reconcilers.vehicle_pass import Batch, CaJudge, Pacer, chain_ca_fingerprint

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["VehicleReads"]

log = logging.getLogger("fleetwire.operator.policies.vehicles")


class VehicleReads:
    """Pre-flight, config reads and telemetry errors, on the reconciler's state."""

    api: Any
    settings: VehicleSettings
    clock: Callable[[], float]
    name: str
    records: dict[str, VehicleRecord]
    bundles: dict[str, str]
    _rng: random.Random
    _pacer: Pacer
    _woken: int
    _pass_mark: int
    _problem: str | None
    _due: dict[str, float]
    _batch_of: dict[str, Batch]
    _unsynced_seen: dict[str, float]
    _recheck_at: dict[str, float]
    _errors_at: float
    _fields: frozenset[str] | None
    _firmware_asked: set[str]
    _firmware_at: dict[str, float]
    _judge: CaJudge | None

    def _fail(self, what: str, exc: FleetApiError) -> None:
        self._problem = f"{what}: {exc}"
        log.warning("%s: %s: %s", self.name or "vehicles", what, exc)

    def _set(self, record: VehicleRecord, changed: set[str]) -> None:
        if self.records.get(record.vin) != record:
            self.records[record.vin] = record
            changed.add(record.vin)

    def _spread(self, seconds: float) -> float:
        return seconds * (1.0 + self._rng.uniform(-self.settings.jitter, self.settings.jitter))

    # ---- pre-flight ---------------------------------------------------------------------

    def _follow_fields(self, fields: frozenset[str], changed: set[str]) -> None:
        """The desired fields changed: every record's fields-too-new is recomputed from the
        firmware it already knows (no call: the firmware did not change with the spec)."""
        if fields == self._fields:  # the first pass always recomputes: the spec may have changed meanwhile
            return
        self._fields = fields
        for record in list(self.records.values()):
            self._set(with_firmware(record, None, fields), changed)

    async def _preflight(self, wanted: Sequence[str], changed: set[str]) -> None:
        now = self.clock()
        todo = [vin for vin in wanted if vin not in self.records or (
            self.records[vin].state == SKIPPED and self.records[vin].skip != "max_configs"
            and self._recheck_at.get(vin, 0.0) <= now)]
        chosen = set(todo)
        # Only the firmware is asked for: records from before it was kept (once per run), and
        # vehicles whose firmware is too old for a configured field (once a day: updates are rare
        # and every call is billed). After a restart those are asked once, soon.
        firmware = [vin for vin in wanted if vin not in chosen and (record := self.records.get(vin)) is not None
                    and record.state != SKIPPED and (
                        (not record.firmware and vin not in self._firmware_asked)
                        or (record.too_new and self._firmware_at.setdefault(vin, now) <= now))]
        size = self.settings.status_batch
        batches = [(todo[i:i + size], False) for i in range(0, len(todo), size)]
        batches += [(firmware[i:i + size], True) for i in range(0, len(firmware), size)]
        if batches:
            await self._pacer.each(batches, lambda batch: self._status(batch[0], changed, firmware_only=batch[1]))

    async def _status(self, vins: Sequence[str], changed: set[str], *, firmware_only: bool = False) -> None:
        """fleet_status for `vins`; a VIN the API does not know fails the whole call, so a
        failing batch is halved until the unknown VINs stand alone. With `firmware_only`, the
        answer updates the vehicles' firmware and nothing else (they already took a config)."""
        self._firmware_asked.update(vins)
        try:
            status = await self._pacer.call(self.api.fleet_status(vins))
        except FleetApiError as exc:
            if exc.status == 404 and len(vins) > 1:
                half = len(vins) // 2
                await self._status(vins[:half], changed, firmware_only=firmware_only)
                await self._status(vins[half:], changed, firmware_only=firmware_only)
                return
            if firmware_only:
                if exc.status != 404:
                    self._fail("fleet_status", exc)
                for vin in vins:
                    self._firmware_at[vin] = self.clock() + self._spread(self.settings.firmware_every)
                return
            if exc.status == 404:
                self._set(refused(self.records.get(vins[0]), vins[0], "unknown_vehicle"), changed)
                self._recheck_at[vins[0]] = self.clock() + self._spread(self.settings.recheck_every)
                return
            self._fail("fleet_status", exc)
            for vin in vins:  # a vehicle never checked is pushed anyway: the push reports skips too
                if vin not in self.records:
                    self._set(VehicleRecord(vin), changed)
            return
        paired = set(status.key_paired_vins)
        now = self.clock()
        for vin in vins:
            info = status.vehicle_info.get(vin)
            firmware = info.firmware_version if info is not None else None
            if firmware_only:
                self._set(with_firmware(self.records[vin], firmware, self._fields or ()), changed)
                self._firmware_at[vin] = now + self._spread(self.settings.firmware_every)
                continue
            legacy_sx = info is not None and info.vehicle_command_protocol_required is False
            skip = preflight(vin, vin in paired, info, model_year_legacy_sx=legacy_sx)
            record = self.records.get(vin)
            if skip is not None:
                self._set(with_firmware(refused(record, vin, skip), firmware, self._fields or ()), changed)
                self._recheck_at[vin] = now + self._spread(self.settings.recheck_every)
                continue
            record = with_firmware(recheck_passed(record) if record is not None else VehicleRecord(vin), firmware,
                                   self._fields or ())
            self._set(record, changed)
            self._recheck_at.pop(vin, None)
            self._firmware_at[vin] = now + self._spread(self.settings.firmware_every)

    # ---- poll ---------------------------------------------------------------------------

    async def _poll(self, desired: Mapping[str, Any], changed: set[str]) -> None:
        """Read the config of every vehicle whose look is due; a probe that has synced makes
        the rest of its batch due at once (read in the same sweep)."""
        while self._woken == self._pass_mark:
            now = self.clock()
            due = sorted((at, vin) for vin, at in self._due.items() if at <= now)
            if not due:
                return
            await self._pacer.each([vin for _, vin in due], lambda vin: self._look(vin, desired, changed),
                                   stop=lambda: self._woken != self._pass_mark)

    async def _look(self, vin: str, desired: Mapping[str, Any], changed: set[str]) -> None:
        self._due.pop(vin, None)
        record = self.records.get(vin)
        if record is None:
            return
        try:
            held = await self._pacer.call(self.api.get_config(vin))
        except FleetApiError as exc:
            self._fail(f"reading the config of {vin}", exc)
            self._due[vin] = self.clock() + self.settings.retry_after_failure
            return
        now = self.clock()
        held_ca = str((held.config or {}).get("ca") or "")
        ca_ok = None
        if held_ca and self._judge is not None and self._judge.chains is not None:
            held_fp = chain_ca_fingerprint(held_ca)
            self.bundles.setdefault(held_fp, held_ca)
            ca_ok = self._judge(held_fp)
        new = observe(record, held, desired, now, ca_ok=ca_ok)
        self._set(new, changed)
        batch = self._batch_of.get(vin)
        if new.state == PUSHED:  # not synced yet
            self._unsynced_seen[vin] = now
            age = now - (new.pushed_at or now)
            self._due[vin] = now + poll_delay(age, self.settings.poll_first, self.settings.poll_most)
            return
        if batch is not None:
            batch.waiting.discard(vin)
            self._batch_of.pop(vin, None)
            if held.synced and not batch.synced:
                batch.synced = True
                for other in batch.waiting:  # the batch has synced: read the others now
                    self._due[other] = min(self._due.get(other, now), now)
        if new.state in (APPLIED, FAILING):
            self._due[vin] = now + self._spread(self.settings.drift_every)
        elif new.state == SKIPPED and new.skip == "max_configs":
            self._due[vin] = now + self._spread(self.settings.recheck_every)  # will a slot free up?
        else:
            self._due.pop(vin, None)

    # ---- telemetry errors -----------------------------------------------------------------

    async def _read_errors(self, changed: set[str]) -> None:
        try:
            errors = await self._pacer.call(self.api.telemetry_errors())
        except FleetApiError as exc:
            self._fail("telemetry errors", exc)
            self._errors_at = self.clock() + self.settings.retry_after_failure
            return
        now = self.clock()
        by_vin: dict[str, list[tuple[str, str, float]]] = {}
        for error in errors:
            if error.vin in self.records:
                created = error_time(error.created_at)
                by_vin.setdefault(error.vin, []).append((error.error_name, error.error, now if created is None
                                                         else created))
        for vin in set(by_vin) | {vin for vin, r in self.records.items() if r.last_error}:
            record = self.records[vin]
            since = max(record.pushed_at or 0.0, self._unsynced_seen.get(vin, 0.0))
            found = current_error(by_vin.get(vin, ()), since=since, now=now, quiet=self.settings.error_quiet,
                                  syncing=record.state == PUSHED)
            self._set(cleared(record) if found is None else with_error(record, *found), changed)
        busy = any(r.state in (PUSHED, FAILING) or r.last_error for r in self.records.values())
        self._errors_at = now + (self.settings.errors_fast if busy else self._spread(self.settings.errors_slow))
