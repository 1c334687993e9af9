"""Records: decoding and transforms, free of I/O (protobuf bytes in, (message, bytes) out),
and `Record`, the decoded record every dispatcher receives.

Every record the server dispatches passes through `decode_record`, so the common case
(the vehicle already put its own VIN in the record and nothing needs rewriting) costs a
parse, a string comparison and a few literal-led byte scans of the raw record, and hands
back the very bytes object it was given. Only a record that must change is re-encoded.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import orjson
from fleetwire.proto import (
    vehicle_alert_pb2,
    vehicle_connectivity_pb2,
    vehicle_data_pb2,
    vehicle_error_pb2,
)
from fleetwire.proto.record_types import RECORD_TYPES
from fleetwire.server.protojson import message_to_dict
from fleetwire.server.protojson_render import render
from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp

__all__ = [
    "LOCATION_FIELDS",
    "MILLISECONDS_THRESHOLD",
    "Record",
    "RecordError",
    "RenderProblems",
    "connectivity_record",
    "decode_record",
    "field_name",
    "fixed_point",
    "parse_location",
    "render_dict",
    "render_json",
    "render_problems",
    "to_dict",
    "to_json",
]


# Fields whose value is a position: older firmware sends them as "(lat N, lon W)" strings.
LOCATION_FIELDS = frozenset(
    v.number for v in vehicle_data_pb2.Field.DESCRIPTOR.values if v.name.endswith("Location")
)
# Seconds at or above this are out of Timestamp's range (10,000 years): the vehicle sent milliseconds.
MILLISECONDS_THRESHOLD = 315_576_000_000

_UNSIGNED = r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_LOCATION = re.compile(rf"\(\s*({_UNSIGNED})\s*([NS]),\s*({_UNSIGNED})\s*([EW])\s*\)", re.ASCII)
# A bare "1234e5" may be part of a hex hash, so without a decimal point the exponent needs a sign.
_SCIENTIFIC = re.compile(r"[+-]?(?:(?:\d+\.\d*|\.\d+)[eE][+-]?\d+|\d+[eE][+-]\d+)", re.ASCII)
# Byte patterns, one of which a string matching either pattern above must contain. The raw
# record is scanned for them so that a record needing no transform is never walked datum by
# datum; each starts with a literal, which lets the regex engine skip ahead with memchr.
_comma_after_hemisphere = re.compile(rb",(?<=[NS],)").search
_dotted_exponent = re.compile(rb"\.\d*[eE][+-]?\d").search
_plus_exponent = re.compile(rb"\+(?<=\d[eE]\+)\d").search
_minus_exponent = re.compile(rb"-(?<=\d[eE]-)\d").search

_Payload = vehicle_data_pb2.Payload


class RecordError(Exception):
    """A record the server cannot process; the vehicle gets an error reply.

    `reason` is a short metrics label ("protobuf", "record_type").
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def parse_location(text: str) -> tuple[float, float] | None:
    """Read "(37.412374 N, 122.145867 W)" as (latitude, longitude), south and west negative.

    Returns None for anything else, including positions off the globe, so the string is kept.
    """
    match = _LOCATION.fullmatch(text)
    if match is None:
        return None
    lat_text, lat_hemisphere, lon_text, lon_hemisphere = match.groups()
    latitude = float(lat_text)
    longitude = float(lon_text)
    if not (latitude <= 90.0 and longitude <= 180.0):
        return None
    if lat_hemisphere == "S":
        latitude = -latitude
    if lon_hemisphere == "W":
        longitude = -longitude
    return latitude, longitude


def fixed_point(text: str) -> str | None:
    """Rewrite a number in scientific notation as fixed-point with 5 decimals ("1.2e-05" → "0.00001").

    Returns None when `text` is not scientific notation or does not fit a double.
    """
    if _SCIENTIFIC.fullmatch(text) is None:
        return None
    value = float(text)
    if not math.isfinite(value):
        return None
    return f"{value:.5f}"


def _may_transform(payload: bytes) -> bool:
    return bool(
        _comma_after_hemisphere(payload)
        or _dotted_exponent(payload)
        or _plus_exponent(payload)
        or _minus_exponent(payload)
    )


def _transform_payload(message: vehicle_data_pb2.Payload) -> bool:
    changed = False
    for datum in message.data:
        value = datum.value
        if value.WhichOneof("value") != "string_value":
            continue
        text = value.string_value
        if datum.key in LOCATION_FIELDS:
            position = parse_location(text)
            if position is not None:
                location = value.location_value
                location.SetInParent()
                location.latitude, location.longitude = position
                changed = True
                continue
        fixed = fixed_point(text)
        if fixed is not None and fixed != text:
            value.string_value = fixed
            changed = True
    return changed


def _milliseconds_to_timestamp(timestamp: Timestamp) -> bool:
    milliseconds = timestamp.seconds
    if milliseconds < MILLISECONDS_THRESHOLD:
        return False
    seconds, remainder = divmod(milliseconds, 1000)
    timestamp.seconds = seconds
    timestamp.nanos = remainder * 1_000_000
    return True


