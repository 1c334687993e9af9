"""The vehicle policies: push reasons, what counts as applied, skip meanings."""

from __future__ import annotations

import json
from dataclasses import replace

from fleetwire.operator.clients.fleetapi_types import VehicleConfigState, VehicleInfo
from fleetwire.operator.commands.vehicles import format_table
from fleetwire.operator.policies.vehicles import (
    APPLIED, FAILING, FIELDS_TOO_NEW, ca_fingerprint, PENDING, PUSHED, SKIPPED, SLOT_FREED, VehicleRecord, cleared, count_too_new,
    counts, current_error, error_time, explain, fields_too_new, observe, poll_delay, preflight, push_failed,
    push_reason, pushed, recheck_passed, refused, too_new_names, vehicles_condition, with_error, with_firmware,
)
from fleetwire.pki import make_ca

VIN = "5YJ3E1EA7KF000001"
CA = make_ca("Chain A").cert_pem.decode()
NEW_CA = make_ca("Chain B").cert_pem.decode()
NOW = 1_800_000_000.0


def desired(ca: str = CA, **extra: object) -> dict[str, object]:
    return {"hostname": "t.example.com", "port": 443, "ca": ca,
            "fields": {"VehicleSpeed": {"interval_seconds": 10}}, "exp": int(NOW) + 30 * 86400, **extra}


def held(config: dict[str, object] | None, *, synced: bool = True, limit: bool = False, paired: bool = True) -> VehicleConfigState:
    return VehicleConfigState(synced=synced, config=config, limit_reached=limit, key_paired=paired)


def applied_record() -> VehicleRecord:
    record = pushed(None, VIN, desired(), CA, NOW, skip=None)
    return observe(record, held(desired()), desired(), NOW + 60)


def info(firmware: str, toggle: bool | None = None) -> VehicleInfo:
    return VehicleInfo(firmware, None, None, toggle)


def test_a_new_vehicle_is_pushed() -> None:
    assert push_reason(None, desired(), CA, NOW) == "new vehicle"


def test_applied_needs_sync_presence_equality_pairing_and_a_slot() -> None:
    record = pushed(None, VIN, desired(), CA, NOW, skip=None)
    assert record.state == PUSHED
    assert observe(record, held(desired(), synced=False), desired(), NOW).state == PUSHED
    assert observe(record, held(desired()), desired(), NOW).state == APPLIED
    assert observe(record, held(desired(), paired=False), desired(), NOW).skip == "missing_key"
    assert observe(record, held(desired(), limit=True), desired(), NOW).skip == "max_configs"


def test_updated_but_config_null_is_the_max_configs_trap_and_a_freed_slot_repushes() -> None:
    record = pushed(None, VIN, desired(), CA, NOW, skip=None)
    trapped = observe(record, held(None), desired(), NOW)
    assert (trapped.state, trapped.skip) == (SKIPPED, "max_configs")
    assert push_reason(trapped, desired(), CA, NOW) is None  # nothing to do while the slots are full
    freed = observe(trapped, held(None, synced=True, limit=False), desired(), NOW)
    assert freed.state == PENDING
    assert push_reason(freed, desired(), CA, NOW) == SLOT_FREED


def test_a_chain_rotation_is_named_before_any_other_change() -> None:
    record = applied_record()
    assert push_reason(record, desired(), CA, NOW) is None
    assert push_reason(record, desired(NEW_CA), NEW_CA, NOW) == "CA chain changed"
    assert push_reason(record, desired(NEW_CA, alert_types=["service"]), NEW_CA, NOW) == "CA chain changed"
    assert push_reason(record, desired(alert_types=["service"]), CA, NOW) == "desired config changed"


def test_exp_changes_alone_do_not_repush_until_it_is_near() -> None:
    record = applied_record()
    later = desired()
    later["exp"] = int(NOW) + 60 * 86400
    assert push_reason(record, later, CA, NOW) is None
    assert push_reason(record, later, CA, record.exp - 3600) == "config expires soon"  # type: ignore[operator]


def test_drift_on_the_vehicle_makes_it_pending_again() -> None:
    record = applied_record()
    other = desired(alert_types=["customer"])
    drifted = observe(record, held(other), desired(), NOW)
    assert drifted.state == PENDING and "differs" in drifted.reason
    assert push_reason(drifted, desired(), CA, NOW) == drifted.reason


def test_skip_reasons_from_a_push_are_kept_with_their_meaning() -> None:
    record = pushed(None, VIN, desired(), CA, NOW, skip="unsupported_firmware")
    assert (record.state, record.skip) == (SKIPPED, "unsupported_firmware")
    assert "2024.26" in record.reason
    assert explain("missing_key").startswith("the app's key is not paired")
    assert explain("something_new") == "something_new"


def test_preflight_from_fleet_status() -> None:
    assert preflight(VIN, paired=False, info=None) == "missing_key"
    assert preflight(VIN, paired=True, info=info("2024.20.1")) == "unsupported_firmware"
    assert preflight(VIN, paired=True, info=info("2024.26.4 abc")) is None
    assert preflight(VIN, paired=True, info=info("2025.32.1", toggle=False)) == "streaming_toggle_off"
    assert preflight(VIN, paired=True, info=info("2025.2.1"), model_year_legacy_sx=True) == "unsupported_firmware"


