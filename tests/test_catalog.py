"""The field catalog agrees with the schema and carries the documented firmware and plan facts."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetwire.proto import vehicle_data_pb2
from fleetwire.proto.catalog import (
    BY_NAME,
    BY_NUMBER,
    FIELDS,
    FieldInfo,
    UnknownFieldError,
    field_by_name,
    field_by_number,
    firmware_at_least,
    parse_firmware,
    validate_field_name,
)


def test_catalog_covers_the_field_enum() -> None:
    assert len(FIELDS) == len(BY_NAME) == len(BY_NUMBER) == 278
    for info in FIELDS:
        assert vehicle_data_pb2.Field.Value(info.name) == info.number
    assert [info.number for info in FIELDS] == sorted(BY_NUMBER)


def test_lookups_return_the_same_record() -> None:
    speed = field_by_name("VehicleSpeed")
    assert speed is field_by_number(4) is BY_NAME["VehicleSpeed"]
    assert speed == FieldInfo("VehicleSpeed", 4, "Driving", None, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        speed.name = "x"  # type: ignore[misc]


def test_categories() -> None:
    driving = {i.name for i in FIELDS if i.category == "Driving"}
    charging = {i.name for i in FIELDS if i.category == "Charging"}
    assert driving == {
        "VehicleSpeed", "Odometer", "Location", "GpsState", "GpsHeading", "PedalPosition",
        "BrakePedal", "BrakePedalPos", "Gear", "LateralAcceleration", "LongitudinalAcceleration",
    }
    assert charging == {
        "TimeToFullCharge", "ChargeAmps", "ChargerPhases", "ChargeState", "BmsFullchargecomplete",
        "DCChargingEnergyIn", "ACChargingEnergyIn", "DCChargingPower", "ACChargingPower",
    }
    assert field_by_name("Soc").category == "Default"
    assert sum(i.category == "Default" for i in FIELDS) == 278 - 11 - 9
    assert {i.category for i in FIELDS if i.number >= 260} == {"Default"}


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        (106, None),
        (107, (2024, 26)),
        (112, (2024, 26)),
        (113, None),
        (163, (2024, 26)),
        (178, None),
        (179, (2024, 38)),
        (180, (2024, 44, 25)),
        (183, (2024, 44, 25)),
        (184, (2024, 44, 32)),
        (185, (2024, 44, 25)),
        (228, (2024, 44, 25)),
        (229, (2024, 44, 32)),
        (238, (2024, 44, 32)),
        (239, (2025, 2, 6)),
        (257, (2025, 2, 6)),
        (258, (2025, 44, 25, 5)),
        (259, (2025, 44, 25, 5)),
        (260, (2026, 32)),
        (269, (2026, 32)),
        (270, None),
        (277, None),
    ],
)
def test_min_firmware(number: int, expected: tuple[int, ...] | None) -> None:
    assert field_by_number(number).min_firmware == expected


def test_min_firmware_counts() -> None:
    assert sum(i.min_firmware is not None for i in FIELDS) == 7 + 1 + 48 + 11 + 19 + 2 + 10


def test_provisional_fields() -> None:
    provisional = [i.name for i in FIELDS if i.provisional]
    assert provisional == [
        "Cabin12vPortKeepOn", "Cabin48vPortKeepOn", "AccessoryRail", "PowerTransferStatus",
        "AutomaticEmergencyBrakingState", "RollingResistanceCoefficient", "LifetimeDcChargeEnergyKwh",
        "SemiVehicleMassKg",
    ]
    assert [field_by_name(n).number for n in provisional] == list(range(270, 278))
    assert not field_by_name("SemiCruiseSpeedLimitMph").provisional
    assert validate_field_name("AccessoryRail").provisional  # configurable, with a warning upstream


def test_minimum_delta_floor() -> None:
    assert {i.name: i.min_delta for i in FIELDS if i.min_delta is not None} == {"SelfDrivingMilesSinceReset": 1}


def test_fields_of_firmware_2026_32() -> None:
    gps = field_by_name("GpsAccuracyMeters")
    assert (gps.number, gps.min_firmware) == (260, (2026, 32))
    assert gps.available_on("2026.32.1 abc") and not gps.available_on("2026.20.5")
    assert field_by_name("SemiCruiseSpeedLimitMph").available_on("2026.32")


def test_semi_only() -> None:
    semi = {i.number for i in FIELDS if i.semi_only}
    assert semi == {73, 74, 75, 76, 77, 78, 79, 80, 97, 103, 104, 105}
    assert field_by_name("SemitruckTpmsPressureRe1L0").semi_only


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024.44.25.5", (2024, 44, 25, 5)),
        ("2024.44.25 a1b2c3", (2024, 44, 25)),
        ("2024.44.25.5 7ba94a5e0c", (2024, 44, 25, 5)),
        ("  v2025.2.6-beta", (2025, 2, 6)),
        ("2024.26.0", (2024, 26)),
        ("2024", (2024,)),
    ],
)
def test_parse_firmware(text: str, expected: tuple[int, ...]) -> None:
    assert parse_firmware(text) == expected


@pytest.mark.parametrize("text", ["", "develop", "a1.2.3", "."])
def test_parse_firmware_rejects_non_versions(text: str) -> None:
    with pytest.raises(ValueError, match="not a firmware version"):
        parse_firmware(text)


@pytest.mark.parametrize(
    ("version", "required", "expected"),
    [
        ("2024.44.25.5", (2024, 44, 25), True),
        ("2024.44.25", (2024, 44, 25, 5), False),
        ("2024.44.25 a1b2c3", (2024, 44, 25), True),
        ("2024.44.3", (2024, 44, 25), False),
        ("2024.100.1", (2024, 44, 25), True),
        ("2025.2.6", "2025.2.6", True),
        ("2024.26", (2024, 26, 0), True),
        ("2023.52.9", (2024, 26), False),
        ("anything", None, True),
        ("garbage", (2024, 26), False),
    ],
)
def test_firmware_at_least(version: str, required: tuple[int, ...] | str | None, expected: bool) -> None:
    assert firmware_at_least(version, required) is expected


def test_available_on() -> None:
    hazards = field_by_name("LightsHazardsActive")
    assert hazards.available_on("2025.2.6.1 abc")
    assert not hazards.available_on("2024.44.32")
    assert field_by_name("Soc").available_on("2019.1")


@given(st.lists(st.integers(0, 9999), min_size=1, max_size=5), st.lists(st.integers(0, 9999), min_size=1, max_size=5))
def test_firmware_order_is_numeric(a: list[int], b: list[int]) -> None:
    text_a = ".".join(map(str, a))
    assert firmware_at_least(text_a, tuple(b)) == (parse_firmware(text_a) >= parse_firmware(".".join(map(str, b))))
    assert firmware_at_least(text_a, tuple(a))


def test_validate_field_name_accepts_known_names() -> None:
    assert validate_field_name("Location").number == 21


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("VehicleSped", "VehicleSpeed"),
        ("vehiclespeed", "VehicleSpeed"),
        ("BatteryLvl", "BatteryLevel"),
        ("Odometr", "Odometer"),
    ],
)
def test_validate_field_name_suggests(name: str, suggestion: str) -> None:
    with pytest.raises(UnknownFieldError) as caught:
        validate_field_name(name)
    assert caught.value.suggestion == suggestion
    assert caught.value.field == name
    assert str(caught.value) == f"unknown field {name!r}: did you mean {suggestion!r}?"


def test_validate_field_name_without_close_match() -> None:
    with pytest.raises(UnknownFieldError) as caught:
        validate_field_name("Xyzzy")
    assert caught.value.suggestion is None
    assert str(caught.value) == "unknown field 'Xyzzy'"
    assert isinstance(caught.value, ValueError)


def test_validate_field_name_refuses_zero_value() -> None:
    assert field_by_name("Unknown").number == 0
    with pytest.raises(UnknownFieldError, match="zero value"):
        validate_field_name("Unknown")


def test_unknown_number() -> None:
    with pytest.raises(UnknownFieldError, match="unknown field number 999"):
        field_by_number(999)
