"""The zmq backend: a bound publishing socket sending `[<namespace>_<record_type>, payload]`.

Settings (the reference's ``"zmq"`` section, plus two of this project; read in `settings.py` beside this module)::

    "zmq": {
      "addr": "tcp://*:5284",                    // bound; tcp://host:port, ipc://path or inproc://name
      "server_key_json_path": "",                // {"secret": "<z85>", "public": "<z85>"}: CURVE on
      "allowed_public_keys_json_path": "",       // ["<z85>", ...]: the client keys let in (ZAP)
      "verbose": false,                          // log the socket's connection events
      "send_hwm": 10000,                         // messages queued per subscriber before push-back
      "publish_timeout_ms": 5000                 // how long a full subscriber may push back
    }

Each record is one two-frame message: the topic `<namespace>_<record_type>` (what a
subscriber filters on) and the payload, the protobuf record or, with
`transmit_decoded_records`, its protobuf-JSON. No metadata: the reference sends none.

With a server key the socket is a CURVE server: a client must know the server's public
key, and with `allowed_public_keys_json_path` only the listed client keys pass the ZAP
handler. (With a server key and no list, any client that knows the server's public key
is let in: encryption without client authentication. The reference's handler would let
no one in, which no one can use.) The key files are checked when the configuration is
read; errors name the key and the file and never show a key.

Confirmation. ZMQ's PUB has none: a send the socket accepted is all it offers. The
socket here is an XPUB with `ZMQ_XPUB_NODROP`: a subscriber whose queue holds `send_hwm`
messages makes the send fail instead of silently dropping the message for that
subscriber, and `publish` waits (up to `publish_timeout_ms`, then fails the batch for the
queue to retry) — back-pressure rather than loss. `publish` returns once every record of
the batch was accepted, i.e. queued in this process for every subscriber of its topic
connected at that moment. That does not prove a subscriber read it: one that disconnects
loses what was queued for it, and a server crash loses every queue.

As a `reliable_ack_sources` entry zmq therefore confirms a record only when at least one
subscriber of its topic is connected (the XPUB socket hears the subscriptions): while no
one listens, publishing fails and vehicles' acks wait, as for a broker that is down. Not
a reliable source, it drops records no one subscribes to, as PUB does.

Cost: about 1 us of CPU per record on the event loop's thread (two non-blocking sends;
libzmq's I/O thread does the writing, at a lower priority: see `threads.py`).

One sender per socket: every send is made by the dispatcher's queue worker, on the event
loop's thread (the reference shares one socket between connections without a lock and
crashes under load, "double free or corruption").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import zmq
import zmq.asyncio
import zmq.backend
from fleetwire.server.dispatch import DispatchError
from fleetwire.server.records import Record
from fleetwire.server.dispatchers.zmq.settings import ZmqSettings, parse_settings
from fleetwire.server.dispatchers.zmq.threads import io_threads, lower_priority, thread_ids
from zmq.auth import CURVE_ALLOW_ANY
from zmq.auth.asyncio import AsyncioAuthenticator
from zmq.utils.monitor import parse_monitor_message

from fleetwire.strictjson import ConfigError

if TYPE_CHECKING:
    from fleetwire.server.config import ServerConfig

# The backend's names as the registry (`parse_settings`, `create`) and tests reach them.
__all__ = ["Subscriptions", "ZmqDispatcher", "ZmqSettings", "create", "parse_settings", "topic"]

log = logging.getLogger("fleetwire.dispatch.zmq")
_backend_send = zmq.backend.Socket.send

# -- topics (pure) -----------------------------------------------------------------


def topic(namespace: str, record_type: str) -> bytes:
    """The first frame, as the reference builds it: `<namespace>_<record_type>`."""
    return f"{namespace}_{record_type}".encode()


class Subscriptions:
    """The topic prefixes subscribers asked for, from the XPUB socket's subscription
    messages (``\\x01`` + prefix; ``\\x00`` + prefix when the last subscriber of it left)."""

    def __init__(self) -> None:
        self.prefixes: set[bytes] = set()
        self._wanted: dict[bytes, bool] = {}  # per topic, until the subscriptions change

    def update(self, message: bytes) -> tuple[bool, bytes] | None:
        """Apply one subscription message; (subscribed?, prefix), or None if it is none."""
        if not message or message[0] not in (0, 1):
            return None
        prefix = message[1:]
        self._wanted.clear()
        if message[0] == 1:
            self.prefixes.add(prefix)
            return True, prefix
        self.prefixes.discard(prefix)
        return False, prefix

    def wanted(self, topic: bytes) -> bool:
        """Whether some subscriber receives `topic`."""
        known = self._wanted.get(topic)
        if known is None:
            known = self._wanted[topic] = any(topic.startswith(prefix) for prefix in self.prefixes)
        return known


# -- the dispatcher ----------------------------------------------------------------


class _AllowedKeys:
    """The ZAP handler's CURVE check: a client's public key must be listed."""

    def __init__(self, keys: frozenset[bytes]) -> None:
        self.keys = keys

    def callback(self, domain: str, key: bytes) -> bool:
        allowed = key in self.keys
        if not allowed:
            log.warning("zmq: refused a CURVE client whose public key is not in allowed_public_keys_json_path")
        return allowed


class ZmqDispatcher:
    """Publishes records on one bound XPUB socket, from one task (the queue worker)."""

    name = "zmq"

    def __init__(self, settings: ZmqSettings, namespace: str, *, decoded: bool = False,
                 confirm_subscribers: bool = False) -> None:
        self.settings = settings
        self.namespace = namespace
        self._decoded = decoded
        self._confirm = confirm_subscribers
        self._timeout = settings.publish_timeout_ms / 1000
        self._context: zmq.Context[Any] | None = None
        self._socket: zmq.Socket[Any] | None = None
        self._auth: Any = None
        self._monitor_task: asyncio.Task[None] | None = None
        self._topics: dict[str, bytes] = {}
        self._next_bind = 0.0
        self._fd: int | None = None
        self.subscriptions = Subscriptions()
        # state, read by metrics and tests
        self.endpoint: str | None = None  # the bound address (with the port, if "*" was asked)
        self.messages_published = 0
        self.unsubscribed = 0  # records no subscriber wanted (dropped, as PUB does)
        self.pushed_back = 0  # sends refused by a full subscriber queue, then retried
        self.last_error: str | None = None

    async def start(self) -> None:
        """Bind the socket; a bind that fails (an address in use) is logged and retried
        at the next publish, not fatal."""
        before = thread_ids()
        self._context = zmq.Context()
        # libzmq starts its I/O threads with the context's first socket (a throwaway one
        # here); each names itself once running, which may be a moment later.
        self._context.socket(zmq.PUB).close(0)
        wanted = self._context.get(zmq.IO_THREADS)
        for _ in range(200):
            found = io_threads(before)
            if len(found) >= wanted:
                break
            await asyncio.sleep(0.001)
        lower_priority(found)
        settings = self.settings
        if settings.server_secret_key:
            self._auth = AsyncioAuthenticator(self._context, log=logging.getLogger("fleetwire.dispatch.zmq.zap"))
            self._auth.start()
            if settings.allowed_public_keys is not None:
                self._auth.configure_curve_callback("*", _AllowedKeys(settings.allowed_public_keys))
            else:
                self._auth.configure_curve("*", CURVE_ALLOW_ANY)
                log.warning("zmq: CURVE without allowed_public_keys_json_path: any client that knows the "
                            "server's public key may subscribe")
        self._try_bind()

    def _socket_for(self) -> zmq.Socket[Any]:
        assert self._context is not None
        sock = self._context.socket(zmq.XPUB)
        sock.setsockopt(zmq.XPUB_NODROP, 1)
        sock.setsockopt(zmq.SNDHWM, self.settings.send_hwm)
        sock.setsockopt(zmq.LINGER, 1000)
        if self.settings.server_secret_key:
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.CURVE_SECRETKEY, self.settings.server_secret_key)
            sock.setsockopt(zmq.ZAP_DOMAIN, b"*")
        return sock

    def _try_bind(self) -> bool:
        if self._socket is not None:
            return True
        now = time.monotonic()
        if now < self._next_bind:
            return False
        sock = self._socket_for()
        try:
            sock.bind(self.settings.addr)
        except zmq.ZMQError as exc:
            sock.close(0)
            self._next_bind = now + 1.0
            first = self.last_error is None
            self.last_error = f"cannot bind {self.settings.addr}: {exc.strerror}"
            if first:
                log.error("zmq: %s (retrying)", self.last_error)
            return False
        self._socket = sock
        # The socket's FD signals that it has commands to process (a subscriber arrived or
        # left): hear them as they come, on the loop, instead of at the next publish.
        self._fd = sock.getsockopt(zmq.FD)
        asyncio.get_running_loop().add_reader(self._fd, self._hear_subscriptions, sock)
        self._hear_subscriptions(sock)  # the FD signals edges: take what came before the reader
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.last_error = None
        log.info("zmq: publishing on %s%s", self.endpoint, " (CURVE)" if self.settings.server_secret_key else "")
        if self.settings.verbose:
            # Made now, not in the task: events before the monitor exists are not reported.
            monitor = zmq.asyncio.Socket.from_socket(sock.get_monitor_socket())
            self._monitor_task = asyncio.get_running_loop().create_task(self._monitor(monitor), name="zmq-monitor")
        return True

    async def close(self) -> None:
        sock, self._socket = self._socket, None
        task, self._monitor_task = self._monitor_task, None
        if sock is not None:
            if self._fd is not None:
                asyncio.get_running_loop().remove_reader(self._fd)
                self._fd = None
            if task is not None:
                # While the monitor's reader is still connected: its last event would
                # block forever on a monitor socket already closed.
                with contextlib.suppress(zmq.ZMQError):
                    sock.disable_monitor()
            sock.close()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        context, self._context = self._context, None
        if context is not None:
            await asyncio.to_thread(context.term)  # waits up to LINGER for queued messages

    # -- publishing --------------------------------------------------------------------

    def _hear_subscriptions(self, sock: zmq.Socket[Any]) -> None:
        """Read the subscription messages waiting on the XPUB socket (never blocks)."""
        subscriptions = self.subscriptions
        # EVENTS makes the socket process its pending commands (and re-arms its FD).
        while sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            try:
                message = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            change = subscriptions.update(message)
            if change is not None and self.settings.verbose:
                log.info("zmq: %s %r", "subscribed:" if change[0] else "unsubscribed:", change[1])

    async def publish(self, batch: Sequence[Record]) -> None:
        if not batch:
            return
        if self._context is None:
            raise DispatchError("the zmq dispatcher is not started or is closed", retryable=False)
        if not self._try_bind():
            raise DispatchError(f"zmq: {self.last_error}")
        sock = self._socket
        assert sock is not None
        self._hear_subscriptions(sock)
        subscriptions = self.subscriptions
        topics = self._topics
        decoded, name = self._decoded, self.name
        # The backend's send, unbound: the sugar's wrapper (routing ids and groups, which an
        # XPUB never uses) cost more than the send itself, twice per record.
        send, more, now_or_never = _backend_send, zmq.SNDMORE | zmq.NOBLOCK, zmq.NOBLOCK
        deadline: float | None = None
        pause = 0.001
        sent = 0
        try:
            for record in batch:
                frame = topics.get(record.record_type)
                if frame is None:
                    frame = topics[record.record_type] = topic(self.namespace, record.record_type)
                payload = record.json(name) if decoded else record.payload
                while True:
                    if not subscriptions.wanted(frame):
                        if self._confirm:
                            raise DispatchError(f"zmq: no subscriber of {frame.decode()!r} is connected to "
                                                f"{self.endpoint}; records wait for one (zmq confirms a reliable "
                                                "ack only when a subscriber is there to take the record)")
                        self.unsubscribed += 1
                        break
                    try:
                        # Two sends cost a third of send_multipart's; NODROP refuses a message
                        # at its first frame, never between frames.
                        send(sock, frame, more)
                    except zmq.Again:
                        # A subscriber's queue is full (NODROP): wait for it to drain.
                        self.pushed_back += 1
                        now = time.monotonic()
                        if deadline is None:
                            deadline = now + self._timeout
                        elif now > deadline:
                            raise DispatchError(f"zmq: a subscriber of {frame.decode()!r} has not taken a "
                                                f"message for {self._timeout:g} s (its queue of "
                                                f"{self.settings.send_hwm} is full)") from None
                        await asyncio.sleep(pause)
                        pause = min(pause * 2, 0.05)
                        self._hear_subscriptions(sock)  # the slow subscriber may have left
                        continue
                    try:
                        if len(payload) < 65536:  # copied (the default): cheaper than tracking a buffer
                            send(sock, payload, now_or_never)
                        else:
                            send(sock, payload, now_or_never, copy=False)
                    except zmq.Again:
                        await self._send_last(sock.send, payload, now_or_never)
                    sent += 1
                    if deadline is not None:  # progress: the subscriber is reading again
                        deadline, pause = None, 0.001
                    break
        finally:
            self.messages_published += sent

    @staticmethod
    async def _send_last(send: Any, payload: bytes, flags: int) -> None:
        """The message's last frame, again: once the first is in, the socket takes the
        rest, so this is only a safeguard."""
        copy = len(payload) < 65536
        while True:
            try:
                send(payload, flags, copy=copy)
                return
            except zmq.Again:
                await asyncio.sleep(0.001)

    async def _monitor(self, monitor: zmq.asyncio.Socket) -> None:
        """`verbose`: log the socket's events (connections, handshakes, refusals)."""

        names = {getattr(zmq, n): n for n in dir(zmq) if n.startswith("EVENT_") and isinstance(getattr(zmq, n), int)}
        try:
            while True:
                event = parse_monitor_message(await monitor.recv_multipart())
                log.info("zmq: socket event %s %s (value %s)", names.get(event["event"], event["event"]),
                         event["endpoint"].decode(errors="replace"), event["value"])
        finally:
            monitor.close(0)


def create(config: ServerConfig) -> ZmqDispatcher:
    settings: ZmqSettings = config.backend("zmq")
    if not settings.addr:
        raise ConfigError("zmq.addr", 'missing: expected the address to bind, e.g. "tcp://*:5284"')
    reliable = "zmq" in config.reliable_ack_sources.values()
    return ZmqDispatcher(settings, config.namespace, decoded=config.transmit_decoded_records,
                         confirm_subscribers=reliable)
