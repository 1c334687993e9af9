"""The logger dispatcher: one JSON line per record on a text stream (stdout by default).

It stores nothing, so it can never confirm a record for a reliable ack; it exists to see
what vehicles send, so each line carries the decoded record, as the reference's
`record_payload` lines do. A batch is written with one `write` and one `flush`, so
logging a busy fleet costs one system call per batch, not per record.

A line is ``{"msg": "record_payload", "record_type", "vin", "txid", "client_type",
"created_at", "received_at", "size", "data"}``. For a ``V`` record `data` maps field
names to values: ``{"Vin": .., "CreatedAt": "2026-12-01T23:40:18Z", "VehicleSpeed": 12.5,
"Gear": "ShiftStateD", "Location": {"latitude": .., "longitude": ..}, ..}``; with
`verbose` each value is wrapped in its type, ``{"floatValue": 12.5}``. Other record types
carry their protobuf-JSON. A line is written for every record, whatever it holds: what
cannot be printed as such is printed raw and counted (see `base.RenderProblems`).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

import orjson
from fleetwire.proto import vehicle_data_pb2
from fleetwire.server.dispatch import DispatchError
from fleetwire.server.records import Record, render_problems
from fleetwire.server.protojson_render import render
from fleetwire.server.protojson_values import print_double, print_float, raw_timestamp, unknown_value
from fleetwire.server.records import field_name
from fleetwire.strictjson import Reader
from google.protobuf.descriptor import FieldDescriptor

if TYPE_CHECKING:
    from fleetwire.server.config import ServerConfig

_FD = FieldDescriptor
_Convert = Callable[[Any], Any]
_FIELD_NAMES = {value.number: value.name for value in vehicle_data_pb2.Field.DESCRIPTOR.values}

# json_format's Timestamp range; beyond it a time is printed raw.
_SECONDS_MIN = -62135596800
_SECONDS_MAX = 253402300799
# RFC 3339 text by second: nearly every record is "now", so strftime runs about once a second.
_second_texts: dict[int, str] = {}


def _created_at(timestamp: Any, problems: list[str]) -> Any:
    """Whole seconds in RFC 3339 (the reference's `CreatedAt`); raw beyond year 9999."""
    seconds = timestamp.seconds
    text = _second_texts.get(seconds)
    if text is not None and 0 <= timestamp.nanos < 1_000_000_000:
        return text
    if not (_SECONDS_MIN <= seconds <= _SECONDS_MAX and 0 <= timestamp.nanos < 1_000_000_000):
        problems.append(f"createdAt: seconds {seconds}, nanos {timestamp.nanos} out of range")
        return raw_timestamp(timestamp)
    if len(_second_texts) >= 4096:
        _second_texts.clear()
    text = _second_texts[seconds] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
    return text


def _enum(field: FieldDescriptor) -> _Convert:
    names = {value.number: value.name for value in reversed(field.enum_type.values)}  # an alias: its first name
    get = names.get
    return lambda number: get(number, number)  # a number newer than the schema prints as itself


def _location(value: Any) -> dict[str, Any]:
    return {"latitude": print_double(value.latitude), "longitude": print_double(value.longitude)}


def _time(value: Any) -> str:
    return f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}"


_TIRES_ALWAYS = ("front_left", "front_right", "rear_left", "rear_right")


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def _tires(value: Any) -> dict[str, bool]:
    """The four wheels of a car always; a Semi's other axles when set."""
    out = {_camel(name): getattr(value, name) for name in _TIRES_ALWAYS}
    for field, flag in value.ListFields():
        out[_camel(field.name)] = flag
    return out


def _message(value: Any) -> Any:
    return render(value)[0]


def _converter(field: FieldDescriptor, verbose: bool) -> _Convert | None:
    """How one `Value` member prints; None when it prints as it is."""
    name = field.name
    if name == "location_value":
        return _location
    if name == "door_value":
        doors = [door.name for door in field.message_type.fields]
        return lambda value: {door: getattr(value, door) for door in doors}
    if name == "tire_location_value":
        return _tires
    if name == "time_value":
        return _time
    if name == "invalid":
        return (lambda _: True) if verbose else (lambda _: "<invalid>")
    if field.type == _FD.TYPE_ENUM:
        return _enum(field)
    if field.type == _FD.TYPE_FLOAT:
        return print_float
    if field.type == _FD.TYPE_DOUBLE:
        return print_double
    if field.type == _FD.TYPE_MESSAGE:
        return _message
    if field.type == _FD.TYPE_BYTES:
        return lambda value: value.hex()
    return None


