"""`fleetwire serve --workers N`: N worker processes on the same ports, one supervisor.

The supervisor reads the configuration once, refuses a bad one before any worker starts,
starts the workers (`worker.run_worker`, spawned: no state of this process is shared),
serves the one Prometheus endpoint (the workers' families merged, `metrics_merge`),
forwards SIGTERM/SIGINT to every worker and waits for them, with a bound.

A worker that dies unexpectedly is restarted, after a delay that doubles with each death
in a row (0.5 s up to 30 s; a worker that served a minute starts the count again): only
its vehicles lose their connection, and they reconnect to the other workers meanwhile.
Exiting instead would drop every vehicle of every worker. A worker that cannot start at
all (bad config, port taken) stops the whole server at start-up, as one process would.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fleetwire.server.app import tls_context
from fleetwire.server.config import ServerConfig
from fleetwire.server.metrics_merge import Retained, per_worker, view
from fleetwire.server.worker import Failed, Ready, WorkerSpec, run_worker
from fleetwire.server.worker_config import refusal, worker_config
from fleetwire.strictjson import ConfigError

log = logging.getLogger("fleetwire.server")

RESTART_FIRST_SECONDS = 0.5
RESTART_MAX_SECONDS = 30.0
STABLE_SECONDS = 60.0
"""A worker that served this long before dying starts the restart delay from the beginning."""
STOP_TIMEOUT_SECONDS = 25.0
"""Workers still running this long after SIGTERM are killed (a pod's grace period is 30 s)."""
START_TIMEOUT_SECONDS = 60.0
SNAPSHOT_SECONDS = 5.0
"""How often the counters of each worker are fetched, so a worker's death loses at most this much."""
COLLECT_TIMEOUT_SECONDS = 2.0


def restart_delay(deaths_in_a_row: int) -> float:
    """Seconds before restarting a worker that died `deaths_in_a_row` times without serving long."""
    return min(RESTART_MAX_SECONDS, RESTART_FIRST_SECONDS * 2 ** max(0, deaths_in_a_row - 1))


def preflight(config: ServerConfig, workers: int) -> None:
    """Raise the `ConfigError` a worker would meet at start, before any worker starts."""
    problem = refusal(config, workers)
    if problem is not None:
        raise problem
    tls_context(config)  # certificate, key and client CAs readable and matching


class WorkerHandle:
    """One running worker process and its end of the control pipe."""

    def __init__(self, index: int, process: BaseProcess, control: Connection) -> None:
        self.index = index
        self.process = process
        self.control = control
        self.started_at = time.monotonic()
        self.ready: Ready | None = None
        self.last: list[Metric] = []  # its families, as last collected
        self._request = 0

    def collect(self, timeout: float = COLLECT_TIMEOUT_SECONDS) -> list[Metric]:
        """The worker's metric families now (the last ones if it does not answer in time)."""
        self._request += 1
        request = self._request
        deadline = time.monotonic() + timeout
        try:
            self.control.send(request)
            while (left := deadline - time.monotonic()) > 0 and self.control.poll(left):
                reply = self.control.recv()
                if isinstance(reply, tuple) and reply[0] == request:  # late answers to earlier requests are dropped
                    self.last = reply[1]
                    break
        except (EOFError, OSError):
            pass
        return self.last


class Supervisor:
    """Runs `workers` worker processes until SIGTERM/SIGINT; `run()` returns the exit status."""

    def __init__(self, config: ServerConfig, workers: int, *, log_level: str = "info", json_logs: bool = False,
                 stop_timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        self.config = config
        self.workers = workers
        self.stop_timeout = stop_timeout
        self.restarts = 0
        self._log = (log_level, json_logs)
        self._context = multiprocessing.get_context("spawn")
        self._handles: dict[int, WorkerHandle] = {}
        self._lock = threading.Lock()  # the handles and the metrics pipes: the scrape thread uses both
        self._retained = Retained()
        self._deaths = [0] * workers
        self._restart_at: dict[int, float] = {}
        self._stopping = False

    # -- the main loop --------------------------------------------------------------------

    def run(self) -> int:
        wake_read, wake_write = socket.socketpair()
        wake_read.setblocking(False)
        wake_write.setblocking(False)
        previous_wakeup = signal.set_wakeup_fd(wake_write.fileno())
        previous = {sig: signal.signal(sig, self._stop_requested) for sig in (signal.SIGTERM, signal.SIGINT)}
        http = None
        # Spawned workers start as `python -c`, which puts the working directory first on
        # sys.path: in a checkout, its operator/ folder would shadow the standard library's.
        os.environ.setdefault("PYTHONSAFEPATH", "1")
        try:
            try:
                http = self._serve_metrics()  # first: a port it cannot take stops the server before any worker
            except OSError as exc:
                log.error("cannot serve metrics on port %s: %s", self.config.monitoring.prometheus_metrics_port, exc)
                return 1
            failed = self._start_all(wake_read)
            if failed is not None:
                return failed
            cfg = self.config
            log.info("listening for vehicles on %s:%d with %d workers (status %s, metrics %s)", cfg.host,
                     cfg.port, self.workers, cfg.status_port, cfg.monitoring.prometheus_metrics_port)
            self._watch(wake_read)
            log.info("shutting down %d workers", len(self._handles))
            return self._stop_all()
        finally:
            if http is not None:
                http.shutdown()
                http.server_close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(previous_wakeup)
            for sock in (wake_read, wake_write):
                sock.close()

    def _stop_requested(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def _spawn(self, index: int) -> WorkerHandle:
        config = worker_config(self.config, index, self.workers)
        mine, theirs = self._context.Pipe()
        process = self._context.Process(
            target=run_worker, args=(WorkerSpec(index, config, *self._log), theirs), name=f"fleetwire-worker-{index}")
        process.start()
        theirs.close()
        handle = WorkerHandle(index, process, mine)
        with self._lock:
            self._handles[index] = handle
        return handle

    def _start_all(self, wake: socket.socket) -> int | None:
        """Start every worker and wait until each listens; an exit status if the server cannot start."""
        for index in range(self.workers):
            self._spawn(index)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while pending := [h for h in self._handles.values() if h.ready is None]:
            left = deadline - time.monotonic()
            if left <= 0:
                log.error("%d workers did not start listening within %.0f s", len(pending), START_TIMEOUT_SECONDS)
                self._stop_all()
                return 1
            wait([wake, *(h.control for h in pending), *(h.process.sentinel for h in pending)], left)
            _drain(wake)
            if self._stopping:
                return self._stop_all()
            for handle in pending:
                message = self._message(handle)
                if isinstance(message, Failed) or (message is None and not handle.process.is_alive()):
                    self._stop_all()
                    return self._failed_start(handle, message)

    def _failed_start(self, handle: WorkerHandle, message: Failed | None) -> int:
        if message is not None and message.config_key is not None:
            raise ConfigError(message.config_key, message.message)
        log.error("worker %d could not start: %s", handle.index,
                  message.message if message else f"it exited with {handle.process.exitcode}")
        return 1

    def _message(self, handle: WorkerHandle) -> Ready | Failed | None:
        """What a starting worker said, if anything; marks it ready when it listens."""
        try:
            if not handle.control.poll():
                return None
            message = handle.control.recv()
        except (EOFError, OSError):
            return None
        if isinstance(message, Ready):
            with self._lock:
                handle.ready = message
        return message if isinstance(message, (Ready, Failed)) else None

    def _watch(self, wake: socket.socket) -> None:
        """Until a stop is requested: restart workers that die, keep their counters fresh."""
        next_snapshot = time.monotonic() + SNAPSHOT_SECONDS
        while not self._stopping:
            handles = list(self._handles.values())
            due = min([next_snapshot, *self._restart_at.values()])
            wait([wake, *(h.process.sentinel for h in handles), *(h.control for h in handles if h.ready is None)],
                 max(0.0, due - time.monotonic()))
            _drain(wake)
            if self._stopping:
                return
            for handle in handles:
                if handle.ready is None:
                    message = self._message(handle)
                    if isinstance(message, Ready):
                        log.info("worker %d restarted (pid %d)", handle.index, message.pid)
                    elif isinstance(message, Failed):
                        log.error("worker %d could not start again: %s", handle.index, message.message)
                if not handle.process.is_alive():
                    self._retire(handle)
            now = time.monotonic()
            for index, at in list(self._restart_at.items()):
                if at <= now:
                    del self._restart_at[index]
                    self.restarts += 1
                    self._spawn(index)
            if now >= next_snapshot:
                with self._lock:
                    for handle in self._handles.values():
                        if handle.ready is not None:
                            handle.collect()
                next_snapshot = now + SNAPSHOT_SECONDS

    def _retire(self, handle: WorkerHandle) -> None:
        """A worker died: keep what it counted, schedule its replacement."""
        handle.process.join(0)
        with self._lock:
            self._retained.keep(handle.last)
            del self._handles[handle.index]
        handle.control.close()
        served = time.monotonic() - handle.started_at
        deaths = 1 if served >= STABLE_SECONDS else self._deaths[handle.index] + 1
        self._deaths[handle.index] = deaths
        delay = restart_delay(deaths)
        self._restart_at[handle.index] = time.monotonic() + delay
        log.error("worker %d (pid %s) exited with %s after %.1f s; restarting it in %.1f s",
                  handle.index, handle.process.pid, handle.process.exitcode, served, delay)

    def _stop_all(self) -> int:
        """SIGTERM to every worker, then wait for them (at most `stop_timeout`): 0 if all exited cleanly."""
        self._restart_at.clear()
        handles = list(self._handles.values())
        for handle in handles:
            if handle.process.is_alive():
                handle.process.terminate()
        deadline = time.monotonic() + self.stop_timeout
        for handle in handles:
            handle.process.join(max(0.0, deadline - time.monotonic()))
        clean = True
        for handle in handles:
            if handle.process.is_alive():
                log.error("worker %d still running %.0f s after SIGTERM: killed", handle.index, self.stop_timeout)
                handle.process.kill()
                handle.process.join()
                clean = False
            elif handle.process.exitcode != 0:
                log.error("worker %d exited with %s", handle.index, handle.process.exitcode)
                clean = False
            handle.control.close()
        with self._lock:
            self._handles.clear()
        return 0 if clean else 1

    # -- metrics -------------------------------------------------------------------------

    def _serve_metrics(self) -> object | None:
        mon = self.config.monitoring
        if mon.prometheus_metrics_port is None:
            return None
        registry = CollectorRegistry()
        registry.register(WorkersCollector(self))
        http, _thread = start_http_server(mon.prometheus_metrics_port, mon.prometheus_metrics_host or "0.0.0.0",
                                          registry)
        return http

    def views(self) -> tuple[list[tuple[str, list[Metric]]], list[Metric], dict[str, int]]:
        """Each ready worker's families now, what retired workers counted, and the workers' pids."""
        with self._lock:
            ready = sorted((h for h in self._handles.values() if h.ready is not None), key=lambda h: h.index)
            live = [(str(h.index), h.collect()) for h in ready]
            return live, self._retained.metrics(), {str(h.index): h.ready.pid for h in ready if h.ready}


class WorkersCollector(Collector):
    """The supervisor's one endpoint: the workers' families summed, and how they share the load."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        live, retained, pids = self._supervisor.views()
        yield from view([*(families for _, families in live), retained])
        pid = GaugeMetricFamily("fleetwire_worker_pid", "The process id of each worker", labels=["worker"])
        for worker, number in pids.items():
            pid.add_metric([worker], number)
        yield pid
        yield per_worker("fleetwire_worker_connections_active", "Vehicle connections open, by worker process",
                         "fleetwire_connections_active", live)
        yield per_worker("fleetwire_worker_acks", "Acks sent to vehicles, by worker process (restarts at 0 "
                         "with its worker)", "fleetwire_acks", live, kind="counter")
        yield GaugeMetricFamily("fleetwire_workers", "Worker processes serving", value=len(live))
        yield CounterMetricFamily("fleetwire_worker_restarts", "Workers restarted after dying",
                                  value=self._supervisor.restarts)


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(512):
            pass
    except BlockingIOError:
        pass
