"""`fleetwire demo`: the whole loop (emulated cluster, operator, simulator, the server's pod run
by the kubelet stand-in, a CA rotation) and the quick server-only demo, run as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest


def demo(*args: str, timeout: float) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-P", "-m", "fleetwire.cli", "demo", *args], capture_output=True,
                            text=True, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return result, time.monotonic() - started


@pytest.mark.slow
def test_the_whole_loop_rotates_a_ca_without_a_gap_in_under_two_minutes() -> None:
    result, took = demo(timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    steps = ["certificate issued", "ServerReady: 1/1 server replicas ready (pod demo-server-",
             "by its readiness probe", "Service demo-server port 443 answers on 127.0.0.1:",
             "vehicles configured: 8 of 10 applied; 2 skipped: missing_key (1), "
             "unsupported_firmware (1)", "streaming: 8 vehicles", "records through the pod",
             "renewal under the same root: the pod serves a new leaf, every vehicle reconnected; pushes: 0, "
             "TLS failures: 0", "chain rotation",
             "staged, not served", "promoted once every vehicle held both",
             "the pod reloaded it from its mounted Secret (2 ..data swap(s), 0 restarts)",
             "accepted at once (their ca holds both chains); TLS errors reported by vehicles: 0",
             "rotated without a human and without a gap", "TLS failures during the rotation: 0",
             "streaming throughout",
             "VehiclesConfigured=True (VehiclesSkipped)"]
    positions = [out.find(step) for step in steps]
    assert -1 not in positions and positions == sorted(positions), out
    assert result.stderr == "", result.stderr
    assert took < 120


def test_the_server_only_demo_is_still_there() -> None:
    result, _took = demo("--server-only", "--seconds", "1", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every record acknowledged, impostor refused" in result.stdout
