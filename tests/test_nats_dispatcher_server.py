"""The nats dispatcher against a real nats-server (JetStream streams found or created, core
NATS, credentials, outages, a SIGKILL mid-stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from brokers.nats_server import NatsServer, nats_server_binary
from conftest import free_port
from fleetwire.proto import vehicle_data_pb2
from fleetwire.server.dispatchers import nats as nats_backend
from fleetwire.server.dispatch import DispatchError
from fleetwire.server.dispatch_queue import DispatchQueue
from fleetwire.server.records import Record
from fleetwire.server.dispatchers.nats import (
    NatsDispatcher,
    NatsSettings,
)
from nats.js.api import StorageType

from fleetwire.sim.fleet_pki import FleetPki
from nats_records import (
    NS,
    T0,
    VIN,
    connectivity,
    needs_server,
    vehicle_data,
)


# -- against nats-server -------------------------------------------------------------


@pytest.fixture
def nats_factory(tmp_path: Path) -> Iterator[Callable[..., NatsServer]]:
    if nats_server_binary() is None:
        pytest.skip("nats-server is not installed (apt-get install nats-server)")
    servers: list[NatsServer] = []

    def make(**options: Any) -> NatsServer:
        server = NatsServer(tmp_path / f"nats-{len(servers)}", **options)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.kill()


@pytest.fixture
def nats_server(nats_factory: Callable[..., NatsServer]) -> NatsServer:
    return nats_factory()


def settings(url: str, **overrides: Any) -> NatsSettings:
    values: dict[str, Any] = {"servers": (url,), "publish_timeout_ms": 1000, "connect_timeout_ms": 1000,
                                  "reconnect_initial_ms": 50, "reconnect_max_ms": 300}
    values.update(overrides)
    return NatsSettings(**values)


async def stream_messages(url: str, stream: str, **connect: Any) -> list[Any]:
    nc = await nats.connect(url, **connect)
    try:
        js = nc.jetstream()
        total = (await js.stream_info(stream)).state.messages
        return [await js.get_msg(stream, seq) for seq in range(1, total + 1)]
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def running(dispatcher: NatsDispatcher) -> Any:
    await dispatcher.start()
    try:
        yield dispatcher
    finally:
        await dispatcher.close()


async def publish_soon(dispatcher: NatsDispatcher, batch: list[Record], timeout: float = 10) -> None:
    """Publish, retrying while the dispatcher (re)connects."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await dispatcher.publish(batch)
            return
        except DispatchError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


@needs_server
async def test_creates_a_stream_and_publishes_with_headers(nats_server: NatsServer) -> None:
    batch = [vehicle_data(f"tx-{n}", soc=n) for n in range(300)] + [connectivity("c-1")]
    async with running(NatsDispatcher(settings(nats_server.url), NS)) as dispatcher:
        await publish_soon(dispatcher, batch)
        assert dispatcher.created_stream and dispatcher.stream == NS
    messages = await stream_messages(nats_server.url, NS)
    assert len(messages) == len(batch)
    first = messages[0]
    assert first.subject == f"{NS}.{VIN}.data" and first.data == batch[0].payload
    assert first.headers["vin"] == VIN and first.headers["txid"] == "tx-0" and first.headers["txtype"] == "V"
    assert first.headers["receivedat"] == str(T0 * 1000 + 250) and first.headers["device_client_version"] == "2026.2.3"
    assert [vehicle_data_pb2.Payload.FromString(m.data).data[0].value.int_value for m in messages[:300]] == list(range(300))
    assert messages[-1].subject == f"{NS}.{VIN}.connectivity" and messages[-1].headers["txtype"] == "connectivity"
    nc = await nats.connect(nats_server.url)
    info = await nc.jetstream().stream_info(NS)
    await nc.close()
    assert info.config.subjects == [f"{NS}.>"] and info.config.storage == StorageType.FILE


