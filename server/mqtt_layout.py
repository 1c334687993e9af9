"""The reference server's MQTT topic layout and payloads: records in, (topic, payload) out.

Pure: no connection, no I/O, so the mqtt dispatcher and its tests share one definition.

Topics (`<base>` is `mqtt.topic_base`):

- ``V``: one message per field at ``<base>/<VIN>/v/<Field>``; the payload is the value's
  JSON: a number, string or boolean; an enum's name; ``{"latitude":..,"longitude":..}``
  for a location; a door or tire map; ``"HH:MM:SS"`` for a time; null for an invalid value.
- ``alerts``: per alert name, the latest-started alert at ``<base>/<VIN>/alerts/<name>/current``
  and all of this record's alerts of that name, as a list, at ``.../alerts/<name>/history``;
  each alert is ``{"Audiences": [..] | null, "EndedAt"?, "StartedAt"?}``.
- ``errors``: ``<base>/<VIN>/errors/<name>`` with ``{"Body", "CreatedAt"?, "Tags": {..} | null}``.
- ``connectivity``: ``<base>/<VIN>/connectivity`` with ``{"ConnectionId", "CreatedAt", "Status"}``,
  plus, for a VIN that may hold several sockets, ``"Presence"`` (``ONLINE`` on its first socket,
  ``OFFLINE`` when its last closed), ``"VinConnections"`` and the vehicle's ``"VehicleTxid"``.

Timestamps are RFC 3339 in UTC with whole seconds; JSON objects have sorted keys — both
as the reference writes them. Deliberate differences: a non-finite float is null (the
reference fails the whole record); `+`, `#` and NUL in a topic segment become `_` (the
reference's publish would be refused by the broker); a field number newer than the
schema is published at ``.../v/UnknownField_<n>`` (the reference collapses them all onto
one empty name) and a value of a variant newer than the schema as
``{"number": 61, "value": .., "wireType": "varint"}`` (`protojson_values.unknown_value`; the
reference publishes nothing); a timestamp beyond year 9999 is
``{"nanos": .., "seconds": ".."}``. Nothing in a record stops its other messages, nor
the batch's other records: what cannot be printed is printed raw and counted
(`records.RenderProblems`).
"""

from __future__ import annotations

import json
import math
import struct
import time
from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import FieldDescriptor

from fleetwire.server.records import Record
from fleetwire.server.protojson_render import render
from fleetwire.server.protojson_values import raw_timestamp, unknown_value
from fleetwire.server.records import field_name

_dumps = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode
_quote: Callable[[str], str] = json.encoder.encode_basestring
_F32 = struct.Struct("<f")


def _json(value: Any) -> bytes:
    """Compact JSON with sorted keys; scalars (nearly every V value) skip the encoder."""
    kind = type(value)
    if kind is str:
        return _quote(value).encode()
    if kind is float or kind is int:
        return repr(value).encode()
    if kind is bool:
        return b"true" if value else b"false"
    if value is None:
        return b"null"
    return _dumps(value).encode()

# -- payloads (pure) -----------------------------------------------------------------


def _segment(text: str) -> str:
    """A topic level: wildcards and NUL are not allowed in a published topic."""
    if "+" in text or "#" in text or "\0" in text:
        return text.replace("+", "_").replace("#", "_").replace("\0", "_")
    return text


# json_format's Timestamp range; beyond it a time is printed raw.
_SECONDS_MIN = -62135596800
_SECONDS_MAX = 253402300799


def _rfc3339(ts: Any, problems: list[str]) -> Any:
    seconds = ts.seconds
    if _SECONDS_MIN <= seconds <= _SECONDS_MAX and 0 <= ts.nanos < 1_000_000_000:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
    problems.append(f"timestamp: seconds {seconds}, nanos {ts.nanos} out of range")
    return raw_timestamp(ts)


def _float32(x: float) -> float | None:
    """The shortest decimal that is the same float32, as Go prints a float32 (12.3, not
    12.300000190734863)."""
    if not math.isfinite(x):
        return None
    pack, unpack = _F32.pack, _F32.unpack
    for digits in (6, 7, 8, 9):
        candidate = float(f"{x:.{digits}g}")
        if unpack(pack(candidate))[0] == x:
            return candidate
    return x


