"""The checked-in generated modules match the schemas, and the schemas have the known shape."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from google.protobuf.descriptor import EnumDescriptor, FileDescriptor

from fleetwire.proto import (
    vehicle_alert_pb2,
    vehicle_connectivity_pb2,
    vehicle_data_pb2,
    vehicle_error_pb2,
    vehicle_metric_pb2,
)

ROOT = Path(__file__).resolve().parent.parent
GENERATE = ROOT / "scripts" / "generate.py"
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


def test_field_enum_has_260_names_numbered_densely() -> None:
    values = vehicle_data_pb2.Field.DESCRIPTOR.values
    assert len(values) == 260
    assert sorted(v.number for v in values) == list(range(260))
    assert vehicle_data_pb2.Field.Name(0) == "Unknown"
    assert vehicle_data_pb2.Field.Value("Location") == 21


def test_value_oneof_has_53_variants_without_20() -> None:
    (oneof,) = vehicle_data_pb2.Value.DESCRIPTOR.oneofs
    numbers = {f.number for f in oneof.fields}
    assert len(oneof.fields) == 53
    assert numbers == set(range(1, 55)) - {20}
    assert len(vehicle_data_pb2.Value.DESCRIPTOR.fields) == 53


def test_vehicle_data_has_43_enums() -> None:
    enums = vehicle_data_pb2.DESCRIPTOR.enum_types_by_name
    assert len(enums) == 43
    assert "Field" in enums


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
