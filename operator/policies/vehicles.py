"""Which vehicles need a config push, which are applied, and why: pure policies.

The reconciler gathers facts (the desired config, what the Fleet API says about each
vehicle, what was pushed before) and asks these functions; each answer carries a reason
a user can act on, which ends up in the per-vehicle table and the resource's status.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import VerificationError

from fleetwire.trust import refusal, verified_path
from fleetwire.operator.clients.fleetapi import VehicleConfigState, VehicleInfo
from fleetwire.operator.policies.conditions import VEHICLES_CONFIGURED, Condition
from fleetwire.operator.policies.reasons import Reason, first
from fleetwire.pki import chain_fingerprint
from fleetwire.proto.catalog import BY_NAME, BY_NUMBER, firmware_at_least, parse_firmware

MIN_FIRMWARE = "2024.26"
# Pre-2021 Model S/X need this firmware to stream at all, and then the owner's opt-in.
LEGACY_SX_FIRMWARE = "2025.20"
EXP_RENEW_MARGIN_S = 7 * 86_400

# The states a vehicle can be in, in the order a user reads them.
PENDING = "pending"  # known, nothing pushed yet (or a push is due)
PUSHED = "pushed"  # the API accepted the config; the vehicle has not synced it yet
APPLIED = "applied"  # synced, equal to the desired config, paired, under the limit
SKIPPED = "skipped"  # the API or the pre-flight refused it: see the reason
FAILING = "failing"  # applied, but the vehicle reports errors (TLS, signature)

ERROR_TEXT_LIMIT = 300

STATES = (PENDING, PUSHED, APPLIED, SKIPPED, FAILING)
NEW_MESSAGE = "new vehicle"
APPLIED_REASON = "streaming config applied"
SLOT_FREED = "a config slot freed up: a refused config is not applied by itself, so it is sent again"

SKIP_MEANINGS: dict[str, str] = {
    "missing_key": "the app's key is not paired with this vehicle: the owner must open "
    "https://tesla.com/_ak/<your domain> in the Tesla app",
    "unsupported_firmware": f"firmware older than {MIN_FIRMWARE} cannot take a self-service "
    "config: it will be pushed again once the vehicle updates",
    "unsupported_hardware": "this vehicle's hardware cannot stream telemetry",
    "max_configs": "the vehicle already holds configs of as many apps as it can: the owner must "
    "remove another app's config; fleetwire pushes again when a slot frees up",
    "streaming_toggle_off": "pre-2021 Model S/X: the owner must enable 'Allow Third-Party App "
    "Data Streaming' in the vehicle's Safety screen",
    "unknown_vehicle": "the Fleet API does not know this VIN for the authorized account: check the VIN, and "
    "that the vehicle's owner authorized the app",
}


def explain(reason: str) -> str:
    """The user-facing meaning of a skip reason (unknown reasons are shown as they are)."""
    return SKIP_MEANINGS.get(reason, reason)


def comparable(config: Mapping[str, Any]) -> dict[str, Any]:
    """A config without what changes on every push (`exp`), what the signer adds, and the
    `ca`: a `ca` is judged by what it accepts (`ca_accepts`), never by its bytes."""
    return {k: v for k, v in config.items() if k not in ("exp", "iss", "aud", "ca")}


def ca_accepts(ca_pem: str, chains: Iterable[str], hostname: str, at: dt.datetime) -> bool:
    """Whether a vehicle holding `ca_pem` accepts every chain in `chains` (PEM, leaf first)
    for `hostname` at `at`: the vehicle's own judgement (`certcheck.refusal`)."""
    return all(refusal(chain, ca_pem, hostname, at) is None for chain in chains)


def ca_lasts_until(ca_pem: str, chains: Iterable[str], hostname: str, at: dt.datetime) -> dt.datetime | None:
    """Until when `ca_pem` keeps accepting `chains` as they are presented at `at`: the earliest
    expiry of the certificates above the leaf on the paths it builds (the leaf is renewed in
    place; a CA or a cross-certificate expiring is what takes the vehicle's trust away).
    None when it refuses one now."""
    ca = x509.load_pem_x509_certificates(ca_pem.encode())
    until: dt.datetime | None = None
    for chain in chains:
        certs = x509.load_pem_x509_certificates(chain.encode())
        try:
            path = verified_path(certs[0], certs[1:], ca, hostname, at)
        except (VerificationError, ValueError):
            return None
        ends = min((c.not_valid_after_utc for c in path[1:]), default=certs[0].not_valid_after_utc)
        until = ends if until is None else min(until, ends)
    return until


