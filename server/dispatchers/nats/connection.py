"""The nats backend's connection: made in the background, kept up with back-off.

`NatsConnection` is the base of `NatsDispatcher`: the dispatcher's publishing, acks and
streams need the client; this holds how it is obtained, lost and made again. A server
that is down at start is retried with back-off; once connected the client reconnects by
itself (`_next_server`); when it gives up, a new client is made.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from fleetwire.server.dispatch import DispatchError
from fleetwire.server.dispatchers.nats.settings import NatsSettings, redact
from nats.aio.client import Client

if TYPE_CHECKING:
    from nats.aio.msg import Msg

__all__ = ["NatsConnection"]

log = logging.getLogger("fleetwire.dispatch.nats")


class NatsConnection(ABC):
    """The client, and the state of its connection; the dispatcher sets these in `__init__`."""

    settings: NatsSettings
    last_error: str | None
    connects: int
    _tls: ssl.SSLContext | None
    _where: str
    _connect_timeout: float
    _publish_timeout: float
    _nc: Client | None
    _inbox: str
    _connected: asyncio.Event
    _lost: asyncio.Future[None] | None
    _stop: asyncio.Event

    # -- the dispatcher's side: the ack subscription and the batches waiting on it -------

    @abstractmethod
    async def _ack_messages(self, msg: Msg) -> None:
        """Implemented by the dispatcher (`NatsDispatcher`), which owns the batches."""

    @abstractmethod
    def _shortcut_acks(self, nc: Client, sid: int) -> None:
        """Implemented by the dispatcher (`NatsDispatcher`), which owns the batches."""

    @abstractmethod
    def _fail_all(self, reason: str) -> None:
        """Implemented by the dispatcher (`NatsDispatcher`), which owns the batches."""

    # -- the connection ----------------------------------------------------------------

    async def _connection(self) -> Client:
        nc = self._nc
        if nc is not None and nc.is_connected:
            return nc
        if self._stop.is_set():
            raise DispatchError("the NATS dispatcher is closed", retryable=False)
        try:
            await asyncio.wait_for(self._connected.wait(), self._publish_timeout)
        except TimeoutError:
            raise DispatchError(f"NATS server {self._where} unavailable: {self.last_error or 'not connected'}") from None
        nc = self._nc
        if nc is None or not nc.is_connected:
            raise DispatchError(f"NATS server {self._where}: connection lost")
        return nc

    def _options(self, attempt: _Attempt) -> dict[str, Any]:
        settings = self.settings
        options: dict[str, Any] = {
            "servers": list(settings.servers),
            "name": settings.name or None,
            "connect_timeout": self._connect_timeout,
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            # Paces only the client's own retries of a first connection, which `_maintain`
            # replaces with its back-off; later reconnects follow `_next_server`.
            "reconnect_time_wait": 3600,
            "reconnect_to_server_handler": self._next_server,
            "ping_interval": 20,
            "max_outstanding_pings": 2,
            "error_cb": attempt.on_error,
            "disconnected_cb": attempt.on_disconnected,
            "reconnected_cb": attempt.on_reconnected,
            "closed_cb": attempt.on_closed,
            "pending_size": 8 * 1024 * 1024,
        }
        if settings.user:
            options.update(user=settings.user, password=settings.password)
        if settings.token:
            options["token"] = settings.token
        if settings.creds_file is not None:
            options["user_credentials"] = str(settings.creds_file)
        if self._tls is not None:
            options["tls"] = self._tls
        return options

    def _next_server(self, servers: list[Any], info: dict[str, Any]) -> tuple[Any, float]:
        """The client's reconnect policy: the least-tried server, after an exponential back-off."""
        server = min(servers, key=lambda s: s.reconnects)
        if not server.reconnects:
            return server, 0.0
        initial, most = self.settings.reconnect_initial_ms / 1000, self.settings.reconnect_max_ms / 1000
        delay = min(most, initial * 2 ** min(server.reconnects - 1, 30))
        return server, delay * random.uniform(0.75, 1.0)

    async def _maintain(self) -> None:
        """Make the first connection (the client keeps it up from then on); make a new
        one if the client gives up (closed by the server, e.g. an authorization change)."""
        initial = self.settings.reconnect_initial_ms / 1000
        most = self.settings.reconnect_max_ms / 1000
        delay = initial
        failures = 0
        while not self._stop.is_set():
            attempt = _Attempt(self)
            nc = await self._connect(attempt)
            if nc is None:
                failures += 1
                if failures == 1:
                    log.warning("nats: cannot connect to %s (retrying with back-off up to %.1f s): %s",
                                self._where, most, self.last_error)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay * random.uniform(0.75, 1.0))
                delay = min(most, delay * 2)
                continue
            failures = 0
            delay = initial
            url = nc.connected_url.geturl() if nc.connected_url is not None else self._where
            log.info("nats: connected to %s", redact(url))
            try:
                await attempt.closed
            finally:
                attempt.current = False
                self._connection_down("the connection was closed")
                self._nc = None

    async def _connect(self, attempt: _Attempt) -> Client | None:
        """One try at every server; the connected client with its ack subscription, or None."""
        nc = Client()
        connecting = asyncio.ensure_future(nc.connect(**self._options(attempt)))
        tried = asyncio.ensure_future(attempt.tried_all.wait())
        try:
            await asyncio.wait((connecting, tried), timeout=self._connect_timeout * len(self.settings.servers) + 1,
                               return_when=asyncio.FIRST_COMPLETED)
            if connecting.done() and connecting.exception() is None:
                self._inbox = nc.new_inbox()
                sub = await nc.subscribe(f"{self._inbox}.*", cb=self._ack_messages,
                                         pending_msgs_limit=-1, pending_bytes_limit=-1)
                sid = getattr(sub, "_id", None)
                if isinstance(sid, int):
                    self._shortcut_acks(nc, sid)
                attempt.current = True
                self._nc = nc
                self._connection_up()
                return nc
            if connecting.done():
                self.last_error = _describe(connecting.exception())  # type: ignore[arg-type]
            elif not attempt.errors:
                self.last_error = "connection timed out"
        except asyncio.CancelledError:
            connecting.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 1.0)
            raise
        except Exception as exc:  # noqa: BLE001 - the connection dropped before the subscription was made
            self.last_error = _describe(exc)
        finally:
            tried.cancel()
        connecting.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await connecting
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), 1.0)
        return None

    def _connection_up(self) -> None:
        self.connects += 1
        self.last_error = None
        self._lost = asyncio.get_running_loop().create_future()
        self._connected.set()

    def _connection_down(self, reason: str) -> None:
        self._connected.clear()
        lost = self._lost
        if lost is not None and not lost.done():
            lost.set_result(None)
        self._fail_all(f"NATS server {self._where}: {reason}")

    


class _Attempt:
    """The client callbacks of one connection: they act only while it is the current one."""

    def __init__(self, dispatcher: NatsConnection) -> None:
        self.dispatcher = dispatcher
        self.current = False
        self.errors = 0
        self.tried_all = asyncio.Event()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def on_error(self, exc: Exception) -> None:
        d = self.dispatcher
        d.last_error = _describe(exc)
        self.errors += 1
        if not self.current and self.errors >= len(d.settings.servers):
            self.tried_all.set()
        log.debug("nats: %s", d.last_error)

    async def on_disconnected(self) -> None:
        d = self.dispatcher
        if self.current and not d._stop.is_set():
            log.warning("nats: disconnected from %s; reconnecting", d._where)
            d._connection_down("connection lost")

    async def on_reconnected(self) -> None:
        if self.current:
            log.info("nats: reconnected to %s", self.dispatcher._where)
            self.dispatcher._connection_up()

    async def on_closed(self) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text}" if text and text != name else name
