"""What a SIGTERM costs a streaming fleet: `fleetwire serve` drained under load.

The server stores V records in nats-server's JetStream and acks each only once JetStream
holds it (`reliable_ack_sources`); N simulated vehicles stream at a fixed rate. At SIGTERM
the script measures how soon the port refuses, how many acks still arrive (the ones in
flight), how soon every vehicle has its 1001, when the process exits and with what code,
how many records were left unacked for the vehicles to resend, and whether any acked
record is missing from the stream. Scenario `stalled` stops nats-server (SIGSTOP) just
a second before the SIGTERM: no ack can be confirmed, so the drain must give up on them at its
ack share and still exit inside the budget. Scenario `slow` stops it as long, and lets it
go on a second after the SIGTERM: the acks owed must then all reach their vehicles before
the 1001.

Usage: python bench/drain.py [--vehicles 1000] [--rate 2] [--budget 20] [--scenarios healthy,slow,stalled]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop
from system import free_port, raise_nofile
from targets import fleetwire_command

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the brokers' process wrappers live with the tests

from brokers.nats_server import NatsServer
from fleetwire.server.drain import DRAIN_ENV
from fleetwire.sim.fleet import Fleet, issue_vehicle_certs, sim_vin
from fleetwire.sim.fleet_pki import make_test_fleet_pki

NAMESPACE = "tesla_telemetry"


def refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


async def stored_txids(url: str) -> set[tuple[str, str]]:
    import nats
    import nats.errors

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        total = (await js.stream_info(NAMESPACE)).state.messages
        sub = await js.pull_subscribe(f"{NAMESPACE}.>", stream=NAMESPACE)
        found: set[tuple[str, str]] = set()
        seen = 0
        while seen < total:
            try:
                batch = await sub.fetch(batch=min(1000, total - seen), timeout=5)
            except nats.errors.TimeoutError:
                print(f"stream: read {seen} of {total} messages", file=sys.stderr)
                break
            for msg in batch:
                seen += 1
                found.add((msg.headers["vin"], msg.headers["txid"]))
                await msg.ack()  # unacked, the consumer stops at its max_ack_pending (1,000)
        return found
    finally:
        await nc.close()


def serve(config: Path, log: Any, budget: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*fleetwire_command(), "serve", "--config", str(config)],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, DRAIN_ENV: str(budget)})


async def scenario(name: str, workdir: Path, vehicles: int, rate: float, budget: float, warmup: float) -> dict[str, Any]:
    pki = make_test_fleet_pki(workdir / "pki")
    broker = NatsServer(workdir / "nats").start()
    port, status_port = free_port(), free_port()
    config = {
        "host": "127.0.0.1", "port": port, "status_port": status_port, "namespace": NAMESPACE,
        "tls": {"server_cert": str(pki.server_cert), "server_key": str(pki.server_key), "ca_file": str(pki.ca_file)},
        "records": {"V": ["nats"]}, "reliable_ack_sources": {"V": "nats"},
        "nats": {"url": broker.url, "name": "fleetwire-bench"},
    }
    (workdir / "config.json").write_text(json.dumps(config))
    log = (workdir / "server.log").open("wb")
    proc = serve(workdir / "config.json", log, budget)
    try:
        while refuses(port):
            assert proc.poll() is None, (workdir / "server.log").read_text()[-2000:]
            await asyncio.sleep(0.05)
        vins = [sim_vin(i) for i in range(vehicles)]
        certs = issue_vehicle_certs(pki.vehicle_ca_cert, pki.vehicle_ca_key, vins, workdir / "vehicles")
        fleet = Fleet(f"wss://127.0.0.1:{port}/", pki.server_ca_cert, certs, keep_acked=True)
        connected = await fleet.connect(concurrency=50)
        streaming = asyncio.ensure_future(fleet.stream(rate=rate, duration=3600))
        await asyncio.sleep(warmup)
        if name in ("stalled", "slow"):
            broker.proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
            await asyncio.sleep(1.0)  # a second of records whose acks now wait on the stopped broker
        acked_before = sum(v.stats.acked for v in fleet.vehicles)
        in_flight = sum(len(v.pending) for v in fleet.vehicles)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        if name == "slow":  # the broker comes back within the acks' share: the acks owed go out
            asyncio.get_running_loop().call_later(1.0, broker.proc.send_signal, signal.SIGCONT)  # type: ignore[union-attr]
        refused_at = None
        while refused_at is None and time.monotonic() - t0 < budget:
            if await asyncio.to_thread(refuses, port):
                refused_at = time.monotonic()
        streaming.cancel()
        closed_at = None
        while time.monotonic() - t0 < budget + 10:
            if not any(v.connected for v in fleet.vehicles):
                closed_at = time.monotonic()
                break
            await asyncio.sleep(0.01)
        code = await asyncio.to_thread(proc.wait, budget + 15)
        exited = time.monotonic()
        if name == "stalled":
            broker.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
        stored = await stored_txids(broker.url)
        acked = {(v.vin, t.decode()) for v in fleet.vehicles for t in v.acked_txids or ()}
        return {
            "scenario": name, "vehicles": vehicles, "connected": connected, "rate_per_vehicle": rate,
            "budget_s": budget, "exit_code": code,
            "refused_after_ms": round((refused_at - t0) * 1000, 1) if refused_at else None,
            "all_closed_after_ms": round((closed_at - t0) * 1000, 1) if closed_at else None,
            "exited_after_ms": round((exited - t0) * 1000, 1),
            "unacked_at_sigterm": in_flight,
            "acks_after_sigterm": sum(v.stats.acked for v in fleet.vehicles) - acked_before,
            "left_unacked_for_resend": sum(len(v.pending) for v in fleet.vehicles),
            "closed_1001": sum(v.stats.close_codes.get(1001, 0) for v in fleet.vehicles),
            "acked": len(acked), "stored": len(stored), "acked_not_stored": len(acked - stored),
        }
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
        broker.kill()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vehicles", type=int, default=1000)
    p.add_argument("--rate", type=float, default=2.0, help="records per second per vehicle")
    p.add_argument("--budget", type=float, default=20.0, help="FLEETWIRE_DRAIN_SECONDS")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--scenarios", default="healthy,slow,stalled")
    args = p.parse_args()
    raise_nofile()
    results = []
    for name in args.scenarios.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            results.append(uvloop.run(scenario(name, Path(tmp), args.vehicles, args.rate, args.budget, args.warmup)))
            print(json.dumps(results[-1]), file=sys.stderr)
    print(json.dumps({"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                  "note": "shared machine; server and vehicles on the same cores"},
                      "results": results}, indent=2))


if __name__ == "__main__":
    main()
