"""The queue in front of each dispatcher: back-pressure, batches, retries.

The vehicle's read loop never awaits a backend: it `offer`s records to a `DispatchQueue`
(synchronous, non-blocking) and a worker task per dispatcher publishes them in batches.
A slow or absent backend therefore costs memory up to the queue's bound, then pauses
the vehicles (back-pressure) — or, for a dispatcher configured lossy, drops records —
instead of stalling every connection the way a synchronous publish would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from fleetwire.server.dispatch import Dispatcher, DispatchError
from fleetwire.server.records import Record, render_problems

log = logging.getLogger("fleetwire.dispatch")


class QueueObserver(Protocol):
    """Hooks for metrics; all are called on the event loop and must not block."""

    def published(self, dispatcher: str, batch: Sequence[Record], now: float) -> None: ...

    def dropped(self, dispatcher: str, count: int) -> None: ...

    def failed(self, dispatcher: str, error: BaseException) -> None: ...


class Waiter(Protocol):
    """Told once whether its record was stored: an `asyncio.Future[None]` is one; the
    session's receipts are another, cheaper kind (no loop callback per record)."""

    def done(self) -> bool: ...

    def set_result(self, result: None, /) -> None: ...

    def set_exception(self, exception: BaseException, /) -> None: ...


_Item = tuple[Record, Waiter | None]


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

    def offer(self, record: Record, waiter: Waiter | None = None) -> bool:
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
            if len(items) <= self.batch_size:  # the usual case: the worker keeps up
                batch = list(items)
                items.clear()
            else:
                batch = [items.popleft() for _ in range(self.batch_size)]
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
                try:  # what `_settle` does, inline: this runs once per record
                    waiter.set_result(None)
                except Exception:
                    log.exception("a record's waiter failed")
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
                _settle(waiter.set_exception, exc)
        if self.observer is not None:
            self.observer.dropped(self.name, len(batch))

    def _drop_one(self, waiter: Waiter | None, reason: str) -> None:
        self.dropped += 1
        if waiter is not None and not waiter.done():
            _settle(waiter.set_exception, DispatchError(reason, retryable=False))
        if self.observer is not None:
            self.observer.dropped(self.name, 1)


def _settle(outcome: Callable[[Any], None], value: Any) -> None:
    """Tell one waiter; a receipt runs its ack here, and its failure must not stop the
    worker nor cost the other waiters of the batch (a future's callbacks run apart anyway)."""
    try:
        outcome(value)
    except Exception:
        log.exception("a record's waiter failed")
