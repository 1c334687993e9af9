"""The kinesis dispatcher: the reference's settings and addressing, PutRecords with partial
failures (a fake client), and a real endpoint (moto in server mode) going down mid-stream."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from brokers.moto_server import FAKE_CREDENTIALS, REGION, MotoServer, moto_server_binary
from conftest import server_config_data
from fleetwire.sim.fleet_pki import FleetPki
from fleetwire.proto import vehicle_alert_pb2, vehicle_data_pb2
from fleetwire.server.config import ConfigError, parse_config
from fleetwire.server.dispatchers import kinesis
from fleetwire.server.dispatch import DispatchError
from fleetwire.server.dispatch_queue import DispatchQueue
from fleetwire.server.records import Record
from fleetwire.server.dispatchers.kinesis import KinesisDispatcher, KinesisSettings

VIN = "5YJ3E1EA7KF000001"
T0 = 1_700_000_000
ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": REGION}


def v_record(vin: str = VIN, n: int = 0, payload_size: int = 0) -> Record:
    message = vehicle_data_pb2.Payload(vin=vin)
    message.created_at.seconds = T0 + n
    message.data.add(key=vehicle_data_pb2.Soc).value.int_value = n
    if payload_size:
        message.data.add(key=vehicle_data_pb2.Version).value.string_value = "x" * payload_size
    return Record("V", vin, "vehicle_device", f"tx-{n}", "conn-1", message.SerializeToString(), message,
                  float(T0 + n), float(T0 + n))


def alerts_record(vin: str = VIN) -> Record:
    message = vehicle_alert_pb2.VehicleAlerts(vin=vin)
    message.alerts.add(name="BMS_a066", audiences=[vehicle_alert_pb2.Customer]).started_at.seconds = T0
    return Record("alerts", vin, "vehicle_device", "tx-a", "conn-1", message.SerializeToString(), message,
                  float(T0), float(T0))


# -- settings ------------------------------------------------------------------------


def config_with(pki: FleetPki, kinesis_section: Mapping[str, Any], env: Mapping[str, str], **top: Any) -> Any:
    data = server_config_data(pki, {"records": {"V": ["kinesis"], "alerts": ["kinesis"], "errors": ["kinesis"]},
                                    "kinesis": kinesis_section, **top})
    config, _ = parse_config(data, pki.directory, env=env)
    return config


def error_of(pki: FleetPki, kinesis_section: Mapping[str, Any], env: Mapping[str, str], **top: Any) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        config = config_with(pki, kinesis_section, env, **top)
        kinesis.create(config)
    return caught.value


def test_streams_from_config_overridden_by_environment_else_namespace(fleet_pki: FleetPki) -> None:
    config = config_with(
        fleet_pki, {"streams": {"V": "tesla-v", "alerts": "tesla-alerts"}},
        {**ENV, "KINESIS_STREAM_ALERTS": "from-env-alerts", "KINESIS_STREAM_CONNECTIVITY": "unused"},
        namespace="fleet",
    )
    dispatcher = kinesis.create(config)
    assert dispatcher.streams == {"V": "tesla-v", "alerts": "from-env-alerts", "errors": "fleet_errors"}
    settings = config.backend("kinesis")
    assert settings.retries == 1 and settings.region == REGION and settings.endpoint_url is None
    assert not dispatcher._decoded


def test_empty_stream_name_means_the_namespace_one_and_max_retries_is_read(fleet_pki: FleetPki) -> None:
    config = config_with(fleet_pki, {"streams": {"V": ""}, "max_retries": 5, "override_host": "localhost:4566"},
                         ENV, namespace="ns", transmit_decoded_records=True)
    dispatcher = kinesis.create(config)
    assert dispatcher.streams["V"] == "ns_V"
    settings = config.backend("kinesis")
    assert settings.retries == 5
    assert settings.endpoint_url == "https://localhost:4566"  # no scheme: https, as the reference's SDK
    assert dispatcher._decoded


def test_region_from_the_shared_config_file(fleet_pki: FleetPki, tmp_path: Path) -> None:
    (tmp_path / "config").write_text("[default]\nregion = eu-west-1\n[profile fleet]\nregion = ap-south-1\n")
    env = {"AWS_CONFIG_FILE": str(tmp_path / "config")}
    assert config_with(fleet_pki, {}, env).backend("kinesis").region == "eu-west-1"
    assert config_with(fleet_pki, {}, {**env, "AWS_PROFILE": "fleet"}).backend("kinesis").region == "ap-south-1"


@pytest.mark.parametrize(
    ("section", "env", "key", "words"),
    [
        ({"streams": {"V": "bad/name"}}, ENV, "kinesis.streams.V", "stream name"),
        ({"streams": {"V": 7}}, ENV, "kinesis.streams.V", "expected a string"),
        ({"streams": ["V"]}, ENV, "kinesis.streams", "expected an object"),
        ({}, {**ENV, "KINESIS_STREAM_V": "no spaces allowed"}, "KINESIS_STREAM_V", "environment"),
        ({"max_retries": -1}, ENV, "kinesis.max_retries", "integer"),
        ({"max_retries": 1.5}, ENV, "kinesis.max_retries", "integer"),
        ({"override_host": "ftp://host"}, ENV, "kinesis.override_host", "endpoint URL"),
        ({"override_host": "http://host:99999"}, ENV, "kinesis.override_host", "endpoint URL"),
        ({}, {"AWS_ACCESS_KEY_ID": "AKIA", "AWS_REGION": REGION}, "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"),
        ({}, {**ENV, "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials"}, "AWS_SHARED_CREDENTIALS_FILE",
         "not found"),
        ({}, {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b", "HOME": "/nonexistent"}, "kinesis",
         "AWS_REGION"),
    ],
)
def test_invalid_settings_name_the_key(fleet_pki: FleetPki, section: dict[str, Any], env: dict[str, str],
                                       key: str, words: str) -> None:
    error = error_of(fleet_pki, section, env)
    assert error.key == key and words in error.message, error


def test_a_namespace_that_makes_a_bad_stream_name_is_named(fleet_pki: FleetPki) -> None:
    error = error_of(fleet_pki, {"streams": {"V": "tesla-v"}}, ENV, namespace="my fleet")
    assert error.key == "namespace" and "alerts" in error.message and "KINESIS_STREAM_ALERTS" in error.message


def test_secret_key_never_echoed(fleet_pki: FleetPki) -> None:
    error = error_of(fleet_pki, {}, {"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG", "AWS_REGION": REGION})
    assert error.key == "AWS_ACCESS_KEY_ID" and "wJalr" not in str(error)


def test_environment_is_not_checked_when_kinesis_is_not_in_use(fleet_pki: FleetPki) -> None:
    data = server_config_data(fleet_pki, {"kinesis": {"streams": {"V": "tesla-v"}}})
    config, _ = parse_config(data, fleet_pki.directory, env={"KINESIS_STREAM_V": "bad name", "HOME": "/nonexistent"})
    assert config.backend("kinesis").streams == {"V": "tesla-v"}


def test_unknown_keys_and_record_types_warn(fleet_pki: FleetPki) -> None:
    data = server_config_data(fleet_pki, {"records": {"V": ["kinesis"]},
                                          "kinesis": {"stream": {}, "streams": {"v": "tesla-v"}}})
    _, warnings = parse_config(data, fleet_pki.directory, env=ENV)
    assert any("kinesis.stream:" in w and "'streams'" in w for w in warnings)
    assert any("kinesis.streams.v" in w and "'V'" in w for w in warnings)


@pytest.mark.parametrize(("env", "words"), [({}, "no AWS credentials"),
                                          ({"AWS_PROFILE": "nowhere"}, "nowhere")])
async def test_start_without_usable_credentials_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], words: str
) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to ask here
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    dispatcher = KinesisDispatcher(KinesisSettings(region=REGION), {"V": "tesla-v"})
    with pytest.raises(ConfigError) as caught:
        await dispatcher.start()
    assert caught.value.key == "kinesis" and words in caught.value.message
    await dispatcher.close()


# -- PutRecords and its partial failures (a fake client) ------------------------------


class FakeKinesis:
    """Answers PutRecords like Kinesis; `refuse(entry, call_number)` picks entries to refuse."""

    def __init__(self, refuse: Any = None, error: ClientError | None = None) -> None:
        self.refuse = refuse or (lambda entry, call: False)
        self.error = error
        self.calls: list[tuple[str, list[dict[str, Any]]]] = []
        self.stored: list[tuple[str, dict[str, Any]]] = []

    async def put_records(self, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append((StreamName, Records))
        assert len(Records) <= 500 and sum(len(r["Data"]) + len(r["PartitionKey"]) for r in Records) <= 5 * 2**20
        if self.error is not None:
            raise self.error
        results: list[dict[str, Any]] = []
        for entry in Records:
            if self.refuse(entry, len(self.calls)):
                results.append({"ErrorCode": "ProvisionedThroughputExceededException",
                                "ErrorMessage": "Rate exceeded for shard shardId-000000000000"})
            else:
                self.stored.append((StreamName, entry))
                results.append({"SequenceNumber": str(len(self.stored)), "ShardId": "shardId-000000000000"})
        return {"FailedRecordCount": sum("ErrorCode" in r for r in results), "Records": results}

    async def list_streams(self, Limit: int) -> dict[str, Any]:
        return {"StreamNames": []}


def fake_dispatcher(client: FakeKinesis, **kwargs: Any) -> KinesisDispatcher:
    return KinesisDispatcher(KinesisSettings(region=REGION), {"V": "tesla-v", "alerts": "tesla-alerts"},
                             namespace="ns", client=client, retry_initial=0.001, **kwargs)


def stored_keys(client: FakeKinesis) -> list[tuple[str, bytes]]:
    return [(stream, entry["Data"]) for stream, entry in client.stored]


async def test_refused_entries_alone_are_sent_again_until_all_are_in() -> None:
    # The first call refuses every third entry, the second call half of those.
    client = FakeKinesis(lambda entry, call: call <= 2 and int(entry["Data"][-1]) % (3 * call) == 0)
    dispatcher = fake_dispatcher(client)
    batch = [v_record(n=n) for n in range(30)]
    for record in batch:  # the last byte of each payload tells the records apart
        record.payload = record.payload + bytes([record.message.data[0].value.int_value])
    await dispatcher.publish(batch)
    assert sorted(data for _, data in stored_keys(client)) == sorted(r.payload for r in batch)  # each once
    sizes = [len(records) for _, records in client.calls]
    assert sizes == [30, 10, 5]
    assert dispatcher.entries_refused == 15 and dispatcher.refusals["ProvisionedThroughputExceededException"] == 15


async def test_a_publish_out_of_patience_fails_and_its_retry_sends_only_what_is_missing() -> None:
    refusing = {"on": True}
    client = FakeKinesis(lambda entry, call: refusing["on"] and entry["Data"].endswith(b"\x07"))
    dispatcher = fake_dispatcher(client, patience=0.05)
    batch = [v_record(n=n) for n in range(10)]
    for n, record in enumerate(batch):
        record.payload = record.payload + bytes([n])
    with pytest.raises(DispatchError) as caught:
        await dispatcher.publish(batch)
    assert caught.value.retryable and "ProvisionedThroughputExceededException" in str(caught.value)
    assert len(client.stored) == 9
    refusing["on"] = False
    await dispatcher.publish(batch)  # the queue's retry of the same batch
    assert client.calls[-1][1] == [{"Data": batch[7].payload, "PartitionKey": VIN}]
    assert sorted(data for _, data in stored_keys(client)) == sorted(r.payload for r in batch)


async def test_never_confirmed_while_entries_are_refused() -> None:
    gate = {"refuse": True}
    client = FakeKinesis(lambda entry, call: gate["refuse"])
    queue = DispatchQueue(fake_dispatcher(client, patience=0.02), retry_initial=0.01, retry_max=0.02)
    await queue.start()
    loop = asyncio.get_running_loop()
    waiters = [loop.create_future() for _ in range(20)]
    for n, waiter in enumerate(waiters):
        queue.offer(v_record(n=n), waiter)
    await asyncio.sleep(0.3)
    assert not any(w.done() for w in waiters) and client.stored == [] and queue.failures > 1
    gate["refuse"] = False
    await asyncio.wait_for(asyncio.gather(*waiters), 5)
    assert len(client.stored) == 20
    await queue.close()


async def test_records_go_to_their_stream_by_record_type_in_calls_of_at_most_500_and_5_mib() -> None:
    client = FakeKinesis()
    dispatcher = fake_dispatcher(client)
    batch = [v_record(n=n) for n in range(1100)] + [alerts_record()]
    await dispatcher.publish(batch)
    assert [(stream, len(records)) for stream, records in client.calls] == [
        ("tesla-v", 500), ("tesla-v", 500), ("tesla-v", 100), ("tesla-alerts", 1)]
    assert all(entry["PartitionKey"] == VIN for _, entry in client.stored)
    client.calls.clear()
    big = [v_record(n=n, payload_size=900_000) for n in range(12)]  # ~0.86 MiB each
    await dispatcher.publish(big)
    assert [len(records) for _, records in client.calls] == [5, 5, 2]


async def test_a_record_over_1_mib_fails_alone_for_good_the_others_are_put() -> None:
    client = FakeKinesis()
    dispatcher = fake_dispatcher(client)
    dispatcher._decoded = True  # protobuf-JSON can outgrow the 1 MB frame limit
    huge = v_record(n=1, payload_size=1_100_000)
    with pytest.raises(DispatchError) as caught:
        await dispatcher.publish([v_record(n=0), huge, v_record(n=2)])
    assert not caught.value.retryable and "1 MiB" in str(caught.value)
    assert len(client.stored) == 2


@pytest.mark.parametrize(("code", "retryable"), [("ResourceNotFoundException", True),
                                                 ("AccessDeniedException", True),
                                                 ("ValidationException", False)])
async def test_whole_call_errors(code: str, retryable: bool) -> None:
    error = ClientError({"Error": {"Code": code, "Message": "nope"}}, "PutRecords")
    dispatcher = fake_dispatcher(FakeKinesis(error=error))
    with pytest.raises(DispatchError) as caught:
        await dispatcher.publish([v_record()])
    assert caught.value.retryable is retryable and code in str(caught.value) and "'tesla-v'" in str(caught.value)


# -- against moto in server mode -----------------------------------------------------


@pytest.fixture
def moto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoServer]:
    if moto_server_binary() is None:
        pytest.skip("moto_server is not installed (pip install 'moto[server]')")
    for name, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    server = MotoServer(tmp_path / "moto").start()
    yield server
    server.kill()


def moto_dispatcher(moto: MotoServer, streams: Mapping[str, str], **kwargs: Any) -> KinesisDispatcher:
    settings = KinesisSettings(override_host=moto.url, region=REGION)
    return KinesisDispatcher(settings, streams, namespace="ns", **kwargs)


async def test_protobuf_and_json_payloads_in_their_streams_keyed_by_vin(moto: MotoServer) -> None:
    moto.create_stream("tesla-v", shards=2)
    moto.create_stream("ns_alerts")
    dispatcher = moto_dispatcher(moto, {"V": "tesla-v", "alerts": "ns_alerts"})
    await dispatcher.start()
    try:
        batch = [v_record(f"5YJ3E1EA7KF{n:06d}", n) for n in range(40)] + [alerts_record()]
        await dispatcher.publish(batch)
        dispatcher._decoded = True
        await dispatcher.publish([v_record(n=99)])
    finally:
        await dispatcher.close()
    found = list(moto.read_stream("tesla-v"))
    assert len(found) == 41
    protobufs = [r for r in found if not r["Data"].startswith(b"{")]
    for r in protobufs:
        message = vehicle_data_pb2.Payload.FromString(r["Data"])
        assert message.vin == r["PartitionKey"]
    assert {r["PartitionKey"] for r in protobufs} == {f"5YJ3E1EA7KF{n:06d}" for n in range(40)}
    assert len({r["ShardId"] for r in found}) == 2  # VINs spread over the shards
    (decoded,) = [json.loads(r["Data"]) for r in found if r["Data"].startswith(b"{")]
    assert decoded["vin"] == VIN and decoded["data"][0]["key"] == "Soc"
    (alert,) = moto.read_stream("ns_alerts")
    assert vehicle_alert_pb2.VehicleAlerts.FromString(alert["Data"]).alerts[0].name == "BMS_a066"


async def test_start_does_not_fail_with_the_endpoint_down(moto: MotoServer) -> None:
    moto.kill()
    dispatcher = moto_dispatcher(moto, {"V": "tesla-v"})
    await dispatcher.start()
    await asyncio.wait_for(dispatcher._check, 10)
    assert dispatcher.last_error  # logged, not raised
    with pytest.raises(DispatchError) as caught:
        await dispatcher.publish([v_record()])
    assert caught.value.retryable and "tesla-v" in str(caught.value)
    await dispatcher.close()


async def test_missing_stream_is_retried_until_created(moto: MotoServer) -> None:
    dispatcher = moto_dispatcher(moto, {"V": "later"})
    queue = DispatchQueue(dispatcher, retry_initial=0.05, retry_max=0.1)
    await queue.start()
    waiter = asyncio.get_running_loop().create_future()
    queue.offer(v_record(), waiter)
    for _ in range(200):  # the first attempt's answer; a loaded machine makes the client slow
        if queue.last_error:
            break
        await asyncio.sleep(0.05)
    assert not waiter.done() and "ResourceNotFoundException" in (queue.last_error or "")
    await asyncio.to_thread(moto.create_stream, "later")
    await asyncio.wait_for(waiter, 10)
    await queue.close()
    assert len(list(moto.read_stream("later"))) == 1


async def test_endpoint_down_mid_stream_nothing_acked_then_every_acked_record_in_the_stream(
    moto: MotoServer,
) -> None:
    """moto loses its streams on restart: what is proven is that nothing is confirmed while
    the endpoint is down and that every record confirmed afterwards is in the recreated stream."""
    moto.create_stream("tesla-v", shards=2)
    dispatcher = moto_dispatcher(moto, {"V": "tesla-v"})
    queue = DispatchQueue(dispatcher, batch_size=50, retry_initial=0.05, retry_max=0.5)
    await queue.start()
    loop = asyncio.get_running_loop()
    sent: dict[str, asyncio.Future[None]] = {}
    counter = iter(range(10**9))

    async def produce(seconds: float) -> None:
        end = loop.time() + seconds
        while loop.time() < end:
            for _ in range(20):
                n = next(counter)
                record = v_record(f"5YJ3E1EA7KF{n % 50:06d}", n)
                sent[record.txid] = waiter = loop.create_future()
                queue.offer(record, waiter)
            await asyncio.sleep(0.01)

    try:
        await produce(1.0)
        await asyncio.wait_for(asyncio.gather(*sent.values()), 10)
        before = {r["Data"] for r in await asyncio.to_thread(lambda: list(moto.read_stream("tesla-v")))}
        assert len(before) == len(sent) > 500

        await asyncio.to_thread(moto.kill)  # mid-stream: records keep coming
        during_start = len(sent)
        await produce(1.5)
        outage = {txid: w for txid, w in list(sent.items())[during_start:]}
        assert outage and not any(w.done() for w in outage.values()), "acked while the endpoint was down"
        assert queue.failures >= 1

        await asyncio.to_thread(moto.start)
        await asyncio.to_thread(moto.create_stream, "tesla-v", 2)  # moto restarted empty
        produce_more = asyncio.ensure_future(produce(1.0))
        await produce_more
        await asyncio.wait_for(asyncio.gather(*sent.values()), 20)
    finally:
        await queue.close()
    after = [r for r in await asyncio.to_thread(lambda: list(moto.read_stream("tesla-v")))]
    by_soc = {vehicle_data_pb2.Payload.FromString(r["Data"]).data[0].value.int_value: r for r in after}
    later = range(during_start, len(sent))
    missing = [n for n in later if n not in by_soc]
    assert missing == [], f"{len(missing)} acked records not in the stream, e.g. {missing[:5]}"
    assert all(by_soc[n]["PartitionKey"] == f"5YJ3E1EA7KF{n % 50:06d}" for n in later)
    assert queue.dropped == 0
