"""The zmq dispatcher: settings and key files, topics, and real SUB sockets on loopback
(CURVE with allowed and refused keys, push-back from a full subscriber, reliable mode)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio
from conftest import free_port, server_config_data
from fleetwire.proto import vehicle_data_pb2
from fleetwire.server.config import parse_config
from fleetwire.server.dispatchers import zmq as zmq_backend
from fleetwire.server.dispatch import Dispatcher, DispatchError
from fleetwire.server.dispatch_queue import DispatchQueue
from fleetwire.server.records import Record
from fleetwire.server.dispatchers.registry import build_dispatchers
from fleetwire.server.dispatchers.zmq import (
    Subscriptions,
    ZmqDispatcher,
    ZmqSettings,
    topic,
)

from fleetwire.sim.fleet_pki import FleetPki
from fleetwire.strictjson import ConfigError, Reader

VIN = "5YJ3E1EA7KF000001"
T0 = 1_700_000_000
NS = "tesla_telemetry"


def vehicle_data(n: int, size: int = 0) -> Record:
    message = vehicle_data_pb2.Payload(vin=VIN)
    message.created_at.seconds = T0
    message.data.add(key=vehicle_data_pb2.Soc).value.int_value = n
    if size:
        message.data.add(key=vehicle_data_pb2.Version).value.string_value = "x" * size
    return Record("V", VIN, "vehicle_device", f"tx-{n}", "conn-1", message.SerializeToString(), message,
                  float(T0), float(T0))


def soc(payload: bytes) -> int:
    return vehicle_data_pb2.Payload.FromString(payload).data[0].value.int_value


# -- settings and key files ----------------------------------------------------------


def parse(section: dict[str, Any], base: Path = Path("/"), in_use: bool = True) -> ZmqSettings:
    return zmq_backend.parse_settings(Reader(section, "zmq", [], base), {}, in_use)


def keypair() -> tuple[str, str]:
    public, secret = zmq.curve_keypair()
    return public.decode(), secret.decode()


def write_json(path: Path, data: Any) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def test_the_references_keys_and_defaults() -> None:
    settings = parse({"addr": "tcp://*:5284", "server_key_json_path": "", "allowed_public_keys_json_path": "",
                      "verbose": False})
    assert settings.addr == "tcp://*:5284" and settings.server_key_json_path is None
    assert (settings.send_hwm, settings.publish_timeout_ms, settings.server_secret_key) == (10_000, 5000, b"")
    assert parse({"addr": "ipc:///run/fleet.sock"}).addr == "ipc:///run/fleet.sock"
    assert parse({"addr": "tcp://[::1]:5284"}).addr == "tcp://[::1]:5284"


@pytest.mark.parametrize(("section", "key", "words"), [
    ({}, "zmq.addr", "missing"),
    ({"addr": "localhost:5284"}, "zmq.addr", "tcp://<interface>:<port>"),
    ({"addr": "tcp://*:70000"}, "zmq.addr", "from 1 to 65535"),
    ({"addr": "tcp://*:1", "allowed_public_keys_json_path": "/etc/hostname"}, "zmq.allowed_public_keys_json_path",
     "needs server_key_json_path"),
    ({"addr": "tcp://*:1", "server_key_json_path": "/nonexistent.json"}, "zmq.server_key_json_path", "not found"),
    ({"addr": "tcp://*:1", "send_hwm": 0}, "zmq.send_hwm", "at least 1"),
    ({"addr": "tcp://*:1", "verbose": 1}, "zmq.verbose", "true or false"),
])
def test_invalid_settings_name_the_key(section: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as caught:
        parse(section)
    assert caught.value.key == key


def test_server_key_file(tmp_path: Path) -> None:
    public, secret = keypair()
    path = write_json(tmp_path / "server.json", {"secret": secret, "public": public})
    settings = parse({"addr": "tcp://*:1", "server_key_json_path": path})
    assert settings.server_secret_key == secret.encode() and settings.server_public_key == public.encode()
    assert secret not in repr(settings)
    only_secret = write_json(tmp_path / "secret-only.json", {"secret": secret})
    assert parse({"addr": "tcp://*:1", "server_key_json_path": only_secret}).server_public_key == public.encode()


@pytest.mark.parametrize(("content", "words"), [
    ("not json {", "is not JSON"),
    ('["a list"]', "expected {"),
    ('{"public": "x"}', '"secret" is missing'),
    ('{"secret": "SECRET-too-short", "public": "x"}', '"secret" is not a z85-encoded CURVE key'),
    (None, '"public" is not the public key of "secret"'),
])
def test_server_key_file_errors_never_show_the_secret(tmp_path: Path, content: str | None, words: str) -> None:
    _, secret = keypair()
    other_public, _ = keypair()
    text = content if content is not None else json.dumps({"secret": secret, "public": other_public})
    path = tmp_path / "server.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=words) as caught:
        parse({"addr": "tcp://*:1", "server_key_json_path": str(path)})
    assert caught.value.key == "zmq.server_key_json_path" and str(path) in str(caught.value)
    assert secret not in str(caught.value) and "SECRET" not in str(caught.value)


@pytest.mark.parametrize(("content", "words"), [
    ('{"keys": []}', "expected a list"),
    ("[]", "the list is empty"),
    ('["%s", "short"]', "entry 1 is not a z85-encoded"),
])
def test_allowed_keys_file_errors(tmp_path: Path, content: str, words: str) -> None:
    public, secret = keypair()
    server = write_json(tmp_path / "server.json", {"secret": secret, "public": public})
    allowed = tmp_path / "allowed.json"
    allowed.write_text(content.replace("%s", keypair()[0]))
    with pytest.raises(ConfigError, match=words) as caught:
        parse({"addr": "tcp://*:1", "server_key_json_path": server, "allowed_public_keys_json_path": str(allowed)})
    assert caught.value.key == "zmq.allowed_public_keys_json_path"


def test_key_files_are_read_only_in_use(tmp_path: Path) -> None:
    section = {"addr": "tcp://*:1", "server_key_json_path": "missing.json"}
    assert parse(section, tmp_path, in_use=False).server_key_json_path == tmp_path / "missing.json"


def test_from_a_reference_config_file(fleet_pki: FleetPki) -> None:
    data = server_config_data(fleet_pki, {
        "namespace": NS, "records": {"V": ["zmq"], "alerts": ["zmq"]}, "reliable_ack_sources": {"V": "zmq"},
        "zmq": {"addr": "tcp://127.0.0.1:5284", "server_key_json_path": "", "allowed_public_keys_json_path": "",
                "verbose": False},
    })
    config, warnings = parse_config(data, fleet_pki.directory)
    assert warnings == []
    dispatcher = build_dispatchers(config)["zmq"]
    assert isinstance(dispatcher, ZmqDispatcher) and isinstance(dispatcher, Dispatcher)
    assert dispatcher.namespace == NS and dispatcher._confirm


# -- topics and subscriptions, no sockets ----------------------------------------------


def test_topic_is_namespace_underscore_record_type() -> None:
    assert topic(NS, "V") == b"tesla_telemetry_V"
    assert topic("", "alerts") == b"_alerts"  # as the reference joins an empty namespace


def test_subscriptions_follow_the_xpub_messages() -> None:
    subs = Subscriptions()
    assert not subs.wanted(b"ns_V")
    assert subs.update(b"\x01ns_") == (True, b"ns_")
    assert subs.wanted(b"ns_V") and subs.wanted(b"ns_alerts") and not subs.wanted(b"other_V")
    assert subs.update(b"\x00ns_") == (False, b"ns_") and not subs.wanted(b"ns_V")
    subs.update(b"\x01")  # everything
    assert subs.wanted(b"anything") and subs.update(b"") is None and subs.update(b"\x05x") is None


# -- real sockets ----------------------------------------------------------------------


def settings(**overrides: Any) -> ZmqSettings:
    values: dict[str, Any] = {"addr": "tcp://127.0.0.1:*", "publish_timeout_ms": 1000}
    values.update(overrides)
    return ZmqSettings(**values)


@contextlib.asynccontextmanager
async def running(dispatcher: ZmqDispatcher) -> AsyncIterator[ZmqDispatcher]:
    await dispatcher.start()
    try:
        yield dispatcher
    finally:
        await dispatcher.close()


class Subscriber:
    """An independent SUB socket (optionally a CURVE client) collecting [topic, payload]."""

    def __init__(self, endpoint: str, prefix: bytes = b"", *, server_key: bytes | None = None,
                 keys: tuple[str, str] | None = None, rcvhwm: int | None = None) -> None:
        self.context = zmq.asyncio.Context()
        self.socket = self.context.socket(zmq.SUB)
        if rcvhwm is not None:
            self.socket.rcvhwm = rcvhwm
        if server_key is not None:
            public, secret = keys or keypair()
            self.socket.curve_serverkey = server_key
            self.socket.curve_publickey = public.encode()
            self.socket.curve_secretkey = secret.encode()
        self.socket.connect(endpoint)
        self.socket.subscribe(prefix)
        self.received: list[list[bytes]] = []

    async def read(self, count: int, timeout: float = 10) -> list[list[bytes]]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not await self.socket.poll(remaining * 1000):
                raise AssertionError(f"received {len(self.received)} of {count} messages")
            self.received.append(await self.socket.recv_multipart())
        return self.received

    async def nothing_within(self, seconds: float) -> bool:
        return not await self.socket.poll(seconds * 1000)

    def close(self) -> None:
        self.socket.close(0)
        self.context.term()


async def publish_soon(dispatcher: ZmqDispatcher, batch: list[Record], timeout: float = 5) -> None:
    """Publish, retrying until a subscriber is there (reliable mode) or the send works."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await dispatcher.publish(batch)
            return
        except DispatchError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)


