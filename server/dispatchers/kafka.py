"""The kafka backend: records produced to `<namespace>_<record_type>`, keyed by VIN.

As the reference: every key of the `kafka` section is a librdkafka producer property,
passed through (a JSON float becomes an integer); the message key is the VIN (one
vehicle's records stay in order on one partition); the reference's metadata are message
headers; the value is the record's protobuf, or its protobuf-JSON with
`transmit_decoded_records`.

Four defaults differ from librdkafka's, each overridden by setting the property:
``enable.idempotence`` is true (a batch retried after a lost connection is not written
twice), so ``acks`` is ``all``; ``linger.ms`` is 1 (a batch is produced at once, then
awaited); ``client.id`` is ``fleetwire``. Idempotence is left off when the user's own
``acks``, ``retries`` or in-flight limit cannot go with it.

`publish` produces the batch without blocking and returns once librdkafka's delivery
report confirmed every record (the reliable ack); a failed report fails the batch with
`DispatchError`, so the queue retries it. librdkafka reconnects with back-off itself
(``reconnect.backoff.ms``) and keeps undelivered records queued for up to
``message.timeout.ms`` (5 minutes by default) while the broker is away. Delivery reports
are served by a thread that polls the producer; it hands each batch's outcome to the
event loop once, when the batch's last report arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException

from fleetwire.server.dispatch import DispatchError
from fleetwire.server.records import Record
from fleetwire.server.metadata import metadata_headers
from fleetwire.strictjson import ConfigError, Reader, show

if TYPE_CHECKING:
    from fleetwire.server.config import ServerConfig

log = logging.getLogger("fleetwire.dispatch.kafka")


class _ClientLog:
    """librdkafka's own log lines, at debug: what matters reaches `error_cb`, once."""

    _log = logging.getLogger("fleetwire.dispatch.kafka.client")

    def log(self, level: int, msg: str, *args: Any) -> None:
        self._log.debug(msg, *args)


_client_log = _ClientLog()

Property = str | int | bool

# Delivery errors that no retry can mend: the queue gives up on the batch.
_PERMANENT = frozenset({
    KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_MSG, KafkaError.INVALID_RECORD,
    KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_MSG_SIZE,
})
_ALIASES = {  # librdkafka's synonyms of the properties the defaults look at
    "acks": ("acks", "request.required.acks"),
    "retries": ("retries", "message.send.max.retries"),
    "inflight": ("max.in.flight.requests.per.connection", "max.in.flight"),
    "linger": ("linger.ms", "queue.buffering.max.ms"),
}


# -- settings (pure, but for the property check) -------------------------------------


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """The user's librdkafka properties, as librdkafka takes them."""

    properties: Mapping[str, Property] = field(default_factory=dict)

    def producer_properties(self) -> dict[str, Property]:
        """The properties the producer is built with: fleetwire's defaults, then the user's."""
        props = self.properties

        def given(kind: str) -> list[Property]:
            return [props[name] for name in _ALIASES[kind] if name in props]

        defaults: dict[str, Property] = {"client.id": "fleetwire"}
        acks_all = all(str(a).lower() in ("all", "-1") for a in given("acks"))
        retries_on = all(str(r) != "0" for r in given("retries"))
        inflight_ok = all(_as_int(n) is not None and _as_int(n) <= 5 for n in given("inflight"))  # type: ignore[operator]
        if "enable.idempotence" not in props and acks_all and retries_on and inflight_ok:
            defaults["enable.idempotence"] = True
        if not given("acks"):
            defaults["acks"] = "all"
        if not given("linger"):
            # A batch is produced at once and then awaited: waiting longer for company
            # only delays its confirmation (1 ms: twice the throughput of librdkafka's 5).
            defaults["linger.ms"] = 1
        return {**defaults, **props}


def _as_int(value: Property) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


def _property(s: Reader, name: str) -> Property:
    key = s.key(name)
    value = s.data[name]
    if isinstance(value, dict):  # {"file": ..} or {"env": ..}: a credential kept out of the file
        return s.secret(name)
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(key, f"expected a finite number, got {show(value, key)}")
        if not value.is_integer():
            s.warnings.append(f"{key}: {value!r} is not a whole number; librdkafka is given {int(value)}, "
                              "as the reference passes it")
        return int(value)
    raise ConfigError(key, "expected a librdkafka property value: a string, number or boolean "
                      f"(or {{\"file\": ..}} / {{\"env\": ..}} for a credential), got {show(value, key)}")


