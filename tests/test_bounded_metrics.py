"""Label values fed from the wire come from a fixed set: a vehicle cannot grow the scrape."""

from __future__ import annotations

from fleetwire.server.dispatch_queue import DispatchQueue
from fleetwire.proto.envelope_codec import decode_reply, encode_stream
from fleetwire.server.identity import Identity
from fleetwire.server.metrics import ServerMetrics
from fleetwire.server.session import Peer, Router, Session
from prometheus_client import generate_latest

VIN = "5YJ3E1EA7KF000001"


class _Link:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def hold(self, queue: DispatchQueue) -> None:
        raise AssertionError("nothing is dispatched here")


def _series(metrics: ServerMetrics, name: str) -> dict[str, float]:
    """Label value -> count of the one-label family `name`."""
    return {
        sample.labels["record_type"]: sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == name
    }


def test_unrouted_topics_from_the_wire_are_counted_under_a_fixed_set_of_labels() -> None:
    metrics = ServerMetrics()
    link = _Link()
    session = Session(Identity(VIN, "vehicle_device"), Peer("c1", "wifi"), Router({}), metrics, link)
    topics = [f"junk-{n}".encode() for n in range(20_000)] + [b"alerts", b"V", b"\xff\xfe", b"connectivity"]
    for n, topic in enumerate(topics):
        session.message(encode_stream(str(n).encode(), topic, b"", sender_id=VIN.encode()))

    assert [decode_reply(reply).kind for reply in link.sent] == ["ack"] * len(topics)  # each still acked
    assert _series(metrics, "fleetwire_records_unrouted_total") == {
        "other": 20_001, "alerts": 1, "V": 1, "connectivity": 1,
    }
    assert len(generate_latest(metrics.registry)) < 10_000