def test_telemetry_errors_mark_an_applied_vehicle_failing_until_cleared() -> None:
    record = applied_record()
    failing = with_error(record, "cloud_manager_error", "x509: certificate signed by unknown authority")
    assert failing.state == FAILING and "unknown authority" in failing.reason
    assert observe(failing, held(desired()), desired(), NOW).state == FAILING
    assert cleared(failing).state == APPLIED and cleared(failing).reason == record.reason


def test_records_round_trip_and_counts_cover_every_state() -> None:
    record = applied_record()
    assert VehicleRecord.from_dict(record.as_dict()) == record
    tally = counts([record, replace(record, state=SKIPPED), VehicleRecord("X")])
    assert tally == {"pending": 1, "pushed": 0, "applied": 1, "skipped": 1, "failing": 0}


def test_a_skipped_vehicle_waits_for_its_recheck_and_is_never_pushed_in_a_loop() -> None:
    skipped = pushed(None, VIN, desired(), CA, NOW, skip="missing_key")
    assert push_reason(skipped, desired(NEW_CA), NEW_CA, NOW) is None  # no config on it to rotate
    back = recheck_passed(skipped)
    assert back.state == PENDING and back.reason.startswith("no longer missing_key")
    assert push_reason(back, desired(), CA, NOW) == back.reason  # named for what changed, not "CA chain changed"
    preflighted = refused(None, VIN, "unsupported_firmware")
    assert (preflighted.state, preflighted.pushed_at) == (SKIPPED, None)
    assert push_reason(preflighted, desired(), CA, NOW) is None
    full = replace(skipped, skip="max_configs")
    assert recheck_passed(full) is full  # only a read of the vehicle shows a freed slot


def test_a_failed_push_keeps_the_vehicle_pending_with_a_bounded_reason() -> None:
    record = push_failed(VehicleRecord(VIN), "HTTP 503 " + "x" * 1000)
    assert record.state == PENDING and len(record.reason) <= 300
    assert push_reason(record, desired(), CA, NOW) == record.reason


def test_which_error_describes_a_vehicle_now() -> None:
    tls = ("cloud_manager_error", "x509: certificate signed by unknown authority")
    sig = ("config_manager_error", "InvalidSignature: unknown issuer")
    pushed_at = NOW - 100
    assert current_error([(*tls, NOW - 10)], since=pushed_at, now=NOW, quiet=60) == tls
    assert current_error([(*tls, NOW - 200)], since=NOW - 300, now=NOW, quiet=60) is None  # not repeated: over
    assert current_error([(*tls, NOW - 150)], since=pushed_at, now=NOW, quiet=600) is None  # before the push
    assert current_error([(*sig, NOW - 5000)], since=NOW - 6000, now=NOW, quiet=60) == sig  # stands until a push
    assert current_error([(*sig, NOW - 50), (*tls, NOW - 1)], since=pushed_at, now=NOW, quiet=60) == sig
    # Still syncing a new push: the old config's connection errors describe the vehicle, a refusal does not.
    assert current_error([(*tls, NOW - 150)], since=pushed_at, now=NOW, quiet=600, syncing=True) == tls
    assert current_error([(*sig, NOW - 1)], since=pushed_at, now=NOW, quiet=600, syncing=True) is None


def test_error_times_and_poll_delays() -> None:
    assert error_time("2026-11-22T03:00:00.5Z") == 1795316400.5
    assert error_time("2026-11-22T03:00:00") == 1795316400.0
    assert error_time("yesterday") is None
    assert poll_delay(0.0, 5, 600) == 5 and poll_delay(60, 5, 600) == 30 and poll_delay(86400, 5, 600) == 600


def test_the_condition_says_how_many_applied_and_why_not() -> None:
    applied = applied_record()
    assert vehicles_condition([]).reason == "NoVehicles"
    done = vehicles_condition([applied] * 48 + [refused(None, VIN, "missing_key")] * 2, generation=3)
    assert (done.type, done.status, done.reason) == ("VehiclesConfigured", "True", "VehiclesSkipped")
    assert done.message == "48 of 50 applied; 2 skipped: missing_key" and done.observed_generation == 3
    syncing = vehicles_condition([applied, pushed(None, VIN, desired(), CA, NOW, skip=None), VehicleRecord(VIN)])
    assert (syncing.status, syncing.reason) == ("False", "VehiclesSyncing")
    assert syncing.message == "1 of 3 applied; 1 waiting for the vehicle to sync; 1 to push"
    failing = vehicles_condition([applied, with_error(applied, "cloud_manager_error", "i/o timeout")])
    assert (failing.reason, failing.message) == ("VehiclesFailing", "1 of 2 applied; 1 failing: cloud_manager_error")
    assert vehicles_condition([applied]).reason == "VehiclesApplied"


# -- configured fields the firmware is too old to send -------------------------------------

