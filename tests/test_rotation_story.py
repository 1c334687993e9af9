"""Rotation stories: what a certificate change costs a fleet of slow cars, against today's behaviour.

Each story configures a fleet in the Fleet API simulator (long-tailed sync: awake cars in
seconds to minutes, parked ones hours later; each car reconnecting on its own schedule),
rotates the server's certificate, and runs until every vehicle streams again, twice in the
same test: with make before break (pushes judged by acceptance, a refused chain staged and
promoted when the fleet holds a `ca` for it) and with today's immediate switch (the server
serves the new chain at once, any change of the `ca`'s bytes is pushed). Time runs 14,400 times
faster than real (a day takes 6 s); the figures are in real hours and minutes. The
simulator's vehicles judge the chain the server presents at each of their reconnects exactly
as a connecting car does (`certcheck.refusal`); the vehicles story shows the same with sockets.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PEBBLE, LocalDns, Pebble
from cryptography.hazmat.primitives import serialization
from test_rotation_acceptance import A, B, HOST

from fleetwire.operator.clients.http01 import Http01Responder
from fleetwire.demo.rotation import IMMEDIATE, MAKE_BEFORE_BREAK, Served, Trial, trial

TIME_FACTOR = 1 / 14400
VEHICLES = 80
PEBBLE_HOST = "telemetry.fleetwire.test"


def report(line: str) -> None:
    print(line, file=sys.__stdout__, flush=True)


def side_by_side(what: str, mbb: Trial, today: Trial) -> None:
    keys = ("pushes", "tls_failures", "vehicles_failed", "lost_vehicle_minutes", "time_to_promotion_h",
            "time_to_all_streaming_h")
    report(f"{what}: " + "; ".join(f"{k} {getattr(mbb, k)} (today {getattr(today, k)})" for k in keys))


async def both(before: Served, after: Served, host: str = HOST, **kwargs: object) -> tuple[Trial, Trial]:
    mbb = await trial(VEHICLES, before, after, mode=MAKE_BEFORE_BREAK, hostname=host, time_factor=TIME_FACTOR,
                      **kwargs)  # type: ignore[arg-type]
    today = await trial(VEHICLES, before, after, mode=IMMEDIATE, hostname=host, time_factor=TIME_FACTOR,
                        **kwargs)  # type: ignore[arg-type]
    return mbb, today


@pytest.mark.slow
async def test_a_renewal_under_a_sibling_intermediate_costs_nothing() -> None:
    mbb, today = await both(Served(A.chain(A.first), A.ca(A.first)), Served(A.chain(A.sibling), A.ca(A.sibling)))
    side_by_side("sibling intermediate", mbb, today)
    assert (mbb.pushes, mbb.tls_failures) == (0, 0)
    assert today.pushes == VEHICLES  # every vehicle re-pushed for new bytes in the `ca`
    assert mbb.api_calls.get("push_config_jws", 0) == 0


@pytest.mark.slow
async def test_a_new_root_is_made_before_it_breaks() -> None:
    mbb, today = await both(Served(A.chain(A.first), A.ca(A.first)), Served(B.chain(B.first), B.ca(B.first)))
    side_by_side("new root", mbb, today)
    assert mbb.extra["stage"] == "RefusedByCurrentCa" and mbb.extra["promotion"] == "VehiclesReady"
    assert mbb.pushes == VEHICLES and mbb.tls_failures == 0 and mbb.synced_before_promotion_failed == 0
    assert mbb.lost_vehicle_minutes == 0 and mbb.cut_off == 0
    # Today: the vehicles that reconnect before they sync fail TLS and stream nothing meanwhile.
    assert today.vehicles_failed > 0 and today.lost_vehicle_minutes > 60
    assert mbb.time_to_promotion_h is not None and mbb.time_to_promotion_h > 1  # parked cars wake hours later


@pytest.mark.slow
async def test_a_forced_rotation_switches_at_once_and_heals() -> None:
    """No current certificate to keep serving: both modes switch at once; the cost is the same cut-off."""
    mbb, today = await both(Served(A.chain(A.first), A.ca(A.first)), Served(B.chain(B.first), B.ca(B.first)),
                            forced=True)
    side_by_side("forced", mbb, today)
    assert mbb.pushes == VEHICLES and mbb.vehicles_failed > 0 and mbb.cut_off == 0
    assert mbb.time_to_all_streaming_h is not None and mbb.time_to_all_streaming_h < 30


# --------------------------------------------------------------------------------------
# With pebble: a renewal keeps the root (0 pushes); a restart is a new root (made before broken)
# --------------------------------------------------------------------------------------


@pytest.fixture
def own_pebble(tmp_path: Path, local_dns: LocalDns) -> Iterator[Pebble]:
    if PEBBLE is None:
        pytest.skip("pebble not installed (make test installs it)")
    (tmp_path / "pebble").mkdir()
    server = Pebble(PEBBLE, tmp_path / "pebble", local_dns.port)
    server.start()
    yield server
    server.stop()


async def issue(server: Pebble) -> Served:
    async with Http01Responder("127.0.0.1", server.http_port) as responder, server.client() as acme:
        await acme.register()
        issued = await acme.issue(PEBBLE_HOST, responder)
    return Served(issued.chain_pem.decode(), issued.ca_chain_pem.decode(), issued.key_pem.decode())


@pytest.mark.slow
async def test_pebble_renewal_keeps_the_root_and_a_restart_is_made_before_break(own_pebble: Pebble) -> None:
    first = await issue(own_pebble)
    renewed = await issue(own_pebble)
    assert renewed.chain != first.chain
    mbb = await trial(VEHICLES, first, renewed, mode=MAKE_BEFORE_BREAK, hostname=PEBBLE_HOST,
                      time_factor=TIME_FACTOR)
    report(f"pebble renewal, same root: pushes {mbb.pushes}, TLS failures {mbb.tls_failures}")
    assert (mbb.pushes, mbb.tls_failures, mbb.extra["stage"]) == (0, 0, "AcceptedByCurrentCa")

    own_pebble.restart()  # a new root and intermediate
    rotated = await issue(own_pebble)
    root = serialization.Encoding.PEM
    assert own_pebble.root().public_bytes(root).decode() in rotated.ca
    mbb, today = await both(renewed, rotated, host=PEBBLE_HOST)
    side_by_side("pebble restart (new root)", mbb, today)
    assert mbb.pushes == VEHICLES and mbb.tls_failures == 0 and mbb.extra["promotion"] == "VehiclesReady"
    assert today.vehicles_failed > 0
