"""Which vehicles need a config push, which are applied, and why: pure policies.

The reconciler gathers facts (the desired config, what the Fleet API says about each
vehicle, what was pushed before) and asks these functions; each answer carries a reason
a user can act on, which ends up in the per-vehicle table and the resource's status.
The push chain (`PUSH_POLICIES`) answers "does this vehicle need the desired config, and
why" with a `Reason`; the record's transitions (`pushed`, `observe`, ...) follow what the
Fleet API answered. The record itself is in `vehicle_records`, the `ca` judgement in
`vehicle_ca` (both re-exported here).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from fleetwire.operator.clients.fleetapi_types import VehicleConfigState
from fleetwire.operator.policies.conditions import VEHICLES_CONFIGURED, Condition
from fleetwire.operator.policies.reasons import Reason, first
from fleetwire.operator.policies.vehicle_ca import (  # noqa: F401 - re-exported
    ca_accepts,
    ca_fingerprint,
    ca_fp_or_empty,
    ca_lasts_until,
    ca_union,
    comparable,
    fingerprint,
)
from fleetwire.operator.policies.vehicle_records import (  # noqa: F401 - re-exported
    APPLIED,
    APPLIED_REASON,
    DRIFT,
    ERROR_TEXT_LIMIT,
    FAILING,
    FIELDS_TOO_NEW,
    LEGACY_SX_FIRMWARE,
    MIN_FIRMWARE,
    NEW_MESSAGE,
    NO_CONFIG_HELD,
    PENDING,
    PUSH_FAILED,
    PUSHED,
    RECHECK_PASSED,
    SKIP_MEANINGS,
    SKIPPED,
    SLOT_FREED,
    SLOT_FREED_CODE,
    STATES,
    STILL_PENDING,
    FieldsTooNew,
    VehicleRecord,
    count_too_new,
    counts,
    explain,
    fields_too_new,
    preflight,
    too_new_names,
    with_firmware,
)
from fleetwire.proto.catalog import BY_NUMBER

EXP_RENEW_MARGIN_S = 7 * 86_400


# -- which vehicles need a push: an ordered chain of policies -------------------------------

NEW_VEHICLE = "new_vehicle"
CA_REFUSED = "ca_refused"
CA_ENDING = "ca_ending"
CA_ENDING_MARGIN_S = EXP_RENEW_MARGIN_S
"""A `ca` that stops accepting the server's chain within this long (a cross-certificate or CA
expiring) is replaced now, while the vehicle can still connect to sync it."""
DESIRED_CHANGED = "desired_changed"
EXP_NEAR = "exp_near"


@dataclass(frozen=True, slots=True)
class PushFacts:
    """What the push policies look at for one vehicle.

    `ca_ok`: the `ca` last pushed to it accepts every chain the server presents now or has
    staged to present next (by acceptance; or, in the fingerprint mode, equals the desired `ca`).
    """

    record: VehicleRecord
    desired_fp: str
    now: float
    ca_ok: bool
    ca_ending: bool = False  # it accepts now, but stops within CA_ENDING_MARGIN_S, sooner than the desired `ca`


def _never_configured(facts: PushFacts) -> Reason | None:
    record = facts.record
    if record.ca_fp:
        return None
    if record.state == PENDING and record.reason:
        return Reason(record.code or NEW_VEHICLE, record.reason)
    return Reason(NEW_VEHICLE, NEW_MESSAGE)


def _ca_refused(facts: PushFacts) -> Reason | None:
    return None if facts.ca_ok else Reason(CA_REFUSED, "CA chain changed")


def _ca_ending(facts: PushFacts) -> Reason | None:
    if not facts.ca_ending:
        return None
    return Reason(CA_ENDING, "the ca on the vehicle stops accepting the server's chain within a week")


def _desired_changed(facts: PushFacts) -> Reason | None:
    return Reason(DESIRED_CHANGED, "desired config changed") if facts.record.config_fp != facts.desired_fp else None


def _exp_near(facts: PushFacts) -> Reason | None:
    exp = facts.record.exp
    return Reason(EXP_NEAR, "config expires soon") if exp is not None and exp - facts.now < EXP_RENEW_MARGIN_S else None


def _still_pending(facts: PushFacts) -> Reason | None:
    record = facts.record
    return Reason(record.code or STILL_PENDING, record.reason or "pending") if record.state == PENDING else None


PUSH_POLICIES = (_never_configured, _ca_refused, _ca_ending, _desired_changed, _exp_near, _still_pending)
"""In this order: a vehicle the server's chain would lose is named as such first, since it is
what operators most need to see; `exp` is last, and is where an old root leaves the `ca`."""


def push_decision(record: VehicleRecord | None, desired_fp: str, now: float, ca_ok: bool,
                  ca_ending: bool = False) -> Reason | None:
    """Why this vehicle needs the desired config pushed now (the first policy that answers), or None."""
    if record is None:
        return Reason(NEW_VEHICLE, NEW_MESSAGE)
    if record.state == SKIPPED:
        return None  # a re-check (fleet_status, or a freed slot seen by `observe`) makes it pending again
    return first(PUSH_POLICIES, PushFacts(record, desired_fp, now, ca_ok, ca_ending))


def push_reason(record: VehicleRecord | None, desired: Mapping[str, Any], ca_pem: str, now: float) -> str | None:
    """`push_decision`'s message, the `ca` compared by fingerprint (the mode without a chain to judge)."""
    return push_reason_by_fingerprint(record, fingerprint(desired), ca_fingerprint(ca_pem), now)