async def until_subscribed(dispatcher: ZmqDispatcher, topic_: bytes = b"tesla_telemetry_V") -> None:
    deadline = time.monotonic() + 5
    while not dispatcher.subscriptions.wanted(topic_):
        assert time.monotonic() < deadline, "the subscription never arrived"
        assert dispatcher._socket is not None
        dispatcher._hear_subscriptions(dispatcher._socket)
        await asyncio.sleep(0.01)


async def test_records_are_two_frame_messages() -> None:
    alert = Record("alerts", VIN, "vehicle_device", "tx-a", "c", b"alert-bytes", None, float(T0), float(T0))
    async with running(ZmqDispatcher(settings(), NS)) as dispatcher:
        sub = Subscriber(dispatcher.endpoint or "")
        try:
            await until_subscribed(dispatcher)
            batch = [vehicle_data(n) for n in range(100)] + [alert]
            await dispatcher.publish(batch)
            got = await sub.read(101)
        finally:
            sub.close()
    assert all(len(m) == 2 for m in got)
    assert [m[0] for m in got] == [b"tesla_telemetry_V"] * 100 + [b"tesla_telemetry_alerts"]
    assert [soc(m[1]) for m in got[:100]] == list(range(100)) and got[100][1] == b"alert-bytes"
    assert dispatcher.messages_published == 101


