"""Run the benchmarks and print one JSON document.

fleetwire is compared with bare baseline sinks measured in the same run, as ratios,
because the machine is noisy. The server under test runs in a subprocess pinned to one
CPU; this process is the load generator, pinned to another.

Phases (each target gets a fresh server per phase):
  saturation  server CPU µs per `V` record and records/s, a fixed window in flight
  latency     p99 ack latency at half of fleetwire's saturation rate
  idle        server RSS per idle mTLS WebSocket connection
  handshakes  mTLS handshakes + WebSocket upgrades per second, per server core

Usage: python bench/run_all.py [--only saturation,latency] [--duration 5]
       [--connections 50] [--targets websockets,picows,go,nginx,openssl,fleetwire,fleetwire-zmq]

The per-record goal is checked on the production path (`fleetwire-zmq`: protobuf forwarded,
reliable acks); `fleetwire` (the logger printing decoded records) is reported beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import loadgen
import tls_floor
import uvloop
from identities import BenchPki, make_pki, vehicle_contexts, vin
from records import v_record_frames
from system import Server, pin, raise_nofile
from targets import TARGETS, TLS_ONLY, fleetwire_command, server, unavailable

PHASES = ("saturation", "latency", "idle", "handshakes")
DEFAULT_TARGETS = ("websockets", "picows", "go", "nginx", "openssl", "fleetwire", "fleetwire-zmq")
GOALS = {  # (at most, measured as)
    "cpu_per_record_vs_picows": 2.0,
    "idle_kb_per_connection": 30.0,
    "handshake_cpu_vs_openssl": 1.25,
}
Figures = dict[str, Any]


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def csv(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        unknown = [item for item in items if item not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(unknown)}; choose from {', '.join(choices)}")
        return items

    return parse


def fleetwire_unavailable() -> str | None:
    """Why `fleetwire serve` cannot be benchmarked here, or None."""
    probe = subprocess.run(
        [*fleetwire_command(), "serve", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    return None if probe.returncode == 0 else f"`fleetwire serve` is not available: {probe.stderr.strip()[-200:]}"


def check_acks(replies: list[bytes]) -> None:
    """Every reply fleetwire gave to a valid `V` record must be an ack."""
    from fleetwire.proto.envelope_codec import decode_reply

    kinds = {decode_reply(reply).kind for reply in replies}
    if kinds != {"ack"}:
        raise RuntimeError(f"expected only acks to valid records, got {sorted(kinds)}")


class Bench:
    def __init__(self, args: argparse.Namespace, pki: BenchPki, workdir: Path) -> None:
        self.args = args
        self.pki = pki
        self.workdir = workdir
        self.frames = v_record_frames(vin(0), 256)
        self.contexts = vehicle_contexts(pki)

    def run(self, target: str, body: Callable[[Server, str], Coroutine[Any, Any, Figures]]) -> Figures:
        """Start a fresh server for `target`, run one phase against it, stop it."""
        try:
            with server(target, self.pki, self.workdir, self.args.server_cpu) as srv:
                url = f"{'https' if target in TLS_ONLY else 'wss'}://localhost:{srv.port}/"
                if target.startswith("fleetwire"):
                    check_acks(uvloop.run(loadgen.probe(url, self.contexts[0], self.frames, 8)))
                figures = uvloop.run(asyncio.wait_for(body(srv, url), self.args.phase_timeout))
                if srv.proc is not None and srv.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {srv.proc.returncode} during the phase")
                return figures
        except Exception as exc:  # noqa: BLE001 -- one failing phase must not lose the others' figures
            log(f"{target}: {type(exc).__name__}: {exc}")
            return {"error": f"{type(exc).__name__}: {exc}"}

    def saturation(self, target: str) -> Figures:
        a = self.args
        return self.run(target, lambda srv, url: loadgen.saturate(
            url, self.contexts, self.frames, srv.pid,
            connections=a.connections, window=a.window, warmup=a.warmup, duration=a.duration))

    def latency(self, target: str, rate: float) -> Figures:
        a = self.args
        return self.run(target, lambda srv, url: loadgen.latency(
            url, self.contexts, self.frames, srv.pid,
            connections=a.connections, rate=rate, warmup=a.warmup, duration=a.duration))

    def idle(self, target: str) -> Figures:
        return self.run(target, lambda srv, url: loadgen.idle_memory(
            url, self.contexts, self.frames, srv.pid, connections=self.args.idle_connections))

    def handshakes(self, target: str) -> Figures:
        a = self.args
        if target == "openssl":  # in this process, pinned to the client CPU: no server to start
            fleet = self.pki.fleet
            ctx = tls_floor.server_context(str(fleet.server_cert), str(fleet.server_key), str(fleet.ca_file))
            return tls_floor.handshakes(ctx, self.contexts[:64])
        return self.run(target, lambda srv, url: loadgen.handshakes(
            url, self.contexts[:64], srv.pid,
            concurrency=a.handshake_concurrency, warmup=a.warmup, duration=a.duration))


def ratio(results: Figures, phase: str, target: str, key: str, base: str) -> float | None:
    try:
        value = results[phase][target][key] / results[phase][base][key]
    except (KeyError, TypeError, ZeroDivisionError):
        return None
    return round(value, 3) if math.isfinite(value) else None


def summary(results: Figures) -> Figures:
    """Each target's cost against the floors measured in the same run, and fleetwire's goals:
    CPU per record on the production path (`fleetwire-zmq`) against the bare picows sink,
    idle memory in KB, handshake CPU against OpenSSL's own in-process cost."""
    out: Figures = {}
    measured_targets = {target for figures in results.values() for target in figures}
    for target in (t for t in TARGETS if t in measured_targets):
        out[target] = {
            "cpu_per_record_vs_picows": ratio(results, "saturation", target, "server_cpu_us_per_record", "picows"),
            "records_per_s_vs_picows": ratio(results, "saturation", target, "records_per_s", "picows"),
            "p99_latency_vs_picows": ratio(results, "latency", target, "p99_ms", "picows"),
            "idle_memory_vs_picows": ratio(results, "idle", target, "kb_per_connection", "picows"),
            "handshake_cpu_vs_openssl": ratio(results, "handshakes", target, "server_cpu_ms_per_handshake", "openssl"),
        }
    measured = {
        "cpu_per_record_vs_picows": out.get("fleetwire-zmq", {}).get("cpu_per_record_vs_picows"),
        "idle_kb_per_connection": results.get("idle", {}).get("fleetwire", {}).get("kb_per_connection"),
        "handshake_cpu_vs_openssl": out.get("fleetwire", {}).get("handshake_cpu_vs_openssl"),
    }
    out["goals"] = {
        key: {
            "goal": f"≤ {goal:g}",
            "measured": None if measured[key] is None else round(measured[key], 3),
            "met": None if measured[key] is None else measured[key] <= goal,
        }
        for key, goal in GOALS.items()
    }
    return out


