"""Session and DispatchQueue together, without sockets: a reliable record is acked once its
dispatcher stored it, never before, never when the queue gave up on it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from fleetwire.proto import vehicle_data_pb2
from fleetwire.proto.envelope_codec import decode_reply, encode_stream
from fleetwire.server.dispatch import DispatchError
from fleetwire.server.dispatch_queue import DispatchQueue
from fleetwire.server.identity import Identity
from fleetwire.server.metrics import ServerMetrics
from fleetwire.server.records import Record
from fleetwire.server.session import Peer, Route, Router, Session

VIN = "5YJ3E1EA7KF000001"


class Link:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[bytes] = []
        self.fail = fail

    def send(self, data: bytes) -> None:
        if self.fail:
            raise ConnectionError("the transport broke")
        self.sent.append(data)

    def hold(self, queue: DispatchQueue) -> None:
        raise AssertionError("no back-pressure expected")


class Backend:
    name = "backend"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.error: DispatchError | None = None
        self.stored: list[Record] = []

    async def start(self) -> None: ...

    async def publish(self, batch: Sequence[Record]) -> None:
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        self.stored.extend(batch)

    async def close(self) -> None: ...


def frame(n: int, vin: str = VIN) -> bytes:
    payload = vehicle_data_pb2.Payload(vin=vin)
    payload.data.add(key=vehicle_data_pb2.Soc).value.int_value = n
    return encode_stream(b"tx-%d" % n, b"V", payload.SerializeToString(), created_at=1_700_000_000)


async def setup(link: Link) -> tuple[Session, DispatchQueue, Backend, ServerMetrics]:
    backend = Backend()
    queue = DispatchQueue(backend, retry_initial=0.01)
    await queue.start()
    metrics = ServerMetrics()
    router = Router({"V": Route((queue,), confirm=queue)})
    return Session(Identity(VIN, "vehicle_device"), Peer("c1"), router, metrics, link), queue, backend, metrics


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_acked_only_once_stored_in_order() -> None:
    link = Link()
    session, queue, backend, metrics = await setup(link)
    for n in range(3):
        session.message(frame(n))
    await settle()
    assert link.sent == []  # the backend holds nothing yet
    backend.gate.set()
    await settle()
    assert [r.txid for r in backend.stored] == ["tx-0", "tx-1", "tx-2"]
    assert [(decode_reply(d).kind, decode_reply(d).txid) for d in link.sent] == [
        ("ack", b"tx-0"), ("ack", b"tx-1"), ("ack", b"tx-2")]
    assert metrics.acks == 3 and not metrics.errors
    await queue.close()


async def test_a_record_given_up_is_counted_not_acked() -> None:
    link = Link()
    session, queue, backend, metrics = await setup(link)
    backend.error = DispatchError("refused for good", retryable=False)
    session.message(frame(0))
    backend.gate.set()
    await settle()
    assert link.sent == [] and metrics.acks == 0
    assert metrics.errors["dispatch_failed"] == 1
    await queue.close()


async def test_a_broken_link_costs_no_other_record_its_ack() -> None:
    """An ack whose transport raises must not stop the worker, nor the batch's other acks."""
    broken, working = Link(fail=True), Link()
    session, queue, backend, metrics = await setup(broken)
    other = Session(Identity("5YJ3E1EA7KF000002", "vehicle_device"), Peer("c2"), session._router, metrics, working)
    session.message(frame(0))
    other.message(frame(1, "5YJ3E1EA7KF000002"))
    backend.gate.set()
    await settle()
    assert [decode_reply(d).txid for d in working.sent] == [b"tx-1"]
    other.message(frame(2, "5YJ3E1EA7KF000002"))  # the worker still runs
    await settle()
    assert [decode_reply(d).txid for d in working.sent] == [b"tx-1", b"tx-2"]
    await queue.close()


async def test_a_forged_vin_is_replaced_by_the_certificates() -> None:
    link = Link()
    session, queue, backend, _ = await setup(link)
    session.message(frame(0, vin="5YJ3E1EA7KF999999"))
    backend.gate.set()
    await settle()
    assert vehicle_data_pb2.Payload.FromString(backend.stored[0].payload).vin == VIN
    assert backend.stored[0].vin == VIN
    await queue.close()