async def test_decoded_records_are_protobuf_json() -> None:
    record = vehicle_data(7)
    async with running(ZmqDispatcher(settings(), NS, decoded=True)) as dispatcher:
        sub = Subscriber(dispatcher.endpoint or "", b"tesla_telemetry_V")
        try:
            await until_subscribed(dispatcher)
            await dispatcher.publish([record])
            ((frame, payload),) = await sub.read(1)
        finally:
            sub.close()
    assert frame == b"tesla_telemetry_V" and payload == record.json()
    assert json.loads(payload)["data"] == [{"key": "Soc", "value": {"intValue": 7}}]


async def test_unsubscribed_records_are_dropped_unless_reliable() -> None:
    async with running(ZmqDispatcher(settings(), NS)) as lossy:
        await lossy.publish([vehicle_data(1)])
        assert lossy.unsubscribed == 1 and lossy.messages_published == 0
    async with running(ZmqDispatcher(settings(), NS, confirm_subscribers=True)) as reliable:
        with pytest.raises(DispatchError, match="no subscriber of 'tesla_telemetry_V'"):
            await reliable.publish([vehicle_data(1)])
        sub = Subscriber(reliable.endpoint or "", b"tesla_telemetry_alerts")  # another topic: still no one
        other = None
        try:
            await until_subscribed(reliable, b"tesla_telemetry_alerts")
            with pytest.raises(DispatchError, match="no subscriber"):
                await reliable.publish([vehicle_data(1)])
            other = Subscriber(reliable.endpoint or "", b"tesla_telemetry_V")
            await publish_soon(reliable, [vehicle_data(2)])
            assert soc((await other.read(1))[0][1]) == 2
        finally:
            sub.close()
            if other is not None:
                other.close()
        # The subscriber left: records wait again.
        await asyncio.sleep(0.2)
        with pytest.raises(DispatchError, match="no subscriber"):
            await reliable.publish([vehicle_data(3)])


