"""Which vehicles need a config push, which are applied, and why: pure policies.

The reconciler gathers facts (the desired config, what the Fleet API says about each
vehicle, what was pushed before) and asks these functions; each answer carries a reason
a user can act on, which ends up in the per-vehicle table and the resource's status.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from fleetwire.operator.fleetapi import VehicleConfigState, VehicleInfo
from fleetwire.proto.catalog import firmware_at_least

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

STATES = (PENDING, PUSHED, APPLIED, SKIPPED, FAILING)
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
}


def explain(reason: str) -> str:
    """The user-facing meaning of a skip reason (unknown reasons are shown as they are)."""
    return SKIP_MEANINGS.get(reason, reason)


def comparable(config: Mapping[str, Any]) -> dict[str, Any]:
    """A config without what changes on every push (`exp`) or is added by the signer."""
    return {k: v for k, v in config.items() if k not in ("exp", "iss", "aud")}


def fingerprint(config: Mapping[str, Any]) -> str:
    """Short stable hash of a config's comparable part: what 'desired changed' compares."""
    canonical = json.dumps(comparable(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def ca_fingerprint(ca_pem: str) -> str:
    """Hash of the `ca` bundle alone: a change of chain must be told apart from other edits."""
    return hashlib.sha256(ca_pem.strip().encode()).hexdigest()[:16]


@dataclass(frozen=True)
class VehicleRecord:
    """What the operator remembers about one vehicle between reconciliations."""

    vin: str
    state: str = PENDING
    reason: str = "new vehicle"
    config_fp: str = ""  # fingerprint of the config last pushed
    ca_fp: str = ""  # fingerprint of the `ca` last pushed
    exp: int | None = None  # `exp` of the config last pushed
    pushed_at: float | None = None
    applied_at: float | None = None
    skip: str | None = None  # the last skip reason, if the vehicle is skipped
    last_error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, "")}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VehicleRecord:
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})


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


def push_reason(record: VehicleRecord | None, desired: Mapping[str, Any], ca_pem: str, now: float) -> str | None:
    """Why this vehicle needs the desired config pushed now, or None.

    The `ca` is checked before the rest, so that a chain rotation is named as such in the
    vehicle table and the events: it is the reason operators most need to see.
    """
    if record is None or record.pushed_at is None:
        return "new vehicle"
    if record.ca_fp != ca_fingerprint(ca_pem):
        return "CA chain changed"
    if record.config_fp != fingerprint(desired):
        return "desired config changed"
    if record.exp is not None and record.exp - now < EXP_RENEW_MARGIN_S:
        return "config expires soon"
    if record.state == PENDING:
        return record.reason or "pending"
    return None


def pushed(record: VehicleRecord | None, vin: str, desired: Mapping[str, Any], ca_pem: str, now: float,
           skip: str | None) -> VehicleRecord:
    """The record after a push the API answered (`skip` = its skip reason for this VIN)."""
    base = record or VehicleRecord(vin)
    if skip is not None:
        return replace(base, state=SKIPPED, reason=explain(skip), skip=skip, pushed_at=now)
    return replace(
        base, state=PUSHED, reason="waiting for the vehicle to sync", skip=None, pushed_at=now,
        config_fp=fingerprint(desired), ca_fp=ca_fingerprint(ca_pem), exp=desired.get("exp"),
    )


def observe(record: VehicleRecord, held: VehicleConfigState, desired: Mapping[str, Any], now: float) -> VehicleRecord:
    """The record after reading what the vehicle holds (GET fleet_telemetry_config).

    Applied only when synced, present, equal to the desired config (without `exp`), under
    the limit and paired: `synced: true` alone also describes a config refused for lack of
    a slot (config null) and one signed by the wrong key.
    """
    if not held.key_paired:
        return replace(record, state=SKIPPED, skip="missing_key", reason=explain("missing_key"))
    if held.limit_reached or (held.synced and held.config is None and record.state in (PUSHED, APPLIED)):
        return replace(record, state=SKIPPED, skip="max_configs", reason=explain("max_configs"))
    if record.skip == "max_configs" and not held.limit_reached:
        return replace(record, state=PENDING, skip=None, reason=SLOT_FREED)
    if not held.synced:
        return replace(record, state=PUSHED, reason="waiting for the vehicle to sync")
    if held.config is None:
        return replace(record, state=PENDING, reason="the vehicle holds no config for this app")
    if comparable(held.config) != comparable(desired):
        if record.state == PUSHED and record.config_fp != fingerprint(desired):
            return record  # an older push is still syncing; the next push brings it up to date
        return replace(record, state=PENDING, reason="the config on the vehicle differs from the desired one")
    if record.last_error:
        return replace(record, state=FAILING, reason=record.last_error)
    applied_at = record.applied_at if record.state == APPLIED else now
    return replace(record, state=APPLIED, reason="streaming config applied", skip=None, applied_at=applied_at)


def with_error(record: VehicleRecord, error_name: str, error: str) -> VehicleRecord:
    """Attach a telemetry error the vehicle reported (TLS to our server, signature)."""
    text = f"{error_name}: {error}"
    state = FAILING if record.state == APPLIED else record.state
    return replace(record, last_error=text, state=state, reason=text if state == FAILING else record.reason)


def cleared(record: VehicleRecord) -> VehicleRecord:
    """The vehicle stopped reporting errors (it connected and streams)."""
    if not record.last_error:
        return record
    return replace(record, last_error="", state=APPLIED if record.state == FAILING else record.state)


def counts(records: Iterable[VehicleRecord]) -> dict[str, int]:
    """Vehicles per state, for `status.vehicles` (every state present, zeros included)."""
    tally = Counter(r.state for r in records)
    return {state: tally.get(state, 0) for state in STATES}
