"""The reconnect storm: every vehicle of a fleet reconnects at once after a server restart.

N vehicles, each with a client certificate of its own, connect and have a record acked;
then the server is restarted (SIGTERM, or SIGKILL with `--kill`, and a new process on the
same port) and every vehicle reconnects as soon as its connection drops, retrying after
a short jittered pause while it cannot. Measured: the time until every vehicle streams
again (its first record after the reconnect is acked), from the signal and from the
moment the new server listens; the new server's peak RSS (VmHWM, summed over its
processes) and its RSS at the end; the failed attempts by kind, before and after the new
server listened; and the new server's own count of failed TLS handshakes.

The load comes from several processes (one event loop each, on the CPUs the server is not
pinned to), so the clients' side of 10,000 handshakes does not set the pace.

Usage: python bench/storm.py [--vehicles 10000] [--workers 1] [--client-processes 2] [--kill]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import multiprocessing as mp
import os
import platform
import random
import shutil
import ssl
import statistics
import sys
import tempfile
import time
import urllib.request
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import loadgen
import uvloop
from fleetwire.sim.vehicle import client_context
from identities import make_pki, vin
from records import v_record_frames
from system import (
    Server,
    free_port,
    process_tree,
    raise_nofile,
    rss_bytes,
    vm_hwm_bytes,
)
from targets import fleetwire_command, fleetwire_config

Failure = tuple[float, str]  # (monotonic time the attempt began, kind)


def log(message: str) -> None:
    print(f"[storm {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def failure_kind(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"  # nothing listening: the server is restarting
    if isinstance(exc, ssl.SSLError):
        return "tls"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, EOFError)):
        return "reset"
    if isinstance(exc, OSError):
        return "os_error"
    if isinstance(exc, AssertionError):  # loadgen.connect: picows handed back no listener
        return "closed_during_upgrade"
    return type(exc).__name__  # picows' upgrade errors and the like


class Fleet:
    """The vehicles of one client process; `run` reports to the parent through `pipe`."""

    def __init__(self, args: argparse.Namespace, url: str, indices: range, certs: list[tuple[Path, Path]],
                 server_ca: Path, pipe: Connection) -> None:
        self.url, self.indices, self.pipe = url, indices, pipe
        self.attempt_timeout: float = args.attempt_timeout
        self.retry_delay: float = args.retry_delay
        self.connect_concurrency: int = args.connect_concurrency
        self.frames = v_record_frames(vin(0), 64)
        self.tally = loadgen.Tally()
        self.failures: list[Failure] = []
        self.contexts = [client_context(cert, key, server_ca) for cert, key in certs]

    async def stream(self, i: int) -> tuple[loadgen.Conn | loadgen.HttpsConn, float]:
        """Connect vehicle i and have one record acked, retrying until it works."""
        ctx = self.contexts[i - self.indices.start]
        while True:
            started = time.monotonic()
            try:
                conn = await asyncio.wait_for(
                    loadgen.connect(self.url, ctx, self.frames, i, self.tally), self.attempt_timeout
                )
                try:
                    await conn.request(1, timeout=self.attempt_timeout)
                except BaseException:
                    await conn.close()
                    raise
                return conn, time.monotonic()
            except Exception as exc:  # noqa: BLE001 -- every failed attempt is counted, then retried
                # When the attempt began: a busy client learns of a refusal late, and the
                # parent tells attempts made while the server was down from those after.
                self.failures.append((started, failure_kind(exc)))
                await asyncio.sleep(self.retry_delay * random.uniform(0.5, 1.5))

    async def vehicle(self, i: int, gate: asyncio.Semaphore, up: list[int]) -> tuple[loadgen.Conn, float]:
        async with gate:  # the fleet's first connections are opened a few at a time
            conn, _ = await self.stream(i)
        up[0] += 1
        if up[0] == len(self.indices):
            self.pipe.send(("ready", len(self.failures)))
        assert isinstance(conn, loadgen.Conn)
        await asyncio.shield(conn.closed)  # the restart drops it: reconnect at once
        conn, acked_at = await self.stream(i)
        assert isinstance(conn, loadgen.Conn)
        return conn, acked_at

    async def run(self) -> None:
        gate = asyncio.Semaphore(self.connect_concurrency)
        up = [0]
        results = await asyncio.gather(*(self.vehicle(i, gate, up) for i in self.indices))
        self.pipe.send(("done", [acked_at for _, acked_at in results], self.failures))
        self.pipe.recv()  # the parent has read the server's figures: hang up now
        await loadgen.close_all([conn for conn, _ in results])


def client_process(args: argparse.Namespace, url: str, indices: range, certs: list[tuple[Path, Path]],
                   server_ca: Path, cpus: set[int], pipe: Connection) -> None:
    os.sched_setaffinity(0, cpus)
    raise_nofile()

    async def main() -> None:
        # A failed attempt is counted by the vehicle that made it; the loop's default
        # handler would also print each one (and cannot print aiofastnet's EOF class).
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: None)
        await Fleet(args, url, indices, certs, server_ca, pipe).run()

    uvloop.run(main())


def server_failures(metrics_port: int) -> dict[str, float]:
    """fleetwire_tls_handshake_failures_total by reason, from the server's /metrics."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
            text = response.read().decode()
    except OSError as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}  # type: ignore[dict-item]
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("fleetwire_tls_handshake_failures_total{"):
            labels, value = line.rsplit(" ", 1)
            if float(value):
                out[labels.split('reason="', 1)[1].split('"', 1)[0]] = float(value)
    return out


