"""Server CPU per `V` record with each backend routed, beside the same server routing nothing.

Every target is `fleetwire serve` with `records: {"V": [<backend>]}` and, for backends that
confirm, `reliable_ack_sources: {"V": <backend>}` — so each ack waits for the broker — against
a real broker started here (tansu for Kafka, redis-server, nats-server with JetStream,
mosquitto, a ZMQ SUB socket draining the PUB). `unrouted` decodes and acks only: the
baseline of the ratio, measured in the same run. The server runs pinned to one CPU; the load
generator and the brokers share the other, so only the server's own CPU time is counted.

Phases per target: saturation (records/s and server CPU µs per record, a fixed window in
flight on every connection) and latency (p50/p99 from send to ack at one fixed rate for
every target: receipt to broker confirmation, plus the TLS round trip).

Usage: python bench/backends.py [--targets unrouted,kafka,redis,nats,zmq,mqtt] [--duration 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import loadgen
import uvloop
from identities import BenchPki, make_pki, vehicle_contexts, vin
from records import v_record_frames
from system import Server, free_port, pin, raise_nofile
from run_all import log, rounded
from targets import fleetwire_command

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the brokers' process wrappers live with the tests

TARGETS = ("unrouted", "kafka", "redis", "nats", "zmq", "mqtt")
RELIABLE = ("kafka", "redis", "nats", "zmq", "mqtt")
GOAL_RATIO = 1.3  # server CPU per record with kafka, redis, nats or zmq, vs unrouted: at most
Figures = dict[str, Any]
Backend = Callable[[Path], "contextlib.AbstractContextManager[dict[str, Any]]"]


# -- brokers: each yields the config.json section of its backend --------------------------


@contextlib.contextmanager
def _kafka(workdir: Path) -> Iterator[dict[str, Any]]:
    from brokers.tansu import Tansu

    with Tansu(workdir / "tansu", persistent=False) as broker:
        yield {"bootstrap.servers": broker.bootstrap}


@contextlib.contextmanager
def _redis(workdir: Path) -> Iterator[dict[str, Any]]:
    from brokers.redis_server import RedisServer

    broker = RedisServer(workdir / "redis").start()
    try:
        yield {"addrs": [broker.addr], "publish_vin_topics": True}
    finally:
        broker.stop()


@contextlib.contextmanager
def _nats(workdir: Path) -> Iterator[dict[str, Any]]:
    from brokers.nats_server import NatsServer

    with NatsServer(workdir / "nats", jetstream=True) as broker:
        yield {"url": broker.url}


@contextlib.contextmanager
def _mqtt(workdir: Path) -> Iterator[dict[str, Any]]:
    import subprocess

    from system import listening

    port = free_port()
    (workdir / "mosquitto").mkdir(parents=True, exist_ok=True)
    conf = workdir / "mosquitto" / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not listening(port):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("mosquitto did not start")
            time.sleep(0.05)
        yield {"broker": f"127.0.0.1:{port}", "topic_base": "bench", "qos": 1}
    finally:
        proc.terminate()
        proc.wait(5)


@contextlib.contextmanager
def _zmq(workdir: Path) -> Iterator[dict[str, Any]]:
    """The server binds the PUB socket; a SUB socket here drains it, as a consumer would."""
    import zmq

    port = free_port()
    stop = threading.Event()

    def drain() -> None:
        context = zmq.Context.instance()
        sub = context.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.setsockopt(zmq.RCVTIMEO, 200)
        sub.connect(f"tcp://127.0.0.1:{port}")
        while not stop.is_set():
            with contextlib.suppress(zmq.Again):
                sub.recv_multipart()
        sub.close(0)

    thread = threading.Thread(target=drain, name="zmq-sub", daemon=True)
    thread.start()
    try:
        yield {"addr": f"tcp://127.0.0.1:{port}"}
    finally:
        stop.set()
        thread.join(5)


@contextlib.contextmanager
def _none(_workdir: Path) -> Iterator[dict[str, Any]]:
    yield {}


BACKENDS: dict[str, Backend] = {
    "unrouted": _none, "kafka": _kafka, "redis": _redis, "nats": _nats, "zmq": _zmq, "mqtt": _mqtt,
}


def config_for(target: str, section: dict[str, Any], pki: BenchPki, port: int, directory: Path) -> Path:
    config: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "status_port": free_port(),
        "namespace": "bench",
        "tls": {"server_cert": str(pki.fleet.server_cert), "server_key": str(pki.fleet.server_key),
                "ca_file": str(pki.fleet.ca_file)},
        "records": {} if target == "unrouted" else {"V": [target]},
        "log_level": "warning",
    }
    if target != "unrouted":
        config[target] = section
        if target in RELIABLE:
            config["reliable_ack_sources"] = {"V": target}
    path = directory / f"{target}-{port}.json"
    path.write_text(json.dumps(config, indent=2))
    return path


class Bench:
    def __init__(self, args: argparse.Namespace, pki: BenchPki, workdir: Path) -> None:
        self.args = args
        self.pki = pki
        self.workdir = workdir
        self.frames = v_record_frames(vin(0), 256)
        self.contexts = vehicle_contexts(pki)

    def measure(self, target: str) -> Figures:
        """A broker and a fresh server for `target`; saturation, then latency at the fixed rate."""
        a = self.args
        directory = self.workdir / f"{target}-{time.monotonic_ns()}"
        directory.mkdir()
        try:
            with BACKENDS[target](directory) as section:
                port = free_port()
                config = config_for(target, section, self.pki, port, directory)
                argv = [*fleetwire_command(), "serve", "--config", str(config)]
                with Server(argv, port, a.server_cpu, directory / "server.log") as srv:
                    url = f"wss://localhost:{srv.port}/"
                    saturation = uvloop.run(asyncio.wait_for(loadgen.saturate(
                        url, self.contexts, self.frames, srv.pid, connections=a.connections,
                        window=a.window, warmup=a.warmup, duration=a.duration), a.phase_timeout))
                    latency = uvloop.run(asyncio.wait_for(loadgen.latency(
                        url, self.contexts, self.frames, srv.pid, connections=a.connections,
                        rate=a.latency_rate, warmup=a.warmup, duration=a.duration), a.phase_timeout))
                    if srv.proc is not None and srv.proc.poll() is not None:
                        raise RuntimeError(f"server exited with {srv.proc.returncode}")
            return {"saturation": saturation, "latency": latency}
        except Exception as exc:  # noqa: BLE001 -- one failing backend must not lose the others' figures
            log(f"{target}: {type(exc).__name__}: {exc}")
            return {"error": f"{type(exc).__name__}: {exc}"}


def median_of(runs: list[Figures]) -> Figures:
    ok = [run for run in runs if "error" not in run]
    if not ok:
        return runs[0]
    merged: Figures = {}
    for phase in ok[0]:
        merged[phase] = {key: statistics.median(run[phase][key] for run in ok) for key in ok[0][phase]}
    merged["rounds"] = len(ok)
    return merged


def summary(results: Figures) -> Figures:
    base = results.get("unrouted", {}).get("saturation", {}).get("server_cpu_us_per_record")
    out: Figures = {}
    for target, figures in results.items():
        if target == "unrouted" or "error" in figures:
            continue
        cpu = figures["saturation"]["server_cpu_us_per_record"]
        ratio = cpu / base if base else None
        out[target] = {
            "cpu_per_record_vs_unrouted": ratio,
            "records_per_s": figures["saturation"]["records_per_s"],
            "p99_ms": figures["latency"]["p99_ms"],
            "goal": f"≤ {GOAL_RATIO}" if target in ("kafka", "redis", "nats", "zmq") else None,
            "met": None if ratio is None or target not in ("kafka", "redis", "nats", "zmq") else ratio <= GOAL_RATIO,
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated from {', '.join(TARGETS)}")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--latency-rate", type=float, default=2000.0, help="records/s of the latency phase, every target")
    parser.add_argument("--repeat", type=int, default=1, help="rounds, targets interleaved; medians reported")
    parser.add_argument("--phase-timeout", type=float, default=120.0)
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    args = parser.parse_args()
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
    if "unrouted" not in targets:
        targets.insert(0, "unrouted")  # the baseline of every ratio

    pinned = pin(args.client_cpu)
    raise_nofile()
    workdir = Path(tempfile.mkdtemp(prefix="fleetwire-bench-backends-"))
    started = time.monotonic()
    try:
        bench = Bench(args, make_pki(workdir / "pki", args.connections + 1), workdir)
        runs: dict[str, list[Figures]] = {target: [] for target in targets}
        for round_ in range(1, args.repeat + 1):
            for target in targets:
                log(f"{target} (round {round_}/{args.repeat})")
                runs[target].append(bench.measure(target))
        results = {target: median_of(figures) for target, figures in runs.items()}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    document = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg": os.getloadavg()[0],
                    "server_cpu": args.server_cpu, "client_cpu": args.client_cpu, "pinned": pinned},
        "params": {"record": "V, 10 datums", "frame_bytes": len(bench.frames[0]), "duration_s": args.duration,
                   "connections": args.connections, "window": args.window, "latency_rate": args.latency_rate,
                   "repeat": args.repeat, "reliable_ack": [t for t in targets if t in RELIABLE]},
        "results": results,
        "summary": summary(results),
        "elapsed_s": time.monotonic() - started,
    }
    print(json.dumps(rounded(document), indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
