"""The field catalog: every streamable `Field` with its category, minimum firmware and flags.

Built from the generated `Field` enum so it can never disagree with the wire schema; the
facts the enum cannot carry (plan category, firmware floor, Semi-only, provisional) are
kept here as number ranges. The operator uses it to reject a misspelt or unsupported field before a
configuration reaches a vehicle, which would otherwise silently stream nothing for it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from fleetwire.proto import vehicle_data_pb2

Version = tuple[int, ...]
Category = Literal["Driving", "Charging", "Default"]

__all__ = [
    "BY_NAME",
    "BY_NUMBER",
    "FIELDS",
    "MINIMUM_DELTA_FLOORS",
    "PROVISIONAL_NUMBERS",
    "Category",
    "FieldInfo",
    "UnknownFieldError",
    "Version",
    "field_by_name",
    "field_by_number",
    "firmware_at_least",
    "parse_firmware",
    "validate_field_name",
]

DRIVING_FIELDS = frozenset({
    "VehicleSpeed", "Odometer", "Location", "GpsState", "GpsHeading", "PedalPosition",
    "BrakePedal", "BrakePedalPos", "Gear", "LateralAcceleration", "LongitudinalAcceleration",
})
CHARGING_FIELDS = frozenset({
    "TimeToFullCharge", "ChargeAmps", "ChargerPhases", "ChargeState", "BmsFullchargecomplete",
    "DCChargingEnergyIn", "ACChargingEnergyIn", "DCChargingPower", "ACChargingPower",
})
SEMI_ONLY_NUMBERS = frozenset({*range(73, 81), 97, *range(103, 106)})
_MIN_FIRMWARE_BY_NUMBERS: tuple[tuple[Iterable[int], str], ...] = (
    ((*range(107, 113), 163), "2024.26"),
    ((179,), "2024.38"),
    ((*range(180, 184), *range(185, 229)), "2024.44.25"),
    ((184, *range(229, 239)), "2024.44.32"),
    (range(239, 258), "2025.2.6"),
    (range(258, 260), "2025.44.25.5"),
    (range(260, 270), "2026.32"),
)
PROVISIONAL_NUMBERS = frozenset(range(270, 278))
"""Fields whose numbers are not settled upstream (forks number 272 and above differently):
configurable, but a vehicle may stream them under another number, or not at all."""
MINIMUM_DELTA_FLOORS: Mapping[str, float] = MappingProxyType({"SelfDrivingMilesSinceReset": 1})
"""Fields whose configuration must carry a `minimum_delta` of at least this much: the
vehicles refuse a config without it."""

_LEADING_VERSION = re.compile(r"\s*v?(\d+(?:\.\d+)*)")


def _normalise(parts: Iterable[int]) -> Version:
    """Drop trailing zeros so that 2024.26 and 2024.26.0 compare equal."""
    version = tuple(parts)
    while len(version) > 1 and version[-1] == 0:
        version = version[:-1]
    return version


def parse_firmware(text: str) -> Version:
    """Parse a firmware string by its leading dotted numbers ("2024.44.25 a1b2c3" → (2024, 44, 25)).

    Vehicles report builds with a trailing hash or label, so anything after the numbers is ignored.
    """
    match = _LEADING_VERSION.match(text)
    if match is None:
        raise ValueError(f"not a firmware version: {text!r} (expected a form like 2024.44.25.5)")
    return _normalise(int(part) for part in match.group(1).split("."))


def firmware_at_least(version: str, required: Version | str | None) -> bool:
    """Whether firmware `version` is `required` or newer.

    No requirement is always met; a version string that cannot be parsed never meets one,
    because a field enabled for firmware that lacks it streams nothing.
    """
    if required is None:
        return True
    floor = parse_firmware(required) if isinstance(required, str) else _normalise(required)
    try:
        return parse_firmware(version) >= floor
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class FieldInfo:
    """One `Field` enum value and the facts needed to decide whether a vehicle can stream it."""

    name: str
    number: int
    category: Category
    min_firmware: Version | None
    semi_only: bool
    provisional: bool = False
    min_delta: float | None = None  # a required minimum_delta floor (MINIMUM_DELTA_FLOORS)

    def available_on(self, firmware: str) -> bool:
        """Whether a vehicle on `firmware` streams this field."""
        return firmware_at_least(firmware, self.min_firmware)


class UnknownFieldError(ValueError):
    """A field name or number that the schema does not define, with the closest known name."""

    def __init__(self, field: str | int, suggestion: str | None = None) -> None:
        self.field = field
        self.suggestion = suggestion
        if isinstance(field, int):
            message = f"unknown field number {field}: Field numbers run from 1 to {max(BY_NUMBER)}"
        elif field == _ZERO_NAME:
            message = f"{field!r} is the enum's zero value (unset), not a streamable field"
        else:
            message = f"unknown field {field!r}"
            if suggestion is not None:
                message += f": did you mean {suggestion!r}?"
        super().__init__(message)


def _category(name: str) -> Category:
    if name in DRIVING_FIELDS:
        return "Driving"
    if name in CHARGING_FIELDS:
        return "Charging"
    return "Default"


def _build() -> tuple[FieldInfo, ...]:
    floors: dict[int, Version] = {}
    for numbers, version in _MIN_FIRMWARE_BY_NUMBERS:
        for number in numbers:
            floors[number] = parse_firmware(version)
    return tuple(
        FieldInfo(
            name=value.name,
            number=value.number,
            category=_category(value.name),
            min_firmware=floors.get(value.number),
            semi_only=value.number in SEMI_ONLY_NUMBERS,
            provisional=value.number in PROVISIONAL_NUMBERS,
            min_delta=MINIMUM_DELTA_FLOORS.get(value.name),
        )
        for value in sorted(vehicle_data_pb2.Field.DESCRIPTOR.values, key=lambda v: v.number)
    )


FIELDS: tuple[FieldInfo, ...] = _build()
BY_NAME: Mapping[str, FieldInfo] = MappingProxyType({info.name: info for info in FIELDS})
BY_NUMBER: Mapping[int, FieldInfo] = MappingProxyType({info.number: info for info in FIELDS})
_ZERO_NAME = BY_NUMBER[0].name
_BY_FOLDED_NAME: Mapping[str, str] = MappingProxyType({name.casefold(): name for name in BY_NAME})


def _suggest(name: str) -> str | None:
    exact_but_case = _BY_FOLDED_NAME.get(name.casefold())
    if exact_but_case is not None:
        return exact_but_case
    matches = difflib.get_close_matches(name, BY_NAME.keys(), n=1, cutoff=0.6)
    if matches:
        return matches[0]
    folded = difflib.get_close_matches(name.casefold(), _BY_FOLDED_NAME.keys(), n=1, cutoff=0.6)
    return _BY_FOLDED_NAME[folded[0]] if folded else None


def field_by_name(name: str) -> FieldInfo:
    """Look a field up by its exact enum name (including `Unknown`, the zero value)."""
    info = BY_NAME.get(name)
    if info is None:
        raise UnknownFieldError(name, _suggest(name))
    return info


def field_by_number(number: int) -> FieldInfo:
    """Look a field up by its wire number, as a decoded `Datum.key` carries it."""
    info = BY_NUMBER.get(number)
    if info is None:
        raise UnknownFieldError(number)
    return info


def validate_field_name(name: str) -> FieldInfo:
    """Resolve a field name from a user's configuration, refusing the zero value `Unknown`."""
    info = field_by_name(name)
    if info.number == 0:
        raise UnknownFieldError(name)
    return info