def _members(verbose: bool) -> dict[str, tuple[str, _Convert | None]]:
    """`Value` member → (its protobuf-JSON name, the type label in verbose; its converter)."""
    return {
        field.name: (field.json_name, _converter(field, verbose))
        for field in vehicle_data_pb2.Value.DESCRIPTOR.oneofs_by_name["value"].fields
    }


_MEMBERS = {False: _members(False), True: _members(True)}


def vehicle_data(payload: Any, verbose: bool, problems: list[str]) -> dict[str, Any]:
    """A `V` record as the reference's logger shows it: field name → value.

    A field number newer than the schema is `UnknownField_<n>`; a value of a variant newer
    than the schema is `protojson_values.unknown_value`'s object (labelled `unknownValue`); a
    datum without a value is null. A value that cannot be printed is printed as its
    protobuf-JSON and named in `problems`.
    """
    members = _MEMBERS[verbose]
    known_name = _FIELD_NAMES.get
    data: dict[str, Any] = {"Vin": payload.vin, "CreatedAt": _created_at(payload.created_at, problems)}
    for datum in payload.data:
        key = datum.key
        name = known_name(key) or field_name(key)
        value = datum.value
        which = value.WhichOneof("value")
        try:
            if which is None:
                unknown = unknown_value(value)
                if unknown is None:
                    data[name] = None
                else:
                    data[name] = {"unknownValue": unknown} if verbose else unknown
                continue
            label, convert = members[which]
            shown = getattr(value, which)
            if convert is print_double:  # inlined: finite doubles, most values, print as themselves
                if shown - shown != 0.0:
                    shown = print_double(shown)
            elif convert is not None:
                shown = convert(shown)
            data[name] = {label: shown} if verbose else shown
        except Exception as exc:  # printed as protobuf-JSON, which never fails
            problems.append(f"{name}: {type(exc).__name__}: {exc}")
            data[name] = render(value)[0]
    return data


class LoggerDispatcher:
    """Writes one `record_payload` JSON line per record (see the module's docstring).

    `include_data=False` leaves `data` out: the line then says only what arrived, and how
    big it was. `verbose` labels each `V` value with its type.
    """

    name = "logger"

    def __init__(self, stream: TextIO | None = None, include_data: bool = True, *, verbose: bool = False) -> None:
        self._stream = stream if stream is not None else sys.stdout
        self.include_data = include_data
        self.verbose = verbose

    async def start(self) -> None:
        return None

    def line(self, record: Record) -> bytes:
        """The record's line, newline included; never raises."""
        head = {
            "msg": "record_payload",
            "record_type": record.record_type,
            "vin": record.vin,
            "txid": record.txid,
            "client_type": record.client_type,
            "created_at": record.created_at,
            "received_at": record.received_at,
            "size": len(record.payload),
        }
        if not self.include_data:
            return orjson.dumps(head) + b"\n"
        if record.record_type == "V":
            problems: list[str] = []
            try:
                head["data"] = vehicle_data(record.message, self.verbose, problems)
                text = orjson.dumps(head)
            except Exception as exc:  # e.g. not a Payload at all: its protobuf-JSON below
                problems.append(f"{type(exc).__name__}: {exc}")
                head.pop("data", None)
            else:
                render_problems.report(self.name, record, problems)
                return text + b"\n"
            render_problems.report(self.name, record, problems)
        # Record.json() is compact single-line JSON that never fails: splice it in.
        try:
            data = record.json(self.name)
        except Exception as exc:  # no protobuf message to print: the line says so
            render_problems.report(self.name, record, [f"{type(exc).__name__}: {exc}"])
            data = b"null"
        return b'%s,"data":%s}\n' % (orjson.dumps(head)[:-1], data)

    async def publish(self, batch: Sequence[Record]) -> None:
        line = self.line
        text = b"".join([line(record) for record in batch]).decode()
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError) as exc:  # ValueError: the stream was closed
            raise DispatchError(f"cannot write the log: {exc}") from exc

    async def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()


@dataclass(frozen=True, slots=True)
class LoggerConfig:
    verbose: bool = False


SECTION_REQUIRED = False
"""The logger works without a `logger` section."""


def parse_settings(s: Reader, env: Mapping[str, str], in_use: bool) -> LoggerConfig:
    s.known(("verbose",))
    return LoggerConfig(verbose=s.boolean("verbose", False))


def create(config: ServerConfig) -> LoggerDispatcher:
    """The decoded records always; `logger.verbose` adds each `V` value's type."""
    settings: LoggerConfig = config.backend("logger")
    return LoggerDispatcher(verbose=settings.verbose)
