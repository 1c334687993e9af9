"""Condition policies: from a FleetTelemetryConfig as observed to the status it should show, and why.

Pure functions, no I/O: the kopf handlers gather state, call `judge_spec` and the other
condition policies, and write what they return (conditions in status, events on change). Each concern reports one
Kubernetes-style condition, and each condition type has exactly one writer, which merges
only the types it owns into the list as it is (`patch_for`), never the others:

| condition type        | written by (owned set)                                 | says                        |
|-----------------------|--------------------------------------------------------|-----------------------------|
| `SpecValid`           | `handlers.resource.spec_valid` (`SPEC_OWNED`)          | the spec can be acted on    |
| `CertificateReady`    | the `handlers.resource` pass (`PASS_OWNED`)            | vehicles accept the cert    |
| `ServerReady`         | the `handlers.resource` pass (`PASS_OWNED`)            | the Deployment runs         |
| `CertificateRotating` | the `handlers.resource` pass (`PASS_OWNED`)            | a staged cert waits         |
| `VehiclesConfigured`  | the `handlers.vehicles` daemon (`VEHICLES_OWNED`)      | vehicles applied the config |
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fleetwire.operator.resource.spec import FleetTelemetrySpec, SpecError
from fleetwire.operator.resource.spec_cache import parse_once

__all__ = [
    "CERTIFICATE_READY",
    "CERTIFICATE_ROTATING",
    "PASS_OWNED",
    "SERVER_READY",
    "SPEC_OWNED",
    "SPEC_VALID",
    "VEHICLES_CONFIGURED",
    "VEHICLES_OWNED",
    "Condition",
    "Event",
    "SpecJudgement",
    "check_spec",
    "find_condition",
    "patch_for",
    "judge_spec",
    "server_condition",
    "set_condition",
    "transition_events",
]

SPEC_VALID = "SpecValid"
"""Condition type: the spec parsed and passed every check."""
CERTIFICATE_READY = "CertificateReady"
"""Condition type: the server has a certificate vehicles accept (see `fleetwire.operator.reconcilers.certificates`)."""
SERVER_READY = "ServerReady"
"""Condition type: the server's Deployment exists and, as far as reported, runs."""
CERTIFICATE_ROTATING = "CertificateRotating"
"""Condition type: a staged certificate waits for the vehicles to hold a `ca` accepting it."""
VEHICLES_CONFIGURED = "VehiclesConfigured"
"""Condition type: every vehicle that can take the desired config has applied it."""

SPEC_OWNED = frozenset({SPEC_VALID})
PASS_OWNED = frozenset({CERTIFICATE_READY, SERVER_READY, CERTIFICATE_ROTATING})
VEHICLES_OWNED = frozenset({VEHICLES_CONFIGURED})
"""The condition types each writer owns (the table above): no type is in two sets."""

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
class SpecJudgement:
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


def patch_for(owned: Collection[str], current: Sequence[Mapping[str, Any]] | None,
              conditions: Iterable[Condition], now: dt.datetime) -> list[dict[str, Any]]:
    """The conditions list to write: `current` (as the API holds it now) with the entries of the
    `owned` types set from `conditions`; every other type's entry is kept as it is, in place.

    A writer asked to write a type it does not own is a bug: it would revert another writer's."""
    merged = [dict(c) for c in current or ()]
    for condition in conditions:
        if condition.type not in owned:
            raise ValueError(f"condition {condition.type} is not among the writer's types {sorted(owned)}")
        merged = set_condition(merged, condition, now)
    return merged


def check_spec(spec: Mapping[str, Any] | None, generation: int | None, *,
               uid: str | None = None) -> tuple[FleetTelemetrySpec | None, Condition]:
    """Parse the spec (once per resource `uid` and generation); the SpecValid condition says
    whether it can be acted on, and if not, why."""
    try:
        parsed = parse_once(uid, generation, spec if spec is not None else {})
    except SpecError as exc:
        return None, Condition(SPEC_VALID, "False", "InvalidSpec", str(exc), generation)
    message = "the spec passed every check"
    if parsed.warnings:
        message += "; warnings: " + "; ".join(f"{path}: {text}" for path, text in parsed.warnings)
    return parsed, Condition(SPEC_VALID, "True", "Valid", message, generation)


def judge_spec(spec: Mapping[str, Any] | None, status: Mapping[str, Any] | None,
              generation: int | None, *, uid: str | None = None) -> SpecJudgement:
    """One pass over a FleetTelemetryConfig: the conditions it should show, and events for
    what changed since the status was last written (none when nothing did, so a resumed
    operator does not repeat itself)."""
    parsed, condition = check_spec(spec, generation, uid=uid)
    previous = find_condition((status or {}).get("conditions"), condition.type)
    events: tuple[Event, ...] = ()
    if previous is None or (previous.get("status"), previous.get("message")) != (condition.status, condition.message):
        kind: Literal["Normal", "Warning"] = "Normal" if condition.status == "True" else "Warning"
        events = (Event(kind, condition.reason, condition.message),)
    return SpecJudgement(parsed, (condition,), events, generation)


def transition_events(seen: Mapping[str, tuple[str, str]], conditions: Iterable[Condition]) -> tuple[Event, ...]:
    """An event for each condition whose status or reason differs from what was last announced.

    Messages may carry details that change on every pass (counts, times), so only a new
    status or reason is news; `seen` maps a condition type to its announced (status, reason).
    Reasons name their concern (CertificateValid, VehicleCaMissing), so the event's reason
    alone tells `kubectl describe` readers what changed.
    """
    events = []
    for condition in conditions:
        if seen.get(condition.type) != (condition.status, condition.reason):
            kind: Literal["Normal", "Warning"] = "Warning" if condition.status == "False" else "Normal"
            events.append(Event(kind, condition.reason, condition.message))
    return tuple(events)


def server_condition(deployment: Mapping[str, Any] | None, *, vehicle_ca: str | None,
                     generation: int | None = None) -> Condition:
    """ServerReady from the Deployment as the API returned it and the vehicles' CA ConfigMap.

    `vehicle_ca` is None when the ConfigMap holds the vehicles' CAs, else why it does not:
    without them the server cannot verify a vehicle and refuses to start. On a real cluster
    the Deployment controller reports `observedGeneration` and `readyReplicas` moments after
    every change, so the condition follows the pods' readiness probes; a Deployment without
    any status (an API emulator, or the first instant after creation) counts as applied.
    """
    if deployment is None:
        return Condition(SERVER_READY, "False", "DeploymentMissing", "the server's Deployment does not exist",
                         generation)
    name = str(deployment.get("metadata", {}).get("name", ""))
    if vehicle_ca is not None:
        return Condition(SERVER_READY, "False", "VehicleCaMissing", vehicle_ca, generation)
    status = deployment.get("status") or {}
    wanted = int((deployment.get("spec") or {}).get("replicas", 1) or 0)
    if not status:
        return Condition(SERVER_READY, "True", "DeploymentApplied",
                         f"Deployment {name} applied; no controller has reported its replicas yet", generation)
    ready = int(status.get("readyReplicas") or 0)
    observed = status.get("observedGeneration")
    current = deployment.get("metadata", {}).get("generation")
    rolling = observed is not None and current is not None and int(observed) < int(current)
    if ready >= 1:
        detail = f"{ready}/{wanted} server replicas ready" + (" (rolling out a change)" if rolling else "")
        return Condition(SERVER_READY, "True", "Available", detail, generation)
    return Condition(SERVER_READY, "False", "NotReady",
                     f"0/{wanted} server replicas ready in Deployment {name}: see its pods' events and logs",
                     generation)