_quiet = logging.getLogger("fleetwire.dispatch.kafka.check")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


def _refused(properties: Mapping[str, Property]) -> KafkaError | None:
    """librdkafka's objection to these producer properties, None if it takes them
    (`bootstrap.servers` is left out, so nothing connects)."""
    conf = {k: v for k, v in properties.items() if k != "bootstrap.servers"}
    try:
        producer = confluent_kafka.Producer({**conf, "logger": _quiet})
    except KafkaException as exc:
        return exc.args[0]
    except (TypeError, ValueError) as exc:
        return KafkaError(KafkaError._INVALID_ARG, str(exc))
    del producer
    return None


def _check(s: Reader, settings: KafkaSettings) -> None:
    """Ask librdkafka whether it takes the properties; name the one it refuses."""
    error = _refused(settings.producer_properties())
    if error is None:
        return
    culprit = next((name for name in settings.properties if _refused({name: settings.properties[name]})), None)
    if culprit is None:  # each is fine alone: a combination librdkafka refuses
        raise ConfigError(s.path, f"librdkafka refuses these producer properties: {error.str()}")
    key = s.key(culprit)
    raise ConfigError(key, f"librdkafka refuses {show(settings.properties[culprit], key)}: {error.str()}")


def parse_settings(s: Reader, env: Mapping[str, str], in_use: bool) -> KafkaSettings:
    """librdkafka producer properties, passed through; checked by librdkafka when in use."""
    settings = KafkaSettings({name: _property(s, name) for name in s.data})
    if in_use:
        servers = settings.properties.get("bootstrap.servers", "")
        if not isinstance(servers, str) or not servers.strip():
            raise ConfigError(s.key("bootstrap.servers"), 'missing: expected the brokers as "host:port[,host:port...]"')
        _check(s, settings)
    return settings


# -- the dispatcher ------------------------------------------------------------------


