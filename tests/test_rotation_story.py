"""Rotation stories: what a certificate change costs a fleet of slow cars, against today's behaviour.

Each story configures a fleet in the Fleet API simulator (long-tailed sync: awake cars in
seconds to minutes, parked ones hours later; each car reconnecting on its own schedule),
rotates the server's certificate, and runs until every vehicle streams again, twice in the
same test: with make before break (pushes judged by acceptance, a refused chain staged and
promoted when the fleet holds a `ca` for it) and with today's immediate switch (the server
serves the new chain at once, any change of the `ca`'s bytes is pushed). Time runs 14,400 times
faster than real (a day takes 6 s); the figures are in real hours and minutes. The
simulator's vehicles judge the chain the server presents at each of their reconnects exactly
as a connecting car does (`fleetwire.trust.refusal`); the vehicles story shows the same with sockets.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.tools import require
from conftest import PEBBLE, LocalDns, Pebble
from cryptography.hazmat.primitives import serialization
from test_rotation_acceptance import A, B, HOST

from fleetwire.operator.clients.acme_chains import IssuedCertificate, choose_chain
from fleetwire.operator.clients.http01 import Http01Responder
from fleetwire.trust import refusal
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
# With pebble: a renewal keeps the root (0 pushes); a restart is a new root (made before broken);
# alternate roots: the chain the fleet trusts is served (0 pushes)
# --------------------------------------------------------------------------------------


@pytest.fixture
def own_pebble(tmp_path: Path, local_dns: LocalDns) -> Iterator[Pebble]:
    require(PEBBLE, "pebble")
    (tmp_path / "pebble").mkdir()
    server = Pebble(PEBBLE, tmp_path / "pebble", local_dns.port)
    server.start()
    yield server
    server.stop()


async def issued_by(server: Pebble) -> IssuedCertificate:
    async with Http01Responder("127.0.0.1", server.http_port) as responder, server.client() as acme:
        await acme.register()
        return await acme.issue(PEBBLE_HOST, responder)


def served(issued: IssuedCertificate) -> Served:
    return Served(issued.chain_pem.decode(), issued.ca_chain_pem.decode(), issued.key_pem.decode())


async def issue(server: Pebble) -> Served:
    return served(await issued_by(server))


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


@pytest.fixture
def alternate_pebble(tmp_path: Path, local_dns: LocalDns) -> Iterator[Pebble]:
    """A pebble that offers every chain under a second root too (`Link: rel="alternate"`)."""
    require(PEBBLE, "pebble")
    (tmp_path / "pebble").mkdir()
    server = Pebble(PEBBLE, tmp_path / "pebble", local_dns.port, PEBBLE_ALTERNATE_ROOTS="1")
    server.start()
    yield server
    server.stop()


@pytest.mark.slow
async def test_the_alternate_chain_the_fleet_trusts_is_served_and_costs_nothing(alternate_pebble: Pebble) -> None:
    """A fleet configured with the CA's alternate root (its `ca` holds that root alone): the next
    issuance's default chain would be refused, so it would be staged and pushed to every vehicle;
    the alternate chain the order also offers is accepted by the `ca` the vehicles hold."""
    first, second = await issued_by(alternate_pebble), await issued_by(alternate_pebble)
    assert second.alternates, "pebble with PEBBLE_ALTERNATE_ROOTS offers an alternate chain"
    trusted = first.alternates[0]
    assert trusted.root is not None
    fleet_ca = trusted.root.public_bytes(serialization.Encoding.PEM).decode()
    before = Served(trusted.chain_pem.decode(), fleet_ca, trusted.key_pem.decode())

    def accepted(chain: IssuedCertificate) -> bool:
        return refusal(chain.chain_pem, fleet_ca, PEBBLE_HOST, dt.datetime.now(dt.UTC)) is None

    chosen = choose_chain(second, accepted)
    assert chosen is not second and accepted(chosen) and not accepted(second)
    alternate = await trial(VEHICLES, before, served(chosen), mode=MAKE_BEFORE_BREAK, hostname=PEBBLE_HOST,
                            time_factor=TIME_FACTOR)
    default, today = await both(before, served(second), host=PEBBLE_HOST)
    report(f"pebble alternate root: the chosen chain: pushes {alternate.pushes}, TLS failures "
           f"{alternate.tls_failures}; the default chain: pushes {default.pushes} (today {today.pushes}), "
           f"TLS failures {default.tls_failures} (today {today.tls_failures})")
    assert (alternate.pushes, alternate.tls_failures, alternate.extra["stage"]) == (0, 0, "AcceptedByCurrentCa")
    assert default.pushes == VEHICLES and default.tls_failures == 0 and default.extra["stage"] == "RefusedByCurrentCa"
    assert today.vehicles_failed > 0
