"""The MQTT dispatcher: the reference's topics and payloads, against a real mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import Callable
from typing import Any

import aiomqtt
import pytest
from conftest import Mosquitto, MosquittoFactory, free_port
from fleetwire.proto import vehicle_alert_pb2, vehicle_connectivity_pb2, vehicle_data_pb2, vehicle_error_pb2
from fleetwire.server.dispatch import Dispatcher, DispatchError
from fleetwire.server.dispatch_queue import DispatchQueue
from fleetwire.server.records import Record
from fleetwire.server.dispatchers.mqtt import MqttConfig, MqttDispatcher
from fleetwire.server.mqtt_layout import mqtt_messages, value_json

VIN = "5YJ3E1EA7KF000001"
T0 = 1_700_000_000  # 2023-11-14T22:13:20Z

# -- records -------------------------------------------------------------------------


def record(record_type: str, message: Any, txid: str = "tx") -> Record:
    return Record(record_type, VIN, "vehicle_device", txid, "conn-1", message.SerializeToString(), message,
                  float(T0), float(T0))


def vehicle_data(**values: Callable[[Any], None]) -> Record:
    """A V record with one datum per keyword: Field name → a function filling the Value."""
    message = vehicle_data_pb2.Payload(vin=VIN)
    message.created_at.seconds = T0
    for field, fill in values.items():
        fill(message.data.add(key=vehicle_data_pb2.Field.Value(field)).value)
    return record("V", message)


def connectivity(connection_id: str, status: int = vehicle_connectivity_pb2.CONNECTED) -> Record:
    message = vehicle_connectivity_pb2.VehicleConnectivity(
        vin=VIN, connection_id=connection_id, status=status, network_interface="wifi"
    )
    message.created_at.seconds = T0
    return record("connectivity", message, txid=connection_id)


def alerts() -> Record:
    message = vehicle_alert_pb2.VehicleAlerts(vin=VIN)
    older = message.alerts.add(name="BMS_a066", audiences=[vehicle_alert_pb2.Customer, vehicle_alert_pb2.Service])
    older.started_at.seconds = T0 - 60
    older.ended_at.seconds = T0 - 30
    newer = message.alerts.add(name="BMS_a066", audiences=[vehicle_alert_pb2.Customer])
    newer.started_at.seconds = T0
    message.alerts.add(name="NeverStarted")
    return record("alerts", message)


def errors() -> Record:
    message = vehicle_error_pb2.VehicleErrors(vin=VIN)
    tagged = message.errors.add(name="uds_timeout", body="no reply", tags={"ecu": "vcfront"})
    tagged.created_at.seconds = T0
    message.errors.add(name="bare")
    return record("errors", message)


def decoded(messages: list[tuple[str, bytes]]) -> dict[str, Any]:
    return {topic: json.loads(payload) for topic, payload in messages}


# -- payloads, no broker -------------------------------------------------------------


def set_attr(name: str, value: Any) -> Callable[[Any], None]:
    return lambda v: setattr(v, name, value)


def test_vehicle_data_one_message_per_field_with_the_values_json() -> None:
    def location(v: Any) -> None:
        v.location_value.latitude, v.location_value.longitude = 37.41, -122.14

    def doors(v: Any) -> None:
        v.door_value.DriverFront = True
        v.door_value.TrunkRear = True

    def tires(v: Any) -> None:
        v.tire_location_value.front_left = True

    def time_of_day(v: Any) -> None:
        v.time_value.hour, v.time_value.minute = 7, 5

    rec = vehicle_data(
        VehicleSpeed=set_attr("float_value", 12.3),
        Odometer=set_attr("double_value", 12345.678),
        Soc=set_attr("int_value", 80),
        EstBatteryRange=set_attr("long_value", 2**40),
        Version=set_attr("string_value", "2025.2.6 abc"),
        ChargeEnableRequest=set_attr("boolean_value", False),
        Location=location,
        Gear=set_attr("shift_state_value", vehicle_data_pb2.ShiftStateD),
        ChargeState=set_attr("charging_value", vehicle_data_pb2.ChargeStateUnknown),
        DoorState=doors,
        TpmsHardWarnings=tires,
        ScheduledChargingStartTime=time_of_day,
        BMSState=set_attr("invalid", True),
        RatedRange=set_attr("float_value", float("nan")),
    )
    messages = mqtt_messages(rec, "fleet")
    topics = [topic for topic, _ in messages]
    assert all(topic.startswith(f"fleet/{VIN}/v/") for topic in topics) and len(topics) == 14
    raw = dict(messages)
    assert raw[f"fleet/{VIN}/v/VehicleSpeed"] == b"12.3"  # float32 printed as the vehicle sent it
    assert raw[f"fleet/{VIN}/v/Gear"] == b'"ShiftStateD"'
    assert raw[f"fleet/{VIN}/v/Location"] == b'{"latitude":37.41,"longitude":-122.14}'
    assert raw[f"fleet/{VIN}/v/DoorState"] == (
        b'{"DriverFront":true,"DriverRear":false,"PassengerFront":false,'
        b'"PassengerRear":false,"TrunkFront":false,"TrunkRear":true}'
    )
    values = {topic.rsplit("/", 1)[1]: value for topic, value in decoded(messages).items()}
    assert values == {
        "VehicleSpeed": 12.3,
        "Odometer": 12345.678,
        "Soc": 80,
        "EstBatteryRange": 2**40,
        "Version": "2025.2.6 abc",
        "ChargeEnableRequest": False,
        "Location": {"latitude": 37.41, "longitude": -122.14},
        "Gear": "ShiftStateD",
        "ChargeState": "ChargeStateUnknown",  # an enum at its zero value is still sent
        "DoorState": {"DriverFront": True, "DriverRear": False, "PassengerFront": False,
                      "PassengerRear": False, "TrunkFront": False, "TrunkRear": True},
        "TpmsHardWarnings": {"front_left": True},
        "ScheduledChargingStartTime": "07:05:00",
        "BMSState": None,
        "RatedRange": None,
    }


def test_value_json_of_an_empty_value_and_unknown_enum_number() -> None:
    assert value_json(vehicle_data_pb2.Value()) == {}
    value = vehicle_data_pb2.Value(shift_state_value=99)  # a newer firmware's enum value
    assert value_json(value) == 99


def test_repeated_field_publishes_the_last_value_once() -> None:
    rec = vehicle_data(Soc=set_attr("int_value", 1))
    datum = rec.message.data.add(key=vehicle_data_pb2.Soc)
    datum.value.int_value = 2
    assert mqtt_messages(rec, "fleet") == [(f"fleet/{VIN}/v/Soc", b"2")]


def test_unknown_field_number_is_published_under_its_own_name() -> None:
    message = vehicle_data_pb2.Payload(vin=VIN)
    message.data.add(key=999).value.int_value = 5  # type: ignore[arg-type]
    assert mqtt_messages(record("V", message), "fleet") == [(f"fleet/{VIN}/v/UnknownField_999", b"5")]


def test_alerts_current_is_the_latest_started_and_history_lists_all() -> None:
    messages = decoded(mqtt_messages(alerts(), "fleet"))
    prefix = f"fleet/{VIN}/alerts"
    assert set(messages) == {
        f"{prefix}/BMS_a066/current", f"{prefix}/BMS_a066/history", f"{prefix}/NeverStarted/history"
    }
    assert messages[f"{prefix}/BMS_a066/current"] == {"Audiences": ["Customer"], "StartedAt": "2023-11-14T22:13:20Z"}
    assert messages[f"{prefix}/BMS_a066/history"] == [
        {"Audiences": ["Customer", "Service"], "StartedAt": "2023-11-14T22:12:20Z", "EndedAt": "2023-11-14T22:12:50Z"},
        {"Audiences": ["Customer"], "StartedAt": "2023-11-14T22:13:20Z"},
    ]
    assert messages[f"{prefix}/NeverStarted/history"] == [{"Audiences": None}]


def test_errors_one_message_per_error() -> None:
    messages = decoded(mqtt_messages(errors(), "fleet"))
    assert messages == {
        f"fleet/{VIN}/errors/uds_timeout": {"Body": "no reply", "Tags": {"ecu": "vcfront"},
                                            "CreatedAt": "2023-11-14T22:13:20Z"},
        f"fleet/{VIN}/errors/bare": {"Body": "", "Tags": None},
    }


def test_connectivity() -> None:
    assert mqtt_messages(connectivity("c-1"), "fleet") == [(
        f"fleet/{VIN}/connectivity",
        b'{"ConnectionId":"c-1","CreatedAt":"2023-11-14T22:13:20Z","Status":"CONNECTED"}',
    )]
    unset = vehicle_connectivity_pb2.VehicleConnectivity(vin=VIN, status=vehicle_connectivity_pb2.DISCONNECTED)
    created = json.loads(mqtt_messages(record("connectivity", unset), "fleet")[0][1])["CreatedAt"]
    assert created == "1970-01-01T00:00:00Z"


def test_connectivity_says_when_the_vin_comes_online_and_goes_offline() -> None:
    """Several sockets per VIN: the body adds what the event means for the vehicle."""
    def body(**fields: Any) -> dict[str, Any]:
        message = vehicle_connectivity_pb2.VehicleConnectivity(vin=VIN, connection_id="c-2", **fields)
        return json.loads(mqtt_messages(record("connectivity", message), "fleet")[0][1])

    first = body(status=vehicle_connectivity_pb2.CONNECTED, vehicle_txid="car-1", vin_connections=1,
                 presence=vehicle_connectivity_pb2.PRESENCE_ONLINE)
    assert (first["Presence"], first["VinConnections"], first["VehicleTxid"]) == ("ONLINE", 1, "car-1")
    second = body(status=vehicle_connectivity_pb2.CONNECTED, vin_connections=2)
    assert "Presence" not in second and second["VinConnections"] == 2 and "VehicleTxid" not in second
    last = body(status=vehicle_connectivity_pb2.DISCONNECTED, presence=vehicle_connectivity_pb2.PRESENCE_OFFLINE)
    assert (last["Presence"], last["VinConnections"]) == ("OFFLINE", 0)


def test_wildcards_in_names_cannot_break_the_topic() -> None:
    message = vehicle_error_pb2.VehicleErrors(vin=VIN)
    message.errors.add(name="a+b#c")
    assert mqtt_messages(record("errors", message), "fleet")[0][0] == f"fleet/{VIN}/errors/a_b_c"


def test_other_record_types_have_no_topic() -> None:
    assert mqtt_messages(record("metrics", vehicle_data_pb2.Payload()), "fleet") == []


# -- against mosquitto ---------------------------------------------------------------


def mqtt_config(port: int, **overrides: Any) -> MqttConfig:
    settings: dict[str, Any] = dict(
        broker=f"127.0.0.1:{port}", topic_base="fleet", qos=1, publish_timeout_ms=1000,
        connect_timeout_ms=2000, connect_retry_interval_ms=100, keep_alive_seconds=5,
    )
    settings.update(overrides)
    return MqttConfig(**settings)


class Subscriber:
    """Collects (topic, payload, retain) from a broker; with `identifier` it keeps a
    persistent session and reconnects across broker restarts."""

    def __init__(self, port: int, topic: str = "fleet/#", identifier: str | None = None) -> None:
        self.port = port
        self.topic = topic
        self.identifier = identifier
        self.received: list[tuple[str, bytes, bool]] = []
        self.subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Subscriber:
        self._task = asyncio.ensure_future(self._run())
        await asyncio.wait_for(self.subscribed.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1", self.port, identifier=self.identifier,
                    clean_session=False if self.identifier else None,
                ) as client:
                    await client.subscribe(self.topic, qos=1)
                    self.subscribed.set()
                    async for message in client.messages:
                        payload = message.payload
                        assert isinstance(payload, bytes)
                        self.received.append((str(message.topic), payload, message.retain))
            except aiomqtt.MqttError:
                if self.identifier is None:
                    raise
                await asyncio.sleep(0.1)

    async def wait_for(self, done: Callable[[], bool], timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; received {len(self.received)} messages")
            await asyncio.sleep(0.01)


def test_is_a_dispatcher() -> None:
    async def build() -> MqttDispatcher:
        return MqttDispatcher(mqtt_config(1883))

    assert isinstance(asyncio.run(build()), Dispatcher)


async def test_publishes_the_reference_topics(mosquitto: Mosquitto) -> None:
    park = set_attr("shift_state_value", vehicle_data_pb2.ShiftStateP)
    batch = [vehicle_data(Soc=set_attr("int_value", 80), Gear=park), alerts(), errors(), connectivity("c-1")]
    expected = {}
    for rec in batch:
        expected.update(mqtt_messages(rec, "fleet"))
    dispatcher = MqttDispatcher(mqtt_config(mosquitto.port))
    await dispatcher.start()
    async with Subscriber(mosquitto.port) as subscriber:
        await dispatcher.publish(batch)
        await subscriber.wait_for(lambda: len(subscriber.received) >= len(expected))
        await asyncio.sleep(0.1)
    got = {topic: payload for topic, payload, _ in subscriber.received}
    assert len(subscriber.received) == len(expected) == 8
    assert got == expected
    assert got[f"fleet/{VIN}/v/Soc"] == b"80" and got[f"fleet/{VIN}/v/Gear"] == b'"ShiftStateP"'
    assert dispatcher.messages_published == 8
    await dispatcher.close()


async def test_retained_messages_reach_later_subscribers(mosquitto: Mosquitto) -> None:
    dispatcher = MqttDispatcher(mqtt_config(mosquitto.port, retained=True, qos=2))
    await dispatcher.start()
    await dispatcher.publish([connectivity("c-9")])
    async with Subscriber(mosquitto.port) as late:
        await late.wait_for(lambda: len(late.received) == 1)
    assert late.received[0][0] == f"fleet/{VIN}/connectivity" and late.received[0][2] is True
    await dispatcher.close()


async def test_credentials_are_used(mosquitto_factory: MosquittoFactory) -> None:
    broker = mosquitto_factory(passwords={"fleet": "s3cret"})
    wrong = MqttDispatcher(mqtt_config(broker.port, username="fleet", password="nope", publish_timeout_ms=300))
    await wrong.start()
    with pytest.raises(DispatchError, match="unavailable"):
        await wrong.publish([connectivity("c-1")])
    assert wrong.last_error and "authori" in wrong.last_error.lower()
    await wrong.close()
    right = MqttDispatcher(mqtt_config(broker.port, username="fleet", password="s3cret", client_id="fleetwire-a"))
    await right.start()
    await right.publish([connectivity("c-2")])
    assert right.connects == 1
    await right.close()


async def test_broker_down_is_a_dispatch_error_then_recovers(mosquitto: Mosquitto) -> None:
    mosquitto.stop()
    dispatcher = MqttDispatcher(mqtt_config(mosquitto.port, publish_timeout_ms=300))
    await dispatcher.start()
    started = time.monotonic()
    with pytest.raises(DispatchError, match="unavailable"):
        await dispatcher.publish([connectivity("c-1")])
    assert time.monotonic() - started < 2
    mosquitto.start()
    async with Subscriber(mosquitto.port) as subscriber:
        for _ in range(50):  # the connector retries every 100 ms
            with contextlib.suppress(DispatchError):
                await dispatcher.publish([connectivity("c-2")])
                break
        await subscriber.wait_for(lambda: len(subscriber.received) == 1)
    await dispatcher.close()


async def test_silent_broker_times_out_and_the_connection_is_renewed(mosquitto: Mosquitto) -> None:
    """A broker that stops answering but keeps the TCP connection open (frozen with
    SIGSTOP): the publish fails after publish_timeout and a fresh connection is made."""
    dispatcher = MqttDispatcher(mqtt_config(mosquitto.port, publish_timeout_ms=300))
    await dispatcher.start()
    await dispatcher.publish([connectivity("c-0")])
    assert mosquitto.proc is not None
    mosquitto.proc.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(DispatchError, match="failed"):
            await dispatcher.publish([connectivity(f"c-{n}") for n in range(1, 30)])
        assert 0.25 < time.monotonic() - started < 2
    finally:
        mosquitto.proc.send_signal(signal.SIGCONT)
    for _ in range(50):
        with contextlib.suppress(DispatchError):
            await dispatcher.publish([connectivity("c-99")])
            break
    assert dispatcher.connects == 2
    await dispatcher.close()


async def test_close_while_the_broker_is_down_is_prompt() -> None:
    dispatcher = MqttDispatcher(mqtt_config(free_port()))
    await dispatcher.start()
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await dispatcher.close()
    assert time.monotonic() - started < 2
    with pytest.raises(DispatchError):
        await dispatcher.publish([connectivity("c-1")])


async def test_broker_restart_loses_no_confirmed_record(mosquitto: Mosquitto) -> None:
    """Records stream through a lossless queue while the broker stops and comes back on
    the same port: nothing is confirmed while it is down, and every confirmed record
    reaches the (persistent) subscriber."""
    total = 400
    dispatcher = MqttDispatcher(mqtt_config(mosquitto.port, publish_timeout_ms=500))
    queue = DispatchQueue(dispatcher, maxsize=10_000, batch_size=20, retry_initial=0.05, retry_max=0.2)
    loop = asyncio.get_running_loop()
    confirmed: dict[str, float] = {}

    def on_done(connection_id: str) -> Callable[[asyncio.Future[None]], None]:
        def done(fut: asyncio.Future[None]) -> None:
            if not fut.cancelled() and fut.exception() is None:
                confirmed[connection_id] = time.monotonic()
        return done

    async def produce() -> None:
        for n in range(total):
            waiter = loop.create_future()
            waiter.add_done_callback(on_done(f"c{n}"))
            assert queue.offer(connectivity(f"c{n}"), waiter)
            await asyncio.sleep(0.003)

    async with Subscriber(mosquitto.port, f"fleet/{VIN}/connectivity", identifier="fleetwire-test-sub") as sub:
        await queue.start()
        producer = asyncio.ensure_future(produce())
        await sub.wait_for(lambda: len(confirmed) >= 100)
        await asyncio.to_thread(mosquitto.stop)
        down_since = time.monotonic()
        await asyncio.sleep(0.8)
        assert not producer.done()  # records keep coming in while the broker is away
        back_at = time.monotonic()
        await asyncio.to_thread(mosquitto.start)
        await asyncio.wait_for(producer, 30)
        await sub.wait_for(lambda: len(confirmed) == total, timeout=30)
        await sub.wait_for(
            lambda: set(confirmed) <= {json.loads(p)["ConnectionId"] for _, p, _ in sub.received}, timeout=15
        )
        received = {json.loads(payload)["ConnectionId"] for _, payload, _ in sub.received}
    # A PUBACK already on the wire when the broker stopped may be read just after: allow 0.1 s.
    during_outage = [cid for cid, at in confirmed.items() if down_since + 0.1 < at < back_at]
    assert during_outage == []
    assert set(confirmed) <= received
    assert len(received) == total
    assert dispatcher.connects >= 2 and queue.failures >= 1 and queue.dropped == 0
    await queue.close()