FIELDS = ["VehicleSpeed", "GpsAccuracyMeters", "RemoteStartActive", "LightsHazardsActive", "NotAField"]


def test_fields_a_firmware_is_too_old_to_send() -> None:
    gap = fields_too_new("2025.20.1 a1b2c3", FIELDS)
    assert gap is not None and gap.code == FIELDS_TOO_NEW == "fields_too_new"
    assert (gap.firmware, gap.numbers, gap.names) == ("2025.20.1", (260, 268), ("GpsAccuracyMeters", "RemoteStartActive"))
    assert gap.message == "firmware 2025.20.1 never sends GpsAccuracyMeters, RemoteStartActive (needs 2026.32)"
    older = fields_too_new("2024.44.32", FIELDS)
    assert older is not None and older.numbers == (239, 260, 268)
    assert older.message == ("firmware 2024.44.32 never sends LightsHazardsActive (needs 2025.2.6); "
                             "GpsAccuracyMeters, RemoteStartActive (needs 2026.32)")
    assert fields_too_new("2026.32.0.1", FIELDS) is None
    assert fields_too_new("2025.20.1", ["VehicleSpeed", "Soc"]) is None
    # Without a readable firmware nothing is claimed: the flag must never be a guess.
    assert fields_too_new(None, FIELDS) is None and fields_too_new("", FIELDS) is None
    assert fields_too_new("develop", FIELDS) is None


def test_the_record_carries_firmware_and_the_fields_it_never_sends() -> None:
    record = with_firmware(applied_record(), "2025.20.1 a1b2c3", FIELDS)
    assert (record.firmware, record.too_new, record.state) == ("2025.20.1 a1b2c3", (260, 268), APPLIED)
    assert VehicleRecord.from_dict(json.loads(json.dumps(record.as_dict()))) == record
    assert record.as_dict()["too_new"] == "260,268"
    wide = replace(record, too_new=(239, *range(260, 270), 275))
    assert wide.as_dict()["too_new"] == "239,260-269,275" and VehicleRecord.from_dict(wide.as_dict()) == wide
    assert "too_new" not in applied_record().as_dict() and "firmware" not in applied_record().as_dict()
    updated = with_firmware(record, "2026.32.1", FIELDS)
    assert updated.too_new == () and updated.firmware == "2026.32.1"
    assert with_firmware(record, None, FIELDS) == record  # an answer without firmware forgets nothing
    assert with_firmware(record, None, ["VehicleSpeed"]).too_new == ()  # the spec changed: recomputed
    assert too_new_names(record) == ("GpsAccuracyMeters", "RemoteStartActive")


def test_vehicles_missing_fields_are_counted_and_named_in_the_condition() -> None:
    applied = applied_record()
    old = with_firmware(applied, "2025.20.1", FIELDS)
    skipped = with_firmware(refused(None, VIN, "unsupported_firmware"), "2024.8.9", FIELDS)
    records = [applied, old, old, skipped]
    assert count_too_new(records) == 2  # a skipped vehicle gets no config at all: its reason says so
    condition = vehicles_condition(records)
    assert condition.message == ("3 of 4 applied; 1 skipped: unsupported_firmware; 2 on firmware too old to send "
                                 "GpsAccuracyMeters, RemoteStartActive")
    assert (condition.status, condition.reason) == ("True", "VehiclesSkipped")  # a flag, not a failure


def test_the_table_shows_firmware_and_the_fields_it_never_sends() -> None:
    old = with_firmware(applied_record(), "2025.20.1 a1b2c3", FIELDS)
    new = replace(with_firmware(applied_record(), "2026.32.1", FIELDS), vin="5YJ3E1EA7KF000002")
    unknown = replace(applied_record(), vin="5YJ3E1EA7KF000003")
    text = format_table([unknown, new, old], {"vehicles": {"fieldsTooNew": 1}})
    lines = text.splitlines()
    assert lines[0].split() == ["VIN", "STATE", "FIRMWARE", "REASON", "LAST", "PUSH", "(UTC)", "CA", "FIELDS", "TOO",
                                "NEW", "LAST", "ERROR"]
    rows = {line.split()[0]: line.split() for line in lines[1:4]}
    assert rows[VIN][1:3] == ["applied", "2025.20.1"]
    assert rows[VIN][-3] == ca_fingerprint(CA)[:12]  # the `ca` the vehicle holds
    assert rows[VIN][-2:] == ["GpsAccuracyMeters,RemoteStartActive", "-"]
    assert rows["5YJ3E1EA7KF000002"][2] == "2026.32.1" and rows["5YJ3E1EA7KF000002"][-2:] == ["-", "-"]
    assert rows["5YJ3E1EA7KF000003"][2] == "-"
    assert ("1 vehicle on firmware too old to send some configured fields (FIELDS TOO NEW): they arrive once it "
            "updates") in lines
    assert "too old" not in format_table([new, unknown], {})
    staged = format_table([new], {"vehicles": {"next": {"ready": 7412, "total": 10000, "behindCount": 2588}}})
    assert "next certificate staged: 7,412 of 10,000 vehicles hold a ca accepting it (2,588 behind)" in staged