def ca_union(*bundles: str) -> str:
    """One `ca` holding every certificate of `bundles` once, in order: what a vehicle needs to
    accept the chain served now and the one staged to replace it."""
    seen: set[bytes] = set()
    out: list[str] = []
    for bundle in bundles:
        for cert in x509.load_pem_x509_certificates(bundle.encode()):
            der = cert.public_bytes(serialization.Encoding.DER)
            if der not in seen:
                seen.add(der)
                out.append(cert.public_bytes(serialization.Encoding.PEM).decode())
    return "".join(out)


def fingerprint(config: Mapping[str, Any]) -> str:
    """Short stable hash of a config's comparable part: what 'desired changed' compares."""
    canonical = json.dumps(comparable(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@lru_cache(maxsize=64)  # asked per vehicle read; a fleet holds a handful of distinct bundles
def ca_fingerprint(ca_pem: str) -> str:
    """The `ca` bundle's chain fingerprint (`status.certificate.chainFingerprint`): a change
    of chain must be told apart from other edits, and named the same way everywhere."""
    return chain_fingerprint(ca_pem)


@dataclass(frozen=True)
class VehicleRecord:
    """What the operator remembers about one vehicle between reconciliations."""

    vin: str
    state: str = PENDING
    reason: str = NEW_MESSAGE
    config_fp: str = ""  # fingerprint of the config last pushed
    ca_fp: str = ""  # fingerprint of the `ca` last pushed
    held_ca_fp: str = ""  # fingerprint of the `ca` the vehicle was last seen to hold (applied)
    exp: int | None = None  # `exp` of the config last pushed
    pushed_at: float | None = None
    applied_at: float | None = None
    skip: str | None = None  # the last skip reason, if the vehicle is skipped
    last_error: str = ""
    firmware: str = ""  # as `fleet_status` last reported it
    too_new: tuple[int, ...] = ()  # configured fields (numbers) that firmware is too old to send
    code: str = ""  # the code of a pending record's `reason` ("": new, nothing has happened to it yet)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready; `too_new` as number ranges ("239,260-269"): fields come in firmware
        generations, so a vehicle missing ninety of them still costs a few bytes per record."""
        out = {k: v for k, v in self.__dict__.items() if v not in (None, "", ())}
        if self.too_new:
            out["too_new"] = _ranges(self.too_new)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VehicleRecord:
        known = cls.__dataclass_fields__
        values = {k: v for k, v in data.items() if k in known}
        if "too_new" in values:
            values["too_new"] = _parse_ranges(values["too_new"])
        if "code" not in values and values.get("state", PENDING) == PENDING and values.get("reason", NEW_MESSAGE) \
                != NEW_MESSAGE:
            values["code"] = STILL_PENDING  # a record stored before codes were: its reason was all it had
        return cls(**values)


def _ranges(numbers: Iterable[int]) -> str:
    runs: list[list[int]] = []
    for n in sorted(set(numbers)):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _parse_ranges(text: Any) -> tuple[int, ...]:
    if not isinstance(text, str):  # a list of numbers reads as well
        return tuple(int(n) for n in text)
    numbers: list[int] = []
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        numbers.extend(range(int(first), int(last or first) + 1))
    return tuple(numbers)


def preflight(vin: str, paired: bool, info: VehicleInfo | None, model_year_legacy_sx: bool = False) -> str | None:
    """Why a vehicle cannot take a config right now, from `fleet_status`; None if it can."""
    if not paired:
        return "missing_key"
    firmware = info.firmware_version if info else None
    if firmware and not firmware_at_least(firmware, MIN_FIRMWARE):
        return "unsupported_firmware"
    if info is not None and info.safety_screen_streaming_toggle_enabled is False:
        return "streaming_toggle_off"
    if model_year_legacy_sx and firmware and not firmware_at_least(firmware, LEGACY_SX_FIRMWARE):
        return "unsupported_firmware"
    return None


# -- configured fields the firmware is too old to send ---------------------------------------

FIELDS_TOO_NEW = "fields_too_new"
"""Code of the flag: the vehicle takes the config, but some of its fields never arrive."""


@dataclass(frozen=True, slots=True)
class FieldsTooNew:
    """Configured fields a vehicle's firmware is too old to send, by Field number."""

    firmware: str
    numbers: tuple[int, ...]
    code: str = FIELDS_TOO_NEW

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(BY_NUMBER[n].name for n in self.numbers)

    @property
    def message(self) -> str:
        """E.g. "firmware 2025.20.1 never sends GpsAccuracyMeters (needs 2026.32)"."""
        by_floor: dict[tuple[int, ...], list[str]] = {}
        for number in self.numbers:
            info = BY_NUMBER[number]
            by_floor.setdefault(info.min_firmware or (), []).append(info.name)
        needs = "; ".join(f"{', '.join(names)} (needs {'.'.join(map(str, floor))})"
                          for floor, names in sorted(by_floor.items()))
        return f"firmware {self.firmware} never sends {needs}"


def fields_too_new(firmware: str | None, fields: Iterable[str]) -> FieldsTooNew | None:
    """Which of `fields` a vehicle on `firmware` never sends (the catalog's minimum firmware),
    or None. An absent or unreadable firmware claims nothing: a flag must not be a guess."""
    if not firmware:
        return None
    return _fields_too_new(firmware, fields if isinstance(fields, frozenset) else frozenset(fields))


@lru_cache(maxsize=4096)  # a fleet runs a handful of versions: a pass over 10,000 vehicles asks a few times
def _fields_too_new(firmware: str, fields: frozenset[str]) -> FieldsTooNew | None:
    try:
        version = ".".join(map(str, parse_firmware(firmware)))
    except ValueError:
        return None
    numbers = tuple(sorted(info.number for name in fields if (info := BY_NAME.get(name)) is not None
                           and not info.available_on(firmware)))
    return FieldsTooNew(version, numbers) if numbers else None


def with_firmware(record: VehicleRecord, firmware: str | None, fields: Iterable[str]) -> VehicleRecord:
    """The record with the firmware `fleet_status` reported (None: keep the one known) and the
    configured fields it is too old to send, for the desired `fields`."""
    firmware = firmware or record.firmware
    gap = fields_too_new(firmware, fields)
    too_new = gap.numbers if gap is not None else ()
    if (firmware, too_new) == (record.firmware, record.too_new):
        return record
    return replace(record, firmware=firmware, too_new=too_new)


def too_new_names(record: VehicleRecord) -> tuple[str, ...]:
    """The names of the fields a record's vehicle never sends (numbers a newer catalog lacks are
    shown as numbers)."""
    return tuple(BY_NUMBER[n].name if n in BY_NUMBER else str(n) for n in record.too_new)


def count_too_new(records: Iterable[VehicleRecord]) -> int:
    """Vehicles that take the config but never send some of its fields (`status.vehicles.fieldsTooNew`);
    a skipped vehicle receives no config, and its skip reason already says why."""
    return sum(1 for r in records if r.too_new and r.state != SKIPPED)


# -- which vehicles need a push: an ordered chain of policies -------------------------------

NEW_VEHICLE = "new_vehicle"
CA_REFUSED = "ca_refused"
CA_ENDING = "ca_ending"
CA_ENDING_MARGIN_S = EXP_RENEW_MARGIN_S
"""A `ca` that stops accepting the server's chain within this long (a cross-certificate or CA
expiring) is replaced now, while the vehicle can still connect to sync it."""
DESIRED_CHANGED = "desired_changed"
EXP_NEAR = "exp_near"
STILL_PENDING = "pending"
RECHECK_PASSED = "recheck_passed"
PUSH_FAILED = "push_failed"
SLOT_FREED_CODE = "slot_freed"
NO_CONFIG_HELD = "no_config_held"
DRIFT = "drift"


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
    held_fp = _ca_fp_or_empty(held_ca)
    if held_fp and held_fp != record.held_ca_fp:
        record = replace(record, held_ca_fp=held_fp)
    if ca_ok is None:
        ca_ok = held_fp == _ca_fp_or_empty(str(desired.get("ca") or ""))
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


@lru_cache(maxsize=64)  # a fleet holds a handful of distinct `ca` bundles: parse each once
def _ca_fp_or_empty(ca_pem: str) -> str:
    try:
        return ca_fingerprint(ca_pem) if ca_pem else ""
    except ValueError:
        return ""


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


def counts(records: Iterable[VehicleRecord]) -> dict[str, int]:
    """Vehicles per state, for `status.vehicles` (every state present, zeros included)."""
    tally = Counter(r.state for r in records)
    return {state: tally.get(state, 0) for state in STATES}


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
