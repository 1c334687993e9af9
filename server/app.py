"""The server process: wires config, TLS, dispatch queues, listeners and side ports.

`TelemetryServer` is usable in-process (tests, the demo) and by `fleetwire serve`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from picows import ws_create_server
from prometheus_client import start_http_server

from fleetwire.server.config import ConfigError, ServerConfig
from fleetwire.server.dispatch import Dispatcher
from fleetwire.server.dispatch_queue import DispatchQueue
from fleetwire.server.dispatchers.registry import build_queues
from fleetwire.server.drain import DrainPlan, DrainReason, acks_settled
from fleetwire.server.environment import ServerEnvironment, read_environment
from fleetwire.server.metrics import QueueMetrics, ServerMetrics
from fleetwire.server.session import RateLimit, Route, Router
from fleetwire.server.tls import CertificateReloader, server_context
from fleetwire.server.transport import (
    MAX_FRAME_BYTES,
    HandshakeNoise,
    ServerState,
    handshake_exception_handler,
    listener_factory,
    unwatch_handshakes,
    watch_handshakes,
)

log = logging.getLogger("fleetwire.server")
# picows logs every connect and disconnect at INFO: at fleet scale that is the busiest
# log line of the server, and the server already counts connections in its metrics.
logging.getLogger("picows").setLevel(logging.WARNING)

ExceptionHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]

# Small on purpose: idle vehicles dominate, and picows grows the buffer when a big frame arrives.
READ_BUFFER_BYTES = 2048
# A client that has not finished its TLS (or then its WebSocket) handshake by then is dropped.
# As long as nginx's default: in a reconnect storm a handshake waits behind thousands of
# others, and one dropped after its costly first half is work done twice (bench/storm.py:
# with 10 s, 4,566 of 10,000 vehicles timed out and came back).
HANDSHAKE_TIMEOUT_SECONDS = 60.0
READY_PATH = b"/readyz"
"""Readiness on the status port: 503 while draining. Every other path is liveness."""


def build_router(config: ServerConfig, queues: Mapping[str, DispatchQueue]) -> Router:
    """Record type → the queues of its dispatchers and the one whose confirmation gates acks."""
    routes = {}
    for record_type, names in config.records.items():
        reliable = config.reliable_ack_sources.get(record_type)
        routes[record_type] = Route(
            queues=tuple(queues[name] for name in names),
            confirm=queues[reliable] if reliable else None,
        )
    return Router(routes)


def tls_context(config: ServerConfig) -> ssl.SSLContext:
    """The vehicle port's mutual-TLS context; a `ConfigError` names what is wrong."""
    tls = config.tls
    if tls.ca_file is None:
        raise ConfigError(
            "tls.ca_file",
            "required: fleetwire ships no copy of the vehicles' CAs; name a PEM file holding them "
            "(the reference server's repository publishes config/files/prod_ca.crt)",
        )
    return server_context(tls.server_cert, tls.server_key, tls.ca_file)


@dataclass
class Ports:
    vehicles: int
    status: int | None
    metrics: int | None


