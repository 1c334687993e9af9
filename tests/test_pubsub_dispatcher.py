"""The pubsub dispatcher: the reference's settings and addressing, against an in-process
stand-in of the Publisher gRPC service (reached through PUBSUB_EMULATOR_HOST), and what a
partial failure, a deleted topic and an outage do."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import pytest
from brokers.pubsub import PubsubStandIn
from conftest import server_config_data
from fleetwire.sim.fleet_pki import FleetPki
from fleetwire.proto import vehicle_data_pb2
from fleetwire.server.config import ConfigError, parse_config
from fleetwire.server.dispatchers import pubsub
from fleetwire.server.dispatch import DispatchError
from fleetwire.server.dispatch_queue import DispatchQueue
from fleetwire.server.records import Record
from fleetwire.server.dispatchers.pubsub import PubsubDispatcher, PubsubSettings
from google.pubsub_v1 import types

VIN = "5YJ3E1EA7KF000001"
T0 = 1_700_000_000
PROJECT = "test-project"


def v_record(vin: str = VIN, n: int = 0, record_type: str = "V") -> Record:
    message = vehicle_data_pb2.Payload(vin=vin)
    message.created_at.seconds = T0 + n
    message.data.add(key=vehicle_data_pb2.Soc).value.int_value = n
    return Record(record_type, vin, "vehicle_device", f"{vin}-{n}", "conn-1", message.SerializeToString(), message,
                  float(T0 + n), T0 + n + 0.25, client_version="2025.2.6")


# -- settings ------------------------------------------------------------------------


def service_account_file(path: Path) -> Path:
    """A service account key file as Google Cloud issues them (with a fresh RSA key)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path.write_text(json.dumps({
        "type": "service_account", "project_id": PROJECT, "private_key_id": "0" * 40, "private_key": pem,
        "client_email": f"fleetwire@{PROJECT}.iam.gserviceaccount.com", "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }))
    return path


@pytest.mark.parametrize("content", ["{}", "not json", '{"type": "service_account", "private_key": "-----BEGIN'])
def test_a_credentials_file_that_is_not_one_is_named_and_never_echoed(fleet_pki: FleetPki, tmp_path: Path,
                                                                       content: str) -> None:
    key = tmp_path / "key.json"
    key.write_text(content)
    error = error_of(fleet_pki, {"gcp_project_id": PROJECT}, {"GOOGLE_APPLICATION_CREDENTIALS": str(key)},
                     namespace="fleet")
    assert error.key == "GOOGLE_APPLICATION_CREDENTIALS" and "cannot use" in error.message
    assert "BEGIN" not in str(error)


def parsed(pki: FleetPki, section: Mapping[str, Any], env: Mapping[str, str], **top: Any) -> Any:
    data = server_config_data(pki, {"records": {"V": ["pubsub"], "alerts": ["pubsub"]}, "pubsub": section, **top})
    config, _ = parse_config(data, pki.directory, env=env)
    return config


def error_of(pki: FleetPki, section: Mapping[str, Any], env: Mapping[str, str], **top: Any) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        pubsub.create(parsed(pki, section, env, **top))
    return caught.value


def test_emulator_or_credentials_file(fleet_pki: FleetPki, tmp_path: Path) -> None:
    config = parsed(fleet_pki, {"gcp_project_id": PROJECT}, {"PUBSUB_EMULATOR_HOST": "localhost:8085"},
                    namespace="fleet")
    settings = config.backend("pubsub")
    assert settings == PubsubSettings(PROJECT, emulator_host="localhost:8085")
    dispatcher = pubsub.create(config)
    assert dispatcher.topics == {"V": "fleet_V", "alerts": "fleet_alerts"}
    assert dispatcher.path("V") == f"projects/{PROJECT}/topics/fleet_V"
    key = service_account_file(tmp_path / "key.json")
    settings = parsed(fleet_pki, {"gcp_project_id": PROJECT}, {"GOOGLE_APPLICATION_CREDENTIALS": str(key)},
                      namespace="fleet").backend("pubsub")
    assert settings.credentials_file == key.resolve() and not settings.emulator_host
    client = PubsubDispatcher(settings, {"V": "fleet_V"})._new_client()  # builds offline
    try:
        assert client.transport._host == "pubsub.googleapis.com:443"
        assert client._transport._credentials.service_account_email == f"fleetwire@{PROJECT}.iam.gserviceaccount.com"
    finally:
        PubsubDispatcher._stop_client(client)


@pytest.mark.parametrize(
    ("section", "env", "key", "words"),
    [
        ({"gcp_project_id": PROJECT}, {"PUBSUB_EMULATOR_HOST": "localhost:8085",
                                       "GOOGLE_APPLICATION_CREDENTIALS": "/k.json"},
         "PUBSUB_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS"),
        ({"gcp_project_id": PROJECT}, {}, "pubsub", "no credentials"),
        ({"gcp_project_id": PROJECT}, {"GOOGLE_APPLICATION_CREDENTIALS": "/nonexistent/key.json"},
         "GOOGLE_APPLICATION_CREDENTIALS", "not found"),
        ({"gcp_project_id": PROJECT}, {"PUBSUB_EMULATOR_HOST": "localhost"}, "PUBSUB_EMULATOR_HOST", "host:port"),
        ({"gcp_project_id": PROJECT}, {"PUBSUB_EMULATOR_HOST": "h:99999"}, "PUBSUB_EMULATOR_HOST", "host:port"),
        ({}, {"PUBSUB_EMULATOR_HOST": "localhost:8085"}, "pubsub.gcp_project_id", "missing"),
        ({"gcp_project_id": "my project"}, {"PUBSUB_EMULATOR_HOST": "localhost:8085"}, "pubsub.gcp_project_id",
         "project id"),
        ({"gcp_project_id": 7}, {"PUBSUB_EMULATOR_HOST": "localhost:8085"}, "pubsub.gcp_project_id", "string"),
    ],
)
def test_invalid_settings_name_the_key(fleet_pki: FleetPki, section: dict[str, Any], env: dict[str, str],
                                       key: str, words: str) -> None:
    error = error_of(fleet_pki, section, env, namespace="fleet")
    assert error.key == key and words in error.message, error


def test_a_namespace_that_makes_no_topic_name_is_named(fleet_pki: FleetPki) -> None:
    error = error_of(fleet_pki, {"gcp_project_id": PROJECT}, {"PUBSUB_EMULATOR_HOST": "localhost:8085"}, namespace="")
    assert error.key == "namespace" and "<namespace>_V" in error.message  # "" makes "_V"


def test_environment_is_not_checked_when_pubsub_is_not_in_use(fleet_pki: FleetPki) -> None:
    data = server_config_data(fleet_pki, {"pubsub": {}})
    config, warnings = parse_config(data, fleet_pki.directory, env={"PUBSUB_EMULATOR_HOST": "x",
                                                                     "GOOGLE_APPLICATION_CREDENTIALS": "y"})
    assert config.backend("pubsub") == PubsubSettings() and warnings == []


def test_missing_section_is_named(fleet_pki: FleetPki) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(server_config_data(fleet_pki, {"records": {"V": ["pubsub"]}}), fleet_pki.directory, env={})
    assert caught.value.key == "pubsub"


# -- Publish requests and their failures (a fake client) ------------------------------


class FakePublisher:
    """Answers Publish like Pub/Sub; `fail(request, call_number)` returns an error to raise."""

    def __init__(self, fail: Any = None) -> None:
        self.fail = fail or (lambda request, call: None)
        self.requests: list[Any] = []
        self.published: list[tuple[str, bytes, dict[str, str]]] = []

    def publish(self, request: Any, retry: Any = None, timeout: Any = None) -> Any:
        self.requests.append(request)
        error = self.fail(request, len(self.requests))
        if error is not None:
            raise error
        ids = []
        for message in request.messages:
            self.published.append((request.topic, message.data, dict(message.attributes)))
            ids.append(str(len(self.published)))
        return types.PublishResponse(message_ids=ids)

    def get_topic(self, request: Any, retry: Any = None, timeout: Any = None) -> None:
        return None


def fake_dispatcher(client: FakePublisher) -> PubsubDispatcher:
    return PubsubDispatcher(PubsubSettings(PROJECT, emulator_host="x:1"), {"V": "ns_V", "alerts": "ns_alerts"},
                            client=client)


async def test_one_request_per_topic_and_a_failed_one_alone_is_sent_again() -> None:
    from google.api_core import exceptions

    failing = {"on": True}
    client = FakePublisher(lambda request, call: exceptions.ServiceUnavailable("down")
                           if failing["on"] and request.topic.endswith("ns_alerts") else None)
    dispatcher = fake_dispatcher(client)
    await dispatcher.start()
    batch = [v_record(n=n, record_type="V" if n % 3 else "alerts") for n in range(30)]
    with pytest.raises(DispatchError) as caught:
        await dispatcher.publish(batch)
    assert caught.value.retryable and "10 of 30" in str(caught.value) and "UNAVAILABLE: down" in str(caught.value)
    assert sorted(len(r.messages) for r in client.requests) == [10, 20]
    failing["on"] = False
    await dispatcher.publish(batch)  # the queue's retry of the same batch
    assert [(r.topic.rsplit("/", 1)[1], len(r.messages)) for r in client.requests[2:]] == [("ns_alerts", 10)]
    txids = sorted(attrs["txid"] for _, _, attrs in client.published)
    assert txids == sorted(r.txid for r in batch)  # each exactly once


async def test_requests_split_at_1000_messages() -> None:
    client = FakePublisher()
    dispatcher = fake_dispatcher(client)
    await dispatcher.start()
    await dispatcher.publish([v_record(n=n) for n in range(2500)])
    assert [len(r.messages) for r in client.requests] == [1000, 1000, 500]


async def test_a_refused_request_fails_the_batch_for_good() -> None:
    from google.api_core import exceptions

    dispatcher = fake_dispatcher(FakePublisher(lambda request, call: exceptions.InvalidArgument("bad attribute")))
    await dispatcher.start()
    with pytest.raises(DispatchError) as caught:
        await dispatcher.publish([v_record()])
    assert not caught.value.retryable and "INVALID_ARGUMENT" in str(caught.value)


# -- against the stand-in ------------------------------------------------------------


@pytest.fixture
def standin() -> Iterator[PubsubStandIn]:
    server = PubsubStandIn().start()
    yield server
    server.stop()


def standin_dispatcher(standin: PubsubStandIn, types: tuple[str, ...] = ("V",), **kwargs: Any) -> PubsubDispatcher:
    return PubsubDispatcher(PubsubSettings(PROJECT, emulator_host=standin.host),
                            {t: f"ns_{t}" for t in types}, namespace="ns", **kwargs)


async def test_topics_created_at_start_messages_with_the_metadata_as_attributes(standin: PubsubStandIn) -> None:
    standin.create_topic(f"projects/{PROJECT}/topics/ns_alerts")  # exists already: left alone
    dispatcher = standin_dispatcher(standin, ("V", "alerts"))
    await dispatcher.start()
    try:
        assert dispatcher.topics_created == [f"projects/{PROJECT}/topics/ns_V"]
        assert ("CreateTopic", f"projects/{PROJECT}/topics/ns_alerts") not in standin.requests
        await dispatcher.publish([v_record(n=1), v_record(n=2, record_type="alerts")])
        dispatcher._decoded = True
        await dispatcher.publish([v_record(n=3)])
    finally:
        await dispatcher.close()
    v_messages = standin.messages[f"projects/{PROJECT}/topics/ns_V"]
    assert len(v_messages) == 2 and len(standin.messages[f"projects/{PROJECT}/topics/ns_alerts"]) == 1
    first = v_messages[0]
    assert vehicle_data_pb2.Payload.FromString(first.data).vin == VIN
    assert dict(first.attributes) == {
        "vin": VIN, "receivedat": str((T0 + 1) * 1000 + 250), "timestamp": "0", "version": "0",
        "txid": f"{VIN}-1", "txtype": "V", "device_client_version": "2025.2.6",
    }
    assert first.ordering_key == ""
    decoded = json.loads(v_messages[1].data)
    assert decoded["vin"] == VIN and decoded["data"][0]["value"]["intValue"] == 3


async def test_start_does_not_fail_with_the_service_down_and_topics_come_later(standin: PubsubStandIn) -> None:
    standin.stop()
    dispatcher = standin_dispatcher(standin)
    await asyncio.wait_for(dispatcher.start(), 10)
    queue = DispatchQueue(dispatcher, retry_initial=0.05, retry_max=0.2)
    await queue.start()
    waiter = asyncio.get_running_loop().create_future()
    queue.offer(v_record(), waiter)
    await asyncio.sleep(0.5)
    assert not waiter.done() and queue.failures >= 1 and "UNAVAILABLE" in (queue.last_error or "")
    standin.start()
    await asyncio.wait_for(waiter, 10)
    await queue.close()
    assert dispatcher.topics_created == [f"projects/{PROJECT}/topics/ns_V"]
    assert len(standin.messages[f"projects/{PROJECT}/topics/ns_V"]) == 1


async def test_a_deleted_topic_is_created_again(standin: PubsubStandIn) -> None:
    dispatcher = standin_dispatcher(standin)
    queue = DispatchQueue(dispatcher, retry_initial=0.05)
    await queue.start()
    path = f"projects/{PROJECT}/topics/ns_V"
    del standin.topics[path]
    waiter = asyncio.get_running_loop().create_future()
    queue.offer(v_record(), waiter)
    await asyncio.wait_for(waiter, 10)
    await queue.close()
    assert dispatcher.topics_created == [path, path] and len(standin.messages[path]) == 1


@pytest.mark.parametrize("outage", ["UNAVAILABLE", "port closed"])
async def test_outage_mid_stream_nothing_acked_then_every_acked_record_arrives(
    standin: PubsubStandIn, outage: str
) -> None:
    dispatcher = standin_dispatcher(standin)
    queue = DispatchQueue(dispatcher, batch_size=100, retry_initial=0.05, retry_max=0.5)
    await queue.start()
    loop = asyncio.get_running_loop()
    sent: list[tuple[Record, asyncio.Future[None]]] = []
    counter = iter(range(10**9))

    async def produce(seconds: float) -> None:
        end = loop.time() + seconds
        while loop.time() < end:
            for _ in range(20):
                n = next(counter)
                record = v_record(f"5YJ3E1EA7KF{n % 50:06d}", n)
                waiter = loop.create_future()
                sent.append((record, waiter))
                queue.offer(record, waiter)
            await asyncio.sleep(0.01)

    try:
        await produce(0.5)
        await asyncio.wait_for(asyncio.gather(*(w for _, w in sent)), 10)
        if outage.startswith("UNAVAILABLE"):
            standin.fail(grpc.StatusCode.UNAVAILABLE)
        else:
            await asyncio.to_thread(standin.stop)
        during = len(sent)
        await produce(1.5)
        assert not any(w.done() for _, w in sent[during:]), "acked while Pub/Sub was down"
        assert queue.failures >= 2
        if outage.startswith("UNAVAILABLE"):
            standin.fail(None)
        else:
            await asyncio.to_thread(standin.start)
        await produce(0.5)
        await asyncio.wait_for(asyncio.gather(*(w for _, w in sent)), 20)
    finally:
        await queue.close()
    stored = {m.attributes["txid"] for m in standin.messages[f"projects/{PROJECT}/topics/ns_V"]}
    missing = [r.txid for r, _ in sent if r.txid not in stored]
    assert len(stored) == len(sent)
    assert missing == [], f"{len(missing)} acked records not in Pub/Sub, e.g. {missing[:3]}"
    assert queue.dropped == 0