def push_reason_by_fingerprint(record: VehicleRecord | None, desired_fp: str, ca_fp: str, now: float) -> str | None:
    """`push_reason` with the fingerprints computed once for a whole fleet."""
    found = push_decision(record, desired_fp, now, record is None or record.ca_fp == ca_fp)
    return found.message if found is not None else None


def pushed(record: VehicleRecord | None, vin: str, desired: Mapping[str, Any], ca_pem: str, now: float,
           skip: str | None, *, fingerprints: tuple[str, str] | None = None) -> VehicleRecord:
    """The record after a push the API answered (`skip` = its skip reason for this VIN).

    `fingerprints` = (fingerprint(desired), ca_fingerprint(ca_pem)) when already computed.
    """
    base = record or VehicleRecord(vin)
    if skip is not None:
        return replace(base, state=SKIPPED, reason=explain(skip), skip=skip, pushed_at=now, code="")
    config_fp, ca_fp = fingerprints or (fingerprint(desired), ca_fingerprint(ca_pem))
    return replace(
        base, state=PUSHED, reason="waiting for the vehicle to sync", skip=None, pushed_at=now, code="",
        config_fp=config_fp, ca_fp=ca_fp, exp=desired.get("exp"),
    )


def observe(record: VehicleRecord, held: VehicleConfigState, desired: Mapping[str, Any], now: float,
            *, ca_ok: bool | None = None) -> VehicleRecord:
    """The record after reading what the vehicle holds (GET fleet_telemetry_config).

    Applied only when synced, present, equal to the desired config (without `exp` and
    `ca`), its `ca` accepting the server's chains (`ca_ok`; None: the `ca` equals the
    desired one), under the limit and paired: `synced: true` alone also describes a config
    refused for lack of a slot (config null) and one signed by the wrong key.
    """
    if not held.key_paired:
        return replace(record, state=SKIPPED, skip="missing_key", reason=explain("missing_key"), code="")
    if held.limit_reached or (held.synced and held.config is None and record.state in (PUSHED, APPLIED)):
        return replace(record, state=SKIPPED, skip="max_configs", reason=explain("max_configs"), code="")
    if record.skip == "max_configs" and not held.limit_reached:
        return replace(record, state=PENDING, skip=None, reason=SLOT_FREED, code=SLOT_FREED_CODE)
    if not held.synced:
        return replace(record, state=PUSHED, reason="waiting for the vehicle to sync", code="")
    if held.config is None:
        return replace(record, state=PENDING, reason="the vehicle holds no config for this app", code=NO_CONFIG_HELD)
    held_ca = str(held.config.get("ca") or "")
    held_fp = ca_fp_or_empty(held_ca)
    if held_fp and held_fp != record.held_ca_fp:
        record = replace(record, held_ca_fp=held_fp)
    if ca_ok is None:
        ca_ok = held_fp == ca_fp_or_empty(str(desired.get("ca") or ""))
    if comparable(held.config) != comparable(desired) or not ca_ok:
        if record.state == PUSHED and (record.config_fp != fingerprint(desired) or held_fp != record.ca_fp):
            return record  # an older push is still syncing; the next push brings it up to date
        what = "config" if comparable(held.config) != comparable(desired) else "ca"
        return replace(record, state=PENDING, reason=f"the {what} on the vehicle differs from the desired one",
                       code=DRIFT)
    if record.last_error:
        return replace(record, state=FAILING, reason=record.last_error, code="")
    applied_at = record.applied_at if record.state == APPLIED else now
    return replace(record, state=APPLIED, reason=APPLIED_REASON, skip=None, applied_at=applied_at, code="")




