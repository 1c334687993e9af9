"""The dispatcher protocol, the record dispatchers receive, and the queue in front of each.

The vehicle's read loop never awaits a backend: it `offer`s records to a `DispatchQueue`
(synchronous, non-blocking) and a worker task per dispatcher publishes them in batches.
A slow or absent backend therefore costs memory up to the queue's bound, then pauses
the vehicles (back-pressure) — or, for a dispatcher configured lossy, drops records —
instead of stalling every connection the way a synchronous publish would.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from fleetwire.server.records import render_json

log = logging.getLogger("fleetwire.dispatch")


class RenderProblems:
    """Records a dispatcher could not render in full, counted by (record type, dispatcher)
    for `fleetwire_records_unrenderable_total` and logged at most once per `interval`
    per dispatcher. Such a record is still published, degraded (a value printed raw);
    only one whose encoding raised even alone is given up — never the rest of its batch:
    one vehicle's bad value costs no one else's data.

    Process-wide, like the log: every encoder reports here through `report`.
    """

    def __init__(self, interval: float = 60.0) -> None:
        self.interval = interval
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self._unlogged: collections.Counter[str] = collections.Counter()
        self._next_log: dict[str, float] = {}

    def report(self, dispatcher: str, record: Record, problems: Sequence[str]) -> None:
        """Count `record` once for `dispatcher` (a retried batch is not counted again)."""
        if not problems:
            return
        reported = record._render_reported
        if reported is None:
            reported = record._render_reported = set()
        elif dispatcher in reported:
            return
        reported.add(dispatcher)
        self.counts[(record.record_type, dispatcher)] += 1
        self._unlogged[dispatcher] += 1
        now = time.monotonic()
        if now < self._next_log.get(dispatcher, 0.0):
            return
        self._next_log[dispatcher] = now + self.interval
        count = self._unlogged.pop(dispatcher)
        log.warning(
            "%s: %d record(s) rendered with values printed raw (fleetwire_records_unrenderable_total; "
            "logged at most every %.0f s); latest: %s record of %s (txid %s): %s",
            dispatcher, count, self.interval, record.record_type, record.vin, record.txid, "; ".join(problems[:3]),
        )


render_problems = RenderProblems()


@dataclass(slots=True)
class Record:
    """One decoded record on its way to the backends; shared by every dispatcher it goes to."""

    record_type: str
    vin: str
    client_type: str
    txid: str
    connection_id: str
    payload: bytes  # the re-encoded protobuf (VIN from the certificate)
    message: Any  # the decoded protobuf message
    created_at: float
    received_at: float
    client_version: str = ""  # the vehicle's `Version` header (metadata `device_client_version`)
    _json: bytes | None = field(default=None, init=False, repr=False, compare=False)
    _json_problems: list[str] | None = field(default=None, init=False, repr=False, compare=False)
    _render_reported: set[str] | None = field(default=None, init=False, repr=False, compare=False)

    def json(self, dispatcher: str | None = None) -> bytes:
        """Compact one-line protobuf-JSON of `message`, computed once however many
        dispatchers ask; never raises.

        A value protobuf-JSON cannot print (a timestamp past year 9999, say) is printed
        raw (see `protojson.render`); pass the dispatcher's name so that such a record is
        counted and logged for it.
        """
        cached = self._json
        if cached is None:
            cached, self._json_problems = render_json(self.message)
            self._json = cached
        if self._json_problems and dispatcher is not None:
            render_problems.report(dispatcher, self, self._json_problems)
        return cached


class DispatchError(Exception):
    """A publish did not reach the backend.

    `retryable` (the default) means the same batch may succeed later — a broker outage,
    a timeout — so the queue keeps it and retries. False means it never will (a record
    the backend refuses), so the queue gives up on the batch.
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


