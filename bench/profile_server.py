"""Where a saturated server's CPU goes: py-spy samples of one target under `run_all`'s load.

Starts the target as `run_all.py` does (pinned to one CPU), keeps 50 vehicles x 8 records
in flight, samples the server with py-spy (native frames included, all threads, idle
time excluded) and prints JSON: each thread's CPU per record, each function's share of the samples, by itself (self)
and with what it calls (total), the top of each list. `--raw FILE` keeps py-spy's
collapsed stacks (`flamegraph.pl` or speedscope read them).

Usage: python bench/profile_server.py [--target fleetwire-zmq] [--duration 8] [--native]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import loadgen
import uvloop
from identities import make_pki, vehicle_contexts, vin
from records import v_record_frames
from system import CLOCK_TICKS, pin, raise_nofile
from targets import TARGETS, server

PY_SPY = Path(sys.executable).parent / "py-spy"


def summarize(collapsed: str, top: int) -> dict[str, Any]:
    """Self and inclusive shares of each frame in py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count

    def shares(counter: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(frame, round(100 * n / total, 1)) for frame, n in counter.most_common(top)]

    return {"samples": total, "self_percent": shares(own), "total_percent": shares(inclusive)}


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of each of the server's threads, by name (libzmq's are ZMQbg/...)."""
    out: dict[str, float] = collections.defaultdict(float)
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            out[name] += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return out


async def load(url: str, contexts: list[Any], frames: list[bytes], pid: int, seconds: float) -> dict[str, Any]:
    """Saturate for `seconds`; also each thread's CPU µs per acked record, over the window."""
    tally = asyncio.ensure_future(loadgen.saturate(url, contexts, frames, pid, connections=50, window=8,
                                                   warmup=1.0, duration=seconds))
    await asyncio.sleep(1.5)
    before, start = thread_cpu(pid), time.perf_counter()
    await asyncio.sleep(seconds - 1.0)
    after, wall = thread_cpu(pid), time.perf_counter() - start
    figures: dict[str, Any] = await tally
    records = figures["records_per_s"] * wall
    figures["thread_cpu_us_per_record"] = {
        name: round(1e6 * (after[name] - before.get(name, 0.0)) / records, 2) for name in after
        if after[name] > before.get(name, 0.0)
    }
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=[t for t in TARGETS if t.startswith("fleetwire")], default="fleetwire-zmq")
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--native", action="store_true", help="include C frames (slower sampling)")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--raw", type=Path, help="also write py-spy's collapsed stacks here")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    args = parser.parse_args()
    pin(args.client_cpu)
    raise_nofile()
    workdir = Path(tempfile.mkdtemp(prefix="fleetwire-profile-"))
    try:
        pki = make_pki(workdir / "pki", 51)
        contexts = vehicle_contexts(pki)
        frames = v_record_frames(vin(0), 256)
        raw = workdir / "stacks.txt"
        with server(args.target, pki, workdir, args.server_cpu) as srv:
            url = f"wss://localhost:{srv.port}/"
            spy = [str(PY_SPY), "record", "--pid", str(srv.pid), "--format", "raw", "--output", str(raw),
                   "--rate", str(args.rate), "--duration", str(int(args.duration)), "--threads"]
            # Without pausing the server, except for native frames, which need it (and slow it).
            spy.append("--native" if args.native else "--nonblocking")
            sampler = subprocess.Popen(spy, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            figures = uvloop.run(load(url, contexts, frames, srv.pid, args.duration + 1.0))
            _, err = sampler.communicate(timeout=60)
            if sampler.returncode != 0:
                raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-300:]}")
        collapsed = raw.read_text()
        if args.raw is not None:
            args.raw.write_text(collapsed)
        document = {"target": args.target, "load": figures, "profile": summarize(collapsed, args.top)}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(document, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
