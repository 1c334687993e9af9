"""`fleetwire serve --workers N` at saturation: what a second worker adds, and what each costs.

The same closed-loop load (loadgen: 50 mTLS vehicles x 8 records in flight, 388-byte `V`
records to the logger, as run_all.py's fleetwire target) against, in one run:

  1 worker, own core   one process pinned to one CPU, the load generator on the other
                       (run_all.py's arrangement);
  1 worker, shared     one process, server and load generator both free to use both CPUs;
  2 workers, shared    a supervisor and two workers, all free to use both CPUs, the load
                       generator too: on a 2-core machine the load generator competes with
                       the workers for the same two cores.

Server CPU is summed over the supervisor and its workers (/proc); each worker's share of
connections and acks comes from the server's own /metrics (`fleetwire_worker_*`), so the
CPU per ack of each worker can be compared with the single process's.

Usage: python bench/workers.py [--duration 5] [--warmup 2] [--connections 50] [--window 8] [--repeat 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import loadgen
import uvloop
from identities import make_pki, vehicle_contexts, vin
from prometheus_client.parser import text_string_to_metric_families
from records import v_record_frames
from system import core_busy, cpu_seconds, free_port, listening, raise_nofile
from targets import fleetwire_command, fleetwire_config

ALL_CPUS = {0, 1}
CONFIGS = {  # name: (workers, CPUs of the server, CPUs of the load generator)
    "1 worker, own core": (1, {1}, {0}),
    "1 worker, shared": (1, {0, 1}, {0, 1}),
    "2 workers, shared": (2, {0, 1}, {0, 1}),
}


def log(message: str) -> None:
    print(f"[workers {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Served:
    """`fleetwire serve --workers N` with its processes on `cpus`."""

    def __init__(self, config: Path, workers: int, cpus: set[int], log_file: Path) -> None:
        self.workers = workers
        data = json.loads(config.read_text())
        self.port, self.metrics_port = data["port"], data["monitoring"]["prometheus_metrics_port"]
        with log_file.open("ab") as out:
            self.proc = subprocess.Popen([*fleetwire_command(), "serve", "--config", str(config),
                                          "--workers", str(workers)], stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        os.sched_setaffinity(self.proc.pid, cpus)  # before it spawns its workers, which inherit it
        raise_nofile(pid=self.proc.pid)
        deadline = time.monotonic() + 60
        while not (listening(self.port) and self._serving()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server did not start; see {log_file}")
            time.sleep(0.1)
        for pid in self.worker_pids():
            raise_nofile(pid=pid)

    def _serving(self) -> bool:
        try:
            return self.workers == 1 or self.metrics().get(("fleetwire_workers", ())) == self.workers
        except OSError:
            return False

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def worker_pids(self) -> list[int]:
        """The worker processes by index (the process itself with one worker), from /metrics."""
        if self.workers == 1:
            return [self.proc.pid]
        m = self.metrics()
        return [int(m[("fleetwire_worker_pid", (("worker", str(i)),))]) for i in range(self.workers)]

    def acks_by_worker(self) -> list[float]:
        m = self.metrics()
        if self.workers == 1:
            return [m[("fleetwire_acks_total", ())]]
        return [m.get(("fleetwire_worker_acks_total", (("worker", str(i)),)), 0.0) for i in range(self.workers)]

    def connections_by_worker(self) -> list[float]:
        m = self.metrics()
        if self.workers == 1:
            return [m[("fleetwire_connections_active", ())]]
        return [m.get(("fleetwire_worker_connections_active", (("worker", str(i)),)), 0.0)
                for i in range(self.workers)]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def saturate(served: Served, url: str, contexts: list[Any], frames: list[bytes], *,
                   connections: int, window: int, warmup: float, duration: float) -> dict[str, Any]:
    tally = loadgen.Tally()
    conns = await loadgen.open_many(url, contexts, frames, connections, tally)
    try:
        for c in conns:
            c.refill = True
            c.send(window)
        await asyncio.sleep(warmup)
        pids = served.worker_pids()
        spread = await asyncio.to_thread(served.connections_by_worker)
        acks0 = await asyncio.to_thread(served.acks_by_worker)
        t0, replies0 = time.perf_counter(), tally.replies
        cpu0 = {pid: cpu_seconds(pid) for pid in {served.proc.pid, *pids}}
        client0, cores0 = cpu_seconds(), core_busy(ALL_CPUS)
        await asyncio.sleep(duration)
        cpu1 = {pid: cpu_seconds(pid) for pid in cpu0}
        client1, cores1 = cpu_seconds(), core_busy(ALL_CPUS)
        wall, replies = time.perf_counter() - t0, tally.replies - replies0
        acks1 = await asyncio.to_thread(served.acks_by_worker)
        for c in conns:
            c.refill = False
        alive = sum(c.alive() for c in conns)
    finally:
        await loadgen.close_all(conns)
    worker_cpu = [cpu1[pid] - cpu0[pid] for pid in pids]
    worker_acks = [b - a for a, b in zip(acks0, acks1, strict=True)]
    total_cpu = sum(cpu1[pid] - cpu0[pid] for pid in cpu0)
    busy_cpus = len(ALL_CPUS) * (cores1[0] - cores0[0]) / max(1, cores1[1] - cores0[1])
    return {
        "workers": served.workers,
        "records_per_s": replies / wall,
        "server_cpu_us_per_record": 1e6 * total_cpu / replies if replies else float("nan"),
        "server_cpu_util": total_cpu / wall,
        "supervisor_cpu_util": (cpu1[served.proc.pid] - cpu0[served.proc.pid]) / wall if served.workers > 1 else 0.0,
        "client_cpu_util": (client1 - client0) / wall,
        # CPUs kept busy by anyone else (the machine is shared): what the server could not use.
        "others_cpu_util": max(0.0, busy_cpus - (total_cpu + client1 - client0) / wall),
        "connections_by_worker": spread,
        "acks_share_by_worker": [a / sum(worker_acks) for a in worker_acks] if sum(worker_acks) else [],
        "worker_cpu_util": [c / wall for c in worker_cpu],
        "worker_cpu_us_per_ack": [1e6 * c / a if a else float("nan") for c, a in zip(worker_cpu, worker_acks,
                                                                                         strict=True)],
        "records": replies,
        "connections_alive": alive,
    }


async def spread(served: Served, url: str, contexts: list[Any], frames: list[bytes], connections: int
                 ) -> dict[str, Any]:
    """How the kernel spreads `connections` new connections over the workers (SO_REUSEPORT hashes each)."""
    conns = await loadgen.open_many(url, contexts, frames, connections, loadgen.Tally())
    try:
        await asyncio.sleep(0.5)
        by_worker = await asyncio.to_thread(served.connections_by_worker)
    finally:
        await loadgen.close_all(conns)
    return {"connections": connections, "by_worker": by_worker,
            "largest_share": max(by_worker) / sum(by_worker) if sum(by_worker) else float("nan")}


def run_spread(args: argparse.Namespace, pki: Any, workdir: Path) -> dict[str, Any]:
    os.sched_setaffinity(0, ALL_CPUS)
    served = Served(fleetwire_config(pki, free_port(), workdir), 2, ALL_CPUS, workdir / "serve-spread.log")
    try:
        return uvloop.run(spread(served, f"wss://localhost:{served.port}/", vehicle_contexts(pki),
                                 v_record_frames(vin(0), 16), args.spread_connections))
    finally:
        served.stop()


def run_config(name: str, args: argparse.Namespace, pki: Any, workdir: Path) -> dict[str, Any]:
    workers, server_cpus, client_cpus = CONFIGS[name]
    os.sched_setaffinity(0, client_cpus)
    config = fleetwire_config(pki, free_port(), workdir)
    served = Served(config, workers, server_cpus, workdir / f"serve-{workers}.log")
    try:
        url = f"wss://localhost:{served.port}/"
        frames = v_record_frames(vin(0), 256)
        return uvloop.run(saturate(served, url, vehicle_contexts(pki), frames, connections=args.connections,
                                   window=args.window, warmup=args.warmup, duration=args.duration))
    finally:
        served.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--spread-connections", type=int, default=1000,
                        help="connections opened at once to see how they spread over 2 workers")
    parser.add_argument("--repeat", type=int, default=1, help="rounds, configurations interleaved; medians reported")
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        print(json.dumps({"skipped": "needs 2 CPUs"}))
        return 0
    raise_nofile()
    workdir = Path(tempfile.mkdtemp(prefix="fleetwire-workers-"))
    pki = make_pki(workdir / "pki", max(args.connections, 64) + 1)
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in CONFIGS}
    for round_ in range(args.repeat):
        for name in CONFIGS:
            log(f"round {round_ + 1}: {name}")
            rounds[name].append(run_config(name, args, pki, workdir))
    results = {name: _median(figures) for name, figures in rounds.items()}
    log(f"spread of {args.spread_connections} connections over 2 workers")
    spread_figures = run_spread(args, pki, workdir)
    one, shared, two = (results[name] for name in CONFIGS)
    per_worker_two = statistics.mean(two["worker_cpu_us_per_ack"])
    print(json.dumps({
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_average": os.getloadavg()},
        "load": {"connections": args.connections, "window": args.window, "duration_s": args.duration,
                 "record_bytes": 388, "dispatcher": "logger"},
        "results": results,
        "spread_2_workers": spread_figures,
        "ratios": {
            "records_per_s_2_workers_vs_1_own_core": two["records_per_s"] / one["records_per_s"],
            "records_per_s_2_workers_vs_1_shared": two["records_per_s"] / shared["records_per_s"],
            "cpu_per_record_2_workers_vs_1_own_core": two["server_cpu_us_per_record"] / one["server_cpu_us_per_record"],
            "worker_cpu_per_ack_2_workers_vs_1_own_core": per_worker_two / one["worker_cpu_us_per_ack"][0],
            "worker_cpu_per_ack_2_workers_vs_1_shared": per_worker_two / shared["worker_cpu_us_per_ack"][0],
        },
    }, indent=2))
    return 0


def _median(figures: list[dict[str, Any]]) -> dict[str, Any]:
    """Per key, the median over rounds (lists element-wise); one round is itself."""
    if len(figures) == 1:
        return figures[0]
    out: dict[str, Any] = {}
    for key, value in figures[0].items():
        values = [f[key] for f in figures]
        if isinstance(value, list):
            out[key] = [statistics.median(v) for v in zip(*values, strict=True)] if all(values) else value
        else:
            out[key] = statistics.median(values)
    return out


if __name__ == "__main__":
    sys.exit(main())
