"""Simulated vehicles stream through the real server (mTLS) into Kinesis (moto in server mode).

Every record type's ack waits for Kinesis (`reliable_ack_sources`); an independent reader
(boto3: GetShardIterator, GetRecords) must then find every acked record in the stream its
type maps to — `kinesis.streams`, the `KINESIS_STREAM_<TYPE>` override, the namespace
fallback — with the VIN of the vehicle's certificate as partition key and in the payload.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvloop
from brokers.moto_server import FAKE_CREDENTIALS, MotoServer, moto_server_binary
from brokers.pubsub import PubsubStandIn
from conftest import free_port, server_config_data, streaming_fleet
from fleetwire.sim.fleet_pki import FleetPki, make_test_fleet_pki
from fleetwire.proto import vehicle_alert_pb2, vehicle_data_pb2, vehicle_error_pb2
from fleetwire.server.app import TelemetryServer
from fleetwire.server.config import load_config, parse_config

ASYNCIO_LOOP_FACTORY = uvloop.new_event_loop  # as `fleetwire serve` runs

VEHICLES = 100
RATE = 3.0  # records per second per vehicle, V, alerts and errors in turn
SECONDS = 3.0
STREAMS = {"V": "tesla-v", "alerts": "alerts-from-env", "errors": "fleet_errors"}
SCHEMAS = {"V": vehicle_data_pb2.Payload, "alerts": vehicle_alert_pb2.VehicleAlerts,
           "errors": vehicle_error_pb2.VehicleErrors}


@pytest.fixture
def moto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoServer]:
    if moto_server_binary() is None:
        pytest.skip("moto_server is not installed (pip install 'moto[server]')")
    for name, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    server = MotoServer(tmp_path / "moto").start()
    for stream in STREAMS.values():
        server.create_stream(stream, shards=2)
    yield server
    server.kill()


async def test_every_acked_record_is_in_its_stream_keyed_by_the_certificates_vin(
    tmp_path: Path, moto: MotoServer
) -> None:
    pki: FleetPki = make_test_fleet_pki(tmp_path / "pki")
    config, warnings = parse_config(
        server_config_data(pki, {
            "namespace": "fleet",
            "records": {"V": ["kinesis"], "alerts": ["kinesis"], "errors": ["kinesis"]},
            "reliable_ack_sources": {"V": "kinesis", "alerts": "kinesis", "errors": "kinesis"},
            # the reference's own shape: max_retries, override_host, streams
            "kinesis": {"max_retries": 3, "override_host": moto.url, "streams": {"V": "tesla-v", "alerts": "unused"}},
        }),
        pki.directory,
        env={**os.environ, "KINESIS_STREAM_ALERTS": "alerts-from-env"},
    )
    assert warnings == []
    server = TelemetryServer(config)
    assert server.queues["kinesis"].dispatcher.streams == STREAMS
    async with streaming_fleet(server, pki, tmp_path, VEHICLES) as (server, fleet):
        await fleet.stream(rate=RATE, duration=SECONDS, record_types=("V", "alerts", "errors"))
        await fleet.drain(timeout=30)
        summary = fleet.summary()
        acked = {v.vin: v.stats.acked for v in fleet.vehicles}

    assert summary.sent >= VEHICLES * RATE * SECONDS * 0.8
    assert summary.errors == 0 and summary.pending == 0 and summary.acked == summary.sent

    found: Counter[str] = Counter()
    per_type: Counter[str] = Counter()
    for record_type, stream in STREAMS.items():
        for item in await asyncio.to_thread(lambda s=stream: list(moto.read_stream(s))):
            message = SCHEMAS[record_type].FromString(item["Data"])
            assert item["PartitionKey"] in acked, item["PartitionKey"]
            assert message.vin == item["PartitionKey"]  # the certificate's VIN, in key and payload
            if record_type == "V":
                assert len(message.data) > 0
            elif record_type == "alerts":
                assert message.alerts and message.alerts[0].name
            else:
                assert message.errors and message.errors[0].name
            found[item["PartitionKey"]] += 1
            per_type[record_type] += 1
    missing = {vin: n - found[vin] for vin, n in acked.items() if found[vin] < n}
    assert missing == {}, f"acked but not in Kinesis: {dict(list(missing.items())[:5])}"
    assert sum(found.values()) == summary.acked  # and nothing written twice
    assert all(per_type[t] > 0 for t in STREAMS), per_type
    assert server.metrics.records["V"] == per_type["V"]


async def test_endpoint_killed_mid_stream_no_ack_until_it_is_back_then_every_acked_record_is_in(
    tmp_path: Path, moto: MotoServer
) -> None:
    """moto keeps streams in memory, so its restart loses what it held: this proves that no
    ack is sent while the endpoint is down and that every record acked after the restart
    is in the recreated stream (what Kinesis held before is Kinesis' to keep)."""
    pki: FleetPki = make_test_fleet_pki(tmp_path / "pki")
    config, _ = parse_config(
        server_config_data(pki, {
            "records": {"V": ["kinesis"]},
            "reliable_ack_sources": {"V": "kinesis"},
            "kinesis": {"override_host": moto.url, "streams": {"V": "tesla-v"}},
        }),
        pki.directory,
    )
    async with streaming_fleet(config, pki, tmp_path, 50) as (server, fleet):
        streaming = asyncio.ensure_future(fleet.stream(rate=4.0, duration=6.0))
        await asyncio.sleep(1.5)
        await asyncio.to_thread(moto.kill)
        await asyncio.sleep(0.5)  # acks of calls Kinesis answered before it went away
        before = {v.vin: v.stats.acked for v in fleet.vehicles}
        await asyncio.sleep(2.0)
        assert {v.vin: v.stats.acked for v in fleet.vehicles} == before, "acked while Kinesis was down"
        assert fleet.summary().pending > 0
        await asyncio.to_thread(moto.start)
        await asyncio.to_thread(moto.create_stream, "tesla-v", 2)  # as the user's infrastructure would
        await streaming
        await fleet.drain(timeout=40)
        summary = fleet.summary()
        after = {v.vin: v.stats.acked - before[v.vin] for v in fleet.vehicles}
    assert summary.errors == 0 and summary.pending == 0 and summary.acked == summary.sent
    found = Counter(item["PartitionKey"] for item in await asyncio.to_thread(lambda: list(moto.read_stream("tesla-v"))))
    missing = {vin: n - found[vin] for vin, n in after.items() if found[vin] < n}
    assert sum(after.values()) > 0 and missing == {}, f"acked but not in Kinesis: {dict(list(missing.items())[:5])}"


async def test_the_reference_integration_config_runs_unchanged_with_kinesis_and_pubsub(
    tmp_path: Path, moto: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reference's own test/integration/config.json (its kafka part aside, another
    backend's test), with only hosts, ports and certificate paths changed: V records go to
    kinesis (stream `<namespace>_V`), pubsub (topic `<namespace>_V`) and the logger."""
    pki: FleetPki = make_test_fleet_pki(tmp_path / "pki")
    standin = PubsubStandIn().start()
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", standin.host)
    await asyncio.to_thread(moto.create_stream, "tesla_telemetry_V")
    reference = {
        "host": "127.0.0.1", "port": free_port(), "status_port": free_port(),
        "log_level": "info", "json_log_enable": True, "namespace": "tesla_telemetry",
        "reliable_ack": True, "reliable_ack_workers": 15,
        "pubsub": {"gcp_project_id": "test-project-id"},
        "kinesis": {"override_host": moto.url, "max_retries": 3},
        "monitoring": {"prometheus_metrics_port": free_port(), "profiler_port": 4269,
                       "profiling_path": str(tmp_path / "profile")},
        "rate_limit": {"enabled": True, "message_interval_time": 30, "message_limit": 1000},
        "records": {"V": ["kinesis", "pubsub", "logger"]},
        "tls": {"ca_file": str(pki.ca_file), "server_cert": str(pki.server_cert), "server_key": str(pki.server_key)},
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(reference, indent=4))
    config, _warnings = load_config(path)
    async with streaming_fleet(config, pki, tmp_path, 10) as (server, fleet):
        await fleet.stream(rate=5.0, duration=1.0)
        await fleet.drain(timeout=10)
        sent = fleet.summary().sent
        for _ in range(100):  # no reliable ack here: wait for the queues to empty
            if all(q.qsize == 0 for q in server.queues.values()):
                break
            await asyncio.sleep(0.05)
        standin.stop()
    in_kinesis = await asyncio.to_thread(lambda: list(moto.read_stream("tesla_telemetry_V")))
    in_pubsub = standin.messages["projects/test-project-id/topics/tesla_telemetry_V"]
    assert sent > 0 and len(in_kinesis) == sent and len(in_pubsub) == sent
    vins = {v.vin for v in fleet.vehicles}
    assert {r["PartitionKey"] for r in in_kinesis} == vins
    assert {m.attributes["vin"] for m in in_pubsub} == vins
