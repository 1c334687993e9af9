"""`fleetwire serve --workers 2` as a user runs it: a supervisor process and two workers on
loopback, real mTLS vehicles from the simulator, the one /metrics endpoint read as
Prometheus would, signals sent to the supervisor.

The pure parts (worker count, metric merging, restart delay): test_workers.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import uvloop
from conftest import free_port, server_config_data
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from fleetwire.pki import make_ca, make_server_cert, write_bundle, write_pem
from fleetwire.sim.fleet import Fleet, issue_vehicle_certs, sim_vin
from fleetwire.sim.fleet_pki import FleetPki
from fleetwire.sim.vehicle import client_context

ASYNCIO_LOOP_FACTORY = uvloop.new_event_loop  # the loop `fleetwire serve` runs on
START_TIMEOUT = 60.0


class Served:
    """A `fleetwire serve --workers N` subprocess and its ports."""

    def __init__(self, proc: subprocess.Popen[bytes], config: dict[str, Any], log: Path) -> None:
        self.proc = proc
        self.config = config
        self.log = log
        self.port = int(config["port"])
        self.status_port = int(config["status_port"])
        self.metrics_port = int(config["monitoring"]["prometheus_metrics_port"])

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """The supervisor's /metrics: (sample name, sorted labels) -> value."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def sample(self, name: str, **labels: str) -> float:
        return self.scrape().get((name, tuple(sorted(labels.items()))), 0.0)

    def workers(self) -> list[int]:
        """The supervisor's worker processes (its children, bar multiprocessing's resource tracker)."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        return [int(pid) for pid in children if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()]

    async def until(self, what: str, check: Any, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"the server exited with {self.proc.returncode}:\n{self.log.read_text()}"
            try:
                if await asyncio.to_thread(check):
                    return
            except OSError:
                pass  # not listening yet
            assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{self.log.read_text()}"
            await asyncio.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)


@asynccontextmanager
async def serve(pki: FleetPki, tmp_path: Path, workers: str = "2", extra: tuple[str, ...] = (), **overrides: Any
                ) -> AsyncIterator[Served]:
    """`fleetwire serve --workers N` on free loopback ports, every worker listening."""
    data = server_config_data(pki, {"monitoring": {"prometheus_metrics_port": free_port(),
                                                   "prometheus_metrics_host": "127.0.0.1"},
                                    "logger": {"verbose": False}, **overrides})
    config = tmp_path / "config.json"
    config.write_text(json.dumps(data))
    log = tmp_path / "serve.log"
    served = Served(_start(config, workers, log, extra), data, log)
    proc = served.proc
    try:
        await served.until("2 workers", lambda: served.sample("fleetwire_workers") == 2)
        yield served
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _start(config: Path, workers: str, log: Path, extra: tuple[str, ...]) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-P", "-m", "fleetwire.cli", "serve", "--config", str(config),
                                 "--workers", workers, *extra], stdout=out, stderr=subprocess.STDOUT)


@contextmanager
def fleet_of(pki: FleetPki, directory: Path, port: int, vehicles: int) -> Iterator[Fleet]:
    vins = [sim_vin(i) for i in range(vehicles)]
    certs = issue_vehicle_certs(pki.vehicle_ca_cert, pki.vehicle_ca_key, vins, directory)
    yield Fleet(f"wss://127.0.0.1:{port}/", pki.server_ca_cert, certs)


async def status(port: int, ssl_context: ssl.SSLContext | None = None) -> tuple[bytes, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ssl_context,
                                                   server_hostname="127.0.0.1" if ssl_context else None)
    try:
        writer.write(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        return head.split(b"\r\n", 1)[0], await asyncio.wait_for(reader.read(64), 5)
    finally:
        writer.close()


async def test_two_workers_share_the_port_and_every_record_is_acked(fleet_pki: FleetPki, tmp_path: Path) -> None:
    async with serve(fleet_pki, tmp_path) as served:
        workers = served.workers()
        assert len(workers) == 2
        with fleet_of(fleet_pki, tmp_path / "vehicles", served.port, 24) as fleet:
            assert await fleet.connect() == 24
            await fleet.stream(rate=10, duration=1.5)
            await fleet.drain(timeout=10)
            summary = fleet.summary()
            assert summary.sent > 24 * 10 and summary.acked == summary.sent and summary.errors == 0
            metrics = await asyncio.to_thread(served.scrape)
            spread = [metrics[("fleetwire_worker_connections_active", (("worker", w),))] for w in ("0", "1")]
            assert sum(spread) == 24 and min(spread) > 0, spread  # the kernel gave each worker some
            assert metrics[("fleetwire_connections_active", ())] == 24
            assert metrics[("fleetwire_records_total", (("record_type", "V"),))] == summary.sent
            assert metrics[("fleetwire_acks_total", ())] == summary.sent
            per_worker = [metrics[("fleetwire_worker_acks_total", (("worker", w),))] for w in ("0", "1")]
            assert sum(per_worker) == summary.sent and min(per_worker) > 0
            for _ in range(4):  # whichever worker answers
                assert await status(served.status_port) == (b"HTTP/1.1 200 OK", b"ok")
            [(cert, key)] = issue_vehicle_certs(
                fleet_pki.vehicle_ca_cert, fleet_pki.vehicle_ca_key, [sim_vin(99)], tmp_path / "probe").values()
            line, body = await status(served.port, client_context(cert, key, fleet_pki.server_ca_cert))
            assert line.startswith(b"HTTP/1.1 200") and body == b"mtls ok"
            await fleet.close()
        assert await asyncio.to_thread(served.stop, signal.SIGTERM) == 0
        assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]
        log = served.log.read_text()
        assert "[worker 0] shutting down" in log and "[worker 1] shutting down" in log  # each stopped itself


async def server_serial(pki: FleetPki, directory: Path, port: int) -> int:
    [(cert, key)] = issue_vehicle_certs(pki.vehicle_ca_cert, pki.vehicle_ca_key, [sim_vin(98)], directory).values()
    _reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_context(cert, key, pki.server_ca_cert), server_hostname="127.0.0.1")
    try:
        return x509.load_der_x509_certificate(writer.get_extra_info("ssl_object").getpeercert(True)).serial_number
    finally:
        writer.close()


async def test_every_worker_reloads_the_certificate(fleet_pki: FleetPki, tmp_path: Path) -> None:
    server_ca = make_ca("Fleetwire Test Server CA", path_length=0)
    write_pem(fleet_pki.server_ca_cert, server_ca.cert_pem)
    current = make_server_cert(server_ca, ["127.0.0.1"])
    write_bundle(current, fleet_pki.server_cert, fleet_pki.server_key)
    tls = {"server_cert": str(fleet_pki.server_cert), "server_key": str(fleet_pki.server_key),
           "ca_file": str(fleet_pki.ca_file), "reload_interval_seconds": 0.2}
    async with serve(fleet_pki, tmp_path, tls=tls) as served:
        probe = tmp_path / "probe"
        serials = {await server_serial(fleet_pki, probe, served.port) for _ in range(8)}
        assert serials == {current.cert.serial_number}
        renewal = make_server_cert(server_ca, ["127.0.0.1"], days=180)
        write_bundle(renewal, fleet_pki.server_cert, fleet_pki.server_key)
        await served.until("both workers reloaded",
                           lambda: served.sample("fleetwire_certificate_reloads_total", outcome="reloaded") == 2)
        spread = {await server_serial(fleet_pki, probe, served.port) for _ in range(16)}
        assert spread == {renewal.cert.serial_number}
        assert await asyncio.to_thread(served.stop, signal.SIGINT) == 0


async def test_a_dead_worker_is_replaced_and_the_counters_do_not_go_back(fleet_pki: FleetPki, tmp_path: Path) -> None:
    async with serve(fleet_pki, tmp_path) as served:
        with fleet_of(fleet_pki, tmp_path / "vehicles", served.port, 12) as fleet:
            assert await fleet.connect() == 12
            await fleet.stream(rate=10, duration=1.0)
            await fleet.drain(timeout=10)
            sent = fleet.summary().sent
            assert await asyncio.to_thread(served.sample, "fleetwire_acks_total") == sent
            victim = served.workers()[0]
            os.kill(victim, signal.SIGKILL)
            await served.until("a replacement", lambda: served.sample("fleetwire_worker_restarts_total") == 1
                               and served.sample("fleetwire_workers") == 2)
            assert victim not in served.workers() and len(served.workers()) == 2
            assert await asyncio.to_thread(served.sample, "fleetwire_acks_total") == sent
            await fleet.close()
        with fleet_of(fleet_pki, tmp_path / "vehicles", served.port, 12) as again:
            assert await again.connect() == 12  # the vehicles of the dead worker come back
            await again.stream(rate=5, duration=0.5)
            await again.drain(timeout=10)
            assert again.summary().acked == again.summary().sent > 0
            metrics = await asyncio.to_thread(served.scrape)
            assert metrics[("fleetwire_acks_total", ())] == sent + again.summary().sent
            await again.close()
        assert await asyncio.to_thread(served.stop) == 0


async def test_a_worker_that_does_not_stop_is_killed_after_the_stop_timeout(fleet_pki: FleetPki,
                                                                          tmp_path: Path) -> None:
    async with serve(fleet_pki, tmp_path, extra=("--stop-timeout", "1")) as served:
        stuck, other = served.workers()
        os.kill(stuck, signal.SIGSTOP)  # it will never see the SIGTERM
        started = time.monotonic()
        assert await asyncio.to_thread(served.stop, signal.SIGTERM, 20) == 1
        assert time.monotonic() - started < 10
        assert not Path(f"/proc/{stuck}").exists() and not Path(f"/proc/{other}").exists()
        assert "worker 0 still running 1 s after SIGTERM: killed" in served.log.read_text() or \
            "worker 1 still running 1 s after SIGTERM: killed" in served.log.read_text()


async def test_workers_stop_by_themselves_when_the_supervisor_is_killed(fleet_pki: FleetPki, tmp_path: Path) -> None:
    async with serve(fleet_pki, tmp_path) as served:
        workers = served.workers()
        served.proc.kill()
        served.proc.wait()
        deadline = time.monotonic() + 20
        while alive := [pid for pid in workers if Path(f"/proc/{pid}").exists()
                        and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"]:
            assert time.monotonic() < deadline, f"orphaned workers {alive} kept running"
            await asyncio.sleep(0.1)
        assert "the supervisor is gone: stopping" in served.log.read_text()


def _serve_once(tmp_path: Path, data: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(data))
    return subprocess.run([sys.executable, "-P", "-m", "fleetwire.cli", "serve", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=60, check=False)


def test_bad_workers_and_configs_exit_2_before_any_worker_starts(fleet_pki: FleetPki, tmp_path: Path) -> None:
    data = server_config_data(fleet_pki)
    bad = _serve_once(tmp_path, data, "--workers", "none")
    assert bad.returncode == 2 and "--workers: expected a positive number" in bad.stderr
    zmq = _serve_once(tmp_path, {**data, "records": {"V": ["zmq"]}, "zmq": {"addr": "tcp://127.0.0.1:5284"}},
                      "--workers", "2")
    assert zmq.returncode == 2 and "zmq.addr: a ZMQ PUB socket binds one address" in zmq.stderr
    fleet_pki.server_key.write_text("not a key\n")
    broken = _serve_once(tmp_path, data, "--workers", "2")
    assert broken.returncode == 2 and "tls.server_key" in broken.stderr
    assert "[worker" not in broken.stderr and "listening" not in broken.stderr  # no worker ever started
    assert "Traceback" not in broken.stderr


def test_a_port_taken_by_another_program_stops_the_start(fleet_pki: FleetPki, tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))  # no SO_REUSEPORT: nobody may share it
        taken.listen()
        data = {**server_config_data(fleet_pki), "port": taken.getsockname()[1]}
        result = _serve_once(tmp_path, data, "--workers", "2")
    assert result.returncode == 1, result.stderr
    assert "could not start: cannot listen:" in result.stderr and "Traceback" not in result.stderr
    assert f"('127.0.0.1', {data['port']})" in result.stderr  # the address it could not take
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        data = {**server_config_data(fleet_pki), "monitoring": {"prometheus_metrics_port": taken.getsockname()[1],
                                                                "prometheus_metrics_host": "127.0.0.1"}}
        result = _serve_once(tmp_path, data, "--workers", "2")
    assert result.returncode == 1 and "cannot serve metrics on port" in result.stderr
    assert "[worker" not in result.stderr and "Traceback" not in result.stderr
