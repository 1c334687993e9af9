"""What a vehicle pass takes and gives, and the helpers it runs on.

`Inputs` (the parsed spec, the `ca`, the chains it must accept) go into a pass; a missing
one is `NotReady`; `PassResult` comes out (what `status.vehicles` shows). `CaJudge` asks
whether a `ca` accepts the chains once per distinct bundle and pass; `Batch` is one push
call's vehicles, polled through probes; `Pacer` bounds the Fleet API calls in flight and
paces them below the account's rate.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleetwire.operator.policies.conditions import Condition
from fleetwire.operator.policies.vehicles import CA_ENDING_MARGIN_S, ca_accepts, ca_fingerprint, ca_lasts_until
from fleetwire.operator.resource.spec import FleetTelemetrySpec

__all__ = ["NEXT_BEHIND_LISTED", "Batch", "CaJudge", "Inputs", "NotReady", "Pacer", "PassResult",
           "chain_ca_fingerprint", "rfc3339"]


@dataclass(frozen=True)
class Inputs:
    """What a pass needs from outside: the parsed spec, the `ca` to push, and the chains
    (PEM, leaf first) the vehicles' `ca` must accept: the one served and the one staged.
    Without chains the `ca` is compared by fingerprint (every change of bytes is a push)."""

    spec: FleetTelemetrySpec
    ca_pem: str
    chains: tuple[str, ...] | None = None
    staged: str | None = None  # the staged chain, whose acceptance gates its promotion


class NotReady(Exception):
    """An input is missing (no certificate issued yet, a Secret or key absent): the message
    goes into the condition, and the pass is retried when woken or after a while."""


@dataclass(frozen=True)
class PassResult:
    """What a pass did and found: counts, the condition, what to write into `status.vehicles`."""

    counts: Mapping[str, int]
    condition: Condition
    next_in: float  # seconds until something is due
    ca_fingerprint: str = ""
    last_push: float | None = None
    pushed: Mapping[str, int] = field(default_factory=dict)  # reason → vehicles pushed in this pass
    problem: str | None = None  # a Fleet API failure this pass (also in the condition's message)
    shards: tuple[str, ...] = ()
    too_new: int = 0  # vehicles taking the config whose firmware is too old for some of its fields
    pushed_codes: Mapping[str, int] = field(default_factory=dict)  # reason code → vehicles pushed in this pass
    next: Mapping[str, Any] | None = None  # progress towards a staged chain (`status.vehicles.next`)
    refused: tuple[str, ...] = ()  # VINs pushed in this pass because their `ca` refused a chain

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def status(self) -> dict[str, Any]:
        """`status.vehicles`: counts per state and of vehicles missing fields for their firmware,
        the last push, the `ca` pushed, where the records are."""
        out: dict[str, Any] = {"desired": self.total, **dict(self.counts), "fieldsTooNew": self.too_new}
        if self.last_push is not None:
            out["lastPush"] = rfc3339(self.last_push)
        if self.ca_fingerprint:
            out["caFingerprint"] = self.ca_fingerprint
        if self.shards:
            out["records"] = list(self.shards)
        if self.next is not None:
            out["next"] = dict(self.next)
        return out


def rfc3339(epoch: float) -> str:
    """Epoch seconds as RFC 3339 in UTC, to the second."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


NEXT_BEHIND_LISTED = 50
"""VINs still behind a staged chain listed in `status.vehicles.next` (all of them are counted)."""


def chain_ca_fingerprint(pem: str) -> str:
    """The fingerprint of a `ca` bundle; "" when it holds no readable certificate."""
    try:
        return ca_fingerprint(pem)
    except ValueError:
        return ""


class CaJudge:
    """Does the `ca` with this fingerprint accept the chains? Asked once per distinct bundle
    and pass: a fleet of 10,000 holds a handful of bundles."""

    def __init__(self, bundles: Mapping[str, str], desired_fp: str, chains: tuple[str, ...] | None,
                 hostname: str, at: dt.datetime) -> None:
        self.bundles, self.desired_fp, self.chains, self.hostname, self.at = bundles, desired_fp, chains, hostname, at
        self._answers: dict[str, bool] = {}
        self._endings: dict[str, bool] = {}

    def ending(self, ca_fp: str) -> bool:
        """The `ca` accepts the chains now but stops within `CA_ENDING_MARGIN_S`, before the desired one would."""
        if self.chains is None or ca_fp == self.desired_fp or not self(ca_fp):
            return False
        answer = self._endings.get(ca_fp)
        if answer is None:
            horizon = self.at + dt.timedelta(seconds=CA_ENDING_MARGIN_S)
            held = ca_lasts_until(self.bundles[ca_fp], self.chains, self.hostname, self.at)
            desired = self.bundles.get(self.desired_fp)
            wanted = ca_lasts_until(desired, self.chains, self.hostname, self.at) if desired else None
            answer = self._endings[ca_fp] = (held is not None and held < horizon
                                             and (wanted is None or wanted > held))
        return answer

    def __call__(self, ca_fp: str) -> bool:
        if self.chains is None:  # the fingerprint mode
            return ca_fp == self.desired_fp
        answer = self._answers.get(ca_fp)
        if answer is None:
            pem = self.bundles.get(ca_fp)
            answer = self._answers[ca_fp] = pem is not None and ca_accepts(pem, self.chains, self.hostname, self.at)
        return answer


@dataclass
class Batch:
    """Vehicles accepted by one push call: polled through a few probes first."""

    waiting: set[str]
    synced: bool = False


class Pacer:
    """At most `concurrency` Fleet API calls in flight, all kinds together, started at most
    `rate` per second (0: no pacing): paced below the account's limit, since a 429 is billed
    and costs a wait."""

    def __init__(self, concurrency: int, rate: float) -> None:
        self.concurrency, self.rate = concurrency, rate
        self._calls = asyncio.Semaphore(concurrency)
        self._next_call = 0.0  # monotonic time the next call may start

    async def call(self, call: Awaitable[Any]) -> Any:
        """Await `call` within the bounds."""
        async with self._calls:
            if self.rate > 0:
                now = time.monotonic()
                start = max(now, self._next_call)
                self._next_call = start + 1.0 / self.rate
                if start > now:
                    await asyncio.sleep(start - now)
            return await call

    async def each(self, items: Sequence[Any], work: Callable[[Any], Awaitable[None]],
                   stop: Callable[[], bool] | None = None) -> None:
        """Run `work` over `items` with `concurrency` workers (not a task per item: 10,000
        tasks would cost more memory than the records). Stops taking items once `stop()` is true."""
        iterator = iter(items)

        async def worker() -> None:
            for item in iterator:
                if stop is not None and stop():
                    return
                await work(item)

        workers = min(self.concurrency, len(items))
        if workers:
            await asyncio.gather(*(worker() for _ in range(workers)))
