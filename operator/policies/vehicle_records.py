"""What the operator remembers about one vehicle, and the facts it reads from `fleet_status`.

`VehicleRecord` is the per-vehicle row (`fleetwire vehicles` shows it, the record stores keep
it); its state is one of `STATES`; a pending record carries the code of its reason beside the
message (`code`), so the push chain never compares messages. The pre-flight (`preflight`) and
the firmware's field gap (`fields_too_new`) are judged from `fleet_status` here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from fleetwire.operator.clients.fleetapi_types import VehicleInfo
from fleetwire.proto.catalog import BY_NAME, BY_NUMBER, firmware_at_least, parse_firmware

MIN_FIRMWARE = "2024.26"
# Pre-2021 Model S/X need this firmware to stream at all, and then the owner's opt-in.
LEGACY_SX_FIRMWARE = "2025.20"

# The states a vehicle can be in, in the order a user reads them.
PENDING = "pending"  # known, nothing pushed yet (or a push is due)
PUSHED = "pushed"  # the API accepted the config; the vehicle has not synced it yet
APPLIED = "applied"  # synced, equal to the desired config, paired, under the limit
SKIPPED = "skipped"  # the API or the pre-flight refused it: see the reason
FAILING = "failing"  # applied, but the vehicle reports errors (TLS, signature)

ERROR_TEXT_LIMIT = 300

STATES = (PENDING, PUSHED, APPLIED, SKIPPED, FAILING)
NEW_MESSAGE = "new vehicle"
APPLIED_REASON = "streaming config applied"
SLOT_FREED = "a config slot freed up: a refused config is not applied by itself, so it is sent again"

SKIP_MEANINGS: dict[str, str] = {
    "missing_key": "the app's key is not paired with this vehicle: the owner must open "
    "https://tesla.com/_ak/<your domain> in the Tesla app",
    "unsupported_firmware": f"firmware older than {MIN_FIRMWARE} cannot take a self-service "
    "config: it will be pushed again once the vehicle updates",
    "unsupported_hardware": "this vehicle's hardware cannot stream telemetry",
    "max_configs": "the vehicle already holds configs of as many apps as it can: the owner must "
    "remove another app's config; fleetwire pushes again when a slot frees up",
    "streaming_toggle_off": "pre-2021 Model S/X: the owner must enable 'Allow Third-Party App "
    "Data Streaming' in the vehicle's Safety screen",
    "unknown_vehicle": "the Fleet API does not know this VIN for the authorized account: check the VIN, and "
    "that the vehicle's owner authorized the app",
}


def explain(reason: str) -> str:
    """The user-facing meaning of a skip reason (unknown reasons are shown as they are)."""
    return SKIP_MEANINGS.get(reason, reason)



@dataclass(frozen=True)
class VehicleRecord:
    """What the operator remembers about one vehicle between reconciliations."""

    vin: str
    state: str = PENDING
    reason: str = NEW_MESSAGE
    config_fp: str = ""  # fingerprint of the config last pushed
    ca_fp: str = ""  # fingerprint of the `ca` last pushed
    held_ca_fp: str = ""  # fingerprint of the `ca` the vehicle was last seen to hold (applied)
    exp: int | None = None  # `exp` of the config last pushed
    pushed_at: float | None = None
    applied_at: float | None = None
    skip: str | None = None  # the last skip reason, if the vehicle is skipped
    last_error: str = ""
    firmware: str = ""  # as `fleet_status` last reported it
    too_new: tuple[int, ...] = ()  # configured fields (numbers) that firmware is too old to send
    code: str = ""  # the code of a pending record's `reason` ("": new, nothing has happened to it yet)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready; `too_new` as number ranges ("239,260-269"): fields come in firmware
        generations, so a vehicle missing ninety of them still costs a few bytes per record."""
        out = {k: v for k, v in self.__dict__.items() if v not in (None, "", ())}
        if self.too_new:
            out["too_new"] = _ranges(self.too_new)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VehicleRecord:
        known = cls.__dataclass_fields__
        values = {k: v for k, v in data.items() if k in known}
        if "too_new" in values:
            values["too_new"] = _parse_ranges(values["too_new"])
        if "code" not in values and values.get("state", PENDING) == PENDING and values.get("reason", NEW_MESSAGE) \
                != NEW_MESSAGE:
            values["code"] = STILL_PENDING  # a record stored before codes were: its reason was all it had
        return cls(**values)


def _ranges(numbers: Iterable[int]) -> str:
    runs: list[list[int]] = []
    for n in sorted(set(numbers)):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _parse_ranges(text: Any) -> tuple[int, ...]:
    if not isinstance(text, str):  # a list of numbers reads as well
        return tuple(int(n) for n in text)
    numbers: list[int] = []
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        numbers.extend(range(int(first), int(last or first) + 1))
    return tuple(numbers)


