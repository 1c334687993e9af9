"""The one interface every backend implements, and the error a publish raises.

A backend is one class behind `Dispatcher`, in its own module of `dispatchers/`; the
queue in front of it (`dispatch_queue`) is all that calls it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from fleetwire.server.records import Record


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
