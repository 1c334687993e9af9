"""The nats dispatcher: settings, subjects and headers, and against a real nats-server
(JetStream streams found or created, core NATS, credentials, outages, a SIGKILL mid-stream)."""

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
from conftest import free_port, server_config_data
from fleetwire.proto import vehicle_connectivity_pb2, vehicle_data_pb2
from fleetwire.server.config import parse_config
from fleetwire.server.dispatchers import nats as nats_backend
from fleetwire.server.dispatch import Dispatcher, DispatchError
from fleetwire.server.dispatch_queue import DispatchQueue
from fleetwire.server.records import Record
from fleetwire.server.dispatchers.nats import (
    NatsDispatcher,
    NatsSettings,
    covers,
    headers,
    redact,
    subject,
)
from fleetwire.server.dispatchers.registry import build_dispatchers
from nats.js.api import StorageType

from fleetwire.pki import FleetPki
from fleetwire.strictjson import ConfigError, Reader

VIN = "5YJ3E1EA7KF000001"
T0 = 1_700_000_000
NS = "tesla_telemetry"

needs_server = pytest.mark.skipif(nats_server_binary() is None, reason="nats-server is not installed")


# -- records -------------------------------------------------------------------------


def vehicle_data(txid: str, soc: int = 80, vin: str = VIN) -> Record:
    message = vehicle_data_pb2.Payload(vin=vin)
    message.created_at.seconds = T0
    message.data.add(key=vehicle_data_pb2.Soc).value.int_value = soc
    return Record("V", vin, "vehicle_device", txid, "conn-1", message.SerializeToString(), message,
                  float(T0), T0 + 0.25, client_version="2026.2.3")


def connectivity(connection_id: str) -> Record:
    message = vehicle_connectivity_pb2.VehicleConnectivity(
        vin=VIN, connection_id=connection_id, status=vehicle_connectivity_pb2.CONNECTED)
    return Record("connectivity", VIN, "vehicle_device", connection_id, connection_id,
                  message.SerializeToString(), message, float(T0), float(T0))


# -- settings ------------------------------------------------------------------------


def parse(section: dict[str, Any], env: dict[str, str] | None = None, in_use: bool = True,
          base: Path = Path("/")) -> NatsSettings:
    return nats_backend.parse_settings(Reader(section, "nats", [], base), env or {}, in_use)


def test_settings_in_the_forks_shape_with_defaults() -> None:
    settings = parse({"url": "nats://nats:4222", "name": "fleet"})
    assert settings.servers == ("nats://nats:4222",) and settings.name == "fleet"
    assert settings.jetstream and settings.deduplicate and settings.stream == ""
    assert (settings.publish_timeout_ms, settings.connect_timeout_ms) == (5000, 2000)
    assert parse({"url": "nats:4222"}).servers == ("nats://nats:4222",)


def test_a_cluster_as_a_list_or_comma_separated() -> None:
    expected = ("nats://a:4222", "tls://b:4222", "nats://c:4222")
    assert parse({"url": "nats://a:4222, tls://b:4222,c:4222"}).servers == expected
    assert parse({"url": ["nats://a:4222", "tls://b:4222", "c:4222"]}).servers == expected


