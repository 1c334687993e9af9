"""Make before break, as pure policies: stage or serve at once, promote or wait, and why."""

from __future__ import annotations

import datetime as dt

from test_rotation_acceptance import A, B, HOST

from fleetwire.operator.policies import rotation
from fleetwire.operator.policies.rotation import PromoteFacts, promote_by, promote_decision, stage_decision
from fleetwire.operator.resource.spec import Rotation
from fleetwire.operator.resource.spec_parse import parse_spec

NOW = dt.datetime.now(dt.UTC)


def facts(**overrides: object) -> PromoteFacts:
    base: dict[str, object] = {
        "current_usable": True, "staged_fingerprint": "fp", "deadline": NOW + dt.timedelta(hours=1), "now": NOW,
        "progress": {"chain": "fp", "ready": 3, "total": 5, "behindCount": 2, "behind": ["V1", "V2"]},
        "requested": False, "vehicles_expected": True}
    base.update(overrides)
    return PromoteFacts(**base)  # type: ignore[arg-type]


def test_a_chain_the_current_ca_accepts_is_served_at_once() -> None:
    for under in (A.first, A.sibling):
        decision = stage_decision(True, A.ca(A.first).encode(), A.chain(under).encode(), HOST, NOW, True)
        assert decision.code == rotation.ACCEPTED_BY_CA


def test_a_new_root_is_staged_unless_nothing_can_be_kept_or_nobody_waits() -> None:
    new = B.chain(B.first).encode()
    assert stage_decision(True, A.ca(A.first).encode(), new, HOST, NOW, True).code == rotation.REFUSED_BY_CA
    assert stage_decision(False, A.ca(A.first).encode(), new, HOST, NOW, True).code == rotation.NO_USABLE_CURRENT
    assert stage_decision(True, None, new, HOST, NOW, True).code == rotation.NO_USABLE_CURRENT
    assert stage_decision(True, A.ca(A.first).encode(), new, HOST, NOW, False).code == rotation.NO_VEHICLES


def test_the_deadline_is_the_earlier_of_max_wait_and_the_safety_margin() -> None:
    settings = Rotation(max_wait=dt.timedelta(hours=72), safety_margin=dt.timedelta(hours=12))
    assert promote_by(NOW, NOW + dt.timedelta(days=30), settings) == NOW + dt.timedelta(hours=72)
    assert promote_by(NOW, NOW + dt.timedelta(days=2), settings) == NOW + dt.timedelta(hours=36)
    assert promote_by(NOW, None, settings) == NOW + dt.timedelta(hours=72)


def test_promotion_waits_for_every_vehicle_then_goes() -> None:
    assert promote_decision(facts()) is None
    ready = promote_decision(facts(progress={"chain": "fp", "ready": 5, "total": 5, "behindCount": 0}))
    assert ready is not None and ready.code == rotation.VEHICLES_READY
    # Progress towards another staged chain does not count.
    assert promote_decision(facts(progress={"chain": "other", "ready": 5, "total": 5, "behindCount": 0})) is None


def test_the_chain_of_promotion_policies_in_order() -> None:
    assert [p.__name__ for p in rotation.PROMOTE_POLICIES] == ["_current_unusable", "_requested", "_vehicles_ready",
                                                                "_deadline"]
    assert promote_decision(facts(current_usable=False)).code == rotation.CURRENT_UNUSABLE  # type: ignore[union-attr]
    assert promote_decision(facts(requested=True)).code == rotation.PROMOTE_REQUESTED  # type: ignore[union-attr]
    late = promote_decision(facts(now=NOW + dt.timedelta(hours=2)))
    assert late is not None and late.code == rotation.DEADLINE and "V1, V2" in late.message
    assert promote_decision(facts(vehicles_expected=False)).code == rotation.NO_VEHICLES  # type: ignore[union-attr]


def test_the_rotating_message_counts_the_fleet() -> None:
    text = rotation.progress_text({"chain": "fp", "ready": 7412, "total": 10000}, "fp", NOW)
    assert text.startswith("7,412 of 10,000 vehicles hold the next ca; promoting by ")


def test_the_spec_takes_rotation_settings() -> None:
    spec = parse_spec({"hostname": "t.example.com", "certificate": {
        "privateCA": {}, "rotation": {"maxWait": "24h", "safetyMargin": "6h"}}})
    assert spec.rotation == Rotation(dt.timedelta(hours=24), dt.timedelta(hours=6))
    assert parse_spec({"hostname": "t.example.com", "certificate": {"privateCA": {}}}).rotation == Rotation()
