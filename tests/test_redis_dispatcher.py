"""The redis dispatcher: settings as the reference reads them, and real redis-servers
(one, with AUTH, with TLS, a 3-node cluster, one restarted mid-stream)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Self

import pytest
import redis.asyncio as aioredis
from brokers.redis_server import RedisCluster, RedisServer, redis_server_binary
from fleetwire import pki
from fleetwire.proto import vehicle_data_pb2
from fleetwire.server.config import parse_config
from fleetwire.server.dispatchers import registry
from fleetwire.server.dispatch import Dispatcher, DispatchError
from fleetwire.server.dispatch_queue import DispatchQueue
from fleetwire.server.records import Record
from fleetwire.server.dispatchers.redis import (
    RedisDispatcher,
    RedisSettings,
    parse_settings,
    subscriber_set,
    vin_channel,
)
from fleetwire.strictjson import ConfigError, Reader

from conftest import server_config_data

VIN = "5YJ3E1EA7KF000001"
T0 = 1_700_000_000.0

pytestmark = pytest.mark.skipif(redis_server_binary() is None, reason="redis-server is not installed")


def settings(section: dict[str, Any], in_use: bool = True, env: dict[str, str] | None = None,
             warnings: list[str] | None = None, base: Path = Path(".")) -> RedisSettings:
    return parse_settings(Reader(section, "redis", warnings if warnings is not None else [], base, env or {}),
                          env or {}, in_use)


def record(n: int, vin: str = VIN, record_type: str = "V") -> Record:
    message = vehicle_data_pb2.Payload(vin=vin)
    message.created_at.seconds = int(T0)
    message.data.add(key=vehicle_data_pb2.VehicleSpeed).value.float_value = float(n)
    return Record(record_type, vin, "vehicle_device", f"tx-{n}", "conn-1", message.SerializeToString(), message,
                  T0, T0)


# -- settings ------------------------------------------------------------------------


def test_the_reference_section_is_read_with_nanosecond_durations() -> None:
    s = settings({"addrs": ["redis:6379"], "username": "u", "password": "p", "db": 2,
                  "publish_timeout": 2_500_000_000, "pool": {"pool_size": 7, "read_timeout": 1_000_000_000},
                  "publish_vin_topics": True, "subscriber_set_prefix": ""})
    assert s.addrs == ("redis:6379",) and s.db == 2 and not s.cluster
    assert s.publish_timeout_s == 2.5 and s.pool == {"pool_size": 7, "read_timeout": 1_000_000_000}
    assert settings({"addrs": ["r:1"], "publish_vin_topics": True}).publish_timeout_s == 5.0  # 0: the reference's 5 s


def test_one_of_the_two_modes_is_required_and_named() -> None:
    with pytest.raises(ConfigError) as caught:
        settings({"addrs": ["redis:6379"]})
    assert caught.value.key == "redis"
    assert "redis requires publish_vin_topics or subscriber_set_prefix" in str(caught.value)
    assert "redis.publish_vin_topics" in caught.value.message and "redis.subscriber_set_prefix" in caught.value.message
    assert settings({"addrs": ["redis:6379"]}, in_use=False).addrs == ("redis:6379",)


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"publish_vin_topics": True}, "redis.addrs"),
        ({"addrs": ["redis:notaport"], "publish_vin_topics": True}, "redis.addrs[0]"),
        ({"addrs": ["r:1"], "publish_vin_topics": True, "publish_timeout": 1.5}, "redis.publish_timeout"),
        ({"addrs": ["r:1"], "publish_vin_topics": True, "pool": {"read_timeout": -1}}, "redis.pool.read_timeout"),
        ({"addrs": ["r:1"], "publish_vin_topics": "yes"}, "redis.publish_vin_topics"),
        ({"addrs": ["r:1", "r:2"], "publish_vin_topics": True, "db": 3}, "redis.db"),
        ({"addrs": ["r:1"], "publish_vin_topics": True, "tls": {"ca_file": "/no/such/ca.pem"}}, "redis.tls.ca_file"),
    ],
)
def test_errors_name_the_key(section: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(section)
    assert caught.value.key == key


def test_redis_password_in_the_environment_overrides_and_is_never_echoed() -> None:
    s = settings({"addrs": ["r:1"], "publish_vin_topics": True, "password": "from-file"}, env={"REDIS_PASSWORD": "env"})
    assert s.password == "env"
    with pytest.raises(ConfigError) as caught:
        settings({"addrs": ["r:1"], "publish_vin_topics": True, "password": ["hunter2"]})
    assert "hunter2" not in str(caught.value)


def test_ignored_pool_settings_warn_only_when_set() -> None:
    warnings: list[str] = []
    settings({"addrs": ["r:1"], "publish_vin_topics": True,
              "pool": {"min_idle_conns": 0, "conn_max_lifetime": 60_000_000_000}}, warnings=warnings)
    assert len(warnings) == 1 and warnings[0].startswith("redis.pool.conn_max_lifetime")


def test_several_addrs_or_cluster_mode_make_a_cluster_client() -> None:
    assert settings({"addrs": ["a:1", "b:2"], "publish_vin_topics": True}).cluster
    assert settings({"addrs": ["a:1"], "cluster_mode": True, "publish_vin_topics": True}).cluster


def test_addressing() -> None:
    assert vin_channel("fleet", "V", VIN) == "fleet_V_{5YJ3E1EA7KF000001}"
    assert subscriber_set("subs", "fleet", "alerts", VIN) == "subs_fleet_alerts_{5YJ3E1EA7KF000001}"


def test_a_reference_config_json_runs_unchanged(fleet_pki: Any) -> None:
    data = server_config_data(fleet_pki, {
        "records": {"V": ["redis"]},
        "reliable_ack_sources": {"V": "redis"},
        "redis": {"addrs": ["redis:6379"], "username": "", "password": "", "db": 0,
                  "tls": {"ca_file": "", "server_cert": "", "server_key": ""},
                  "override_tls_server_name": False, "cluster_mode": False, "publish_timeout": 0,
                  "pool": {"pool_size": 0, "min_idle_conns": 0, "max_idle_conns": 0, "max_active_conns": 0,
                           "read_timeout": 0, "write_timeout": 0, "pool_timeout": 0,
                           "conn_max_idle_time": 0, "conn_max_lifetime": 0},
                  "publish_vin_topics": True, "subscriber_set_prefix": ""},
    })
    config, warnings = parse_config(data, fleet_pki.directory)
    assert warnings == []
    dispatcher = registry.build_dispatchers(config)["redis"]
    assert isinstance(dispatcher, RedisDispatcher) and isinstance(dispatcher, Dispatcher)


# -- real servers --------------------------------------------------------------------


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.kill()


class Subscriber:
    """PSUBSCRIBEs `pattern` and keeps (channel, payload); reconnects (every 20 ms) when
    the server goes away. `subscribed` is set while a subscription is live."""

    def __init__(self, url: str, pattern: str = "*", **kwargs: Any) -> None:
        self.url, self.pattern, self.kwargs = url, pattern, kwargs
        self.received: list[tuple[str, bytes]] = []
        self.subscribed = asyncio.Event()
        self.subscriptions = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
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
            client = aioredis.Redis.from_url(self.url, socket_connect_timeout=1, **self.kwargs)
            try:
                pubsub = client.pubsub()
                await pubsub.psubscribe(self.pattern)
                self.subscriptions += 1
                self.subscribed.set()
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None and message["type"] == "pmessage":
                        self.received.append((message["channel"].decode(), message["data"]))
            except (OSError, aioredis.ConnectionError, aioredis.TimeoutError):
                self.subscribed.clear()
                await asyncio.sleep(0.02)
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()

    async def wait_for(self, done: Callable[[], bool], timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"timed out with {len(self.received)} message(s) received"
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def started(dispatcher: RedisDispatcher) -> AsyncIterator[RedisDispatcher]:
    await dispatcher.start()
    try:
        yield dispatcher
    finally:
        await dispatcher.close()


async def test_publish_vin_topics_reach_a_pattern_subscriber(redis_server: RedisServer) -> None:
    s = settings({"addrs": [redis_server.addr], "publish_vin_topics": True})
    async with Subscriber(f"redis://{redis_server.addr}") as sub, started(RedisDispatcher(s, "fleet")) as d:
        await d.publish([record(n) for n in range(100)] + [record(1, vin="OTHERVIN000000001", record_type="alerts")])
        await sub.wait_for(lambda: len(sub.received) == 101)
    channels = [c for c, _ in sub.received]
    assert channels[:100] == ["fleet_V_{5YJ3E1EA7KF000001}"] * 100
    assert channels[100] == "fleet_alerts_{OTHERVIN000000001}"
    assert [vehicle_data_pb2.Payload.FromString(p).data[0].value.float_value for _, p in sub.received[:100]] == [
        float(n) for n in range(100)]  # in order, protobuf
    assert d.unheard == 0 and d.messages_published == 101


async def test_decoded_records_are_protobuf_json(redis_server: RedisServer) -> None:
    s = settings({"addrs": [redis_server.addr], "publish_vin_topics": True})
    async with Subscriber(f"redis://{redis_server.addr}") as sub, started(RedisDispatcher(s, "ns", decoded=True)) as d:
        r = record(5)
        await d.publish([r])
        await sub.wait_for(lambda: len(sub.received) == 1)
    assert sub.received[0][1] == r.json()


async def test_subscriber_sets_publish_to_their_live_members_and_purge_the_expired(redis_server: RedisServer) -> None:
    client = aioredis.Redis.from_url(f"redis://{redis_server.addr}")
    key = subscriber_set("subs", "fleet", "V", VIN)
    now = int(time.time())
    await client.zadd(key, {"app-a": now + 3600, "app-b": now + 3600, "gone": now - 10})
    s = settings({"addrs": [redis_server.addr], "subscriber_set_prefix": "subs", "publish_vin_topics": True})
    async with Subscriber(f"redis://{redis_server.addr}") as sub, started(RedisDispatcher(s, "fleet")) as d:
        await d.publish([record(1), record(2, vin="NOSUBSCRIBERS0001")])
        await sub.wait_for(lambda: len(sub.received) == 4)
        await asyncio.sleep(0.1)
    assert sorted(c for c, _ in sub.received) == [
        "app-a", "app-b", "fleet_V_{5YJ3E1EA7KF000001}", "fleet_V_{NOSUBSCRIBERS0001}"]
    assert await client.zrange(key, 0, -1) == [b"app-a", b"app-b"]  # the expired lease was removed
    # Set only: a vehicle no one subscribed to goes nowhere.
    s = settings({"addrs": [redis_server.addr], "subscriber_set_prefix": "subs"})
    async with Subscriber(f"redis://{redis_server.addr}") as sub, started(RedisDispatcher(s, "fleet")) as d:
        await d.publish([record(3), record(4, vin="NOSUBSCRIBERS0001")])
        await sub.wait_for(lambda: len(sub.received) == 2)
    assert sorted(c for c, _ in sub.received) == ["app-a", "app-b"]
    await client.aclose()


async def test_password_is_used(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "auth", password="s3cret") as server:
        wrong = RedisDispatcher(settings({"addrs": [server.addr], "publish_vin_topics": True, "password": "nope"}))
        async with started(wrong):
            with pytest.raises(DispatchError):
                await wrong.publish([record(1)])
        s = settings({"addrs": [server.addr], "publish_vin_topics": True, "password": "nope"},
                     env={"REDIS_PASSWORD": "s3cret"})
        async with Subscriber(f"redis://:s3cret@{server.addr}") as sub, started(RedisDispatcher(s, "fleet")) as d:
            await d.publish([record(1)])
            await sub.wait_for(lambda: len(sub.received) == 1)


async def test_tls_with_a_client_certificate(tmp_path: Path) -> None:
    ca = pki.make_ca("redis test CA")
    ca_file = pki.write_pem(tmp_path / "ca.pem", ca.cert_pem)
    server_cert, server_key = pki.write_bundle(pki.make_server_cert(ca, ["localhost", "127.0.0.1"]),
                                               tmp_path / "server.pem", tmp_path / "server.key")
    client_cert, client_key = pki.write_bundle(pki.make_vehicle_cert(ca, "redis-client"),
                                               tmp_path / "client.pem", tmp_path / "client.key")
    with RedisServer(tmp_path / "tls", tls=(server_cert, server_key, ca_file)) as server:
        section = {"addrs": [server.addr], "publish_vin_topics": True,
                   "tls": {"ca_file": str(ca_file), "server_cert": str(client_cert), "server_key": str(client_key)}}
        url = f"rediss://{server.addr}"
        tls = {"ssl_ca_certs": str(ca_file), "ssl_certfile": str(client_cert), "ssl_keyfile": str(client_key)}
        async with Subscriber(url, **tls) as sub, started(RedisDispatcher(settings(section), "fleet")) as d:
            await d.publish([record(1)])
            await sub.wait_for(lambda: len(sub.received) == 1)
            # The server's certificate names 127.0.0.1; `override_tls_server_name` checks every
            # connection against the first address' host, the one it names here.
            named = RedisDispatcher(settings({**section, "override_tls_server_name": True}), "fleet")
            async with started(named):
                await named.publish([record(2)])
            await sub.wait_for(lambda: len(sub.received) == 2)
        no_cert = RedisDispatcher(settings({**section, "tls": {"ca_file": str(ca_file)}}), "fleet")
        async with started(no_cert):
            with pytest.raises(DispatchError):  # Redis requires the client certificate
                await no_cert.publish([record(3)])


async def test_cluster_mode(tmp_path: Path) -> None:
    with RedisCluster(tmp_path / "cluster") as cluster:
        vins = [f"5YJ3CLUSTER{i:06d}" for i in range(30)]
        now = int(time.time())
        seed = aioredis.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
        for vin in vins[:10]:
            await seed.zadd(subscriber_set("subs", "fleet", "V", vin), {f"app-{vin}": now + 60, "expired": now - 1})
        s = settings({"addrs": [cluster.addrs[0]], "cluster_mode": True, "publish_vin_topics": True,
                      "subscriber_set_prefix": "subs"})
        # Cluster pub/sub reaches every node: one subscriber on another node hears all.
        async with Subscriber(f"redis://{cluster.addrs[2]}") as sub, started(RedisDispatcher(s, "fleet")) as d:
            await d.publish([record(n, vin=vin) for n, vin in enumerate(vins)])
            await sub.wait_for(lambda: len(sub.received) == 40)
        channels = sorted(c for c, _ in sub.received)
        assert channels == sorted([vin_channel("fleet", "V", v) for v in vins] + [f"app-{v}" for v in vins[:10]])
        for vin in vins[:10]:
            assert await seed.zrange(subscriber_set("subs", "fleet", "V", vin), 0, -1) == [f"app-{vin}".encode()]
        await seed.aclose()


async def test_redis_down_at_start_is_not_fatal_then_recovers(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "late")
    d = RedisDispatcher(settings({"addrs": [server.addr], "publish_vin_topics": True}), "fleet")
    await d.start()  # nothing listens on the port yet
    with pytest.raises(DispatchError) as caught:
        await d.publish([record(1)])
    assert caught.value.retryable and not d.reachable
    with server:
        async with Subscriber(f"redis://{server.addr}") as sub:
            await d.publish([record(2)])
            await sub.wait_for(lambda: len(sub.received) == 1)
        assert d.reachable
    started_at = time.monotonic()
    await d.close()
    assert time.monotonic() - started_at < 2
    with pytest.raises(DispatchError) as caught:
        await d.publish([record(3)])
    assert not caught.value.retryable


async def test_a_silent_redis_times_out() -> None:
    with socket.socket() as listener:  # accepts, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        addr = f"127.0.0.1:{listener.getsockname()[1]}"
        d = RedisDispatcher(settings({"addrs": [addr], "publish_vin_topics": True, "publish_timeout": 300_000_000}))
        async with started(d):
            started_at = time.monotonic()
            with pytest.raises(DispatchError) as caught:
                await d.publish([record(1)])
            assert time.monotonic() - started_at < 2 and caught.value.retryable


async def test_redis_restart_mid_stream_every_acked_record_was_received(redis_server: RedisServer) -> None:
    """Records stream through a lossless queue while redis-server is SIGKILLed and started
    again on the same port; the subscriber reconnects on its own. Redis pub/sub keeps
    nothing, so what can be proven is: nothing is confirmed while Redis is down, every
    record is confirmed in the end, and every confirmed record that Redis counted as
    received by a subscriber did reach ours — those Redis accepted between its restart and
    our subscriber's return are the only ones ours may miss, and the dispatcher counts
    each of them (`unheard`)."""
    total = 600
    d = RedisDispatcher(settings({"addrs": [redis_server.addr], "publish_vin_topics": True}), "fleet")
    queue = DispatchQueue(d, maxsize=10_000, batch_size=20, retry_initial=0.05, retry_max=0.3)
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

    async with Subscriber(f"redis://{redis_server.addr}", pattern="fleet_*") as sub:
        await queue.start()
        producer = asyncio.ensure_future(produce())
        await sub.wait_for(lambda: len(confirmed) >= 150)
        await asyncio.to_thread(redis_server.kill)
        down_since = time.monotonic()
        await asyncio.sleep(1.0)
        assert not producer.done()
        back_at = time.monotonic()
        await asyncio.to_thread(redis_server.start)
        await asyncio.wait_for(producer, 30)
        await sub.wait_for(lambda: len(confirmed) == total, timeout=30)
        received = {vehicle_data_pb2.Payload.FromString(p).data[0].value.float_value for _, p in sub.received}
        await sub.wait_for(lambda: sub.subscriptions >= 2)
    await queue.close()
    during_outage = [t for t, at in confirmed.items() if down_since + 0.05 < at < back_at]
    assert during_outage == []
    assert queue.failures >= 1 and queue.dropped == 0
    missed = {t for t in confirmed if float(t.removeprefix("tx-")) not in received}
    assert missed <= set(d.unheard_txids), f"confirmed, heard by Redis' count, yet not received: {sorted(missed)[:5]}"
    assert len(missed) <= d.unheard < 100


async def test_a_user_without_scripting_publishes_command_by_command(redis_server: RedisServer) -> None:
    admin = aioredis.Redis.from_url(f"redis://{redis_server.addr}")
    await admin.execute_command("ACL", "SETUSER", "noscripts", "on", ">pw", "~*", "&*", "+@all", "-@scripting")
    s = settings({"addrs": [redis_server.addr], "publish_vin_topics": True, "username": "noscripts", "password": "pw"})
    async with Subscriber(f"redis://{redis_server.addr}") as sub, started(RedisDispatcher(s, "fleet")) as d:
        await d.publish([record(1), record(2)])
        await d.publish([record(3)])
        await sub.wait_for(lambda: len(sub.received) == 3)
        assert not d.scripted
    await admin.aclose()


async def test_after_a_restart_the_script_is_loaded_again(redis_server: RedisServer) -> None:
    s = settings({"addrs": [redis_server.addr], "publish_vin_topics": True})
    async with started(RedisDispatcher(s, "fleet")) as d:
        await d.publish([record(1)])
        await asyncio.to_thread(redis_server.restart)  # an empty script cache
        async with Subscriber(f"redis://{redis_server.addr}") as sub:
            with contextlib.suppress(DispatchError):  # the connection the restart broke
                await d.publish([record(2)])
            await d.publish([record(3)])
            await sub.wait_for(lambda: len(sub.received) >= 1)
        assert d.scripted


def test_the_script_command_is_packed_as_the_client_library_packs_it() -> None:
    from redis.connection import Connection

    from fleetwire.server.dispatchers.redis import _PUBLISH_ALL_SHA, evalsha_command

    publishes = [(b"fleet_V_{VIN1}", b"\x00\r\npayload"), ("app-é".encode(), b"")]
    expected = b"".join(Connection().pack_command("EVALSHA", _PUBLISH_ALL_SHA, 0, *[x for p in publishes for x in p]))
    assert evalsha_command(publishes) == expected