@runtime_checkable
class Dispatcher(Protocol):
    """A backend. One class per backend, one module per class."""

    name: str

    async def start(self) -> None:
        """Prepare the connection; must not fail because the backend is down right now."""

    async def publish(self, batch: Sequence[Record]) -> None:
        """Return once the backend has accepted every record of `batch`.

        This return is what reliable acks wait for. Raise `DispatchError` when any
        record was not accepted; the whole batch may then be offered again.

        Encoding must not fail because of what one record holds: print it degraded
        (`record.json(self.name)` never raises; `render_problems.report` counts what a
        backend's own encoding had to print raw). Should it raise anyway, the queue
        publishes the batch again one record at a time, so that only that record is lost.
        """

    async def close(self) -> None:
        """Release the connection; called once, after the last publish."""


class QueueObserver(Protocol):
    """Hooks for metrics; all are called on the event loop and must not block."""

    def published(self, dispatcher: str, batch: Sequence[Record], now: float) -> None: ...

    def dropped(self, dispatcher: str, count: int) -> None: ...

    def failed(self, dispatcher: str, error: BaseException) -> None: ...


_Item = tuple[Record, "asyncio.Future[None] | None"]


class DispatchQueue:
    """A bounded queue and one worker task in front of one dispatcher.

    Lossless (the default): a failed batch is retried with exponential backoff until
    it is published, so a record is only confirmed (its waiter resolved) once the
    backend holds it, and records are never dropped because of an outage. When the
    queue reaches `maxsize`, `offer` still takes the record but returns False: the
    caller must stop reading that vehicle until `space_available()` returns. A lossless
    queue never refuses a record it was offered (the caller has already acked or will
    ack it): its size is bounded by `maxsize` plus one record per vehicle, because each
    vehicle is paused by its first record past the bound.

    Lossy: when full, the offered record is dropped and counted instead, `offer`
    returns True (no back-pressure), and a failing batch is given up after
    `lossy_attempts` tries.
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        maxsize: int = 10_000,
        batch_size: int = 256,
        lossy: bool = False,
        *,
        retry_initial: float = 0.1,
        retry_max: float = 5.0,
        lossy_attempts: int = 3,
        observer: QueueObserver | None = None,
    ) -> None:
        if maxsize < 1 or batch_size < 1:
            raise ValueError("maxsize and batch_size must be at least 1")
        self.dispatcher = dispatcher
        self.name: str = dispatcher.name
        self.maxsize = maxsize
        self.batch_size = batch_size
        self.lossy = lossy
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.lossy_attempts = lossy_attempts
        self.observer = observer
        # counters, read by metrics
        self.published = 0  # records the backend confirmed
        self.dropped = 0  # records given up: lossy overflow, refused, failed for good, shut down
        self.failures = 0  # failed publish attempts (each retry counts)
        self.last_error: str | None = None
        self._items: deque[_Item] = deque()
        self._inflight: list[_Item] = []
        self._low_water = maxsize // 2
        self._room = asyncio.Event()
        self._room.set()
        self._ready = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    # -- producer side (the vehicles' read loops) --------------------------------------

    @property
    def qsize(self) -> int:
        """Records waiting, including the batch being published."""
        return len(self._items) + len(self._inflight)

    def offer(self, record: Record, waiter: asyncio.Future[None] | None = None) -> bool:
        """Queue `record`; False asks the caller to pause reading until `space_available()`.

        `waiter` gets its result once the backend confirmed the record, or an exception
        (DispatchError) if the queue gave up on it.
        """
        items = self._items
        if self._closing:
            self._drop_one(waiter, "the server is shutting down")
            return True
        size = len(items)
        if size >= self.maxsize:
            if self.lossy:
                self._drop_one(waiter, f"the {self.name} queue is full")
                return True
        items.append((record, waiter))
        if not self._ready.is_set():
            self._ready.set()
        if size + 1 >= self.maxsize and not self.lossy:
            self._room.clear()
            return False
        return True

    async def space_available(self) -> None:
        """Return once the queue is back under half its bound (or is closing)."""
        await self._room.wait()

    wait_for_room = space_available

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Start the dispatcher and the worker."""
        await self.dispatcher.start()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"dispatch-{self.name}")

    async def close(self, timeout: float = 5.0) -> None:
        """Stop taking records, publish what is queued for up to `timeout` seconds, then
        fail what is left and close the dispatcher."""
        self._closing = True
        self._ready.set()
        self._room.set()
        task = self._task
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        leftover = self._inflight + list(self._items)
        self._inflight = []
        self._items.clear()
        if leftover:
            log.warning("%s: %d record(s) not published before shutdown", self.name, len(leftover))
            self._give_up(leftover, DispatchError("the server shut down before the record was published",
                                                  retryable=False))
        await self.dispatcher.close()

    # -- worker ------------------------------------------------------------------------

    async def _run(self) -> None:
        items = self._items
        while True:
            if not items:
                if self._closing:
                    return
                self._ready.clear()
                await self._ready.wait()
                continue
            n = min(self.batch_size, len(items))
            batch = [items.popleft() for _ in range(n)]
            self._inflight = batch
            if len(items) <= self._low_water and not self._room.is_set():
                self._room.set()
            await self._deliver(batch)
            # Kept until delivered: if close() cancels the worker mid-batch, it fails these.
            self._inflight = []

    async def _deliver(self, batch: list[_Item], alone: bool = False) -> None:
        records = [record for record, _ in batch]
        delay = self.retry_initial
        attempt = 0
        while True:
            attempt += 1
            try:
                await self.dispatcher.publish(records)
            except DispatchError as exc:
                self._failed(exc, attempt)
                if not exc.retryable or (self.lossy and attempt >= self.lossy_attempts):
                    log.error("%s: giving up on %d record(s): %s", self.name, len(batch), exc)
                    self._give_up(batch, exc)
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
                continue
            except Exception as exc:  # a dispatcher bug must not kill the worker, nor cost the batch
                self._failed(exc, attempt)
                if len(batch) == 1:
                    # The record itself cannot be published: given up, counted as unrenderable.
                    log.log(logging.DEBUG if alone else logging.ERROR,
                            "%s: publish raised unexpectedly; giving up on the record", self.name, exc_info=True)
                    render_problems.report(self.name, batch[0][0], [f"{type(exc).__name__}: {exc}"])
                    self._give_up(batch, DispatchError(f"{type(exc).__name__}: {exc}", retryable=False))
                    return
                log.exception("%s: publish raised unexpectedly; publishing the %d record(s) one by one",
                              self.name, len(batch))
                for item in batch:
                    await self._deliver([item], alone=True)
                return
            break
        if attempt > 1:
            log.info("%s: publishing again after %d failed attempt(s)", self.name, attempt - 1)
            self.last_error = None
        self.published += len(batch)
        for _, waiter in batch:
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        if self.observer is not None:
            self.observer.published(self.name, records, time.time())

    def _failed(self, exc: BaseException, attempt: int) -> None:
        self.failures += 1
        self.last_error = str(exc)
        if attempt == 1:
            log.warning("%s: publish failed, retrying: %s", self.name, exc)
        if self.observer is not None:
            self.observer.failed(self.name, exc)

    def _give_up(self, batch: Sequence[_Item], exc: DispatchError) -> None:
        self.dropped += len(batch)
        for _, waiter in batch:
            if waiter is not None and not waiter.done():
                waiter.set_exception(exc)
        if self.observer is not None:
            self.observer.dropped(self.name, len(batch))

    def _drop_one(self, waiter: asyncio.Future[None] | None, reason: str) -> None:
        self.dropped += 1
        if waiter is not None and not waiter.done():
            waiter.set_exception(DispatchError(reason, retryable=False))
        if self.observer is not None:
            self.observer.dropped(self.name, 1)
