"""The answer every operator decision gives, and the one way a chain of policies is asked.

A policy is `(facts) -> Reason | None`; a chain is a tuple of policies in the order they
are asked, the first answer wins (as cert-manager's trigger policies). The `code` is
stable and goes into status, events (their reason field) and metrics; the `message` is
for people (the vehicle table, condition messages). Nothing compares a message: code
that needs to tell answers apart compares codes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["Policy", "Reason", "first"]

F = TypeVar("F")


@dataclass(frozen=True, slots=True)
class Reason:
    """A policy's answer: a stable `code` (status, events, metrics) and a `message` for people."""

    code: str
    message: str


Policy = Callable[[F], "Reason | None"]


def first(chain: Iterable[Callable[[F], Reason | None]], facts: F) -> Reason | None:
    """The answer of the first policy in `chain` that answers for `facts`, or None."""
    for policy in chain:
        found = policy(facts)
        if found is not None:
            return found
    return None