def with_error(record: VehicleRecord, error_name: str, error: str) -> VehicleRecord:
    """Attach a telemetry error the vehicle reported (TLS to our server, signature)."""
    text = f"{error_name}: {error}"[:ERROR_TEXT_LIMIT]  # bounded: records share 1 MiB objects
    state = FAILING if record.state == APPLIED else record.state
    return replace(record, last_error=text, state=state, reason=text if state == FAILING else record.reason)


def cleared(record: VehicleRecord) -> VehicleRecord:
    """The vehicle stopped reporting errors (it connected and streams)."""
    if not record.last_error:
        return record
    if record.state == FAILING:
        return replace(record, last_error="", state=APPLIED, reason=APPLIED_REASON)
    return replace(record, last_error="")


def refused(record: VehicleRecord | None, vin: str, skip: str) -> VehicleRecord:
    """The record after the pre-flight (`fleet_status`) found the vehicle cannot take a config:
    nothing is pushed, since the push would be billed and refused."""
    return replace(record or VehicleRecord(vin), state=SKIPPED, skip=skip, reason=explain(skip), code="")


def recheck_passed(record: VehicleRecord) -> VehicleRecord:
    """A skipped vehicle the pre-flight now finds able to take a config (the owner paired the
    key, the firmware updated): pending again. Full slots are not visible to the pre-flight,
    so a `max_configs` skip waits for `observe` to see a freed slot instead."""
    if record.state != SKIPPED or record.skip == "max_configs":
        return record
    return replace(record, state=PENDING, reason=f"no longer {record.skip}: the vehicle can take a config now",
                   skip=None, code=RECHECK_PASSED)


def push_failed(record: VehicleRecord, message: str) -> VehicleRecord:
    """A push the API did not answer or refused as a whole (rate limit, outage): still pending."""
    return replace(record, state=PENDING, reason=f"push failed, retrying: {message}"[:ERROR_TEXT_LIMIT],
                   code=PUSH_FAILED)


# -- telemetry errors ----------------------------------------------------------------------

CONFIG_ERROR = "config_manager_error"  # the vehicle refused the config it loaded (signature, form)
CONNECT_ERROR = "cloud_manager_error"  # the vehicle could not reach or trust the server


def error_time(created_at: str) -> float | None:
    """Epoch seconds of an error's `created_at` (RFC 3339); None when it cannot be read."""
    try:
        stamp = dt.datetime.fromisoformat(created_at.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)).timestamp()


