"""Make before break: when a new certificate is staged, and when it is promoted, and why.

A vehicle trusts only the `ca` in the config it last synced, and a parked car syncs when it
wakes (hours to a day). So a certificate from a chain the vehicles' `ca` would refuse (a new
root, another CA, a replaced private CA) is not served at once: it is staged in a Secret of
its own while the server keeps the current one, the vehicles are sent a `ca` accepting
both (`vehicles.ca_union`), and it is promoted when every vehicle that can take a config
holds such a `ca`, or at a deadline. A certificate the current `ca` accepts (a renewal under
the same intermediate, or a sibling of the same root) is served at once: no vehicle notices.

Pure policies `(facts) -> Reason | None` evaluated in a declared order, as the push
reasons are; `certificates` gathers the facts, asks, acts and records the code.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fleetwire.trust import refusal
from fleetwire.operator.resource.spec import Rotation
from fleetwire.operator.policies.reasons import Reason, first
from fleetwire.pki import chain_fingerprint

__all__ = [
    "PROMOTE_ANNOTATION",
    "PROMOTE_POLICIES",
    "PromoteFacts",
    "next_secret_name",
    "progress_text",
    "promote_by",
    "promote_decision",
    "stage_decision",
]

PROMOTE_ANNOTATION = "fleetwire.io/promote-next"
"""On the resource: promote the staged certificate now, accepting that vehicles still behind are cut off."""

# Codes of the stage decision.
REFUSED_BY_CA = "RefusedByCurrentCa"
NO_USABLE_CURRENT = "NoUsableCurrent"
ACCEPTED_BY_CA = "AcceptedByCurrentCa"
NO_VEHICLES = "NoVehicles"
# Codes of the promotion.
CURRENT_UNUSABLE = "CurrentUnusable"
PROMOTE_REQUESTED = "PromoteRequested"
VEHICLES_READY = "VehiclesReady"
DEADLINE = "Deadline"


def next_secret_name(tls_secret: str) -> str:
    """Where a staged certificate waits: beside the Secret the server mounts, never in it."""
    return f"{tls_secret}-next"


def _stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stage_decision(current_usable: bool, current_ca: bytes | None, new_chain: bytes, hostname: str,
                   now: dt.datetime, vehicles_expected: bool) -> Reason:
    """Serve the new certificate at once, or stage it? Staged only when the `ca` the vehicles
    were sent for the current chain refuses it and there is a current certificate worth
    keeping: with none (expired, key lost, Secret deleted) every vehicle is cut off anyway."""
    if not vehicles_expected:
        return Reason(NO_VEHICLES, "no vehicles are configured by this resource: nothing to wait for")
    if not current_usable or current_ca is None:
        return Reason(NO_USABLE_CURRENT, "no valid current certificate to keep serving: switched at once; "
                                         "vehicles whose ca refuses the new chain are cut off until they sync")
    why = refusal(new_chain, current_ca, hostname, now)
    if why is None:
        return Reason(ACCEPTED_BY_CA, "the vehicles' ca accepts the new chain: served at once, nothing pushed")
    return Reason(REFUSED_BY_CA, f"the vehicles' ca refuses the new chain ({why}): staged until they hold a ca "
                                 "accepting both")


def promote_by(staged_at: dt.datetime, current_not_after: dt.datetime | None, rotation: Rotation) -> dt.datetime:
    """The deadline: `maxWait` after staging, or `safetyMargin` before the current certificate
    expires, whichever comes first."""
    deadline = staged_at + rotation.max_wait
    if current_not_after is not None:
        deadline = min(deadline, current_not_after - rotation.safety_margin)
    return deadline


@dataclass(frozen=True, slots=True)
class PromoteFacts:
    """What the promotion policies look at.

    `progress` is `status.vehicles.next` as the vehicles' daemon wrote it: for the staged
    chain whose fingerprint (leaf included) is `chain`, `ready` of `total` vehicles hold a
    `ca` that accepts it, and `behind` lists the first VINs that do not.
    """

    current_usable: bool
    staged_fingerprint: str
    deadline: dt.datetime
    now: dt.datetime
    progress: Mapping[str, Any] | None
    requested: bool
    vehicles_expected: bool


def _current_unusable(facts: PromoteFacts) -> Reason | None:
    if facts.current_usable:
        return None
    return Reason(CURRENT_UNUSABLE, "the current certificate can no longer be served: promoted at once")


def _requested(facts: PromoteFacts) -> Reason | None:
    if not facts.requested:
        return None
    return Reason(PROMOTE_REQUESTED, f"the annotation {PROMOTE_ANNOTATION} asks for promotion now")


def _vehicles_ready(facts: PromoteFacts) -> Reason | None:
    if not facts.vehicles_expected:
        return Reason(NO_VEHICLES, "no vehicles to wait for")
    progress = facts.progress or {}
    if progress.get("chain") != facts.staged_fingerprint or int(progress.get("behindCount", 1)) != 0:
        return None
    return Reason(VEHICLES_READY, f"every vehicle that holds a config ({progress.get('total', 0)}) holds a ca "
                                  "accepting the new chain")


def _deadline(facts: PromoteFacts) -> Reason | None:
    if facts.now < facts.deadline:
        return None
    return Reason(DEADLINE, f"the deadline {_stamp(facts.deadline)} has passed; {behind_text(facts.progress)}")


PROMOTE_POLICIES = (_current_unusable, _requested, _vehicles_ready, _deadline)
"""In this order: a current certificate that cannot serve leaves nothing to wait for; a person's
request comes before the fleet's readiness, which comes before the deadline."""


def promote_decision(facts: PromoteFacts) -> Reason | None:
    """Why the staged certificate is promoted now (the first policy that answers), or None: keep waiting."""
    return first(PROMOTE_POLICIES, facts)


def behind_text(progress: Mapping[str, Any] | None, limit: int = 20) -> str:
    """E.g. "3 vehicles still behind, cut off until they sync: 5YJ…, 5YJ…, 5YJ…"."""
    progress = progress or {}
    count = int(progress.get("behindCount", 0) or 0)
    if not count:
        return "no vehicle is behind"
    vins: Sequence[str] = list(progress.get("behind") or ())[:limit]
    more = f" and {count - len(vins)} more" if count > len(vins) else ""
    return (f"{count} vehicle{'s' if count != 1 else ''} still behind, cut off until they sync: "
            f"{', '.join(vins)}{more}")


def progress_text(progress: Mapping[str, Any] | None, staged_fingerprint: str, deadline: dt.datetime) -> str:
    """The CertificateRotating message: "7,412 of 10,000 vehicles hold the next ca; promoting by <time>"."""
    progress = progress or {}
    if progress.get("chain") != staged_fingerprint:
        return f"waiting for the vehicles to be sent a ca accepting the next chain; promoting by {_stamp(deadline)}"
    ready, total = int(progress.get("ready", 0)), int(progress.get("total", 0))
    return f"{ready:,} of {total:,} vehicles hold the next ca; promoting by {_stamp(deadline)}"


def staged_fingerprint(chain_pem: bytes | str) -> str:
    """The fingerprint progress is reported under: the staged chain's, leaf included, so that
    progress towards one staged certificate never counts for the next."""
    return chain_fingerprint(chain_pem)