@needs_server
async def test_an_existing_stream_covering_the_subjects_is_used(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await js.add_stream(name="TELEMETRY", subjects=[f"{NS}.*.data", f"{NS}.*.alerts"])
    try:
        async with running(NatsDispatcher(settings(nats_server.url), NS, kinds=("data",))) as dispatcher:
            await publish_soon(dispatcher, [vehicle_data("tx-1")])
            assert dispatcher.stream == "TELEMETRY" and not dispatcher.created_stream
        assert [s.config.name for s in await js.streams_info()] == ["TELEMETRY"]
        assert (await js.stream_info("TELEMETRY")).state.messages == 1

        # One that stores only part of what is routed to nats: refused, with the subjects named.
        async with running(NatsDispatcher(settings(nats_server.url), NS)) as dispatcher:
            with pytest.raises(DispatchError, match=rf"TELEMETRY.*{NS}\.\*\.errors"):
                await publish_soon(dispatcher, [vehicle_data("tx-2")], timeout=1)
    finally:
        await nc.close()


@needs_server
async def test_a_named_stream_is_created_or_must_cover_the_namespace(nats_server: NatsServer) -> None:
    async with running(NatsDispatcher(settings(nats_server.url, stream="CARS"), NS)) as dispatcher:
        await publish_soon(dispatcher, [vehicle_data("tx-1")])
        assert dispatcher.stream == "CARS" and dispatcher.created_stream
    nc = await nats.connect(nats_server.url)
    await nc.jetstream().add_stream(name="OTHER", subjects=["elsewhere.>"])
    await nc.close()
    async with running(NatsDispatcher(settings(nats_server.url, stream="OTHER"), "fleet2")) as dispatcher:
        with pytest.raises(DispatchError, match="'OTHER' .* does not store fleet2"):
            await publish_soon(dispatcher, [vehicle_data("tx-1")], timeout=1)


@needs_server
async def test_a_deleted_stream_is_created_again(nats_server: NatsServer) -> None:
    async with running(NatsDispatcher(settings(nats_server.url), NS)) as dispatcher:
        await publish_soon(dispatcher, [vehicle_data("tx-1")])
        nc = await nats.connect(nats_server.url)
        await nc.jetstream().delete_stream(NS)
        with pytest.raises(DispatchError, match="no JetStream stream"):
            await dispatcher.publish([vehicle_data("tx-2")])
        await dispatcher.publish([vehicle_data("tx-2")])
        assert (await nc.jetstream().stream_info(NS)).state.messages == 1
        await nc.close()


@needs_server
async def test_a_batch_sent_again_is_stored_once(nats_server: NatsServer) -> None:
    batch = [vehicle_data(f"tx-{n}") for n in range(50)]
    async with running(NatsDispatcher(settings(nats_server.url), NS)) as dispatcher:
        await publish_soon(dispatcher, batch)
        await dispatcher.publish(batch)
    assert len(await stream_messages(nats_server.url, NS)) == 50


@needs_server
@pytest.mark.parametrize("jetstream", [True, False])
async def test_the_clients_own_publish_writes_the_same_messages(nats_factory: Callable[..., NatsServer],
                                                               jetstream: bool) -> None:
    """The batch written in one buffer and the client's per-message publish (the path
    taken if a client version lacks the internals) put the same messages on the wire."""
    server = nats_factory(jetstream=jetstream)
    nc = await nats.connect(server.url)
    sub = await nc.subscribe(f"{NS}.>")
    await nc.flush()
    got: dict[bool, list[Any]] = {}
    for fast in (True, False):
        dispatcher = NatsDispatcher(settings(server.url, jetstream=jetstream), NS)
        dispatcher.fast_path = fast
        async with running(dispatcher):
            await publish_soon(dispatcher, [vehicle_data(f"tx-{n}", soc=n) for n in range(5)] + [connectivity("c")])
        got[fast] = [await sub.next_msg(timeout=2) for _ in range(6)]
    await nc.close()
    assert [(m.subject, m.headers, m.data) for m in got[True]] == [(m.subject, m.headers, m.data) for m in got[False]]


@needs_server
async def test_acks_through_the_clients_own_subscription_path(nats_server: NatsServer,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the parser shortcut the ack subscription's callback confirms just the same."""
    monkeypatch.setattr(NatsDispatcher, "_shortcut_acks", lambda self, nc, sid: None)
    async with running(NatsDispatcher(settings(nats_server.url), NS)) as dispatcher:
        await publish_soon(dispatcher, [vehicle_data(f"tx-{n}") for n in range(100)])
        nc = await nats.connect(nats_server.url)
        await nc.jetstream().delete_stream(NS)
        await nc.close()
        with pytest.raises(DispatchError, match="no JetStream stream"):
            await dispatcher.publish([vehicle_data("tx-x")])
        await dispatcher.publish([vehicle_data("tx-x")])
    assert [m.headers["txid"] for m in await stream_messages(nats_server.url, NS)] == ["tx-x"]


@needs_server
async def test_a_record_over_max_payload_costs_only_itself(nats_server: NatsServer) -> None:
    big = vehicle_data("tx-big")
    big.payload = b"x" * (1024 * 1024 + 1)
    dispatcher = NatsDispatcher(settings(nats_server.url), NS)
    queue = DispatchQueue(dispatcher, batch_size=10)
    await queue.start()
    loop = asyncio.get_running_loop()
    waiters = [loop.create_future() for _ in range(5)]
    for n, waiter in enumerate(waiters):
        queue.offer(big if n == 2 else vehicle_data(f"tx-{n}"), waiter)
    results = await asyncio.gather(*waiters, return_exceptions=True)
    await queue.close()
    assert [r is None for r in results] == [True, True, False, True, True]
    assert "max_payload" in str(results[2]) and dispatcher.connects == 1
    assert sorted(m.headers["txid"] for m in await stream_messages(nats_server.url, NS)) == [
        "tx-0", "tx-1", "tx-3", "tx-4"]


@needs_server
async def test_decoded_records_are_protobuf_json(nats_server: NatsServer) -> None:
    record = vehicle_data("tx-1", soc=42)
    async with running(NatsDispatcher(settings(nats_server.url), NS, decoded=True)) as dispatcher:
        await publish_soon(dispatcher, [record])
    (message,) = await stream_messages(nats_server.url, NS)
    assert message.data == record.json()
    body = json.loads(message.data)
    assert body["vin"] == VIN and body["data"] == [{"key": "Soc", "value": {"intValue": 42}}]


@needs_server
async def test_core_nats_without_jetstream(nats_factory: Callable[..., NatsServer]) -> None:
    server = nats_factory(jetstream=False)
    nc = await nats.connect(server.url)
    sub = await nc.subscribe(f"{NS}.>")
    await nc.flush()
    async with running(NatsDispatcher(settings(server.url, jetstream=False), NS)) as dispatcher:
        await publish_soon(dispatcher, [vehicle_data(f"tx-{n}") for n in range(20)])
    got = [await sub.next_msg(timeout=2) for _ in range(20)]
    await nc.close()
    assert [m.headers["txid"] for m in got] == [f"tx-{n}" for n in range(20)]
    assert got[0].subject == f"{NS}.{VIN}.data" and "Nats-Msg-Id" not in got[0].headers

    # JetStream asked of a server without it: the error says what to change.
    async with running(NatsDispatcher(settings(server.url), NS)) as dispatcher:
        with pytest.raises(DispatchError, match="jetstream false"):
            await publish_soon(dispatcher, [vehicle_data("tx-1")], timeout=1)


@needs_server
async def test_credentials(nats_factory: Callable[..., NatsServer]) -> None:
    server = nats_factory(user="fleet", password="s3cret")
    wrong = NatsDispatcher(settings(server.url, user="fleet", password="nope"), NS)
    async with running(wrong):
        # The server refuses with an authorization error, then closes; a client that reads
        # the close first sees a reset. Either way the password is never in the message.
        errors: list[str] = []
        deadline = time.monotonic() + 10
        while not any("authoriz" in e.lower() for e in errors):
            assert time.monotonic() < deadline, errors
            with pytest.raises(DispatchError, match="unavailable") as caught:
                await wrong.publish([vehicle_data("tx-1")])
            errors.append(str(caught.value))
            await asyncio.sleep(0.05)
        assert not any("nope" in e for e in errors)
    async with running(NatsDispatcher(settings(server.url, user="fleet", password="s3cret"), NS)) as right:
        await publish_soon(right, [vehicle_data("tx-1")])
    token_server = nats_factory(token="t0ken")
    async with running(NatsDispatcher(settings(token_server.url, token="t0ken"), NS)) as by_token:
        await publish_soon(by_token, [vehicle_data("tx-1")])


@needs_server
async def test_tls_with_a_ca_file(nats_factory: Callable[..., NatsServer], fleet_pki: FleetPki) -> None:
    server = nats_factory(tls=(fleet_pki.server_cert, fleet_pki.server_key))
    tls = nats_backend.NatsTls(ca_file=fleet_pki.server_ca_cert)
    async with running(NatsDispatcher(settings(server.url, tls=tls), NS)) as dispatcher:
        await publish_soon(dispatcher, [vehicle_data("tx-1")])
        assert dispatcher.connects == 1


@needs_server
async def test_tls_with_a_client_certificate(nats_factory: Callable[..., NatsServer], fleet_pki: FleetPki,
                                             tmp_path: Path) -> None:
    from fleetwire.pki import load_bundle, make_vehicle_cert, write_bundle

    server = nats_factory(tls=(fleet_pki.server_cert, fleet_pki.server_key), client_ca=fleet_pki.vehicle_ca_cert)
    cert, key = write_bundle(make_vehicle_cert(load_bundle(fleet_pki.vehicle_ca_cert, fleet_pki.vehicle_ca_key),
                                               "5YJ3CLIENT0000001"), tmp_path / "c.pem", tmp_path / "c.key")
    without = NatsDispatcher(settings(server.url, tls=nats_backend.NatsTls(ca_file=fleet_pki.server_ca_cert)), NS)
    async with running(without):
        with pytest.raises(DispatchError, match="unavailable"):
            await publish_soon(without, [vehicle_data("tx-1")], timeout=1)
    tls = nats_backend.NatsTls(ca_file=fleet_pki.server_ca_cert, cert_file=cert, key_file=key)
    async with running(NatsDispatcher(settings(server.url, tls=tls), NS)) as dispatcher:
        await publish_soon(dispatcher, [vehicle_data("tx-1")])


@needs_server
async def test_down_at_start_then_up(nats_server: NatsServer) -> None:
    nats_server.stop()
    dispatcher = NatsDispatcher(settings(nats_server.url, publish_timeout_ms=300), NS)
    async with running(dispatcher):
        started = time.monotonic()
        with pytest.raises(DispatchError, match="unavailable: .*(Refused|refused)"):
            await dispatcher.publish([vehicle_data("tx-1")])
        assert time.monotonic() - started < 1.5
        nats_server.start()
        await publish_soon(dispatcher, [vehicle_data("tx-1")])
        assert dispatcher.connects == 1


@needs_server
async def test_a_cluster_url_list_skips_a_server_that_is_down(nats_server: NatsServer) -> None:
    dead = f"nats://127.0.0.1:{free_port()}"
    async with running(NatsDispatcher(settings(dead, servers=(dead, nats_server.url)), NS)) as dispatcher:
        await publish_soon(dispatcher, [vehicle_data("tx-1")])
        assert dispatcher.connects == 1


def test_reconnects_back_off_exponentially() -> None:
    class Server:
        def __init__(self, reconnects: int) -> None:
            self.reconnects = reconnects

    async def delays() -> list[float]:
        dispatcher = NatsDispatcher(settings("nats://127.0.0.1:4222", reconnect_initial_ms=100,
                                             reconnect_max_ms=1000), NS)
        return [dispatcher._next_server([Server(n), Server(n + 1)], {})[1] for n in range(7)]

    waits = asyncio.run(delays())
    assert waits[0] == 0.0  # a server not tried yet: at once
    assert 0.075 <= waits[1] <= 0.1 and 0.15 <= waits[2] <= 0.2 and 0.3 <= waits[3] <= 0.4
    assert all(0.75 <= w <= 1.0 for w in waits[5:])  # capped at reconnect_max_ms


async def test_close_while_down_is_prompt() -> None:
    dispatcher = NatsDispatcher(settings(f"nats://127.0.0.1:{free_port()}"), NS)
    await dispatcher.start()
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await dispatcher.close()
    assert time.monotonic() - started < 1
    with pytest.raises(DispatchError, match="closed"):
        await dispatcher.publish([vehicle_data("tx-1")])


@needs_server
async def test_a_frozen_server_times_out(nats_server: NatsServer) -> None:
    async with running(NatsDispatcher(settings(nats_server.url, publish_timeout_ms=300), NS)) as dispatcher:
        await publish_soon(dispatcher, [vehicle_data("tx-0")])
        nats_server.pause()
        try:
            started = time.monotonic()
            with pytest.raises(DispatchError, match="no answer within"):
                await dispatcher.publish([vehicle_data(f"tx-{n}") for n in range(1, 30)])
            assert time.monotonic() - started < 1.5
        finally:
            nats_server.resume()
        await publish_soon(dispatcher, [vehicle_data("tx-99")])


@needs_server
@pytest.mark.slow
async def test_sigkill_mid_stream_loses_no_confirmed_record(nats_server: NatsServer) -> None:
    """Records stream through a lossless queue while nats-server is SIGKILLed and started
    again on the same store: nothing is confirmed while it is down, and every confirmed
    record is in the stream afterwards, once."""
    total = 3000
    dispatcher = NatsDispatcher(settings(nats_server.url), NS)
    queue = DispatchQueue(dispatcher, maxsize=100_000, batch_size=100, retry_initial=0.05, retry_max=0.2)
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
            queue.offer(vehicle_data(f"tx-{n}", soc=n % 100), waiter)
            if n % 10 == 0:
                await asyncio.sleep(0.005)

    await queue.start()
    producer = asyncio.ensure_future(produce())
    while len(confirmed) < 500:
        await asyncio.sleep(0.01)
    await asyncio.to_thread(nats_server.kill)
    down_since = time.monotonic()
    await asyncio.sleep(1.0)
    back_at = time.monotonic()
    await asyncio.to_thread(nats_server.start)
    await asyncio.wait_for(producer, 60)
    deadline = time.monotonic() + 30
    while len(confirmed) < total and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await queue.close()
    assert len(confirmed) == total and queue.dropped == 0 and queue.failures >= 1
    # A JetStream ack already read when the server died may resolve just after: allow 0.1 s.
    assert [t for t, at in confirmed.items() if down_since + 0.1 < at < back_at] == []
    stored = [m.headers["txid"] for m in await stream_messages(nats_server.url, NS)]
    assert set(stored) == set(confirmed) and len(stored) == total  # each once (Nats-Msg-Id)
    assert dispatcher.connects >= 2