class _Batch:
    """Delivery reports of one batch, counted in the polling thread; the outcome is
    handed to the event loop once: at the first failure or the last success."""

    __slots__ = ("error", "future", "loop", "remaining")

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.remaining = count
        self.error: KafkaError | None = None

    def delivered(self, err: KafkaError | None, _msg: Any) -> None:  # in the polling thread
        self.remaining -= 1
        if err is not None:
            if self.error is None:
                self.error = err
                self.loop.call_soon_threadsafe(self._settle)
        elif self.remaining == 0 and self.error is None:
            self.loop.call_soon_threadsafe(self._settle)

    def fail(self, error: KafkaError) -> None:  # on the loop
        self.error = error
        self._settle()

    def _settle(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


class KafkaDispatcher:
    """Produces records through one librdkafka producer.

    `producer_factory` builds the producer from its properties (tests pass a fake).
    """

    name = "kafka"

    def __init__(
        self,
        settings: KafkaSettings,
        namespace: str = "",
        *,
        decoded: bool = False,
        poll_interval: float = 0.1,
        producer_factory: Callable[[dict[str, Any]], Any] = confluent_kafka.Producer,
    ) -> None:
        self.settings = settings
        self.servers = str(settings.properties.get("bootstrap.servers", ""))
        self._namespace = namespace
        self._decoded = decoded
        self._poll_interval = poll_interval
        self._factory = producer_factory
        self._topics: dict[str, str] = {}
        self._producer: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()
        self._closed = False
        self._broker_down_since: float | None = None
        self._next_warning: dict[int, float] = {}
        # state, read by metrics and tests
        self.messages_published = 0
        self.last_error: str | None = None
        self.fatal_errors = 0

    def topic(self, record_type: str) -> str:
        """The reference's topic for `record_type`: ``<namespace>_<record_type>``."""
        topic = self._topics.get(record_type)
        if topic is None:
            topic = self._topics[record_type] = f"{self._namespace}_{record_type}"
        return topic

    async def start(self) -> None:
        """Build the producer and its polling thread; librdkafka connects in the background."""
        if self._producer is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._producer = self._new_producer()
        self._poller = threading.Thread(target=self._poll, name="kafka-delivery-reports", daemon=True)
        self._poller.start()
        log.info("kafka: producing to %s", self.servers)

    def _new_producer(self) -> Any:
        conf: dict[str, Any] = self.settings.producer_properties()
        conf["error_cb"] = self._on_error
        conf["logger"] = _client_log
        return self._factory(conf)

    def _poll(self) -> None:
        """Serve delivery reports until closed (the thread's whole life)."""
        while not self._stop.is_set():
            producer = self._producer
            try:
                producer.poll(self._poll_interval)
            except Exception:  # a callback bug must not end delivery reports
                log.exception("kafka: serving delivery reports failed")
                time.sleep(self._poll_interval)

    def _on_error(self, err: KafkaError) -> None:  # in the polling thread
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._client_error, err)

    def _client_error(self, err: KafkaError) -> None:
        self.last_error = err.str()
        if err.fatal():
            # The producer is unusable (an idempotence sequence lost, say): its queued
            # records fail with this error; later batches go to a new producer.
            self.fatal_errors += 1
            log.error("kafka: fatal producer error, starting a new producer: %s", err.str())
            old, self._producer = self._producer, self._new_producer()
            old.purge(blocking=False)
            # Their reports settle the batches waiting on them (flush blocks: not on the loop).
            asyncio.get_running_loop().run_in_executor(None, old.flush, 10)
            return
        code = err.code()
        if code == KafkaError._ALL_BROKERS_DOWN:
            if self._broker_down_since is None:
                self._broker_down_since = time.monotonic()
                log.warning("kafka: no broker of %s reachable; records wait, reconnecting: %s",
                            self.servers, err.str())
            return
        if code == KafkaError._TRANSPORT:  # one connection of several; librdkafka reconnects
            log.debug("kafka: %s", err.str())
            return
        now = time.monotonic()
        if now >= self._next_warning.get(code, 0.0):  # TLS, authentication, …: at most once a minute each
            self._next_warning[code] = now + 60.0
            log.warning("kafka: %s: %s", self.servers, err.str())

    async def publish(self, batch: Sequence[Record]) -> None:
        if self._closed or self._producer is None:
            raise DispatchError("the kafka dispatcher is closed" if self._closed else "the kafka dispatcher "
                                "is not started", retryable=not self._closed)
        if not batch:
            return
        loop = self._loop or asyncio.get_running_loop()
        pending = _Batch(loop, len(batch))
        delivered = pending.delivered
        decoded, topic_of = self._decoded, self._topics
        for record in batch:
            topic = topic_of.get(record.record_type) or self.topic(record.record_type)
            value = record.json(self.name) if decoded else record.payload
            while True:
                try:
                    self._producer.produce(topic, value, record.vin, on_delivery=delivered,
                                           headers=metadata_headers(record))
                    break
                except BufferError:
                    # librdkafka's queue is full (queue.buffering.max.messages): wait for
                    # deliveries to make room, without holding the loop.
                    if pending.error is not None:
                        break
                    await asyncio.sleep(0.01)
                except KafkaException as exc:
                    error: KafkaError = exc.args[0]
                    pending.fail(error)
                    break
            if pending.error is not None:
                break
        await pending.future
        error = pending.error
        if error is not None:
            self.last_error = error.str()
            raise DispatchError(f"kafka: {self.servers}: {error.str()}",
                                retryable=error.code() not in _PERMANENT)
        if self._broker_down_since is not None:
            log.info("kafka: delivering again after %.1f s", time.monotonic() - self._broker_down_since)
            self._broker_down_since = None
        self.messages_published += len(batch)

    async def close(self, timeout: float = 5.0) -> None:
        """Deliver what librdkafka still holds for up to `timeout` seconds, then stop."""
        if self._closed:
            return
        self._closed = True
        producer = self._producer
        if producer is None:
            return
        self._stop.set()
        poller = self._poller
        if poller is not None:
            await asyncio.to_thread(poller.join)
        left = await asyncio.to_thread(producer.flush, timeout)
        if left:
            log.warning("kafka: %d record(s) not delivered to %s before shutdown", left, self.servers)
            producer.purge()
            producer.poll(0)


def create(config: ServerConfig) -> KafkaDispatcher:
    return KafkaDispatcher(config.backend("kafka"), config.namespace, decoded=config.transmit_decoded_records)
