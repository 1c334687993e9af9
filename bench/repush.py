"""Re-push after a CA chain change: how long until every vehicle runs the new `ca`, at what cost.

For each fleet size (1,000 and 10,000 by default) the Fleet API simulator runs in a process
of its own (`fleetwire fleet-api-sim`) and the operator's reconciler (`VehicleReconciler`
with the in-memory record store, no kopf) in another, alone, so the CPU time and the peak
RSS measured are the operator's. Streaming is off (`--max-streaming 0`): the vehicles are
configured, not connected; the story test covers streaming.

The run: configure the whole fleet with chain A, then change the `ca` to chain B and time
until every vehicle is seen applied with it. The simulator's sync delay (the time a
vehicle takes to take a pushed config, which no operator can shorten) is subtracted; the
target is that the rest stays under 60 s, with the operator under 200 MB.

Rate limits in the simulator (stated in the output):
  per vehicle   60 requests a minute (bucket of 10, refilled 1/s) on the calls that name one
                vehicle: Tesla's published device-data limit;
  per account   a bucket of 250 refilled 250/s: Tesla publishes no account-wide figure,
                so this is an assumption that makes pacing matter.
The operator paces itself at 240 calls/s with 8 in flight, below both.

Usage: python bench/repush.py [--sizes 1000,10000] [--sync-delay 10]
Prints one JSON document (progress on stderr).

Rotation (`--rotation`, sizes from `--rotation-sizes`): what a certificate change costs a
fleet of slow cars (`fleetwire.demo.rotation.trial`: long-tailed sync, awake cars in seconds
to minutes, parked ones hours later; each car reconnecting on its own schedule, about every
two hours), make before break against today's immediate switch, for a renewal under a
sibling intermediate, a new root, and a forced switch (no current certificate to keep). Time
runs `--time-factor` faster than real; figures are given in real hours and minutes. Each
trial runs in a process of its own (operator and simulator together: the peak RSS is theirs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ACCOUNT_LIMIT = (250.0, 250.0)  # burst, per second
VEHICLE_LIMIT = (10.0, 1.0)
OPERATOR_RATE = 240.0
CONCURRENCY = 8
TARGET_S = 60.0
TARGET_MB = 200.0


def log(message: str) -> None:
    print(f"[repush {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ======================================================================================
# The operator's side (a process of its own: --measure)
# ======================================================================================


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    """Reset VmHWM (Linux: write 5 to clear_refs), so the peak measured is the re-push's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class CountingApi:
    """The Fleet API client, counting the reconciler's calls by kind."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return await method(*args, **kwargs)

        return call


async def _settle(reconciler: Any, spec: Any, ca: str, size: int, timeout: float) -> tuple[float, int]:
    """Passes until every vehicle is applied with `ca`; (seconds, passes)."""
    from fleetwire.operator.policies.vehicles import APPLIED, ca_fingerprint

    wanted = ca_fingerprint(ca)
    started = time.monotonic()
    passes = 0
    while True:
        result = await reconciler.reconcile(spec, ca)
        passes += 1
        if result.counts.get(APPLIED) == size and all(r.ca_fp == wanted for r in reconciler.records.values()):
            return time.monotonic() - started, passes
        if result.problem:
            log(f"  pass {passes}: {result.problem}")
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"not settled after {timeout:.0f} s: {dict(result.counts)}")
        await asyncio.sleep(result.next_in)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    from cryptography.hazmat.primitives import serialization

    from fleetwire.operator.environment import VehicleSettings as Settings
    from fleetwire.operator.reconcilers.vehicles import VehicleReconciler
    from fleetwire.operator.clients.fleetapi import FleetApiClient
    from fleetwire.operator.clients.fleetapi_retry import RetryPolicy
    from fleetwire.operator.clients.fleetapi_types import Tokens
    from fleetwire.operator.stores.records import MemoryRecordStore
    from fleetwire.operator.stores.tokens import MemoryTokenStore
    from fleetwire.operator.resource.spec_parse import parse_spec
    from fleetwire.pki import make_ca

    credentials = json.loads(Path(args.credentials).read_text())
    key = serialization.load_pem_private_key(Path(args.key).read_bytes(), password=None)
    retries: list[float] = []

    async def sleep(seconds: float) -> None:
        retries.append(seconds)
        await asyncio.sleep(seconds)

    client = FleetApiClient(
        client_id=credentials["client_id"], client_secret=credentials["client_secret"],
        token_store=MemoryTokenStore(Tokens(credentials["access_token"], credentials["refresh_token"],
                                            credentials["expires_at"])),
        base_url=credentials["base_urls"]["na"], auth_url=credentials["auth_url"],
        retry=RetryPolicy(max_attempts=10), sleep=sleep,
    )
    api = CountingApi(client)
    settings = Settings(concurrency=CONCURRENCY, rate=OPERATOR_RATE, poll_first=1.0, member_wait=30.0,
                        poll_most=30.0, errors_fast=5.0, errors_slow=60.0, jitter=0.0)
    reconciler = VehicleReconciler(api, MemoryRecordStore("bench"), signing_key=key,  # type: ignore[arg-type]
                                   settings=settings, name="bench")
    vins: list[str] = credentials["vins"]
    spec = parse_spec({
        "hostname": "telemetry.example.com", "certificate": {"privateCA": {}}, "vehicles": vins,
        "fields": {"VehicleSpeed": {"interval_seconds": 10}, "Soc": {"interval_seconds": 60}},
        "fleetApi": {"baseUrl": credentials["base_urls"]["na"], "partnerCredentialsSecretRef": {"name": "p"},
                     "userTokenSecretRef": {"name": "u"}, "signingKeySecretRef": {"name": "k"}},
    })
    chain_a, chain_b = (make_ca(f"Bench chain {n}").cert_pem.decode() for n in "AB")
    try:
        log(f"  {len(vins)} vehicles: configuring with chain A")
        first_s, first_passes = await _settle(reconciler, spec, chain_a, len(vins), args.timeout)
        first_calls = dict(api.calls)
        api.calls.clear()
        retries.clear()
        rss_before = _status_kb("VmRSS")
        reset = _reset_peak()
        cpu_before = time.process_time()
        log(f"  applied in {first_s:.1f} s; chain B now")
        repush_s, passes = await _settle(reconciler, spec, chain_b, len(vins), args.timeout)
        cpu = time.process_time() - cpu_before
    finally:
        await client.close()
    peak_kb = _status_kb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    calls = dict(api.calls)
    return {
        "vehicles": len(vins),
        "initial_configure_s": round(first_s, 1),
        "initial_calls": first_calls,
        "initial_passes": first_passes,
        "repush_to_all_applied_s": round(repush_s, 1),
        "repush_minus_sync_delay_s": round(repush_s - args.sync_delay, 1),
        "repush_passes": passes,
        "repush_calls": calls,
        "repush_calls_per_vehicle": round(sum(calls.values()) / len(vins), 2),
        "repush_429_retries": len(retries),
        "operator_cpu_s": round(cpu, 2),
        "operator_rss_mb_before": round(rss_before / 1024, 1),
        "operator_peak_rss_mb": round(peak_kb / 1024, 1),
        "peak_is_repush_only": reset,
    }


# ======================================================================================
# The orchestrator: a simulator process and an operator process per size
# ======================================================================================


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_size(size: int, args: argparse.Namespace, workdir: Path, key_file: Path) -> dict[str, Any]:
    credentials = workdir / f"credentials-{size}.json"
    sim_cmd = [
        sys.executable, "-P", "-m", "fleetwire.cli", "fleet-api-sim", "--vehicles", str(size),
        "--public-key", str(key_file), "--sync-delay", str(args.sync_delay), "--max-streaming", "0",
        "--rate-limit", "{:g}/{:g}".format(*ACCOUNT_LIMIT), "--vehicle-rate-limit", "{:g}/{:g}".format(*VEHICLE_LIMIT),
        "--credentials-out", str(credentials),
    ]
    sim = subprocess.Popen(sim_cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert sim.stdout is not None
        ready = sim.stdout.readline()
        if not ready:
            raise RuntimeError(f"the simulator exited ({sim.wait()})")
        log(f"simulator with {size} vehicles: {json.loads(ready)['base_urls']['na']}")
        sim_cpu = _proc_cpu_s(sim.pid)
        measured = subprocess.run(
            [sys.executable, __file__, "--measure", "--credentials", str(credentials), "--key", str(key_file),
             "--sync-delay", str(args.sync_delay), "--timeout", str(args.timeout)],
            stdout=subprocess.PIPE, text=True, check=False,
        )
        if measured.returncode != 0:
            raise RuntimeError(f"the operator's run failed ({measured.returncode})")
        figures = json.loads(measured.stdout)
        figures["simulator_cpu_s"] = round(_proc_cpu_s(sim.pid) - sim_cpu, 1)
        return figures
    finally:
        sim.send_signal(signal.SIGTERM)
        try:
            sim.wait(20)
        except subprocess.TimeoutExpired:
            sim.kill()


# ======================================================================================
# Rotation: make before break against the immediate switch, with slow cars
# ======================================================================================

SCENARIOS = ("sibling", "new_root", "forced")
MODES = ("make-before-break", "immediate")


async def run_trial(args: argparse.Namespace) -> dict[str, Any]:
    from fleetwire import pki
    from fleetwire.demo.rotation import Served, trial

    host = "telemetry.example.com"

    def chain(under: pki.Bundle) -> str:
        return (pki.make_server_cert(under, [host]).cert_pem + under.cert_pem).decode()

    root_a, root_b = pki.make_ca("Bench Root A"), pki.make_ca("Bench Root B")
    a1, a2 = (pki.make_ca(f"Bench A{i}", parent=root_a, path_length=0) for i in (1, 2))
    b1 = pki.make_ca("Bench B1", parent=root_b, path_length=0)
    before = Served(chain(a1), (a1.cert_pem + root_a.cert_pem).decode())
    after = (Served(chain(a2), (a2.cert_pem + root_a.cert_pem).decode()) if args.scenario == "sibling"
             else Served(chain(b1), (b1.cert_pem + root_b.cert_pem).decode()))
    started = time.monotonic()
    cpu = time.process_time()
    result = await trial(args.size, before, after, mode=args.mode, hostname=host, time_factor=args.time_factor,
                         forced=args.scenario == "forced", timeout=args.timeout)
    out = result.as_dict()
    out["api_calls_per_vehicle"] = round(sum(result.api_calls.values()) / args.size, 2)
    out["process_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out["process_cpu_s"] = round(time.process_time() - cpu, 1)
    out["wall_s"] = round(time.monotonic() - started, 1)
    return out


def rotation(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"bench": "rotation", "time_factor": args.time_factor,
                               "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
                               "sizes": {}}
    for size in (int(s) for s in args.rotation_sizes.split(",") if s.strip()):
        per_size: dict[str, Any] = results["sizes"].setdefault(str(size), {})
        for scenario in args.scenarios.split(","):
            for mode in MODES:
                log(f"rotation: {size} vehicles, {scenario}, {mode}")
                done = subprocess.run(
                    [sys.executable, "-P", __file__, "--trial", "--size", str(size), "--scenario", scenario,
                     "--mode", mode, "--time-factor", repr(args.time_factor), "--timeout", str(args.timeout)],
                    stdout=subprocess.PIPE, text=True, check=False)
                if done.returncode != 0:
                    raise RuntimeError(f"the trial failed ({done.returncode})")
                figures = json.loads(done.stdout)
                per_size.setdefault(scenario, {})[mode] = figures
                log(f"  pushes {figures['pushes']}, TLS failures {figures['tls_failures']} "
                    f"({figures['vehicles_failed']} vehicles), lost {figures['lost_vehicle_minutes']} vehicle-min, "
                    f"promotion after {figures['time_to_promotion_h']} h, all streaming after "
                    f"{figures['time_to_all_streaming_h']} h")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated fleet sizes")
    parser.add_argument("--sync-delay", type=float, default=10.0, help="the simulator's seconds from push to applied")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before a phase is abandoned")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--credentials", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--rotation", action="store_true", help="the rotation figures instead of the re-push")
    parser.add_argument("--rotation-sizes", default="1000,10000", help="fleet sizes of the rotation trials")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="rotation scenarios to run")
    parser.add_argument("--time-factor", type=float, default=1 / 3600, help="simulated seconds per real second")
    parser.add_argument("--trial", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--scenario", choices=SCENARIOS, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.trial:
        import uvloop

        print(json.dumps(uvloop.run(run_trial(args))))
        return 0
    if args.rotation:
        print(json.dumps(rotation(args), indent=2))
        return 0
    if args.measure:
        import uvloop

        print(json.dumps(uvloop.run(measure(args))))
        return 0

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    results: dict[str, Any] = {
        "bench": "repush",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "limits": {
            "simulator_per_account": {"burst": ACCOUNT_LIMIT[0], "per_s": ACCOUNT_LIMIT[1]},
            "simulator_per_vehicle": {"burst": VEHICLE_LIMIT[0], "per_s": VEHICLE_LIMIT[1]},
            "operator_rate_per_s": OPERATOR_RATE, "operator_concurrency": CONCURRENCY,
            "sync_delay_s": args.sync_delay, "streaming": "off",
        },
        "targets": {"repush_minus_sync_delay_s": TARGET_S, "operator_peak_rss_mb": TARGET_MB},
        "sizes": {},
    }
    with tempfile.TemporaryDirectory(prefix="fleetwire-repush-") as tmp:
        workdir = Path(tmp)
        key = ec.generate_private_key(ec.SECP256R1())
        key_file = workdir / "app-key.pem"
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        for size in (int(s) for s in args.sizes.split(",") if s.strip()):
            figures = run_size(size, args, workdir, key_file)
            figures["met"] = (figures["repush_minus_sync_delay_s"] <= TARGET_S
                              and figures["operator_peak_rss_mb"] < TARGET_MB)
            results["sizes"][str(size)] = figures
            log(f"{size}: re-pushed and applied in {figures['repush_to_all_applied_s']} s "
                f"({figures['repush_minus_sync_delay_s']} s beyond the sync delay), operator "
                f"{figures['operator_cpu_s']} CPU s, peak {figures['operator_peak_rss_mb']} MB")
    print(json.dumps(results, indent=2))
    return 0 if all(f["met"] for f in results["sizes"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