async def test_a_full_subscriber_pushes_back_instead_of_losing_records() -> None:
    """A subscriber that stops reading: sends fail once its queues are full (NODROP), the
    batch fails after publish_timeout, and once it reads again everything arrives, once."""
    big = 64 * 1024
    async with running(ZmqDispatcher(settings(send_hwm=5, publish_timeout_ms=300), NS)) as dispatcher:
        sub = Subscriber(dispatcher.endpoint or "", rcvhwm=5)
        try:
            await until_subscribed(dispatcher)
            batch = [vehicle_data(n, size=big) for n in range(400)]  # 26 MB: more than socket buffers hold
            started = time.monotonic()
            with pytest.raises(DispatchError, match="has not taken a message for 0.3 s"):
                await dispatcher.publish(batch)
            assert time.monotonic() - started < 2 and dispatcher.pushed_back > 0
            sent_first = dispatcher.messages_published
            assert 0 < sent_first < 400
            # The queue retries the rest while the subscriber reads.
            reading = asyncio.ensure_future(sub.read(400, timeout=30))
            await dispatcher.publish(batch[sent_first:])
            got = await reading
        finally:
            sub.close()
    assert [soc(m[1]) for m in got] == list(range(400))


async def test_curve_allowed_and_refused_client_keys(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server_public, server_secret = keypair()
    allowed_keys, refused_keys = keypair(), keypair()
    section = {
        "addr": f"tcp://127.0.0.1:{free_port()}",
        "server_key_json_path": write_json(tmp_path / "server.json", {"secret": server_secret, "public": server_public}),
        "allowed_public_keys_json_path": write_json(tmp_path / "allowed.json", [allowed_keys[0]]),
    }
    dispatcher = ZmqDispatcher(parse(section), NS, confirm_subscribers=True)
    caplog.set_level(logging.WARNING, "fleetwire.dispatch.zmq")
    async with running(dispatcher):
        refused = Subscriber(section["addr"], server_key=server_public.encode(), keys=refused_keys)
        plain = Subscriber(section["addr"])  # no CURVE at all
        try:
            await asyncio.sleep(0.5)
            with pytest.raises(DispatchError, match="no subscriber"):  # neither got in
                await dispatcher.publish([vehicle_data(1)])
            allowed = Subscriber(section["addr"], server_key=server_public.encode(), keys=allowed_keys)
            try:
                await publish_soon(dispatcher, [vehicle_data(2)])
                assert soc((await allowed.read(1))[0][1]) == 2
            finally:
                allowed.close()
            assert await refused.nothing_within(0.2) and await plain.nothing_within(0.1)
        finally:
            refused.close()
            plain.close()
    assert any("not in allowed_public_keys_json_path" in r.getMessage() for r in caplog.records)
    assert all(server_secret not in r.getMessage() for r in caplog.records)


async def test_curve_without_an_allowed_list_lets_any_client_in(tmp_path: Path) -> None:
    server_public, server_secret = keypair()
    section = {"addr": f"tcp://127.0.0.1:{free_port()}",
               "server_key_json_path": write_json(tmp_path / "s.json", {"secret": server_secret, "public": server_public})}
    async with running(ZmqDispatcher(parse(section), NS, confirm_subscribers=True)) as dispatcher:
        sub = Subscriber(section["addr"], server_key=server_public.encode())
        wrong_server = Subscriber(section["addr"], server_key=keypair()[0].encode())  # a wrong server key
        try:
            await publish_soon(dispatcher, [vehicle_data(5)])
            assert soc((await sub.read(1))[0][1]) == 5
            assert await wrong_server.nothing_within(0.2)
        finally:
            sub.close()
            wrong_server.close()


async def test_address_in_use_is_retried_not_fatal() -> None:
    port = free_port()
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", port))
    blocker.listen()
    dispatcher = ZmqDispatcher(settings(addr=f"tcp://127.0.0.1:{port}"), NS)
    async with running(dispatcher):
        with pytest.raises(DispatchError, match="cannot bind"):
            await dispatcher.publish([vehicle_data(1)])
        blocker.close()
        dispatcher._next_bind = 0.0
        await dispatcher.publish([vehicle_data(1)])
        assert dispatcher.endpoint == f"tcp://127.0.0.1:{port}"


async def test_verbose_logs_socket_events(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "fleetwire.dispatch.zmq")
    async with running(ZmqDispatcher(settings(verbose=True), NS)) as dispatcher:
        sub = Subscriber(dispatcher.endpoint or "")
        try:
            await until_subscribed(dispatcher, b"")
            for _ in range(100):
                if any("EVENT_ACCEPTED" in r.getMessage() for r in caplog.records):
                    break
                await asyncio.sleep(0.02)
        finally:
            sub.close()
    messages = [r.getMessage() for r in caplog.records]
    assert any("EVENT_ACCEPTED" in m for m in messages) and any("subscribed: b''" in m for m in messages)


async def test_one_sender_for_many_producers() -> None:
    """Records offered by many tasks at once go out through the queue's one worker."""
    async with running(ZmqDispatcher(settings(), NS, confirm_subscribers=True)) as dispatcher:
        sub = Subscriber(dispatcher.endpoint or "")
        queue = DispatchQueue(dispatcher, batch_size=64)
        await queue.start()
        try:
            await until_subscribed(dispatcher, b"")
            loop = asyncio.get_running_loop()

            async def producer(k: int) -> list[asyncio.Future[None]]:
                waiters = []
                for n in range(100):
                    waiter = loop.create_future()
                    queue.offer(vehicle_data(k * 100 + n), waiter)
                    waiters.append(waiter)
                    await asyncio.sleep(0)
                return waiters

            waiters = [w for ws in await asyncio.gather(*(producer(k) for k in range(50))) for w in ws]
            await asyncio.wait_for(asyncio.gather(*waiters), 10)
            got = await sub.read(5000)
        finally:
            await queue.close()
            sub.close()
    assert sorted(soc(m[1]) for m in got) == list(range(5000))


def _nice(tid: int) -> int:
    stat = Path(f"/proc/self/task/{tid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[16])  # field 19, nice


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="threads are listed in /proc on Linux only")
async def test_libzmq_io_thread_runs_below_the_event_loop() -> None:
    """libzmq's I/O thread, woken by each batch, would preempt the event loop on a shared core
    and write a few messages per system call; at nice 19 it writes what piled up."""
    from fleetwire.server.dispatchers.zmq.threads import IO_THREAD_PREFIX, io_threads, thread_ids

    before = thread_ids()
    async with running(ZmqDispatcher(settings(), NS)) as dispatcher:
        ours = io_threads(before)
        assert ours, "the dispatcher's context started no I/O thread"
        assert all(_nice(tid) == 19 for tid in ours)
        assert os.getpriority(os.PRIO_PROCESS, 0) == 0  # the event loop's thread is left alone
        sub = Subscriber(dispatcher.endpoint or "")
        try:
            await until_subscribed(dispatcher)
            await dispatcher.publish([vehicle_data(n) for n in range(50)])
            assert [soc(m[1]) for m in await sub.read(50)] == list(range(50))
        finally:
            sub.close()
    names = {Path(f"/proc/self/task/{tid}/comm").read_text().strip() for tid in thread_ids() - before}
    assert not any(name.startswith(IO_THREAD_PREFIX) for name in names)  # closed with its context