def _transform_alerts(message: vehicle_alert_pb2.VehicleAlerts) -> bool:
    changed = False
    for alert in message.alerts:
        if alert.HasField("started_at") and _milliseconds_to_timestamp(alert.started_at):
            changed = True
        if alert.HasField("ended_at") and _milliseconds_to_timestamp(alert.ended_at):
            changed = True
    return changed


def _parse(record_type: str, cls: type[Message], payload: bytes) -> Any:
    try:
        return cls.FromString(payload)
    except DecodeError as exc:
        raise RecordError("protobuf", f"undecodable {record_type!r} record: {exc}") from None


def _decode_v(payload: bytes, vin: str) -> tuple[Message, bytes]:
    message = _parse("V", _Payload, payload)
    changed = message.vin != vin
    if changed:
        message.vin = vin
    if _may_transform(payload) and _transform_payload(message):
        changed = True
    return message, message.SerializeToString() if changed else payload


def _decode_alerts(payload: bytes, vin: str) -> tuple[Message, bytes]:
    message = _parse("alerts", vehicle_alert_pb2.VehicleAlerts, payload)
    changed = message.vin != vin
    if changed:
        message.vin = vin
    if _transform_alerts(message):
        changed = True
    return message, message.SerializeToString() if changed else payload


def _vin_only(record_type: str, cls: type[Message]) -> Callable[[bytes, str], tuple[Message, bytes]]:
    def decode(payload: bytes, vin: str) -> tuple[Message, bytes]:
        message = _parse(record_type, cls, payload)
        if message.vin == vin:
            return message, payload
        message.vin = vin
        return message, message.SerializeToString()

    return decode


_DECODERS: dict[str, Callable[[bytes, str], tuple[Message, bytes]]] = {
    "V": _decode_v,
    "alerts": _decode_alerts,
    "errors": _vin_only("errors", vehicle_error_pb2.VehicleErrors),
    "connectivity": _vin_only("connectivity", vehicle_connectivity_pb2.VehicleConnectivity),
}


def decode_record(record_type: str, payload: bytes, vin: str) -> tuple[Message, bytes]:
    """Parse a record, apply its transforms and stamp the certificate's VIN into it.

    The VIN inside a record is whatever the sender wrote; only the certificate's is trusted.
    Returns the message and its encoding: `payload` itself when nothing changed.
    """
    decoder = _DECODERS.get(record_type)
    if decoder is None:
        raise RecordError(
            "record_type", f"no schema for record type {record_type!r} (known: {', '.join(RECORD_TYPES)})"
        )
    return decoder(payload, vin)


_STATUSES: Mapping[str, int] = MappingProxyType({
    "CONNECTED": vehicle_connectivity_pb2.CONNECTED,
    "DISCONNECTED": vehicle_connectivity_pb2.DISCONNECTED,
})


def connectivity_record(
    vin: str,
    connection_id: str,
    status: Literal["CONNECTED", "DISCONNECTED"],
    network_interface: str,
    now: float,
    *,
    vehicle_txid: str = "",
    vin_connections: int | None = None,
) -> bytes:
    """Encode the connectivity event the server emits when a vehicle connects or disconnects.

    `connection_id` is the server's id of the socket. With `vin_connections` (the sockets
    the VIN holds after this event) the record also says what the event means for the
    VIN: `presence` ONLINE on its first socket, OFFLINE when its last closed. These and
    `vehicle_txid` are fleetwire's fields of the schema; readers of Tesla's skip them.
    """
    try:
        event = _STATUSES[status]
    except KeyError:
        raise ValueError(f"connectivity status must be CONNECTED or DISCONNECTED, not {status!r}") from None
    seconds = math.floor(now)
    nanos = round((now - seconds) * 1_000_000_000)  # the fraction alone: now * 1e9 would lose precision
    if nanos == 1_000_000_000:
        seconds, nanos = seconds + 1, 0
    message = vehicle_connectivity_pb2.VehicleConnectivity(
        vin=vin,
        connection_id=connection_id,
        status=event,
        created_at=Timestamp(seconds=seconds, nanos=nanos),
        network_interface=network_interface,
        vehicle_txid=vehicle_txid,
    )
    if vin_connections is not None:
        if vin_connections < 0:
            raise ValueError(f"vin_connections must be 0 or more, not {vin_connections}")
        message.vin_connections = vin_connections
        if status == "CONNECTED" and vin_connections == 1:
            message.presence = vehicle_connectivity_pb2.PRESENCE_ONLINE
        elif status == "DISCONNECTED" and vin_connections == 0:
            message.presence = vehicle_connectivity_pb2.PRESENCE_OFFLINE
    return message.SerializeToString()


