"""DispatchQueue: batching, back-pressure, lossy dropping, retries and confirmation."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from fleetwire.server.dispatch import Dispatcher, DispatchError
from fleetwire.server.dispatch_queue import DispatchQueue
from fleetwire.server.records import Record


def record(n: int, record_type: str = "V") -> Record:
    return Record(
        record_type=record_type, vin="5YJ3E1EA7KF000001", client_type="vehicle_device", txid=f"tx{n}",
        connection_id="c1", payload=b"\x1a\x11" + str(n).encode(), message=None,
        created_at=1700000000.0, received_at=1700000000.5,
    )


class FakeBackend:
    """An in-memory backend that can be held, made to fail, or made to crash."""

    name = "fake"

    def __init__(self) -> None:
        self.stored: list[str] = []
        self.batches: list[int] = []
        self.calls = 0
        self.fail_times = 0
        self.error: Exception = DispatchError("backend down")
        self.gate = asyncio.Event()
        self.gate.set()
        self.started = False
        self.closed = False

    async def start(self) -> None:
        self.started = True

    async def publish(self, batch: Sequence[Record]) -> None:
        self.calls += 1
        await self.gate.wait()
        if self.fail_times:
            self.fail_times -= 1
            raise self.error
        self.batches.append(len(batch))
        self.stored.extend(r.txid for r in batch)

    async def close(self) -> None:
        self.closed = True


class Hooks:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, object]] = []

    def published(self, dispatcher: str, batch: Sequence[Record], now: float) -> None:
        self.events.append(("published", dispatcher, len(batch)))

    def dropped(self, dispatcher: str, count: int) -> None:
        self.events.append(("dropped", dispatcher, count))

    def failed(self, dispatcher: str, error: BaseException) -> None:
        self.events.append(("failed", dispatcher, str(error)))


async def settle(queue: DispatchQueue, timeout: float = 5.0) -> None:
    async def empty() -> None:
        while queue.qsize:
            await asyncio.sleep(0.005)

    await asyncio.wait_for(empty(), timeout)


def test_fake_backend_satisfies_the_protocol() -> None:
    assert isinstance(FakeBackend(), Dispatcher)


async def test_publishes_in_order_in_bounded_batches_and_confirms() -> None:
    backend = FakeBackend()
    queue = DispatchQueue(backend, maxsize=100, batch_size=7)
    await queue.start()
    assert backend.started
    loop = asyncio.get_running_loop()
    waiters = [loop.create_future() for _ in range(30)]
    for n, waiter in enumerate(waiters):
        assert queue.offer(record(n), waiter)
    await asyncio.wait_for(asyncio.gather(*waiters), 5)
    assert backend.stored == [f"tx{n}" for n in range(30)]
    assert max(backend.batches) <= 7 and sum(backend.batches) == 30
    assert (queue.published, queue.dropped, queue.failures, queue.qsize) == (30, 0, 0, 0)
    await queue.close()
    assert backend.closed


async def test_full_queue_asks_for_back_pressure_and_signals_room() -> None:
    backend = FakeBackend()
    backend.gate.clear()  # the backend hangs
    queue = DispatchQueue(backend, maxsize=10, batch_size=2)
    await queue.start()
    accepted = [queue.offer(record(n)) for n in range(12)]
    await asyncio.sleep(0.01)  # the worker takes a first batch of 2 and hangs on it
    # The 10th record filled the bound: False from there on, but records are kept.
    assert accepted[:9] == [True] * 9 and accepted[9:] == [False] * 3
    assert queue.qsize == 12 and queue.dropped == 0
    room = asyncio.ensure_future(queue.space_available())
    await asyncio.sleep(0.02)
    assert not room.done()
    backend.gate.set()
    await asyncio.wait_for(room, 5)
    await settle(queue)
    assert backend.stored == [f"tx{n}" for n in range(12)]
    await queue.close()


async def test_lossless_queue_takes_every_record_past_its_bound_and_asks_for_pauses() -> None:
    backend = FakeBackend()
    backend.gate.clear()
    queue = DispatchQueue(backend, maxsize=4, batch_size=1)
    loop = asyncio.get_running_loop()
    waiters = [loop.create_future() for _ in range(10)]
    results = [queue.offer(record(n), waiters[n]) for n in range(10)]
    assert results == [True, True, True, False, False, False, False, False, False, False]
    assert queue.qsize == 10 and queue.dropped == 0
    assert not any(w.done() for w in waiters)


async def test_lossy_queue_drops_and_counts_instead_of_pausing() -> None:
    backend = FakeBackend()
    backend.gate.clear()
    hooks = Hooks()
    queue = DispatchQueue(backend, maxsize=3, batch_size=10, lossy=True, observer=hooks)
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    results = [queue.offer(record(n)) for n in range(3)] + [queue.offer(record(3), waiter)]
    assert results == [True, True, True, True]
    assert queue.dropped == 1 and queue.qsize == 3
    assert isinstance(waiter.exception(), DispatchError)
    assert ("dropped", "fake", 1) in hooks.events
    await queue.start()
    backend.gate.set()
    await settle(queue)
    assert backend.stored == ["tx0", "tx1", "tx2"]
    await queue.close()


async def test_outage_is_retried_and_confirmation_waits_for_the_backend() -> None:
    backend = FakeBackend()
    backend.fail_times = 4
    hooks = Hooks()
    queue = DispatchQueue(backend, maxsize=100, batch_size=50, retry_initial=0.01, retry_max=0.02, observer=hooks)
    await queue.start()
    loop = asyncio.get_running_loop()
    waiters = [loop.create_future() for _ in range(5)]
    for n, waiter in enumerate(waiters):
        queue.offer(record(n), waiter)
    await asyncio.sleep(0.02)
    assert not any(w.done() for w in waiters)  # nothing stored yet, nothing confirmed
    await asyncio.wait_for(asyncio.gather(*waiters), 5)
    assert backend.stored == [f"tx{n}" for n in range(5)]  # once each, in order
    assert queue.failures == 4 and queue.dropped == 0 and queue.published == 5
    assert queue.last_error is None
    assert [e[0] for e in hooks.events].count("failed") == 4 and hooks.events[-1] == ("published", "fake", 5)
    await queue.close()


async def test_lossy_queue_gives_up_after_its_attempts() -> None:
    backend = FakeBackend()
    backend.fail_times = 100
    queue = DispatchQueue(backend, maxsize=10, lossy=True, retry_initial=0.001, lossy_attempts=3)
    await queue.start()
    queue.offer(record(0))
    await settle(queue)
    assert backend.calls == 3 and queue.dropped == 1 and queue.published == 0
    await queue.close()


async def test_permanent_failure_fails_the_batch_and_the_worker_goes_on() -> None:
    backend = FakeBackend()
    backend.fail_times = 1
    backend.error = DispatchError("refused for good", retryable=False)
    queue = DispatchQueue(backend, maxsize=10, batch_size=2)
    loop = asyncio.get_running_loop()
    waiters = [loop.create_future() for _ in range(3)]
    for n, waiter in enumerate(waiters):
        queue.offer(record(n), waiter)
    await queue.start()
    results = await asyncio.wait_for(asyncio.gather(*waiters, return_exceptions=True), 5)
    assert isinstance(results[0], DispatchError) and isinstance(results[1], DispatchError)
    assert results[2] is None
    assert backend.stored == ["tx2"]
    assert queue.dropped == 2 and queue.failures == 1 and queue.published == 1
    await queue.close()


async def test_unexpected_error_publishes_the_batch_again_record_by_record() -> None:
    """A dispatcher bug (an exception other than DispatchError) may be one record's doing:
    each record is tried alone, and only those that fail alone are given up."""
    backend = FakeBackend()
    backend.fail_times = 2  # the batch, then its first record alone
    backend.error = RuntimeError("dispatcher bug")
    queue = DispatchQueue(backend, maxsize=10, batch_size=3)
    loop = asyncio.get_running_loop()
    waiters = [loop.create_future() for _ in range(3)]
    for n, waiter in enumerate(waiters):
        queue.offer(record(n), waiter)
    await queue.start()
    results = await asyncio.wait_for(asyncio.gather(*waiters, return_exceptions=True), 5)
    assert isinstance(results[0], DispatchError) and results[1:] == [None, None]
    assert backend.stored == ["tx1", "tx2"]
    assert queue.dropped == 1 and queue.failures == 2 and queue.published == 2
    await queue.close()


async def test_close_drains_what_is_queued() -> None:
    backend = FakeBackend()
    queue = DispatchQueue(backend, maxsize=1000, batch_size=16)
    await queue.start()
    for n in range(100):
        queue.offer(record(n))
    await queue.close(timeout=5)
    assert len(backend.stored) == 100 and backend.closed


async def test_close_with_backend_down_fails_the_rest_after_the_timeout() -> None:
    backend = FakeBackend()
    backend.fail_times = 10**6
    queue = DispatchQueue(backend, maxsize=100, batch_size=2, retry_initial=0.01, retry_max=0.01)
    await queue.start()
    loop = asyncio.get_running_loop()
    waiters = [loop.create_future() for _ in range(5)]
    for n, waiter in enumerate(waiters):
        queue.offer(record(n), waiter)
    await asyncio.sleep(0.03)
    await queue.close(timeout=0.1)
    assert all(isinstance(w.exception(), DispatchError) for w in waiters)  # including the in-flight batch
    assert queue.dropped == 5 and queue.qsize == 0 and backend.closed
    late = loop.create_future()
    assert queue.offer(record(99), late) is True  # no pause after shutdown ...
    assert isinstance(late.exception(), DispatchError)  # ... but no silent loss either
    await asyncio.wait_for(queue.space_available(), 1)


async def test_cancelled_waiter_does_not_break_the_worker() -> None:
    backend = FakeBackend()
    queue = DispatchQueue(backend, maxsize=10)
    loop = asyncio.get_running_loop()
    gone, kept = loop.create_future(), loop.create_future()
    queue.offer(record(0), gone)
    queue.offer(record(1), kept)
    gone.cancel()  # the vehicle disconnected before the record was stored
    await queue.start()
    await asyncio.wait_for(kept, 5)
    assert backend.stored == ["tx0", "tx1"]
    await queue.close()


async def test_wait_for_room_is_space_available() -> None:
    queue = DispatchQueue(FakeBackend(), maxsize=4)
    await asyncio.wait_for(queue.wait_for_room(), 1)