def current_error(errors: Iterable[tuple[str, str, float]], *, since: float, now: float, quiet: float,
                  syncing: bool = False) -> tuple[str, str] | None:
    """The error (name, text) that describes a vehicle now, from its (name, text, created_at)
    entries, or None.

    Errors at or before `since` (when the config the vehicle runs was pushed, or when the
    vehicle was last seen still unsynced) are about an older config. A
    `config_manager_error` is the vehicle refusing the config it loaded: it stands until
    another config is pushed. Any other error (`cloud_manager_error`: TLS, network) is a
    connection failing, which the vehicle retries and reports again: one not repeated for
    `quiet` seconds is over, since errors are never withdrawn from the list.

    While a pushed config is still `syncing`, the vehicle runs the previous one: its
    connection errors still describe it (whatever `since` says), and a refused config is
    about to be replaced, so config errors are left out.
    """
    latest: tuple[str, str, float] | None = None
    for name, text, created in errors:
        if name == CONFIG_ERROR:
            if syncing or created <= since:
                continue
        elif now - created > quiet or (created <= since and not syncing):
            continue
        if latest is None or (name == CONFIG_ERROR) > (latest[0] == CONFIG_ERROR) or (
                (name == CONFIG_ERROR) == (latest[0] == CONFIG_ERROR) and created > latest[2]):
            latest = (name, text, created)
    return (latest[0], latest[1]) if latest else None


def poll_delay(age: float, first: float, most: float) -> float:
    """Seconds until the next look at a vehicle still syncing a config pushed `age` seconds ago.

    Half the age, within [first, most]: a vehicle that syncs in seconds is seen applied
    within seconds, and one asleep for a day costs a few dozen calls rather than thousands.
    """
    return min(most, max(first, age / 2))


# -- the resource's view -------------------------------------------------------------------



def vehicles_condition(records: Iterable[VehicleRecord], generation: int | None = None) -> Condition:
    """True once every vehicle that can take the config has applied it (skipped vehicles wait
    for their owner, which the message says), e.g. "48 of 50 applied; 2 skipped: missing_key"."""
    items = list(records)
    tally = counts(items)
    if not items:
        return Condition(VEHICLES_CONFIGURED, "True", "NoVehicles", "spec.vehicles lists no vehicle", generation)
    parts = [f"{tally[APPLIED]} of {len(items)} applied"]
    if tally[PUSHED]:
        parts.append(f"{tally[PUSHED]} waiting for the vehicle to sync")
    if tally[PENDING]:
        parts.append(f"{tally[PENDING]} to push")
    for state, key in ((SKIPPED, "skip"), (FAILING, "last_error")):
        if tally[state]:
            why = Counter(_error_name(getattr(r, key) or "") for r in items if r.state == state)
            detail = ", ".join(name if len(why) == 1 else f"{name} ({n})" for name, n in why.most_common())
            parts.append(f"{tally[state]} {state}: {detail}")
    too_new = [r for r in items if r.too_new and r.state != SKIPPED]
    if too_new:
        names = sorted({n for r in too_new for n in r.too_new})
        shown = ", ".join(BY_NUMBER[n].name if n in BY_NUMBER else str(n) for n in names[:4])
        parts.append(f"{len(too_new)} on firmware too old to send {shown}" + (" and others" if len(names) > 4 else ""))
    message = "; ".join(parts)
    if tally[FAILING]:
        return Condition(VEHICLES_CONFIGURED, "False", "VehiclesFailing", message, generation)
    if tally[PENDING] or tally[PUSHED]:
        return Condition(VEHICLES_CONFIGURED, "False", "VehiclesSyncing", message, generation)
    return Condition(VEHICLES_CONFIGURED, "True", "VehiclesSkipped" if tally[SKIPPED] else "VehiclesApplied",
                     message, generation)


def _error_name(text: str) -> str:
    """`cloud_manager_error: x509: ...` → `cloud_manager_error`; a skip reason stays as it is."""
    return text.split(":", 1)[0].strip() or "unknown"

