"""The simulator's slow cars: long-tailed sync, reconnects of their own, every TLS failure logged.

Real vehicles take a pushed config when they are awake, which for a parked car means hours
later; they drop and redial on their own (radio, sleep); and a refused handshake is only
ever seen as a `cloud_manager_error`. The simulator draws the first two from distributions
scaled by a time factor and keeps the third per vehicle with its time, so a rotation can be
measured in vehicle-minutes of lost streaming.
"""

from __future__ import annotations

import asyncio
import statistics

from test_rotation_acceptance import A, B, HOST

from fleetwire.sim.fleetapi import FleetApiSimulator, LongTailSync, Reconnects, TlsLog


def test_sync_delays_have_a_long_tail_scaled_by_the_time_factor() -> None:
    sync = LongTailSync(seed=3)
    draws = [sync(f"V{i}") for i in range(4000)]
    awake = [d for d in draws if d <= 600]
    parked = [d for d in draws if d >= 1800]
    assert len(awake) + len(parked) == len(draws)
    assert 0.55 < len(awake) / len(draws) < 0.65
    assert 10 < statistics.median(awake) < 90  # seconds to minutes
    assert 2 * 3600 < statistics.median(parked) < 8 * 3600 and max(parked) <= 86_400  # hours, up to a day
    fast = LongTailSync(1 / 3600, seed=3)
    assert [fast(f"V{i}") for i in range(10)] == [d / 3600 for d in draws[:10]]
    reconnects = Reconnects(seed=4)
    gaps = [reconnects(f"V{i}") for i in range(4000)]
    assert 1.5 * 3600 < statistics.mean(gaps) < 2.5 * 3600


def test_the_tls_log_turns_failures_into_outages() -> None:
    log = TlsLog()
    log.failed("V1", "x509: certificate signed by unknown authority", 10.0)
    log.failed("V1", "x509: certificate signed by unknown authority", 20.0)
    log.connected("V1", 40.0)
    log.failed("V2", "x509: certificate signed by unknown authority", 30.0)
    assert log.count == 3 and log.vehicles == {"V1", "V2"} and log.cut_off() == {"V2"}
    assert log.lost_seconds(50.0) == 30.0 + 20.0
    assert log.lost_seconds(50.0, since=15.0) == 25.0 + 20.0


async def test_vehicles_without_sockets_judge_the_presented_chain_at_their_reconnects() -> None:
    presented = {"chain": A.chain(A.first)}
    sim = FleetApiSimulator(max_streaming=0, presented_chain=lambda: presented["chain"],
                            reconnect_every=lambda vin: 0.05, reconnect_delay=(0.05, 0.05), sync_delay=0.01)
    vins = [f"5YJ3SIM00000000{i:02d}" for i in range(5)]
    for vin in vins:
        sim.add_vehicle(vin)
    await sim.start()
    try:
        config = {"hostname": HOST, "port": 443, "ca": A.ca(A.first), "fields": {"Soc": {"interval_seconds": 60}}}
        for vin in vins:
            sim._stage(sim._vehicles[vin], sim.client_id, config, None)
        await asyncio.sleep(0.3)
        assert sim.tls.count == 0  # they trust the chain they meet
        presented["chain"] = B.chain(B.first)  # the server switches to a chain their ca refuses
        await asyncio.sleep(0.3)
        assert sim.tls.vehicles == set(vins) and sim.tls.cut_off() == set(vins)
        first = sim.tls.failures[vins[0]][0]
        assert first[1].startswith("x509:") and first[0] > 0
        assert any(e["error_name"] == "cloud_manager_error" for e in sim.vehicle(vins[0]).errors)
        fixed = {**config, "ca": B.ca(B.first)}
        for vin in vins:  # the new ca arrives: the next reconnect streams again
            sim._stage(sim._vehicles[vin], sim.client_id, fixed, None)
        await asyncio.sleep(0.3)
        assert sim.tls.cut_off() == set()
    finally:
        await sim.stop()