def summarise(times: list[float], since: float) -> dict[str, float]:
    offsets = sorted(t - since for t in times)
    return {
        "p50_s": statistics.median(offsets),
        "p99_s": offsets[min(len(offsets) - 1, int(0.99 * len(offsets)))],
        "all_s": offsets[-1],
    }


def server_memory(pid: int) -> tuple[int, int]:
    """(peak RSS, RSS) of a server and its worker processes."""
    pids = process_tree(pid)
    return sum(vm_hwm_bytes(p) for p in pids), sum(rss_bytes(p) for p in pids)


def storm(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    started = time.monotonic()
    log(f"making a PKI for {args.vehicles} vehicles")
    pki = make_pki(workdir / "pki", args.vehicles)
    pki_s = time.monotonic() - started
    config = fleetwire_config(pki, args.port or free_port(), workdir)
    port = json.loads(config.read_text())["port"]
    metrics_port = json.loads(config.read_text())["monitoring"]["prometheus_metrics_port"]
    argv = [*fleetwire_command(), "serve", "--config", str(config)]
    if args.workers > 1:
        argv += ["--workers", str(args.workers)]
    server_cpus = set(args.server_cpus)
    client_cpus = (set(os.sched_getaffinity(0)) - server_cpus) or server_cpus
    url = f"wss://localhost:{port}/"
    srv = Server(argv, port, server_cpus, workdir / "server.log").start()
    share = -(-args.vehicles // args.client_processes)
    pipes: list[Connection] = []
    procs: list[Any] = []
    ctx = mp.get_context("fork")  # before this process runs any event loop
    try:
        for k in range(args.client_processes):
            indices = range(k * share, min(args.vehicles, (k + 1) * share))
            if not indices:
                continue
            ours, theirs = ctx.Pipe()
            certs = [(c, key) for _, c, key in pki.vehicles[indices.start:indices.stop]]
            proc = ctx.Process(target=client_process, daemon=True,
                               args=(args, url, indices, certs, pki.fleet.server_ca_cert, client_cpus, theirs))
            proc.start()
            theirs.close()  # a client process that dies then ends our recv() instead of hanging it
            pipes.append(ours)
            procs.append(proc)
        log(f"{args.vehicles} vehicles connecting from {len(procs)} processes")
        first = time.monotonic()
        first_failures = sum(pipe.recv()[1] for pipe in pipes)
        fill_s = time.monotonic() - first
        before_hwm, before_rss = server_memory(srv.pid)
        log(f"all streaming after {fill_s:.1f} s; restarting the server")
        signalled = time.monotonic()
        if args.kill:
            assert srv.proc is not None
            srv.proc.kill()
            srv.proc.wait()
        else:
            srv.stop(timeout=args.stop_timeout)
        stopped = time.monotonic()
        srv.start()
        listening = time.monotonic()
        log(f"new server listening {listening - signalled:.1f} s after the signal")
        deadline = listening + args.storm_timeout
        acked: list[float] = []
        failures: list[Failure] = []
        peak = 0
        pending = list(pipes)
        while pending:
            peak = max(peak, server_memory(srv.pid)[0])
            for pipe in [p for p in pending if p.poll(0.2)]:
                _, times, fails = pipe.recv()
                acked += times
                failures += fails
                pending.remove(pipe)
            if time.monotonic() > deadline:
                raise TimeoutError(f"not every vehicle streamed again within {args.storm_timeout} s")
        hwm, rss = server_memory(srv.pid)
        refused_by_server = server_failures(metrics_port)
        for pipe in pipes:
            pipe.send("hang up")
    finally:
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
        srv.stop()
    after_listen = collections.Counter(kind for t, kind in failures if t >= listening)
    before_listen = collections.Counter(kind for t, kind in failures if t < listening)
    return {
        "vehicles": args.vehicles,
        "workers": args.workers,
        "restart": "SIGKILL" if args.kill else "SIGTERM",
        "pki_s": pki_s,
        "first_fill_s": fill_s,
        "first_fill_failures": first_failures,
        "server_rss_mb_streaming_before": before_rss / 2**20,
        "server_peak_rss_mb_before": before_hwm / 2**20,
        "old_server_exit_s": stopped - signalled,
        "new_server_listening_s": listening - signalled,
        "all_streaming_again_s_from_signal": max(acked) - signalled,
        "from_listening": summarise(acked, listening),
        "new_server_peak_rss_mb": max(peak, hwm) / 2**20,
        "new_server_rss_mb_end": rss / 2**20,
        "failed_attempts_while_down": dict(before_listen),
        "failed_attempts_after_listening": dict(after_listen),
        "server_tls_handshake_failures": refused_by_server,
        "reconnects_per_s": args.vehicles / (max(acked) - listening),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vehicles", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=1, help="`fleetwire serve --workers N` (passed only when N > 1)")
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--server-cpus", type=lambda s: [int(c) for c in s.split(",")], default=[0],
                        help="CPUs the server is pinned to, comma-separated (default 0); clients get the others")
    parser.add_argument("--connect-concurrency", type=int, default=64, help="per client process, for the first fill")
    parser.add_argument("--attempt-timeout", type=float, default=30.0, help="seconds per connect + first ack")
    parser.add_argument("--retry-delay", type=float, default=0.5, help="mean pause after a failed attempt (±50%%)")
    parser.add_argument("--stop-timeout", type=float, default=30.0, help="seconds the old server gets to exit on SIGTERM")
    parser.add_argument("--storm-timeout", type=float, default=600.0)
    parser.add_argument("--kill", action="store_true", help="SIGKILL the old server instead of SIGTERM")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (PKI, config, server log)")
    args = parser.parse_args()
    raise_nofile()
    workdir = Path(tempfile.mkdtemp(prefix="fleetwire-storm-"))
    started = time.monotonic()
    try:
        result = storm(args, workdir)
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    document = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg": os.getloadavg()[0],
                    "server_cpus": args.server_cpus},
        "storm": result,
        "elapsed_s": time.monotonic() - started,
    }
    print(json.dumps(_rounded(document), indent=2))
    return 0


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


if __name__ == "__main__":
    sys.exit(main())
