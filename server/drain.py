"""Graceful drain: what the server decides between SIGTERM and its exit, free of sockets.

The order (`TelemetryServer.stop` does the I/O):

1. stop accepting: the vehicles' listening socket closes, the status port's `/readyz`
   answers 503, so neither a load balancer nor a reconnecting vehicle picks this replica;
2. stop reading every vehicle: no record arrives that the server could no longer store,
   so none is acked that a backend does not hold;
3. send the acks still owed: records already received whose ack waits for a reliable
   dispatcher (`reliable_ack_sources`) are acked when the backend confirms them, the
   socket staying open for that, until the acks' share of the budget is spent; a record
   left unacked is resent by its vehicle to another replica;
4. close each vehicle with 1001 (going away), so it reconnects elsewhere at once;
5. give the dispatch queues what is left of the budget (at most their own
   `close_timeout_seconds`), then exit.

The whole drain fits in `budget` seconds (`FLEETWIRE_DRAIN_SECONDS`, default 20 s), well
inside Kubernetes' 30 s grace period, which the managed Deployment sets to
`grace_period_seconds(budget)` so the kubelet's SIGKILL never cuts a drain short.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "ACK_SHARE",
    "CLOSE_WAIT_SECONDS",
    "DEFAULT_DRAIN_SECONDS",
    "DISPATCHER_CLOSE_SECONDS",
    "DRAIN_ENV",
    "EXIT_MARGIN_SECONDS",
    "DrainPlan",
    "DrainReason",
    "acks_settled",
    "grace_period_seconds",
    "workers_stop_seconds",
]

DRAIN_ENV = "FLEETWIRE_DRAIN_SECONDS"
DEFAULT_DRAIN_SECONDS = 20.0
ACK_SHARE = 0.5
"""Of the budget, the part the acks in flight may take: the queues keep the rest."""
CLOSE_WAIT_SECONDS = 2.0
"""How long the vehicles' sockets get to close after their 1001, at most."""
DISPATCHER_CLOSE_SECONDS = 1.0
"""Kept from the queues' share for the dispatchers' own close (flush, disconnect)."""
EXIT_MARGIN_SECONDS = 10
"""Between the end of the budget and the kubelet's SIGKILL: interpreter exit, a slow node."""


@dataclass(frozen=True, slots=True)
class DrainReason:
    """Why the wait for acks ended: `code` for metrics and logs, `message` for people."""

    code: str  # "acks_sent" | "ack_budget_spent"
    message: str


@dataclass(frozen=True, slots=True)
class DrainPlan:
    """The deadlines of one drain, fixed when it starts (monotonic seconds)."""

    started: float
    budget: float = DEFAULT_DRAIN_SECONDS
    queue_timeout: float = 5.0
    """The queues' own `dispatch.close_timeout_seconds`: the budget may shorten it, never lengthen it."""

    @property
    def acks_deadline(self) -> float:
        return self.started + self.budget * ACK_SHARE

    @property
    def deadline(self) -> float:
        return self.started + self.budget

    def close_wait(self, now: float) -> float:
        """Seconds to wait for the vehicles' sockets to close after their 1001."""
        return max(0.0, min(CLOSE_WAIT_SECONDS, self.deadline - now))

    def queue_wait(self, now: float) -> float:
        """Seconds the dispatch queues get to publish what they hold; their dispatchers'
        close then gets what is left until the deadline (`DISPATCHER_CLOSE_SECONDS` at least)."""
        return max(0.0, min(self.queue_timeout, self.deadline - now - DISPATCHER_CLOSE_SECONDS))

    def remaining(self, now: float) -> float:
        return max(0.0, self.deadline - now)


def acks_settled(plan: DrainPlan, now: float, owed: int) -> DrainReason | None:
    """None while acks are owed and their share of the budget lasts; else why to go on."""
    if owed == 0:
        return DrainReason("acks_sent", "every ack owed for a received record was sent")
    if now >= plan.acks_deadline:
        return DrainReason(
            "ack_budget_spent",
            f"{owed} record(s) still unconfirmed by their reliable dispatcher after "
            f"{plan.acks_deadline - plan.started:.1f} s: not acked, their vehicles resend them",
        )
    return None


def workers_stop_seconds(budget: float) -> float:
    """How long a supervisor waits for its workers' drains after SIGTERM before killing them:
    past their budget, short of the kubelet's SIGKILL."""
    return budget + EXIT_MARGIN_SECONDS / 2


def grace_period_seconds(budget: float) -> int:
    """The pod's `terminationGracePeriodSeconds` for a drain of `budget` seconds."""
    return math.ceil(budget) + EXIT_MARGIN_SECONDS