def median_of(runs: list[Figures]) -> Figures:
    """Per-figure median over the rounds that succeeded; the first error if none did."""
    ok = [run for run in runs if "error" not in run]
    if not ok:
        return runs[0]
    merged: Figures = {}
    for key in ok[0]:
        values = [run[key] for run in ok]
        merged[key] = values[0] if len(set(values)) == 1 else statistics.median(values)
    if len(runs) > 1:
        merged["rounds"] = len(ok)
    return merged


def rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=csv(TARGETS), default=list(DEFAULT_TARGETS),
                        help=f"comma-separated from {', '.join(TARGETS)}; default {','.join(DEFAULT_TARGETS)}")
    parser.add_argument("--only", type=csv(PHASES), default=list(PHASES), help="comma-separated phases, default all")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per phase and target")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring")
    parser.add_argument("--connections", type=int, default=50, help="vehicles in the saturation and latency phases")
    parser.add_argument("--window", type=int, default=8, help="records in flight per vehicle at saturation")
    parser.add_argument("--latency-rate", type=float, help="records/s for the latency phase (default: half of saturation)")
    parser.add_argument("--idle-connections", type=int, default=2000)
    parser.add_argument("--handshake-concurrency", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=1, help="rounds per phase, targets interleaved; medians reported")
    parser.add_argument("--phase-timeout", type=float, default=300.0, help="seconds before one target's phase is abandoned")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (certificates, configs, server logs)")
    args = parser.parse_args()

    pinned = pin(args.client_cpu)
    raise_nofile()
    skipped: dict[str, str] = {}
    ours = [target for target in args.targets if target.startswith("fleetwire")]
    if ours and (reason := fleetwire_unavailable()):
        for target in ours:
            skipped[target] = reason
            args.targets.remove(target)
        log(f"skipping {', '.join(ours)}: {reason}")

    workdir = Path(tempfile.mkdtemp(prefix="fleetwire-bench-"))
    for target in list(args.targets):
        if reason := unavailable(target, workdir):
            skipped[target] = reason
            args.targets.remove(target)
            log(f"skipping {target}: {reason}")
    vehicles = max(args.connections, 64, args.idle_connections if "idle" in args.only else 0) + 1
    log(f"making a PKI for {vehicles} vehicles in {workdir}")
    bench = Bench(args, make_pki(workdir / "pki", vehicles), workdir)
    results: Figures = {phase: {} for phase in args.only}
    started = time.monotonic()
    try:
        for phase in args.only:
            measure: Callable[[str], Figures] = getattr(bench, phase)
            if phase == "latency":
                rate = args.latency_rate or latency_rate(results)
                if rate is None:
                    log("latency: no saturation figure to take half of; pass --latency-rate")
                    continue
                measure = functools.partial(bench.latency, rate=rate)
            targets = [t for t in args.targets if phase in TLS_ONLY.get(t, PHASES)]
            runs: dict[str, list[Figures]] = {target: [] for target in targets}
            for round_ in range(1, args.repeat + 1):  # targets interleaved, so drift hits all alike
                for target in targets:
                    log(f"{phase}: {target} (round {round_}/{args.repeat})")
                    runs[target].append(measure(target))
            results[phase] = {target: median_of(figures) for target, figures in runs.items()}
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    document = {
        "machine": {
            "cpus": os.cpu_count(), "python": platform.python_version(), "loadavg": os.getloadavg()[0],
            "server_cpu": args.server_cpu, "client_cpu": args.client_cpu, "pinned": pinned,
        },
        "params": {
            "record": "V, 10 datums", "frame_bytes": len(bench.frames[0]), "duration_s": args.duration,
            "warmup_s": args.warmup, "connections": args.connections, "window": args.window,
            "idle_connections": args.idle_connections, "handshake_concurrency": args.handshake_concurrency,
            "repeat": args.repeat,
        },
        "targets": args.targets,
        "skipped": skipped,
        "results": results,
        "summary": summary(results),
        "elapsed_s": time.monotonic() - started,
    }
    print(json.dumps(rounded(document), indent=2, ensure_ascii=False))
    return 0


def latency_rate(results: Figures) -> float | None:
    """Half of fleetwire's saturation rate in this run (else of the slowest target measured)."""
    saturation = results.get("saturation", {})
    rates: dict[str, float] = {t: f["records_per_s"] for t, f in saturation.items() if "records_per_s" in f}
    if not rates:
        return None
    return 0.5 * rates.get("fleetwire", min(rates.values()))


if __name__ == "__main__":
    sys.exit(main())
