"""The checked-in generated modules match the schemas, and the schemas have the known shape."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor, FileDescriptor

from fleetwire.proto import (
    vehicle_alert_pb2,
    vehicle_connectivity_pb2,
    vehicle_data_pb2,
    vehicle_error_pb2,
    vehicle_metric_pb2,
)

ROOT = Path(__file__).resolve().parent.parent
GENERATE = ROOT / "scripts" / "generate.py"
REFERENCE = Path(os.environ.get("FLEETWIRE_SCHEMA_REFERENCE") or ROOT.parent / "shared" / "reference")
"""Where the published field, variant and enum tables live (tab-separated: name, number[, type])."""
_SCALARS = {
    FieldDescriptor.TYPE_STRING: "string", FieldDescriptor.TYPE_INT32: "int32", FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_FLOAT: "float", FieldDescriptor.TYPE_DOUBLE: "double", FieldDescriptor.TYPE_BOOL: "bool",
}
ALL_FILES: list[FileDescriptor] = [
    m.DESCRIPTOR
    for m in (vehicle_data_pb2, vehicle_alert_pb2, vehicle_error_pb2, vehicle_connectivity_pb2, vehicle_metric_pb2)
]


@pytest.fixture(scope="module")
def generate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fleetwire_generate", GENERATE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rendered(generate: ModuleType) -> dict[str, bytes]:
    assert shutil.which("flatc"), "flatc missing: `make system-deps` installs flatbuffers-compiler"
    return generate.render()


def test_checked_in_modules_are_current(generate: ModuleType, rendered: dict[str, bytes]) -> None:
    assert generate.stale(rendered) == [], f"run `make generate` ({generate.tool_versions()})"


def test_check_cli_passes() -> None:
    result = subprocess.run([sys.executable, str(GENERATE), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_check_names_stale_missing_and_orphaned(
    generate: ModuleType, rendered: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "proto"
    shutil.copytree(generate.PROTO_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(generate, "PROTO_DIR", copy)
    (copy / "vehicle_data_pb2.py").write_bytes(b"# edited by hand\n")
    (copy / "envelope" / "Message.py").unlink()
    (copy / "gone_pb2.py").write_bytes(b"")
    assert generate.stale(rendered) == [
        "missing: proto/envelope/Message.py",
        "stale: proto/vehicle_data_pb2.py",
        "orphaned: proto/gone_pb2.py",
    ]
    generate.write(rendered)
    assert generate.stale(rendered) == []
    assert not (copy / "gone_pb2.py").exists()


def test_generated_modules_import_under_the_package() -> None:
    from fleetwire.proto.envelope import FlatbuffersEnvelope, FlatbuffersStream, Message

    assert FlatbuffersEnvelope.FlatbuffersEnvelope.__module__ == "fleetwire.proto.envelope.FlatbuffersEnvelope"
    assert FlatbuffersStream.FlatbuffersStream is not None
    assert (Message.Message.FlatbuffersStream, Message.Message.FlatbuffersStreamAck) == (4, 5)
    for file in ALL_FILES:
        assert file.name.startswith("fleetwire/proto/")
    assert vehicle_data_pb2.Payload.DESCRIPTOR.full_name == "telemetry.vehicle_data.Payload"


def test_field_enum_has_278_names_numbered_densely() -> None:
    values = vehicle_data_pb2.Field.DESCRIPTOR.values
    assert len(values) == 278
    assert sorted(v.number for v in values) == list(range(278))
    assert vehicle_data_pb2.Field.Name(0) == "Unknown"
    assert vehicle_data_pb2.Field.Value("Location") == 21
    assert vehicle_data_pb2.Field.Name(260) == "GpsAccuracyMeters"
    assert vehicle_data_pb2.Field.Name(277) == "SemiVehicleMassKg"


def test_value_oneof_has_56_variants() -> None:
    (oneof,) = vehicle_data_pb2.Value.DESCRIPTOR.oneofs
    numbers = {f.number for f in oneof.fields}
    assert len(oneof.fields) == 56
    assert numbers == set(range(1, 61)) - {20, 56, 58, 59}
    assert len(vehicle_data_pb2.Value.DESCRIPTOR.fields) == 56
    by_number = {f.number: (f.name, f.enum_type.name) for f in oneof.fields if f.enum_type is not None}
    assert by_number[55] == ("cabin_port_keep_on_value", "CabinPortKeepOnState")
    assert by_number[57] == ("power_transfer_status_value", "PowerTransferStatusValue")
    assert by_number[60] == ("automatic_emergency_braking_state_value", "AutomaticEmergencyBrakingStateValue")


def test_unused_value_numbers_are_reserved() -> None:
    """A number never assigned stays free of accidental reuse: protoc refuses a reserved one."""
    proto = descriptor_pb2.FileDescriptorProto.FromString(vehicle_data_pb2.DESCRIPTOR.serialized_pb)
    (value,) = [m for m in proto.message_type if m.name == "Value"]
    reserved = {n for r in value.reserved_range for n in range(r.start, r.end)}
    assert reserved == {20, 56, 58, 59}


def test_vehicle_data_has_46_enums() -> None:
    enums = vehicle_data_pb2.DESCRIPTOR.enum_types_by_name
    assert len(enums) == 46
    assert "Field" in enums
    assert {"CabinPortKeepOnState", "PowerTransferStatusValue", "AutomaticEmergencyBrakingStateValue"} <= set(enums)
    assert vehicle_data_pb2.BuckleStatusSNA == 4
    assert (vehicle_data_pb2.CarTypeSemiTruckV2, vehicle_data_pb2.CarTypeCybercab) == (7, 8)
    assert vehicle_data_pb2.DetailedChargeStateCalibrating == 7


# -- the published reference tables, when this checkout sits beside them -------------------


def _reference(name: str) -> list[list[str]]:
    path = REFERENCE / name
    if not path.is_file():
        pytest.skip(f"{path} not present (set FLEETWIRE_SCHEMA_REFERENCE to the folder holding it)")
    return [line.split("\t") for line in path.read_text().splitlines() if line.strip()]


def test_field_enum_equals_the_reference_table() -> None:
    rows = {(name, int(number)) for name, number in _reference("vehicle_data_fields.tsv")}
    assert {(v.name, v.number) for v in vehicle_data_pb2.Field.DESCRIPTOR.values} == rows


def test_value_oneof_equals_the_reference_table() -> None:
    (oneof,) = vehicle_data_pb2.Value.DESCRIPTOR.oneofs
    ours = set()
    for f in oneof.fields:
        kind = (f.message_type or f.enum_type).name if (f.message_type or f.enum_type) else _SCALARS[f.type]
        ours.add((f.name, f.number, kind))
    assert ours == {(name, int(number), kind) for name, number, kind in _reference("vehicle_data_value_oneof.tsv")}


def test_other_enums_equal_the_reference_table() -> None:
    rows = {(enum, name, int(number)) for enum, name, number in _reference("vehicle_data_enums.tsv")}
    ours = {(e.name, v.name, v.number) for e in vehicle_data_pb2.DESCRIPTOR.enum_types_by_name.values()
            if e.name != "Field" for v in e.values}
    assert ours == rows


def _all_enums(file: FileDescriptor) -> list[EnumDescriptor]:
    found = list(file.enum_types_by_name.values())
    pending = list(file.message_types_by_name.values())
    while pending:
        message = pending.pop()
        found.extend(message.enum_types)
        pending.extend(message.nested_types)
    return found


@pytest.mark.parametrize("file", ALL_FILES, ids=lambda f: f.name.rsplit("/", 1)[-1])
def test_every_enum_starts_at_zero(file: FileDescriptor) -> None:
    for enum in _all_enums(file):
        assert enum.values[0].number == 0, enum.full_name
