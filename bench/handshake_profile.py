"""Where a server's handshake CPU goes: `perf` samples by shared object during a handshake load.

Each target is started as in run_all.py, loaded with fresh mTLS handshakes (+ WebSocket
upgrade or one tiny request, + close) for `--duration` seconds while `perf record` samples
it, and reported as ms per handshake and the share of its samples in OpenSSL, the C
library, the kernel, Python and the rest. Needs `perf` (Debian's linux-perf).

Usage: python bench/handshake_profile.py [--targets fleetwire,nginx] [--duration 6]
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import loadgen
import uvloop
from identities import make_pki, vehicle_contexts
from system import pin, raise_nofile
from targets import TLS_ONLY, server, unavailable

GROUPS = {  # shared object name contains -> group
    "libcrypto": "openssl", "libssl": "openssl", "libc.so": "libc", "kernel": "kernel",
    "libpython": "python", "[vdso]": "kernel",
}


def group(dso: str) -> str:
    return next((g for key, g in GROUPS.items() if key in dso), "other" if dso.endswith("]") else Path(dso).name)


def shares(data: Path) -> dict[str, float]:
    """Percent of samples per group, from `perf report --sort dso`."""
    report = subprocess.run(
        ["perf", "report", "-i", str(data), "--no-children", "--sort", "dso", "--stdio", "-g", "none"],
        capture_output=True, text=True, check=True,
    ).stdout
    out: collections.Counter[str] = collections.Counter()
    for line in report.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith("%") and not line.startswith("#"):
            name = group(parts[1])
            out[name if name in GROUPS.values() else ("extensions" if ".cpython-" in name else name)] += float(parts[0][:-1])
    return {k: round(v, 1) for k, v in out.most_common()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="fleetwire,nginx")
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    if shutil.which("perf") is None:
        print("needs perf (Debian's linux-perf)", file=sys.stderr)
        return 2
    pin(1)
    raise_nofile()
    workdir = Path(tempfile.mkdtemp(prefix="fleetwire-hsprof-"))
    results = {}
    try:
        pki = make_pki(workdir / "pki", 64)
        contexts = vehicle_contexts(pki)
        for target in args.targets.split(","):
            if reason := unavailable(target, workdir):
                results[target] = {"error": reason}
                continue
            with server(target, pki, workdir, 0) as srv:
                url = f"{'https' if target in TLS_ONLY else 'wss'}://localhost:{srv.port}/"
                data = workdir / f"{target}.perf"
                perf = subprocess.Popen(
                    ["perf", "record", "-F", "999", "-p", str(srv.pid), "-o", str(data), "--", "sleep", str(args.duration)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
                figures = uvloop.run(loadgen.handshakes(
                    url, contexts, srv.pid, concurrency=args.concurrency, warmup=0.3, duration=args.duration - 0.6))
                perf.wait()
            results[target] = {
                "server_cpu_ms_per_handshake": round(figures["server_cpu_ms_per_handshake"], 3),
                "percent_of_samples": shares(data),
            }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
