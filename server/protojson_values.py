"""Protobuf-JSON of one value, as json_format prints it: numbers, bytes, timestamps, enums,
map keys, and the fields a schema does not know.

The converters `protojson` plans per field; each matches json_format's output and errors.
"""

from __future__ import annotations

import binascii
import datetime
import struct
from collections.abc import Callable, Iterable
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor, OneofDescriptor
from google.protobuf.json_format import SerializeToJsonError
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

__all__ = [
    "DELEGATED", "FLOAT_TYPES", "INT64_TYPES", "TIMESTAMP", "TO_JSON_STRING", "WRAPPERS_FILE",
    "ClosedEnumNames", "Converter", "OpenEnumNames", "default_value", "delegate", "each", "enum_names",
    "is_map", "map_converter", "map_key", "may_raise", "print_bytes", "print_double", "print_float",
    "print_timestamp", "raw_timestamp", "to_json_string", "unknown_member_key", "unknown_value",
]

Converter = Callable[[Any], Any]

_FD = FieldDescriptor
INT64_TYPES = frozenset({_FD.CPPTYPE_INT64, _FD.CPPTYPE_UINT64})
FLOAT_TYPES = frozenset({_FD.CPPTYPE_FLOAT, _FD.CPPTYPE_DOUBLE})
_NAN = "NaN"
_INFINITY = "Infinity"
_NEG_INFINITY = "-Infinity"

# json_format's Timestamp range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
_TIMESTAMP_SECONDS_MIN = -62135596800
_TIMESTAMP_SECONDS_MAX = 253402300799
_EPOCH = datetime.datetime(1970, 1, 1)
_timedelta = datetime.timedelta
# "YYYY-MM-DDTHH:MM:SS" by seconds since the epoch: records' timestamps are nearly all
# "now", so the calendar arithmetic is done about once a second. Bounded, cleared when full.
_second_texts: dict[int, str] = {}
_SECOND_TEXTS_MAX = 4096

_F32 = struct.Struct("<f")
_f32_pack = _F32.pack
_f32_unpack = _F32.unpack
# ToShortestFloat's precisions: 6 significant digits at least, and 9 round-trip any float32.
_FLOAT_FORMATS = (".6g", ".7g", ".8g")
_FLOAT_FORMAT_MAX = ".9g"

TIMESTAMP = "google.protobuf.Timestamp"
# Printed by their own ToJsonString, as json_format does.
TO_JSON_STRING = frozenset({"google.protobuf.Duration", "google.protobuf.FieldMask"})
# Printed by a walk of json_format's own (Any's embedded message, Struct's dynamic
# values); rare in records, so they are handed to it.
DELEGATED = frozenset({
    "google.protobuf.Any",
    "google.protobuf.Struct",
    "google.protobuf.Value",
    "google.protobuf.ListValue",
})
# Types whose conversion may raise ValueError, which the enclosing message reports
# as SerializeToJsonError naming the field.
_MAY_RAISE = DELEGATED | TO_JSON_STRING | {TIMESTAMP}
WRAPPERS_FILE = "google/protobuf/wrappers.proto"


def print_double(value: float) -> float | str:
    """A double prints as itself unless JSON has no number for it."""
    if value - value == 0.0:  # false for ±inf (inf - inf is NaN) and NaN alike
        return value
    if value != value:
        return _NAN
    return _INFINITY if value > 0.0 else _NEG_INFINITY


def print_float(value: float) -> float | str:
    """A float32 prints as json_format's ToShortestFloat prints it: the fewest significant
    digits, 6 at least, that read back as the same float32."""
    if value - value != 0.0:
        return print_double(value)
    for spec in _FLOAT_FORMATS:
        rounded = float(format(value, spec))
        if _f32_unpack(_f32_pack(rounded))[0] == value:
            return rounded
    return float(format(value, _FLOAT_FORMAT_MAX))


def print_bytes(value: bytes) -> str:
    """Bytes as json_format prints them: base64."""
    return binascii.b2a_base64(value, newline=False).decode("ascii")