def _double(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _enum_name(fd: FieldDescriptor) -> Callable[[int], Any]:
    by_number = fd.enum_type.values_by_number

    def name(number: int) -> Any:
        value = by_number.get(number)
        return value.name if value is not None else number

    return name


def _generic(message: Any) -> dict[str, Any]:
    """The set fields of a message by their proto names, enums by name (nested alike)."""
    out: dict[str, Any] = {}
    for fd, value in message.ListFields():
        if fd.type == FieldDescriptor.TYPE_ENUM:
            out[fd.name] = _enum_name(fd)(value)
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            out[fd.name] = _generic(value)
        elif fd.type == FieldDescriptor.TYPE_FLOAT:
            out[fd.name] = _float32(value)
        elif fd.type == FieldDescriptor.TYPE_DOUBLE:
            out[fd.name] = _double(value)
        elif fd.type == FieldDescriptor.TYPE_BYTES:
            out[fd.name] = value.hex()
        else:
            out[fd.name] = value
    return out


_DOOR_KEYS = ("DriverFront", "DriverRear", "PassengerFront", "PassengerRear", "TrunkFront", "TrunkRear")

_SPECIAL: dict[str, Callable[[Any], Any]] = {
    "location_value": lambda v: {"latitude": _double(v.latitude), "longitude": _double(v.longitude)},
    "door_value": lambda v: {key: getattr(v, key) for key in _DOOR_KEYS},
    "time_value": lambda v: f"{v.hour:02d}:{v.minute:02d}:{v.second:02d}",
    "invalid": lambda v: None,
}

_converters: dict[FieldDescriptor, Callable[[Any], Any]] = {}


def _converter(fd: FieldDescriptor) -> Callable[[Any], Any]:
    special = _SPECIAL.get(fd.name)
    if special is not None:
        return special
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return _enum_name(fd)
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return _generic
    if fd.type == FieldDescriptor.TYPE_FLOAT:
        return _float32
    if fd.type == FieldDescriptor.TYPE_DOUBLE:
        return _double
    return lambda v: v


def value_json(value: Any) -> Any:
    """The JSON value the reference publishes for one `telemetry.vehicle_data.Value`."""
    which = value.WhichOneof("value")
    if which is None:
        unknown = unknown_value(value)  # a variant newer than the schema
        return {} if unknown is None else unknown
    fd = value.DESCRIPTOR.fields_by_name[which]
    convert = _converters.get(fd)
    if convert is None:
        convert = _converters[fd] = _converter(fd)
    return convert(getattr(value, which))


def _vehicle_data(prefix: str, payload: Any, problems: list[str]) -> list[tuple[str, bytes]]:
    """Field names are `records.field_name`'s: `UnknownField_<n>` for a number newer than the schema."""
    values: dict[str, Any] = {}
    for datum in payload.data:
        name = field_name(datum.key)
        try:
            values[name] = value_json(datum.value)  # a repeated field: the last wins
        except Exception as exc:  # its protobuf-JSON, which never fails
            problems.append(f"{name}: {type(exc).__name__}: {exc}")
            values[name] = render(datum.value)[0]
    prefix += "/v/"
    return [(prefix + name, _json(value)) for name, value in values.items()]


def _alert(alert: Any, problems: list[str]) -> dict[str, Any]:
    audience = _enum_name(alert.DESCRIPTOR.fields_by_name["audiences"])
    out: dict[str, Any] = {"Audiences": [audience(a) for a in alert.audiences] or None}
    if alert.HasField("started_at"):
        out["StartedAt"] = _rfc3339(alert.started_at, problems)
    if alert.HasField("ended_at"):
        out["EndedAt"] = _rfc3339(alert.ended_at, problems)
    return out


def _alerts(prefix: str, message: Any, problems: list[str]) -> list[tuple[str, bytes]]:
    history: dict[str, list[Any]] = {}
    current: dict[str, Any] = {}
    for alert in message.alerts:
        history.setdefault(alert.name, []).append(alert)
        if alert.HasField("started_at"):  # an alert that never started is not current
            best = current.get(alert.name)
            started = (alert.started_at.seconds, alert.started_at.nanos)
            if best is None or started > (best.started_at.seconds, best.started_at.nanos):
                current[alert.name] = alert
    out = [(f"{prefix}/alerts/{_segment(name)}/current", _json(_alert(a, problems))) for name, a in current.items()]
    out += [
        (f"{prefix}/alerts/{_segment(name)}/history", _json([_alert(a, problems) for a in alerts]))
        for name, alerts in history.items()
    ]
    return out


def _errors(prefix: str, message: Any, problems: list[str]) -> list[tuple[str, bytes]]:
    out = []
    for error in message.errors:
        body: dict[str, Any] = {"Body": error.body, "Tags": dict(error.tags) or None}
        if error.HasField("created_at"):
            body["CreatedAt"] = _rfc3339(error.created_at, problems)
        out.append((f"{prefix}/errors/{_segment(error.name)}", _json(body)))
    return out


def _connectivity(prefix: str, message: Any, problems: list[str]) -> list[tuple[str, bytes]]:
    status = _enum_name(message.DESCRIPTOR.fields_by_name["status"])(message.status)
    body = {
        "ConnectionId": message.connection_id,
        "Status": status,
        "CreatedAt": _rfc3339(message.created_at, problems),  # unset reads as the epoch, as in the reference
    }
    # fleetwire's additions, for a VIN holding several sockets: absent from records that lack them.
    if message.vehicle_txid:
        body["VehicleTxid"] = message.vehicle_txid
    if message.presence:
        body["Presence"] = _PRESENCE.get(message.presence, message.presence)
    if message.presence or message.vin_connections:
        body["VinConnections"] = message.vin_connections
    return [(f"{prefix}/connectivity", _json(body))]


_PRESENCE = {1: "ONLINE", 2: "OFFLINE"}


_BUILDERS: dict[str, Callable[[str, Any, list[str]], list[tuple[str, bytes]]]] = {
    "V": _vehicle_data,
    "alerts": _alerts,
    "errors": _errors,
    "connectivity": _connectivity,
}
LAID_OUT = frozenset(_BUILDERS)
"""Record types the layout has topics for."""


def mqtt_messages(
    record: Record, topic_base: str, problems: list[str] | None = None
) -> list[tuple[str, bytes]]:
    """(topic, payload) pairs the reference publishes for `record`; [] for other record types.

    Never raises for what a record holds: a value that cannot be printed as the reference
    would is printed raw, and named in `problems`.
    """
    build = _BUILDERS.get(record.record_type)
    if build is None:
        return []
    return build(f"{topic_base}/{_segment(record.vin)}", record.message, [] if problems is None else problems)
