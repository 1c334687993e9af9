"""Reconcile policies: conditions and events, without Kubernetes."""

from __future__ import annotations

import datetime as dt

from fleetwire.operator.policies.conditions import SPEC_VALID, Condition, check_spec, find_condition, judge_spec, set_condition

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(hours=1)
GOOD = {"hostname": "telemetry.example.com", "certificate": {"privateCA": {}}}
BAD = {"hostname": "telemetry.example.com", "port": "443", "certificate": {"privateCA": {}}}


def test_check_spec_reports_why() -> None:
    parsed, ok = check_spec(GOOD, 3)
    assert parsed is not None and (ok.status, ok.reason, ok.observed_generation) == ("True", "Valid", 3)
    parsed, bad = check_spec(BAD, 4)
    assert parsed is None and (bad.status, bad.reason) == ("False", "InvalidSpec")
    assert bad.message.startswith("spec.port: must be an integer, not the string '443'")
    assert check_spec(None, None)[1].message.startswith("spec.hostname: required")


def test_spec_warnings_reach_the_spec_valid_condition() -> None:
    """A provisional field is accepted, and the user reads why it may never arrive."""
    spec = {**GOOD, "fields": {"AccessoryRail": {"interval_seconds": 60}}}
    parsed, condition = check_spec(spec, 5)
    assert parsed is not None and condition.status == "True"
    assert condition.message.startswith("the spec passed every check; warnings: spec.fields.AccessoryRail: provisional")


def test_transition_time_moves_only_when_status_changes() -> None:
    first = set_condition([], Condition(SPEC_VALID, "False", "InvalidSpec", "a"), T0)
    again = set_condition(first, Condition(SPEC_VALID, "False", "InvalidSpec", "b"), T1)
    assert again[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z" and again[0]["message"] == "b"
    flipped = set_condition(again, Condition(SPEC_VALID, "True", "Valid", "ok", 2), T1)
    assert flipped == [{"type": SPEC_VALID, "status": "True", "reason": "Valid", "message": "ok",
                        "lastTransitionTime": "2026-01-01T01:00:00Z", "observedGeneration": 2}]


def test_other_conditions_keep_their_place() -> None:
    others = [{"type": "CertificateReady", "status": "True"}, {"type": SPEC_VALID, "status": "True"},
              {"type": "ServerReady", "status": "False"}]
    merged = set_condition(others, Condition(SPEC_VALID, "False", "InvalidSpec", "x"), T0)
    assert [c["type"] for c in merged] == ["CertificateReady", SPEC_VALID, "ServerReady"]
    assert find_condition(merged, SPEC_VALID)["status"] == "False"  # type: ignore[index]


def test_events_only_when_the_outcome_changes() -> None:
    first = judge_spec(BAD, {}, 1)
    assert [(e.type, e.reason) for e in first.events] == [("Warning", "InvalidSpec")]
    status = first.status_patch(None, T0)
    assert status["observedGeneration"] == 1 and status["conditions"][0]["status"] == "False"
    assert judge_spec(BAD, status, 1).events == ()  # a resumed operator says nothing new
    fixed = judge_spec(GOOD, status, 2)
    assert [(e.type, e.reason) for e in fixed.events] == [("Normal", "Valid")] and fixed.spec is not None
