"""Reconciliation policies: from a FleetTelemetryConfig as observed to the status it should show, and why.

Pure functions, no I/O: the kopf handlers gather state, call `reconcile`, and write what
it returns (conditions in status, events on change). Each concern reports one
Kubernetes-style condition; a new concern (certificate, server, vehicles) adds a function
that returns a `Condition` and writes it with `set_condition`, which keeps the other
conditions and their transition times.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fleetwire.operator.spec import FleetTelemetrySpec, SpecError, parse_spec

__all__ = [
    "SPEC_VALID",
    "Condition",
    "Event",
    "Reconciliation",
    "check_spec",
    "find_condition",
    "reconcile",
    "set_condition",
]

SPEC_VALID = "SpecValid"
"""Condition type: the spec parsed and passed every check."""

ConditionStatus = Literal["True", "False", "Unknown"]


@dataclass(frozen=True, slots=True)
class Condition:
    """One status condition, as `kubectl describe` shows it."""

    type: str
    status: ConditionStatus
    reason: str
    message: str
    observed_generation: int | None = None

    def as_dict(self, last_transition: str) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "status": self.status, "reason": self.reason,
                               "message": self.message, "lastTransitionTime": last_transition}
        if self.observed_generation is not None:
            out["observedGeneration"] = self.observed_generation
        return out


@dataclass(frozen=True, slots=True)
class Event:
    """A Kubernetes event to post about the resource ("Normal" or "Warning")."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """What one pass concluded: the parsed spec (None if invalid), conditions, events."""

    spec: FleetTelemetrySpec | None
    conditions: tuple[Condition, ...]
    events: tuple[Event, ...]
    observed_generation: int | None

    def status_patch(self, conditions: Sequence[Mapping[str, Any]] | None, now: dt.datetime) -> dict[str, Any]:
        """The status keys to write, starting from `conditions` (the current or pending list)."""
        merged = list(conditions or [])
        for condition in self.conditions:
            merged = set_condition(merged, condition, now)
        patch: dict[str, Any] = {"conditions": merged}
        if self.observed_generation is not None:
            patch["observedGeneration"] = self.observed_generation
        return patch


def _timestamp(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def find_condition(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    """The condition of `type_` in a status' list, or None."""
    return next((c for c in conditions or () if c.get("type") == type_), None)


def set_condition(conditions: Sequence[Mapping[str, Any]] | None, condition: Condition,
                  now: dt.datetime) -> list[dict[str, Any]]:
    """`conditions` with `condition` in place of its type's entry (appended if new).

    lastTransitionTime moves only when the status value changes, as the Kubernetes API
    conventions ask, so "since when has this been failing" survives re-evaluations.
    """
    previous = find_condition(conditions, condition.type)
    since = _timestamp(now)
    if previous is not None and previous.get("status") == condition.status and previous.get("lastTransitionTime"):
        since = str(previous["lastTransitionTime"])
    entry = condition.as_dict(since)
    out = [dict(c) for c in conditions or () if c.get("type") != condition.type]
    position = next((i for i, c in enumerate(conditions or ()) if c.get("type") == condition.type), len(out))
    out.insert(position, entry)
    return out


def check_spec(spec: Mapping[str, Any] | None, generation: int | None) -> tuple[FleetTelemetrySpec | None, Condition]:
    """Parse the spec; the SpecValid condition says whether it can be acted on, and if not, why."""
    try:
        parsed = parse_spec(spec if spec is not None else {})
    except SpecError as exc:
        return None, Condition(SPEC_VALID, "False", "InvalidSpec", str(exc), generation)
    return parsed, Condition(SPEC_VALID, "True", "Valid", "the spec passed every check", generation)


def reconcile(spec: Mapping[str, Any] | None, status: Mapping[str, Any] | None,
              generation: int | None) -> Reconciliation:
    """One pass over a FleetTelemetryConfig: the conditions it should show, and events for
    what changed since the status was last written (none when nothing did, so a resumed
    operator does not repeat itself)."""
    parsed, condition = check_spec(spec, generation)
    previous = find_condition((status or {}).get("conditions"), condition.type)
    events: tuple[Event, ...] = ()
    if previous is None or (previous.get("status"), previous.get("message")) != (condition.status, condition.message):
        kind: Literal["Normal", "Warning"] = "Normal" if condition.status == "True" else "Warning"
        events = (Event(kind, condition.reason, condition.message),)
    return Reconciliation(parsed, (condition,), events, generation)
