"""One worker process of `fleetwire serve --workers N`: a whole `TelemetryServer` of its own.

Each worker has its own event loop, TLS context (so each reloads the certificate),
dispatch queues and backend connections, and its own listening sockets on the shared
ports (SO_REUSEPORT: the kernel spreads new connections over the workers). A vehicle's
socket lives and dies in one worker, so its reliable acks return through the process
that holds it; nothing of a connection is shared.

The supervisor talks to a worker over one pipe: the worker says once that it listens
(or why it could not start), then answers requests for its metric families. When the
supervisor goes away the pipe closes and the worker stops as on SIGTERM.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection

from fleetwire.server.app import Ports, TelemetryServer
from fleetwire.server.config import ServerConfig
from fleetwire.server.log_setup import setup_logging
from fleetwire.server.runtime import tune_collector
from fleetwire.strictjson import ConfigError

log = logging.getLogger("fleetwire.server")

READY = "ready"
FAILED = "failed"


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What a worker is started with (pickled into the new process)."""

    index: int
    config: ServerConfig
    log_level: str = "info"
    json_logs: bool = False


@dataclass(frozen=True, slots=True)
class Ready:
    """A worker listens: its pid and the ports it serves."""

    index: int
    pid: int
    vehicles: int
    status: int | None


@dataclass(frozen=True, slots=True)
class Failed:
    """A worker could not start; a config error is reported as such (exit status 2)."""

    index: int
    message: str
    config_key: str | None = None


class WorkerServer(TelemetryServer):
    """A `TelemetryServer` on shared ports that tells its supervisor when it listens."""

    def __init__(self, spec: WorkerSpec, control: Connection) -> None:
        super().__init__(spec.config, reuse_port=True)
        self._spec = spec
        self._control = control

    async def start(self) -> Ports:
        ports = await super().start()
        self._control.send(Ready(self._spec.index, os.getpid(), ports.vehicles, ports.status))
        threading.Thread(target=answer_metrics, args=(self._control, self), name="metrics", daemon=True).start()
        return ports


def answer_metrics(control: Connection, server: TelemetryServer) -> None:
    """Serve `(request id) -> (request id, families)` until the supervisor's end closes."""
    registry = server.metrics.registry
    while True:
        try:
            request = control.recv()
            control.send((request, list(registry.collect())))
        except (EOFError, OSError):
            log.warning("the supervisor is gone: stopping")
            os.kill(os.getpid(), signal.SIGTERM)  # serve_forever's handler stops the server
            return


def run_worker(spec: WorkerSpec, control: Connection) -> None:
    """The worker process's body (a `multiprocessing` target)."""
    import uvloop

    # A terminal's Ctrl-C reaches the supervisor only; it forwards one SIGTERM to each worker.
    os.setpgid(0, 0)
    setup_logging(spec.log_level, spec.json_logs, worker=spec.index)
    tune_collector()
    try:
        uvloop.run(WorkerServer(spec, control).serve_forever())
    except ConfigError as exc:
        control.send(Failed(spec.index, exc.message, exc.key))
        raise SystemExit(2) from None
    except OSError as exc:
        binding = exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES)  # the message names the address
        control.send(Failed(spec.index, f"cannot listen: {exc}" if binding else str(exc)))
        raise SystemExit(1) from None
