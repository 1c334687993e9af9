"""A bound on the TLS handshakes in progress: in a reconnect storm, first come, first served.

Without it, the server accepts every connection the kernel has queued and starts all their
handshakes at once: each then waits behind thousands of others, all of them finish
together at the end, and every pending handshake holds OpenSSL's buffers meanwhile (a
10,000-vehicle storm after a SIGKILL peaked at 540 MB). With it, accepting pauses while
`limit` handshakes are in progress and resumes once half of them are done; the kernel's
accept queue holds the rest, which costs the server nothing.

A handshake that has made no progress for `STALL_SECONDS` stops counting: a connection
that sends nothing costs no CPU, and without this a few hundred of them (a scanner, an
attacker) would keep every vehicle out until the handshake timeout.

`HandshakeGate` is the decision, free of I/O; `install` teaches aiofastnet's server to ask it.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

__all__ = ["MAX_HANDSHAKES_IN_PROGRESS", "STALL_SECONDS", "HandshakeGate", "gate", "gate_of", "handshake_ended", "install", "ungate"]

log = logging.getLogger("fleetwire.server")

MAX_HANDSHAKES_IN_PROGRESS = 256
"""Per listening port and process: about a quarter of a second of one core's handshakes."""
STALL_SECONDS = 2.0
"""A handshake in progress for longer waits on its peer, not on the CPU: it stops counting.
A vehicle on a slow cellular link needs a few round trips; OpenSSL's work takes a millisecond."""


