"""The mqtt backend: records published over aiomqtt in the reference's topic layout.

The layout (topics and payloads) is `fleetwire.server.mqtt_layout`. Settings are the
reference's `mqtt` section; a zero means "the reference's default", as there.

`publish` returns once the broker acknowledged every message of the batch (QoS 1 and 2;
with QoS 0, once written to the socket). A lost connection fails the batch at once with
`DispatchError`, so the queue retries it on the next connection: delivery is
at-least-once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiomqtt

from fleetwire.server.dispatch import DispatchError
from fleetwire.server.records import Record, render_problems
from fleetwire.server.mqtt_layout import LAID_OUT, mqtt_messages
from fleetwire.strictjson import ConfigError, Reader, show

if TYPE_CHECKING:
    from fleetwire.server.config import ServerConfig

log = logging.getLogger("fleetwire.dispatch.mqtt")
_client_log = logging.getLogger("fleetwire.dispatch.mqtt.client")  # the MQTT library's own messages


# -- settings ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MqttConfig:
    """MQTT dispatcher settings; defaults are the reference's."""

    broker: str
    client_id: str = ""
    username: str = ""
    password: str = ""
    topic_base: str = ""
    qos: int = 0
    retained: bool = False
    connect_timeout_ms: int = 30_000
    publish_timeout_ms: int = 2_500
    disconnect_timeout_ms: int = 250
    connect_retry_interval_ms: int = 10_000
    keep_alive_seconds: int = 30

    def address(self) -> BrokerAddress:
        return parse_broker(self.broker)


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where the MQTT broker listens: `transport` is "tcp" or "websockets"."""

    host: str
    port: int
    tls: bool = False
    transport: str = "tcp"


def parse_broker(broker: str) -> BrokerAddress:
    """Read an MQTT broker address: "host:port", or with a scheme (tcp, mqtt, ssl, tls,
    mqtts, ws, wss) as the reference's client accepts; the port defaults by scheme."""
    schemes = {
        "tcp": (False, "tcp", 1883), "mqtt": (False, "tcp", 1883),
        "ssl": (True, "tcp", 8883), "tls": (True, "tcp", 8883), "mqtts": (True, "tcp", 8883),
        "ws": (False, "websockets", 80), "wss": (True, "websockets", 443),
    }
    expected = "expected \"host:port\" or \"scheme://host:port\" (scheme tcp, mqtt, ssl, tls, mqtts, ws or wss)"
    scheme, sep, rest = broker.partition("://")
    if not sep:
        scheme, rest = "tcp", broker
    if scheme.lower() not in schemes:
        raise ConfigError("mqtt.broker", f"{expected}, got {show(broker)}")
    tls, transport, default_port = schemes[scheme.lower()]
    rest = rest.split("/", 1)[0]
    if rest.startswith("["):  # IPv6 literal
        host, _, tail = rest[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port_text = rest.rpartition(":") if ":" in rest else (rest, "", "")
    if not host:
        raise ConfigError("mqtt.broker", f"{expected}, got {show(broker)}")
    if not port_text:
        return BrokerAddress(host, default_port, tls, transport)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError("mqtt.broker", f"{expected}, got {show(broker)} (bad port {port_text!r})")
    return BrokerAddress(host, int(port_text), tls, transport)


def parse_settings(s: Reader, env: Mapping[str, str], in_use: bool) -> MqttConfig:
    s.known(("broker", "client_id", "username", "password", "topic_base", "qos", "retained",
             "connect_timeout_ms", "publish_timeout_ms", "disconnect_timeout_ms",
             "connect_retry_interval_ms", "keep_alive_seconds"))
    broker = s.string("broker", "")
    if not broker:
        raise ConfigError("mqtt.broker", 'missing: expected the broker address, e.g. "localhost:1883"')
    parse_broker(broker)
    if not s.string("topic_base", ""):
        s.warnings.append("mqtt.topic_base: empty, so topics start with '/' (as in the reference server); "
                          'set it, e.g. "telemetry"')
    qos = s.data.get("qos", 0)
    if type(qos) is not int or qos not in (0, 1, 2):
        raise ConfigError("mqtt.qos", f"expected an integer 0, 1 or 2, got {show(qos)}")
    # A zero means "default" in the reference, so it does here too.
    return MqttConfig(
        broker=broker,
        client_id=s.string("client_id", ""),
        username=s.string("username", ""),
        password=s.secret("password"),
        topic_base=s.string("topic_base", "").rstrip("/"),
        qos=qos,
        retained=s.boolean("retained", False),
        connect_timeout_ms=s.integer("connect_timeout_ms", 0, minimum=0) or 30_000,
        publish_timeout_ms=s.integer("publish_timeout_ms", 0, minimum=0) or 2_500,
        disconnect_timeout_ms=s.integer("disconnect_timeout_ms", 0, minimum=0) or 250,
        connect_retry_interval_ms=s.integer("connect_retry_interval_ms", 0, minimum=0) or 10_000,
        keep_alive_seconds=s.integer("keep_alive_seconds", 0, minimum=0) or 30,
    )


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
            if record.record_type not in LAID_OUT:
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
    settings: MqttConfig = config.backend("mqtt")
    return MqttDispatcher(settings)