def to_dict(message: Message) -> dict[str, Any]:
    """Protobuf-JSON as a dict: camelCase keys, enum names, fields at their defaults included.

    Defaults are included because consumers of the reference server's JSON expect every key.
    Equal to `json_format.MessageToDict(message, always_print_fields_with_no_presence=True)`,
    key order and errors included, at a tenth of its cost: it runs for every record
    dispatched decoded. One difference: a `Value` of a variant newer than the schema shows
    it as `{"unknownValue": {"number", "wireType", "value"}}` where json_format prints `{}`.
    `render_dict` is the same but never raises.
    """
    result: dict[str, Any] = message_to_dict(message)
    return result


def to_json(message: Message) -> bytes:
    """Compact UTF-8 protobuf-JSON, what backends get with `transmit_decoded_records`.

    orjson writes it ten times faster than `json.dumps(..., separators=(",", ":"),
    ensure_ascii=False)`, byte for byte the same but for floats of magnitude 1e-9 to 1e-4,
    which it spells "0.00001" or "1e-9" where json.dumps spells "1e-05" or "1e-09".
    """
    return orjson.dumps(to_dict(message))


def render_dict(message: Message) -> tuple[dict[str, Any], list[str]]:
    """`to_dict`, except that it never raises: what protobuf-JSON cannot print (a timestamp
    past year 9999, nanos out of range) is printed raw and named in the list returned."""
    result, problems = render(message)
    return result, problems


def render_json(message: Message) -> tuple[bytes, list[str]]:
    """`to_json` that never raises, with `render_dict`'s list of what was printed raw."""
    result, problems = render(message)
    try:
        return orjson.dumps(result), problems
    except (TypeError, orjson.JSONEncodeError) as exc:  # e.g. nested past orjson's depth limit
        problems.append(f"JSON: {exc}")
        return json.dumps(result, default=str, ensure_ascii=False, separators=(",", ":")).encode(), problems


_FIELD_NAMES: dict[int, str] = {value.number: value.name for value in vehicle_data_pb2.Field.DESCRIPTOR.values}


def field_name(number: int) -> str:
    """A `V` datum's key by name, `UnknownField_<n>` for a number newer than the schema
    (distinct per number, where the reference collapses them all onto "")."""
    name = _FIELD_NAMES.get(number)
    return name if name is not None else f"UnknownField_{number}"


log = logging.getLogger("fleetwire.dispatch")


@dataclass(slots=True)
class Record:
    """One decoded record on its way to the backends; shared by every dispatcher it goes to."""

    record_type: str
    vin: str
    client_type: str
    txid: str
    connection_id: str
    payload: bytes  # the re-encoded protobuf (VIN from the certificate)
    message: Any  # the decoded protobuf message
    created_at: float
    received_at: float
    client_version: str = ""  # the vehicle's `Version` header (metadata `device_client_version`)
    _json: bytes | None = field(default=None, init=False, repr=False, compare=False)
    _json_problems: list[str] | None = field(default=None, init=False, repr=False, compare=False)
    _render_reported: set[str] | None = field(default=None, init=False, repr=False, compare=False)

    def json(self, dispatcher: str | None = None) -> bytes:
        """Compact one-line protobuf-JSON of `message`, computed once however many
        dispatchers ask; never raises.

        A value protobuf-JSON cannot print (a timestamp past year 9999, say) is printed
        raw (see `protojson_render.render`); pass the dispatcher's name so that such a record is
        counted and logged for it.
        """
        cached = self._json
        if cached is None:
            cached, self._json_problems = render_json(self.message)
            self._json = cached
        if self._json_problems and dispatcher is not None:
            render_problems.report(dispatcher, self, self._json_problems)
        return cached


class RenderProblems:
    """Records a dispatcher could not render in full, counted by (record type, dispatcher)
    for `fleetwire_records_unrenderable_total` and logged at most once per `interval`
    per dispatcher. Such a record is still published, degraded (a value printed raw);
    only one whose encoding raised even alone is given up — never the rest of its batch:
    one vehicle's bad value costs no one else's data.

    Process-wide, like the log: every encoder reports here through `report`.
    """

    def __init__(self, interval: float = 60.0) -> None:
        self.interval = interval
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self._unlogged: collections.Counter[str] = collections.Counter()
        self._next_log: dict[str, float] = {}

    def report(self, dispatcher: str, record: Record, problems: Sequence[str]) -> None:
        """Count `record` once for `dispatcher` (a retried batch is not counted again)."""
        if not problems:
            return
        reported = record._render_reported
        if reported is None:
            reported = record._render_reported = set()
        elif dispatcher in reported:
            return
        reported.add(dispatcher)
        self.counts[(record.record_type, dispatcher)] += 1
        self._unlogged[dispatcher] += 1
        now = time.monotonic()
        if now < self._next_log.get(dispatcher, 0.0):
            return
        self._next_log[dispatcher] = now + self.interval
        count = self._unlogged.pop(dispatcher)
        log.warning(
            "%s: %d record(s) rendered with values printed raw (fleetwire_records_unrenderable_total; "
            "logged at most every %.0f s); latest: %s record of %s (txid %s): %s",
            dispatcher, count, self.interval, record.record_type, record.vin, record.txid, "; ".join(problems[:3]),
        )


render_problems = RenderProblems()