@pytest.mark.parametrize(("section", "key", "words"), [
    ({}, "nats.url", "missing"),
    ({"url": 4222}, "nats.url", "expected a server URL"),
    ({"url": "http://nats:4222"}, "nats.url", "scheme nats, tls, ws or wss"),
    ({"url": "nats://nats:99999"}, "nats.url", "bad port"),
    ({"url": "nats://:4222"}, "nats.url", "no host"),
    ({"url": "nats://n:4222", "password": "pw"}, "nats.user", "no user"),
    ({"url": "nats://n:4222", "user": "u", "token": "t"}, "nats.token", "one way"),
    ({"url": "nats://n:4222", "tls": {"cert_file": "/etc/hostname"}}, "nats.tls.key_file", "both"),
    ({"url": "nats://n:4222", "creds_file": "/nonexistent/user.creds"}, "nats.creds_file", "not found"),
    ({"url": "nats://n:4222", "stream": "a.b"}, "nats.stream", "stream name"),
    ({"url": "nats://n:4222", "jetstream": "yes"}, "nats.jetstream", "true or false"),
    ({"url": "nats://n:4222", "publish_timeout_ms": 0}, "nats.publish_timeout_ms", "at least 1"),
])
def test_invalid_settings_name_the_key(section: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as caught:
        parse(section)
    assert caught.value.key == key


def test_secrets_are_never_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        parse({"url": "http://fleet:hunter2@nats:4222"})
    assert "hunter2" not in str(caught.value) and "fleet:***@nats:4222" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        parse({"url": "nats://n:4222", "password": 12345, "user": "u"})
    assert "12345" not in str(caught.value)
    assert redact("nats://tok3n@nats:4222") == "nats://***@nats:4222"
    assert redact("nats://nats:4222") == "nats://nats:4222"


def test_environment_overrides_password_and_token() -> None:
    env = {"NATS_PASSWORD": "from-env"}
    assert parse({"url": "nats://n:4222", "user": "u", "password": "file"}, env).password == "from-env"
    assert parse({"url": "nats://n:4222"}, {"NATS_TOKEN": "t0k"}).token == "t0k"


def test_files_are_checked_only_in_use(tmp_path: Path) -> None:
    section = {"url": "nats://n:4222", "creds_file": "user.creds", "tls": {"ca_file": "ca.pem"}}
    settings = parse(section, in_use=False, base=tmp_path)
    assert settings.creds_file == tmp_path / "user.creds"
    with pytest.raises(ConfigError) as caught:
        parse(section, base=tmp_path)
    assert caught.value.key == "nats.creds_file"


def test_from_a_config_file(fleet_pki: FleetPki) -> None:
    data = server_config_data(fleet_pki, {
        "namespace": NS, "records": {"V": ["nats"], "alerts": ["nats", "logger"]},
        "reliable_ack_sources": {"V": "nats"}, "nats": {"url": "nats://127.0.0.1:4222", "name": "fw"},
    })
    config, warnings = parse_config(data, fleet_pki.directory)
    assert warnings == []
    dispatcher = build_dispatchers(config)["nats"]
    assert isinstance(dispatcher, NatsDispatcher) and isinstance(dispatcher, Dispatcher)
    assert dispatcher.namespace == NS and dispatcher._kinds == ("data", "alerts")


@pytest.mark.parametrize(("namespace", "words"), [("", "missing"), ("a b", "subject tokens"), ("a.>", "subject tokens"),
                                                  ("a..b", "subject tokens")])
def test_namespace_must_make_a_subject(fleet_pki: FleetPki, namespace: str, words: str) -> None:
    data = server_config_data(fleet_pki, {"namespace": namespace, "records": {"V": ["nats"]},
                                          "nats": {"url": "nats://127.0.0.1:4222"}})
    config, _ = parse_config(data, fleet_pki.directory)
    with pytest.raises(ConfigError, match=words) as caught:
        build_dispatchers(config)
    assert caught.value.key == "namespace"


# -- subjects and headers, no server -------------------------------------------------


def test_subjects_per_record_type() -> None:
    assert subject(NS, vehicle_data("t")) == f"{NS}.{VIN}.data"
    assert subject("a.b", connectivity("c")) == f"a.b.{VIN}.connectivity"
    odd = vehicle_data("t", vin="5YJ.3 *>")
    assert subject(NS, odd) == f"{NS}.5YJ_3___.data"


def test_headers_are_the_reference_metadata() -> None:
    assert headers(vehicle_data("tx-1"), deduplicate=True) == {
        "vin": VIN, "receivedat": str(T0 * 1000 + 250), "timestamp": "0", "txid": "tx-1", "txtype": "V",
        "version": "0", "device_client_version": "2026.2.3", "Nats-Msg-Id": f"{VIN}:V:tx-1",
    }
    assert "Nats-Msg-Id" not in headers(vehicle_data("tx-1"), deduplicate=False)
    assert "Nats-Msg-Id" not in headers(connectivity("c-1"), deduplicate=True)  # its txid repeats
    assert headers(vehicle_data("a\r\nb"), deduplicate=False)["txid"] == "a  b"


def test_the_wire_header_block_is_the_metadata() -> None:
    for record in (vehicle_data("tx-1"), vehicle_data("a\r\nb"), connectivity("c-1")):
        for dedup in (True, False):
            assert nats_backend.record_header_block(record, dedup) == nats_backend.header_block(headers(record, dedup))


@pytest.mark.parametrize(("pattern", "subj", "expected"), [
    ("t.>", "t.*.data", True), ("t.*.data", "t.*.data", True), ("t.*.*", "t.*.alerts", True),
    ("t.*.data", "t.*.alerts", False), ("t.VIN1.data", "t.*.data", False), (">", "t.*.data", True),
    ("t.*", "t.*.data", False), ("t.>", "t", False), ("t.*.>", "t.*.data", True), ("u.>", "t.*.data", False),
])
def test_stream_subjects_cover(pattern: str, subj: str, expected: bool) -> None:
    assert covers(pattern, subj) is expected


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