class TelemetryServer:
    """The ingest server: `await start()`, then `await stop()` (or `serve_forever()`)."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        dispatchers: dict[str, Dispatcher] | None = None,
        metrics: ServerMetrics | None = None,
        environment: ServerEnvironment | None = None,
        reuse_port: bool = False,
    ) -> None:
        self.config = config
        # True in the worker processes of `fleetwire serve --workers N`: they share the ports.
        self.reuse_port = reuse_port
        # None: read the process's at start (`environment.read_environment`).
        self.environment = environment
        self.metrics = metrics or ServerMetrics()
        self.queues = build_queues(config, dispatchers, observer=QueueMetrics(self.metrics))
        self.ssl_context: ssl.SSLContext | None = None
        self.ports: Ports | None = None
        self._vehicle_servers: list[asyncio.AbstractServer] = []
        self._servers: list[asyncio.AbstractServer] = []  # the side ports: closed last
        self._state: ServerState | None = None
        self._env: ServerEnvironment | None = None
        self.ready = False
        """What `/readyz` on the status port reports: False from the start of a drain."""
        self._stopping: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._metrics_http: object | None = None
        self._stopped = asyncio.Event()
        self._watched_port: int | None = None
        # The loop, its exception handler before ours, and ours: restored on stop.
        self._loop_handler: (
            tuple[asyncio.AbstractEventLoop, ExceptionHandler | None, ExceptionHandler] | None
        ) = None

    async def start(self) -> Ports:
        cfg = self.config
        tls = cfg.tls
        env = self.environment if self.environment is not None else read_environment()
        self._env = env
        self.ssl_context = tls_context(cfg)
        for queue in self.queues.values():
            await queue.start()
        rate = cfg.rate_limit
        state = ServerState(
            router=build_router(cfg, self.queues),
            metrics=self.metrics,
            vin_policy=cfg.vins,
            rate_limit=RateLimit(rate.message_limit, rate.message_interval_time) if rate.enabled else None,
        )
        self._state = state
        server = await ws_create_server(
            listener_factory(state),
            cfg.host,
            cfg.port,
            ssl=self.ssl_context,
            max_frame_size=MAX_FRAME_BYTES,
            read_buffer_init_size=READ_BUFFER_BYTES,
            websocket_handshake_timeout=HANDSHAKE_TIMEOUT_SECONDS,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT_SECONDS,
            backlog=4096,
            reuse_port=self.reuse_port or None,
            # A logger-like object that is not a `logging.Logger`: given a Logger, picows
            # makes each connection a child Logger of its own (kept while it is open).
            logger_name=logging.LoggerAdapter(logging.getLogger("picows.server")),
        )
        self._vehicle_servers.append(server)
        vehicles_port = server.sockets[0].getsockname()[1]
        self._watch_handshakes(vehicles_port, env.suppress_handshake_logging, env.handshake_log_interval)
        status_port = None
        if cfg.status_port is not None:
            status = await asyncio.start_server(
                self._status_handler, cfg.host, cfg.status_port, reuse_port=self.reuse_port or None
            )
            self._servers.append(status)
            status_port = status.sockets[0].getsockname()[1]
        metrics_port = None
        mon = cfg.monitoring
        if mon.prometheus_metrics_port is not None:
            http, _thread = start_http_server(
                mon.prometheus_metrics_port, mon.prometheus_metrics_host or "0.0.0.0", self.metrics.registry
            )
            self._metrics_http = http
            metrics_port = http.server_port
        if tls.reload_interval_seconds > 0:
            self._tasks.append(asyncio.create_task(self._watch_certificate(), name="certificate-reload"))
        self._tasks.append(asyncio.create_task(self._sample_queues(), name="queue-depth"))
        self.ports = Ports(vehicles_port, status_port, metrics_port)
        self.ready = True
        log.info(
            "listening for vehicles on %s:%d (status %s, metrics %s)",
            cfg.host, vehicles_port, status_port, metrics_port,
        )
        return self.ports

    def _watch_handshakes(self, port: int, quiet: bool, interval: float) -> None:
        """Count failed handshakes instead of letting each print a traceback."""
        noise = HandshakeNoise(self.metrics.tls_handshake_failures, quiet=quiet, interval=interval)
        if watch_handshakes(port, noise):
            self._watched_port = port
        loop = asyncio.get_running_loop()
        previous = loop.get_exception_handler()
        handler = handshake_exception_handler(previous)
        loop.set_exception_handler(handler)
        self._loop_handler = (loop, previous, handler)

    async def _watch_certificate(self) -> None:
        assert self.ssl_context is not None
        tls = self.config.tls
        reloader = CertificateReloader(self.ssl_context, tls.server_cert, tls.server_key)
        while True:
            await asyncio.sleep(tls.reload_interval_seconds)
            outcome = reloader.check()
            if outcome is None:
                continue
            result, detail = outcome
            self.metrics.certificate_reloads.labels(result).inc()
            if result == "reloaded":
                log.info("server certificate reloaded (%s); connected vehicles keep streaming", detail)
            else:
                log.error("server certificate not reloaded: %s", detail)

    async def _sample_queues(self) -> None:
        gauges = {name: self.metrics.queue_depth.labels(name) for name in self.queues}
        while True:
            for name, queue in self.queues.items():
                gauges[name].set(queue.qsize)
            await asyncio.sleep(1.0)

    async def stop(self) -> None:
        """Drain (see `server.drain`), within the budget: stop accepting, stop reading, send
        the acks owed, close each vehicle with 1001, drain the queues. Calls after the first
        wait for the same drain."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._drain())
        await asyncio.shield(self._stopping)

    async def _drain(self) -> None:
        env = self._env or ServerEnvironment()
        plan = DrainPlan(time.monotonic(), env.drain_seconds, self.config.dispatch.close_timeout_seconds)
        self.ready = False
        for task in self._tasks:
            task.cancel()
        for server in self._vehicle_servers:
            server.close()  # new connections are refused from here on
        state = self._state
        if state is not None:
            state.draining = True
            vehicles = list(state.listeners)
            for listener in vehicles:
                listener.stop_reading()
            reason = await self._acks_sent(state, plan)
            for listener in list(state.listeners):
                listener.going_away()
            await _until(lambda: not state.listeners, plan.close_wait(time.monotonic()))
            log.info("drain: %d vehicle(s) closed with 1001 (going away), %s: %s",
                     len(vehicles), reason.code, reason.message)
        now = time.monotonic()
        wait = plan.queue_wait(now)
        try:
            await asyncio.wait_for(asyncio.gather(*(queue.close(wait) for queue in self.queues.values())),
                                   max(plan.remaining(now), 0.1))
        except TimeoutError:
            log.warning("drain: a dispatcher did not close within the drain budget")
        for server in self._servers:
            server.close()
        if self._watched_port is not None:
            unwatch_handshakes(self._watched_port)
            self._watched_port = None
        if self._loop_handler is not None:
            loop, previous, handler = self._loop_handler
            if loop.get_exception_handler() is handler:  # unless someone installed another since
                loop.set_exception_handler(previous)
            self._loop_handler = None
        if self._metrics_http is not None:
            self._metrics_http.shutdown()  # type: ignore[attr-defined]
            self._metrics_http.server_close()  # type: ignore[attr-defined]
        self._stopped.set()

    @staticmethod
    async def _acks_sent(state: ServerState, plan: DrainPlan) -> DrainReason:
        """Wait until no ack is owed or their share of the budget is spent; the reason why."""
        while True:
            reason = acks_settled(plan, time.monotonic(), state.owed_acks())
            if reason is not None:
                return reason
            await asyncio.sleep(0.01)

    async def serve_forever(self) -> None:
        """Run until SIGINT/SIGTERM, then drain and stop."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        await stop.wait()
        log.info("shutting down: draining within %.0f s", (self._env or ServerEnvironment()).drain_seconds)
        await self.stop()

    async def _status_handler(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Plain HTTP on `status_port`: `/readyz` answers 200 `ready`, or 503 `draining` once
        a drain began (a load balancer stops sending vehicles); any other path is liveness,
        200 `ok` while the process runs."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            writer.write(_status_reply(_request_path(head), self.ready))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()


async def _until(done: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


def _request_path(head: bytes) -> bytes:
    """The path of an HTTP request head, without its query."""
    parts = head.split(b"\r\n", 1)[0].split(b" ")
    return parts[1].split(b"?", 1)[0] if len(parts) >= 2 else b""


def _status_reply(path: bytes, ready: bool) -> bytes:
    if path == READY_PATH:
        status, body = (b"200 OK", b"ready") if ready else (b"503 Service Unavailable", b"draining")
    else:
        status, body = b"200 OK", b"ok"
    return (b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
