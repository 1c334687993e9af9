"""The MQTT dispatcher: the reference server's topic layout and payloads, over aiomqtt.

Topics (`<base>` is `mqtt.topic_base`):

- ``V``: one message per field at ``<base>/<VIN>/v/<Field>``; the payload is the value's
  JSON: a number, string or boolean; an enum's name; ``{"latitude":..,"longitude":..}``
  for a location; a door or tire map; ``"HH:MM:SS"`` for a time; null for an invalid value.
- ``alerts``: per alert name, the latest-started alert at ``<base>/<VIN>/alerts/<name>/current``
  and all of this record's alerts of that name, as a list, at ``.../alerts/<name>/history``;
  each alert is ``{"Audiences": [..] | null, "EndedAt"?, "StartedAt"?}``.
- ``errors``: ``<base>/<VIN>/errors/<name>`` with ``{"Body", "CreatedAt"?, "Tags": {..} | null}``.
- ``connectivity``: ``<base>/<VIN>/connectivity`` with ``{"ConnectionId", "CreatedAt", "Status"}``.

Timestamps are RFC 3339 in UTC with whole seconds; JSON objects have sorted keys — both
as the reference writes them. Deliberate differences: a non-finite float is null (the
reference fails the whole record); `+`, `#` and NUL in a topic segment become `_` (the
reference's publish would be refused by the broker); a field number newer than the
schema is published at ``.../v/UnknownField_<n>`` (the reference collapses them all onto
one empty name) and a value of a variant newer than the schema as
``{"number": 61, "value": .., "wireType": "varint"}`` (`protojson.unknown_value`; the
reference publishes nothing); a timestamp beyond year 9999 is
``{"nanos": .., "seconds": ".."}``. Nothing in a record stops its other messages, nor
the batch's other records: what cannot be printed is printed raw and counted
(`base.RenderProblems`).

`publish` returns once the broker acknowledged every message of the batch (QoS 1 and 2;
with QoS 0, once written to the socket). A lost connection fails the batch at once with
`DispatchError`, so the queue retries it on the next connection: delivery is
at-least-once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import ssl
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiomqtt
from fleetwire.server.config import ConfigError, MqttConfig, ServerConfig
from fleetwire.server.dispatchers.base import DispatchError, Record, render_problems
from fleetwire.server.protojson import raw_timestamp, render, unknown_value
from fleetwire.server.records import field_name
from google.protobuf.descriptor import FieldDescriptor

log = logging.getLogger("fleetwire.dispatch.mqtt")
_client_log = logging.getLogger("fleetwire.dispatch.mqtt.client")  # the MQTT library's own messages

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
    return [(f"{prefix}/connectivity", _json(body))]


_BUILDERS: dict[str, Callable[[str, Any, list[str]], list[tuple[str, bytes]]]] = {
    "V": _vehicle_data,
    "alerts": _alerts,
    "errors": _errors,
    "connectivity": _connectivity,
}


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


# -- the dispatcher ------------------------------------------------------------------


class MqttDispatcher:
    """Publishes records to one broker, keeping one connection up in the background.

    `max_inflight` bounds the messages awaiting the broker's acknowledgement.
    `publish_timeout_ms` is how long a publish may go without the broker acknowledging
    any message before the batch fails (the reference applies it per record).
    """

    name = "mqtt"

    def __init__(self, config: MqttConfig, *, max_inflight: int = 100) -> None:
        self.config = config
        self._address = config.address()
        self._qos = config.qos
        self._retain = config.retained
        self._topic_base = config.topic_base
        self._publish_timeout = config.publish_timeout_ms / 1000
        self._connect_timeout = config.connect_timeout_ms / 1000
        self._retry_interval = config.connect_retry_interval_ms / 1000
        self._disconnect_timeout = config.disconnect_timeout_ms / 1000
        self._max_inflight = max_inflight
        self._conn: tuple[aiomqtt.Client, asyncio.Future[None]] | None = None
        self._connected = asyncio.Event()
        self._reconnect = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unknown_types: set[str] = set()
        # state, read by metrics and tests
        self.connects = 0
        self.messages_published = 0
        self.last_error: str | None = None

    @property
    def connected(self) -> bool:
        return self._conn is not None

    async def start(self) -> None:
        """Start connecting; a broker that is down now is retried, not fatal."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._maintain(), name="mqtt-connection")

    async def close(self) -> None:
        self._stop.set()
        self._reconnect.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(task, self._disconnect_timeout + 1.0)
            except TimeoutError:
                # Stuck connecting to an unresponsive broker: wait_for has cancelled it.
                log.warning("mqtt: gave up waiting for the connection to %s to close", self.config.broker)

    # -- publishing --------------------------------------------------------------------

    async def publish(self, batch: Sequence[Record]) -> None:
        messages: list[tuple[str, bytes]] = []
        for record in batch:
            if record.record_type not in _BUILDERS:
                if record.record_type not in self._unknown_types:
                    self._unknown_types.add(record.record_type)
                    log.error("mqtt: records of type %r have no MQTT topic layout; not published", record.record_type)
                continue
            problems: list[str] = []
            messages.extend(mqtt_messages(record, self._topic_base, problems))
            if problems:
                render_problems.report(self.name, record, problems)
        if not messages:
            return
        conn = self._conn
        if conn is None:
            if self._stop.is_set():
                raise DispatchError("the MQTT dispatcher is closed", retryable=False)
            try:
                await asyncio.wait_for(self._connected.wait(), self._publish_timeout)
            except TimeoutError:
                raise DispatchError(
                    f"MQTT broker {self.config.broker} unavailable: {self.last_error or 'not connected'}"
                ) from None
            conn = self._conn
            if conn is None:
                raise DispatchError(f"MQTT broker {self.config.broker}: connection lost")
        client, lost = conn
        sending = asyncio.ensure_future(self._send_all(client, messages))
        try:
            await asyncio.wait((sending, lost), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            sending.cancel()
            raise
        if not sending.done():
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sending
            raise DispatchError(f"MQTT broker {self.config.broker}: connection lost during publish")
        error = sending.exception()
        if error is not None:
            if isinstance(error, BaseExceptionGroup):
                error = error.exceptions[0]
            # A timeout may hide a half-open connection: start over on a fresh one.
            self._reconnect.set()
            raise DispatchError(f"MQTT publish to {self.config.broker} failed: {error}") from error
        self.messages_published += len(messages)

    async def _send_all(self, client: aiomqtt.Client, messages: list[tuple[str, bytes]]) -> None:
        """Send with up to `max_inflight` messages unacknowledged; fail when the broker
        acknowledges nothing for `publish_timeout` (a fixed number of sender tasks and one
        resettable deadline cost far less per message than a task and timer each)."""
        qos, retain, patience = self._qos, self._retain, self._publish_timeout
        loop = asyncio.get_running_loop()
        pending = iter(messages)
        async with asyncio.timeout(patience) as deadline:

            async def sender() -> None:
                for topic, payload in pending:
                    await client.publish(topic, payload, qos=qos, retain=retain, timeout=math.inf)
                    deadline.reschedule(loop.time() + patience)

            senders = min(self._max_inflight, len(messages))
            if senders == 1:
                await sender()
                return
            async with asyncio.TaskGroup() as group:
                for _ in range(senders):
                    group.create_task(sender())

    # -- the connection ----------------------------------------------------------------

    def _new_client(self) -> aiomqtt.Client:
        address = self._address
        config = self.config
        client = aiomqtt.Client(
            address.host,
            address.port,
            username=config.username or None,
            password=config.password or None,
            identifier=config.client_id or None,
            keepalive=config.keep_alive_seconds,
            timeout=self._connect_timeout,
            transport="websockets" if address.transport == "websockets" else "tcp",
            tls_context=ssl.create_default_context() if address.tls else None,
            max_inflight_messages=self._max_inflight,
            logger=_client_log,
        )
        # The TCP connect itself has its own timeout in paho (5 s by default).
        client._client.connect_timeout = self._connect_timeout
        client.pending_calls_threshold = self._max_inflight + 10
        return client

    async def _maintain(self) -> None:
        """Connect, wait for the connection to end, reconnect — until closed."""
        loop = asyncio.get_running_loop()
        failures = 0
        while not self._stop.is_set():
            client = self._new_client()
            try:
                await client.__aenter__()
            except aiomqtt.MqttError as exc:
                failures += 1
                self.last_error = str(exc) or type(exc).__name__
                if failures == 1:
                    log.warning("mqtt: cannot connect to %s (retrying every %.1f s): %s",
                                self.config.broker, self._retry_interval, self.last_error)
                await self._pause(self._retry_interval)
                continue
            failures = 0
            self.connects += 1
            self.last_error = None
            lost: asyncio.Future[None] = loop.create_future()
            self._conn = (client, lost)
            self._connected.set()
            log.info("mqtt: connected to %s", self.config.broker)
            try:
                reason = await self._watch(client)
            finally:
                self._conn = None
                self._connected.clear()
                lost.set_result(None)
            if reason:
                self.last_error = reason
                log.warning("mqtt: connection to %s lost: %s", self.config.broker, reason)
            client.timeout = self._disconnect_timeout
            with contextlib.suppress(aiomqtt.MqttError, OSError):
                await client.__aexit__(None, None, None)

    async def _watch(self, client: aiomqtt.Client) -> str | None:
        """Wait until the connection drops (returns why) or a reconnect or close is asked."""
        self._reconnect.clear()

        async def drain() -> None:
            async for _ in client.messages:  # nothing is subscribed; this ends on disconnect
                pass

        dropped = asyncio.ensure_future(drain())
        asked = asyncio.ensure_future(self._reconnect.wait())
        try:
            await asyncio.wait((dropped, asked), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (dropped, asked):
                task.cancel()
        if dropped.done() and not dropped.cancelled():
            error = dropped.exception()
            if error is None:
                return "the broker closed the connection"
            return str(error.__cause__ or error)
        return None

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)


def create(config: ServerConfig) -> MqttDispatcher:
    if config.mqtt is None:
        raise ConfigError("mqtt", 'missing: the mqtt dispatcher needs an "mqtt" section with a "broker"')
    return MqttDispatcher(config.mqtt)