def preflight(vin: str, paired: bool, info: VehicleInfo | None, model_year_legacy_sx: bool = False) -> str | None:
    """Why a vehicle cannot take a config right now, from `fleet_status`; None if it can."""
    if not paired:
        return "missing_key"
    firmware = info.firmware_version if info else None
    if firmware and not firmware_at_least(firmware, MIN_FIRMWARE):
        return "unsupported_firmware"
    if info is not None and info.safety_screen_streaming_toggle_enabled is False:
        return "streaming_toggle_off"
    if model_year_legacy_sx and firmware and not firmware_at_least(firmware, LEGACY_SX_FIRMWARE):
        return "unsupported_firmware"
    return None


# -- configured fields the firmware is too old to send ---------------------------------------

FIELDS_TOO_NEW = "fields_too_new"
"""Code of the flag: the vehicle takes the config, but some of its fields never arrive."""


@dataclass(frozen=True, slots=True)
class FieldsTooNew:
    """Configured fields a vehicle's firmware is too old to send, by Field number."""

    firmware: str
    numbers: tuple[int, ...]
    code: str = FIELDS_TOO_NEW

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(BY_NUMBER[n].name for n in self.numbers)

    @property
    def message(self) -> str:
        """E.g. "firmware 2025.20.1 never sends GpsAccuracyMeters (needs 2026.32)"."""
        by_floor: dict[tuple[int, ...], list[str]] = {}
        for number in self.numbers:
            info = BY_NUMBER[number]
            by_floor.setdefault(info.min_firmware or (), []).append(info.name)
        needs = "; ".join(f"{', '.join(names)} (needs {'.'.join(map(str, floor))})"
                          for floor, names in sorted(by_floor.items()))
        return f"firmware {self.firmware} never sends {needs}"


def fields_too_new(firmware: str | None, fields: Iterable[str]) -> FieldsTooNew | None:
    """Which of `fields` a vehicle on `firmware` never sends (the catalog's minimum firmware),
    or None. An absent or unreadable firmware claims nothing: a flag must not be a guess."""
    if not firmware:
        return None
    return _fields_too_new(firmware, fields if isinstance(fields, frozenset) else frozenset(fields))


@lru_cache(maxsize=4096)  # a fleet runs a handful of versions: a pass over 10,000 vehicles asks a few times
def _fields_too_new(firmware: str, fields: frozenset[str]) -> FieldsTooNew | None:
    try:
        version = ".".join(map(str, parse_firmware(firmware)))
    except ValueError:
        return None
    numbers = tuple(sorted(info.number for name in fields if (info := BY_NAME.get(name)) is not None
                           and not info.available_on(firmware)))
    return FieldsTooNew(version, numbers) if numbers else None


def with_firmware(record: VehicleRecord, firmware: str | None, fields: Iterable[str]) -> VehicleRecord:
    """The record with the firmware `fleet_status` reported (None: keep the one known) and the
    configured fields it is too old to send, for the desired `fields`."""
    firmware = firmware or record.firmware
    gap = fields_too_new(firmware, fields)
    too_new = gap.numbers if gap is not None else ()
    if (firmware, too_new) == (record.firmware, record.too_new):
        return record
    return replace(record, firmware=firmware, too_new=too_new)


def too_new_names(record: VehicleRecord) -> tuple[str, ...]:
    """The names of the fields a record's vehicle never sends (numbers a newer catalog lacks are
    shown as numbers)."""
    return tuple(BY_NUMBER[n].name if n in BY_NUMBER else str(n) for n in record.too_new)


def count_too_new(records: Iterable[VehicleRecord]) -> int:
    """Vehicles that take the config but never send some of its fields (`status.vehicles.fieldsTooNew`);
    a skipped vehicle receives no config, and its skip reason already says why."""
    return sum(1 for r in records if r.too_new and r.state != SKIPPED)


# Codes of a pending record's reason (`VehicleRecord.code`), as the push chain reports them.
STILL_PENDING = "pending"
RECHECK_PASSED = "recheck_passed"
PUSH_FAILED = "push_failed"
SLOT_FREED_CODE = "slot_freed"
NO_CONFIG_HELD = "no_config_held"
DRIFT = "drift"


def counts(records: Iterable[VehicleRecord]) -> dict[str, int]:
    """Vehicles per state, for `status.vehicles` (every state present, zeros included)."""
    tally = Counter(r.state for r in records)
    return {state: tally.get(state, 0) for state in STATES}