def print_timestamp(timestamp: Any) -> str:
    """RFC 3339 in UTC with 0, 3, 6 or 9 fractional digits, as Timestamp.ToJsonString."""
    seconds = timestamp.seconds
    nanos = timestamp.nanos
    text = _second_texts.get(seconds)
    if text is None or not 0 <= nanos < 1_000_000_000:
        if not (_TIMESTAMP_SECONDS_MIN <= seconds <= _TIMESTAMP_SECONDS_MAX and 0 <= nanos < 1_000_000_000):
            return timestamp.ToJsonString()  # raises json_format's ValueError for this timestamp
        if len(_second_texts) >= _SECOND_TEXTS_MAX:
            _second_texts.clear()
        text = _second_texts[seconds] = (_EPOCH + _timedelta(0, seconds)).isoformat()
    if not nanos:
        return text + "Z"
    if not nanos % 1_000_000:
        return "%s.%03dZ" % (text, nanos // 1_000_000)
    if not nanos % 1_000:
        return "%s.%06dZ" % (text, nanos // 1_000)
    return "%s.%09dZ" % (text, nanos)


def to_json_string(message: Any) -> str:
    """A well-known type json_format prints with its own ToJsonString (Duration, FieldMask)."""
    return message.ToJsonString()


def delegate(message: Message) -> Any:
    """A type json_format walks itself (Any, Struct, Value, ListValue), handed to it: rare in records."""
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


# --- fields the schema does not know -------------------------------------------------------------

_WIRE_TYPES = {0: "varint", 1: "fixed64", 2: "bytes", 3: "group", 5: "fixed32"}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_F64 = struct.Struct("<d")


def _unknown_field(field: Any) -> dict[str, Any]:
    wire_type = field.wire_type
    data = field.data
    out: dict[str, Any] = {"number": field.field_number, "wireType": _WIRE_TYPES.get(wire_type, str(wire_type))}
    if wire_type == 2:
        out["value"] = print_bytes(data)
    elif wire_type == 3:
        out["value"] = [_unknown_field(inner) for inner in data]
    else:
        out["value"] = data
        # Fixed widths are most likely a float or double: their reading saves decoding by hand.
        if wire_type == 5:
            out["float"] = print_float(_f32_unpack(_U32.pack(data))[0])
        elif wire_type == 1:
            out["double"] = print_double(_F64.unpack(_U64.pack(data))[0])
    return out


def unknown_value(message: Message) -> dict[str, Any] | None:
    """The last field of `message` that its schema does not know, or None if there is none.

    Shaped `{"number": 61, "wireType": "varint", "value": 3}`. `value` is the raw content:
    varint, fixed32 and fixed64 as unsigned integers (a fixed32 also read as "float", a
    fixed64 as "double"), bytes in base64, a group as a list of such objects. The last
    one, because a oneof keeps the last member it reads.
    """
    fields = UnknownFieldSet(message)
    count = len(fields)
    return _unknown_field(fields[count - 1]) if count else None


def unknown_member_key(oneof: OneofDescriptor) -> str:
    """The key an unknown member of `oneof` prints under (`unknownValue` for `value`)."""
    return "unknown" + "".join(part[:1].upper() + part[1:] for part in oneof.name.split("_"))


class _EnumNames(dict[int, Any]):
    """Number → name of one enum type."""


class OpenEnumNames(_EnumNames):
    """An open enum's unknown numbers print as themselves."""

    def __missing__(self, number: int) -> int:
        return number


class ClosedEnumNames(_EnumNames):
    """json_format refuses a closed enum's unknown numbers."""

    def __missing__(self, number: int) -> Any:
        raise SerializeToJsonError("Enum field contains an integer value which can not mapped to an enum value.")


def _none(_value: Any) -> None:
    return None


def enum_names(enum_type: EnumDescriptor) -> Converter:
    if enum_type.full_name == "google.protobuf.NullValue":
        return _none
    names: _EnumNames = ClosedEnumNames() if enum_type.is_closed else OpenEnumNames()
    for value in enum_type.values:  # aliases: a number's first name, as values_by_number has it
        names.setdefault(value.number, value.name)
    return names.__getitem__


def each(convert: Converter) -> Converter:
    """The converter of a repeated field whose items convert with `convert`."""
    def convert_all(values: Iterable[Any]) -> list[Any]:
        return list(map(convert, values))

    return convert_all


def map_key(key: Any) -> str:
    """A map key as JSON spells it: booleans in lower case, the rest as str."""
    if key.__class__ is bool:
        return "true" if key else "false"
    return str(key)


def map_converter(key_field: FieldDescriptor, value_convert: Converter | None) -> Converter:
    """Keys in the map's iteration order, as json_format walks it (`items()` of a upb map
    is the generic Mapping mixin's, slower than subscripting)."""
    if key_field.cpp_type == _FD.CPPTYPE_STRING:
        if value_convert is None:
            return lambda entries: {key: entries[key] for key in entries}
        return lambda entries: {key: value_convert(entries[key]) for key in entries}
    if value_convert is None:
        return lambda entries: {map_key(key): entries[key] for key in entries}
    return lambda entries: {map_key(key): value_convert(entries[key]) for key in entries}


def is_map(field: FieldDescriptor) -> bool:
    """Whether `field` is a map (repeated entries of a map_entry message)."""
    message_type = field.message_type
    return message_type is not None and message_type.GetOptions().map_entry


def may_raise(field: FieldDescriptor) -> bool:
    """Whether the field's conversion may raise ValueError, which its message reports by name."""
    message_type = field.message_type
    if message_type is not None and is_map(field):
        message_type = message_type.fields_by_name["value"].message_type
    return message_type is not None and message_type.full_name in _MAY_RAISE


def default_value(field: FieldDescriptor, convert: Converter | None) -> Any:
    """An unset field's value, printed as a set one would be."""
    value = field.default_value
    return value if convert is None else convert(value)


def raw_timestamp(timestamp: Any) -> dict[str, Any]:
    """A Timestamp RFC 3339 cannot spell, as its fields (proto-JSON of a plain message)."""
    return {"seconds": str(timestamp.seconds), "nanos": timestamp.nanos}