class HandshakeGate:
    """The handshakes in progress on one listening port (by socket fd, with when each
    started), and whether accepting is paused."""

    def __init__(self, limit: int = MAX_HANDSHAKES_IN_PROGRESS, stall_seconds: float = STALL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.stall_seconds = stall_seconds
        self._clock = clock
        self.in_progress: dict[int, float] = {}  # in the order they started
        self.resume: Callable[[], None] | None = None  # set while accepting is paused
        self.failed: Callable[[BaseException], None] | None = None
        """Told of a handshake that failed as its connection was accepted (the ClientHello,
        and perhaps the peer's close, were already there): no transport exists to report it."""

    def _forget_stalled(self) -> None:
        oldest = self._clock() - self.stall_seconds
        while self.in_progress:
            fd, started = next(iter(self.in_progress.items()))
            if started > oldest:
                return
            del self.in_progress[fd]

    def room(self) -> int:
        """How many more connections may be accepted now."""
        self._forget_stalled()
        return max(0, self.limit - len(self.in_progress))

    def started(self, fd: int) -> None:
        self.in_progress[fd] = self._clock()

    def ended(self, fd: int) -> None:
        """The handshake on `fd` finished or failed (a no-op for any other fd)."""
        if self.in_progress.pop(fd, None) is not None:
            self.check()

    def check(self) -> float | None:
        """Resume accepting if paused and at most half the bound is in progress (stalled
        handshakes not counted): on every end, and `stall_seconds` after a pause. While
        still paused, the seconds until the oldest handshake stalls: ask again then (a
        loop's timer may fire a little before the clock says the time has come)."""
        if self.resume is None:
            return None
        self._forget_stalled()
        if len(self.in_progress) <= self.limit // 2:
            resume, self.resume = self.resume, None
            resume()
            return None
        oldest = next(iter(self.in_progress.values()))
        return max(0.001, oldest + self.stall_seconds - self._clock())


# Local port of a listening socket -> its gate (accepted sockets share the port).
_GATES: dict[int, HandshakeGate] = {}


def gate(port: int, limit: int | None = None, failed: Callable[[BaseException], None] | None = None) -> bool:
    """Bound the handshakes of the listener on `port` (by default to
    `MAX_HANDSHAKES_IN_PROGRESS`); False if this aiofastnet cannot."""
    if not install():
        return False
    found = _GATES[port] = HandshakeGate(limit or MAX_HANDSHAKES_IN_PROGRESS, STALL_SECONDS)
    found.failed = failed
    return True


def gate_of(port: int) -> HandshakeGate | None:
    return _GATES.get(port)


def ungate(port: int) -> None:
    _GATES.pop(port, None)


def handshake_ended(transport: Any) -> None:
    """Called by the server's TLS transports when their handshake ends, either way."""
    if not _GATES:
        return
    sockname = transport.get_extra_info("sockname")
    found = _GATES.get(sockname[1]) if isinstance(sockname, tuple) and len(sockname) >= 2 else None
    sock = transport.get_extra_info("socket")
    if found is not None and sock is not None:
        found.ended(sock.fileno())


@functools.cache
def install() -> bool:
    """Make aiofastnet's servers accept only what their port's gate has room for."""
    try:
        from aiofastnet import api_create_server, api_utils
    except ImportError:
        return False
    base = getattr(api_create_server, "Server", None)
    needed = ("_accept_connection", "_accept_connection2", "_start_serving_one_listener", "_attach")
    helpers = ("SSLTransport_Socket", "_should_fallback_to_asyncio", "_ssl_needs_fallback_engine")
    if (not isinstance(base, type) or not all(callable(getattr(base, name, None)) for name in needed)
            or not all(callable(getattr(api_utils, name, None)) for name in helpers)):
        log.warning("this aiofastnet version cannot bound handshakes in progress")
        return False

    class GatedServer(base):  # type: ignore[misc, valid-type]
        def _accept_connection(self, listening_sock: socket.socket) -> None:
            found = _GATES.get(listening_sock.getsockname()[1])
            if found is None:
                return super()._accept_connection(listening_sock)
            direct = self._can_accept_now()
            for _ in range(found.room()):
                try:
                    conn, _addr = listening_sock.accept()
                    conn.setblocking(False)
                except ConnectionAbortedError:
                    continue
                except (BlockingIOError, InterruptedError):
                    return None  # the kernel's queue is empty
                except OSError as exc:
                    if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        raise
                    return super()._accept_connection(listening_sock)  # aiofastnet backs off
                found.started(conn.fileno())
                if direct:
                    self._accept_now(conn, found)
                else:
                    asyncio.get_running_loop().create_task(self._gated_accept(conn, found))
            self._loop.remove_reader(listening_sock.fileno())
            found.resume = functools.partial(self._resume_accepting, listening_sock)
            # By then every handshake in progress now has ended or stalled: never paused for good.
            self._loop.call_later(found.stall_seconds, self._recheck, found)
            return None

        def _recheck(self, found: HandshakeGate) -> None:
            delay = found.check()
            if delay is not None:
                self._loop.call_later(delay, self._recheck, found)

        def _can_accept_now(self) -> bool:
            """Whether aiofastnet would build this server's transports without waiting: its
            own TLS transport over the socket (no asyncio fallback, no fallback engine)."""
            ctx = self._ssl_context
            return (isinstance(ctx, ssl.SSLContext) and not api_utils._should_fallback_to_asyncio(self._loop)
                    and not api_utils._ssl_needs_fallback_engine(ctx))

        def _accept_now(self, conn: socket.socket, found: HandshakeGate) -> None:
            """What `_accept_connection2` does for a server's TLS transport, without an asyncio
            task and a coroutine per connection: the transport starts its handshake at once."""
            fd = conn.fileno()
            try:
                transport = api_utils.SSLTransport_Socket(  # looked up now: transport.py subclasses it
                    self._loop, self._protocol_factory(), self._ssl_context, True,
                    self._ssl_handshake_timeout, self._ssl_shutdown_timeout,
                    self._ssl_incoming_bio_size, self._ssl_outgoing_bio_size,
                    conn, server=self,
                )
            except Exception as exc:  # the socket is closed and the server goes on, as in aiofastnet
                conn.close()
                found.ended(fd)
                if found.failed is not None:
                    found.failed(exc)
                if not isinstance(exc, OSError):  # a network error is noise, counted; anything else a bug
                    log.exception("setting up TLS on an accepted connection failed")
                return
            self._attach(transport)

        async def _gated_accept(self, conn: socket.socket, found: HandshakeGate) -> None:
            fd = conn.fileno()
            try:
                await self._accept_connection2(conn)
            finally:
                if conn.fileno() == -1:  # no transport took the socket
                    found.ended(fd)

        def _resume_accepting(self, listening_sock: socket.socket) -> None:
            if self._sockets is not None and listening_sock in self._sockets:
                self._start_serving_one_listener(listening_sock)

    api_create_server.Server = GatedServer
    return True
