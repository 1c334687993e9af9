"""The asyncio shell around `Session`: picows WebSocket listeners over uvloop TLS.

One listener per vehicle. It learns who is connecting from the verified client
certificate, feeds whole binary messages to the session, pauses reading while a
dispatch queue is over its bound, and reports connects and disconnects. Handshakes that
never reach a listener (scanners, health checks, plain HTTP) are counted here too.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
)

from fleetwire.server.config import VinPolicy
from fleetwire.server.dispatch_queue import DispatchQueue
from fleetwire.proto.envelope_codec import MAX_MESSAGE_BYTES, encode_error
from fleetwire.server.handshake import REASONS, FailureSummary, classify
from fleetwire.server.identity import Identity, IdentityError, identify
from fleetwire.server.metrics import ServerMetrics
from fleetwire.server.presence import Presence
from fleetwire.server.session import Peer, RateLimit, Router, Session
from fleetwire.server import accept_gate, tls_engine

log = logging.getLogger("fleetwire.server")
# The message aiofastnet gives the loop's exception handler for a failed handshake.
HANDSHAKE_FAILED = "SSL handshake failed"

# A frame larger than this closes the connection; up to it, an oversize message still
# gets an error reply and the connection survives.
MAX_FRAME_BYTES = 8 * MAX_MESSAGE_BYTES
# X-TXID is a UUID (36 characters) and X-Network-Interface a word: anything longer is cut.
MAX_HEADER_CHARS = 128
_BINARY = WSMsgType.BINARY


@dataclass
class ServerState:
    """What every connection shares."""

    router: Router
    metrics: ServerMetrics
    vin_policy: VinPolicy
    rate_limit: RateLimit | None
    identify: Callable[[bytes], Identity] = identify
    presence: Presence = field(default_factory=Presence)
    listeners: set[VehicleListener] = field(default_factory=set)
    """The vehicles' open connections, so a drain can reach each one."""
    draining: bool = False
    """Set by `TelemetryServer.stop`: a handshake that completes now is sent away (1001)."""

    unflushed: list[VehicleListener] = field(default_factory=list)
    """Listeners holding replies sent outside a read (reliable acks): flushed together."""

    def owed_acks(self) -> int:
        """Acks still owed, across connections, for records a reliable dispatcher has not confirmed."""
        return sum(listener.owed_acks for listener in self.listeners)


class VehicleListener(WSListener):
    """picows listener for one vehicle connection."""

    def __init__(self, state: ServerState, peer: Peer) -> None:
        super().__init__()
        self._state = state
        self._peer = peer
        self._transport: WSTransport | None = None
        self._session: Session | None = None
        self._fragments: list[bytes] | None = None
        self._fragment_size = 0
        self._paused = False
        self._reading = False
        self._draining = False
        self._out: list[bytes] = []
        # Messages parsed after reading paused (picows hands over every frame of a read):
        # they wait here rather than grow the full queue by a whole read per vehicle.
        self._backlog: deque[bytes] | None = None  # created on first use: idle vehicles dominate

    # -- Link ------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Queue a reply; replies to the frames of one read go out in one TLS write, and so
        do the reliable acks a dispatcher's batch confirms (sent at the end of the loop's turn)."""
        if self._transport is None:
            return
        out = self._out
        if not out and not self._reading:
            # One loop callback per turn for every connection (get_running_loop costs a
            # getpid system call): the acks of one confirmed batch reach many connections.
            unflushed = self._state.unflushed
            if not unflushed:
                asyncio.get_running_loop().call_soon(_flush_unflushed, unflushed)
            unflushed.append(self)
        out.append(_frame_header(len(data)))
        out.append(data)

    def _flush(self) -> None:
        out = self._out
        if out and self._transport is not None:
            self._transport.underlying_transport.write(b"".join(out))
        out.clear()

    def hold(self, queue: DispatchQueue) -> None:
        if self._paused or self._transport is None:
            return
        self._paused = True
        self._state.metrics.paused_connections.inc()
        self._transport.underlying_transport.pause_reading()
        asyncio.get_running_loop().create_task(self._resume_when_room(queue))

    async def _resume_when_room(self, queue: DispatchQueue) -> None:
        try:
            await queue.wait_for_room()
        finally:
            self._paused = False
            self._state.metrics.paused_connections.dec()
            backlog = self._backlog
            while backlog and not self._paused and self._session is not None:
                self._session.message(backlog.popleft())
            if not self._paused and not self._draining and self._transport is not None:
                underlying = self._transport.underlying_transport
                underlying.resume_reading()
                # aiofastnet's TLS transport (1.2) resumes only when the socket has new
                # bytes: records it already decrypted would wait for the vehicle's next one.
                retry_read = getattr(underlying, "_retry_ssl_read", None)
                if retry_read is not None:
                    asyncio.get_running_loop().call_soon(retry_read)

    def _message(self, data: bytes) -> None:
        if self._paused:
            if self._backlog is None:
                self._backlog = deque()
            self._backlog.append(data)
        elif self._session is not None:
            self._session.message(data)

    # -- drain -----------------------------------------------------------------------

    @property
    def owed_acks(self) -> int:
        session = self._session
        return session.owed_acks if session is not None else 0

    def stop_reading(self) -> None:
        """Read no more records (the drain has begun); the socket stays open for the acks owed."""
        self._draining = True
        if self._transport is not None and not self._paused:
            self._transport.underlying_transport.pause_reading()

    def going_away(self) -> None:
        """Send the replies queued so far, then close with 1001 so the vehicle reconnects elsewhere."""
        transport = self._transport
        if transport is None:
            return
        # TLS closes cleanly only once it reads the vehicle's close_notify; a closing
        # aiofastnet transport reads into the void, so no record gets in after the 1001.
        transport.underlying_transport.resume_reading()
        self._close(transport, WSCloseCode.GOING_AWAY, b"server shutting down")

    # -- picows callbacks ------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        _release_upgrade(transport)
        state = self._state
        if state.draining:  # its TLS handshake finished after the listening socket closed
            transport.send_close(WSCloseCode.GOING_AWAY, b"server shutting down")
            transport.disconnect()
            return
        der = verified_leaf(transport.underlying_transport.get_extra_info("ssl_object"))
        if not der:
            self._refuse(transport, "no_client_certificate")
            return
        try:
            identity = state.identify(der)
        except IdentityError as exc:
            self._refuse(transport, exc.reason)
            return
        if not state.vin_policy.allows(identity.vin):
            self._refuse(transport, "vin_not_allowed", identity.vin)
            return
        self._transport = transport
        state.listeners.add(self)
        metrics = state.metrics
        metrics.connections_active.inc()
        metrics.connections_total.labels(identity.client_type).inc()
        self._session = Session(identity, self._peer, state.router, metrics, self, state.rate_limit)
        sockets = state.presence.opened(identity.vin)
        metrics.connected_vins.set(len(state.presence))
        self._session.opened(sockets)

    def _refuse(self, transport: WSTransport, reason: str, vin: str = "") -> None:
        self._state.metrics.refused_total.labels(reason).inc()
        log.warning("refused connection %s%s: %s", self._peer.connection_id, f" (VIN {vin})" if vin else "", reason)
        transport.send_close(WSCloseCode.POLICY_VIOLATION, reason.encode())
        transport.disconnect()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        session = self._session
        if session is None:
            return
        self._reading = True
        try:
            if frame.msg_type is _BINARY and frame.fin and not self._paused:
                session.message(frame.get_payload_as_bytes())  # the common case, without two calls
            else:
                self._frame(transport, frame, session)
        finally:
            if frame.last_in_buffer:
                self._reading = False
                self._flush()

    def _frame(self, transport: WSTransport, frame: WSFrame, session: Session) -> None:
        msg_type = frame.msg_type
        if msg_type is WSMsgType.BINARY:
            if frame.fin:
                self._message(frame.get_payload_as_bytes())
            else:
                self._fragments = [frame.get_payload_as_bytes()]
                self._fragment_size = frame.payload_size
        elif msg_type is WSMsgType.CONTINUATION:
            if self._fragments is None:
                return
            self._fragment_size += frame.payload_size
            if self._fragment_size > MAX_FRAME_BYTES:
                self._fragments = None
                self._close(transport, WSCloseCode.MESSAGE_TOO_BIG)
                return
            if self._fragment_size <= MAX_MESSAGE_BYTES or frame.fin:
                self._fragments.append(frame.get_payload_as_bytes())
            if frame.fin:
                parts, self._fragments = self._fragments, None
                if self._fragment_size > MAX_MESSAGE_BYTES:
                    self._state.metrics.error("oversize")
                    self.send(encode_error(b""))
                else:
                    self._message(b"".join(parts))
        elif msg_type is WSMsgType.TEXT:
            self._state.metrics.error("text_frame")
            self._close(transport, WSCloseCode.UNSUPPORTED_DATA, b"binary frames only")
        elif msg_type is WSMsgType.CLOSE:
            self._close(transport, frame.get_close_code())

    def _close(self, transport: WSTransport, code: WSCloseCode, reason: bytes | None = None) -> None:
        """Flush the replies owed for earlier frames of this read, then close."""
        self._flush()
        transport.send_close(code, reason)
        transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        session, self._session = self._session, None
        self._transport = None
        if session is not None:
            state = self._state
            state.listeners.discard(self)
            state.metrics.connections_active.dec()
            sockets = state.presence.closed(session.identity.vin)
            state.metrics.connected_vins.set(len(state.presence))
            session.closed(sockets)


def _flush_unflushed(unflushed: list[VehicleListener]) -> None:
    """Write the replies each listener was sent since the last turn, one TLS write each."""
    listeners = unflushed.copy()
    unflushed.clear()
    for listener in listeners:
        try:
            listener._flush()
        except Exception:  # one broken transport must not keep the others' acks
            log.exception("writing replies to %s failed", listener._peer.connection_id)


def _release_upgrade(transport: WSTransport) -> None:
    """Empty the headers of the upgrade request and response, which picows keeps for the
    connection's lifetime (about 1.5 KB per idle vehicle): `Peer` already holds the few
    header values the connection needs, bounded."""
    for message in (transport.request, transport.response):
        headers = getattr(message, "headers", None)
        if headers is not None:
            headers.clear()


def verified_leaf(ssl_object: object) -> bytes | None:
    """DER of the first certificate of the chain OpenSSL verified, or None.

    Identity must come from the verified chain, never from whatever the peer sent last.
    aiofastnet (picows' TLS layer) and Python ≥ 3.13 expose that chain; older `ssl`
    objects expose only the peer's leaf, which is the verified chain's first element.
    """
    if ssl_object is None:
        return None
    chain_of = getattr(ssl_object, "get_verified_chain", None)
    if chain_of is not None:
        chain = chain_of()
        if not chain:
            return None
        leaf = chain[0]
        return leaf if isinstance(leaf, bytes) else ssl.PEM_cert_to_DER_cert(leaf.public_bytes())
    der: bytes | None = ssl_object.getpeercert(binary_form=True)  # type: ignore[attr-defined]
    return der


def _frame_header(length: int) -> bytes:
    """Header of an unmasked, final, binary WebSocket frame (RFC 6455 §5.2), server side."""
    if length < 126:
        return bytes((0x82, length))
    if length < 65536:
        return b"\x82\x7e" + length.to_bytes(2, "big")
    return b"\x82\x7f" + length.to_bytes(8, "big")


def listener_factory(state: ServerState) -> Callable[[WSUpgradeRequest], object]:
    """Route upgrade requests: `/status` answers `mtls ok`, every other path streams."""
    tls_engine.install()  # before the first handshake: no certificate decoded that nobody reads
    accept_gate.install()  # before the server exists: it is created with the gated accept

    def factory(request: WSUpgradeRequest) -> object:
        if request.path == b"/status":
            return WSUpgradeResponseWithListener(WSUpgradeResponse.create_ok_response(b"mtls ok"), None)
        headers = request.headers
        # The connection id is the server's own: X-TXID comes from the client, and two
        # sockets of one VIN (Wi-Fi and cellular) may send the same one. The headers are
        # kept with the connection and copied into records, so their length is bounded.
        return VehicleListener(state, Peer(
            connection_id=str(uuid.uuid4()),
            network_interface=headers.get("X-Network-Interface", "")[:MAX_HEADER_CHARS],
            vehicle_txid=headers.get("X-TXID", "")[:MAX_HEADER_CHARS],
            client_version=headers.get("Version", "")[:MAX_HEADER_CHARS],
        ))

    return factory


# -- failed handshakes -----------------------------------------------------------------


class HandshakeNoise:
    """Counts one listener's failed handshakes by reason and logs a summary line at most
    once per interval (`handshake.FailureSummary` decides when); `quiet` drops the line."""

    def __init__(
        self, counter: Any, *, quiet: bool, interval: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._counters = {reason: counter.labels(reason) for reason in REASONS}
        self._quiet = quiet
        self._summary = FailureSummary(interval)
        self._clock = clock
        self._timer: asyncio.TimerHandle | None = None

    def failed(self, exc: BaseException | type[BaseException]) -> None:
        reason = classify(exc) or "other"  # a bug is shown by the loop's handler, and counted here
        self._counters[reason].inc()
        if self._quiet:
            return
        due = self._summary.add(reason, self._clock())
        if self._timer is not None:
            return
        if due <= 0:
            self._log()
        else:
            self._timer = asyncio.get_running_loop().call_later(due, self._log)

    def _log(self) -> None:
        self._timer = None
        line = self._summary.take(self._clock())
        if line is not None:
            log.info("%s", line)

    def close(self) -> None:
        """Log what is still pending and stop the timer."""
        if self._timer is not None:
            self._timer.cancel()
        self._log()


# Local port of a listening socket -> its accounting. A process-wide table because
# aiofastnet creates the transports; it is keyed by port since accepted sockets share it.
_WATCHED: dict[int, HandshakeNoise] = {}


def watch_handshakes(port: int, noise: HandshakeNoise) -> bool:
    """Count the failed handshakes of the listener on `port` and bound those in progress
    (`accept_gate`); False if this aiofastnet offers no way to see them (then they are
    neither counted nor logged)."""
    if not _hook_aiofastnet():
        return False
    _WATCHED[port] = noise
    accept_gate.gate(port, failed=noise.failed)
    return True


def unwatch_handshakes(port: int) -> None:
    accept_gate.ungate(port)
    noise = _WATCHED.pop(port, None)
    if noise is not None:
        noise.close()


def _handshake_ended(transport: Any, exc: BaseException | type[BaseException]) -> None:
    """A TLS transport closed with `exc`: a failed handshake if it never got a cipher."""
    if transport.get_extra_info("cipher") is not None:
        return  # an established connection that ended: the listener saw it
    if not getattr(transport.get_extra_info("ssl_object"), "server_side", True):
        return
    sockname = transport.get_extra_info("sockname")
    noise = _WATCHED.get(sockname[1]) if isinstance(sockname, tuple) and len(sockname) >= 2 else None
    if noise is not None:
        noise.failed(exc)


@functools.cache
def _hook_aiofastnet() -> bool:
    """Make aiofastnet's server-side TLS transports report how their handshake failed.

    aiofastnet 1.2 tells nobody when a handshake fails with an `OSError` (an unknown
    client CA, plain HTTP, a reset) and hands the loop's exception handler an exception
    *class* for an EOF (which the default handler cannot print: a 30-line logging error).
    The one place that sees every failure with its exception is the transport's final
    close, so accepted sockets get a subclass that reports it; nothing else changes.
    """
    try:
        from aiofastnet import api_utils
    except ImportError:
        return False
    base = getattr(api_utils, "SSLTransport_Socket", None)
    if not isinstance(base, type) or not callable(getattr(base, "_finalize_close", None)):
        log.warning("this aiofastnet version hides failed TLS handshakes: they are not counted")
        return False

    class CountingSSLTransport(base):  # type: ignore[misc, valid-type]
        __slots__ = ()  # no per-connection dict: idle vehicles dominate memory

        def _call_protocol_connection_made(self) -> None:
            accept_gate.handshake_ended(self)
            super()._call_protocol_connection_made()

        def _finalize_close(self, exc: Any) -> None:
            try:
                accept_gate.handshake_ended(self)  # a no-op unless it never got that far
                if exc is not None:
                    _handshake_ended(self, exc)
            except Exception:  # accounting must never keep a socket open
                log.exception("counting a failed TLS handshake failed")
            super()._finalize_close(exc)

    api_utils.SSLTransport_Socket = CountingSSLTransport
    return True


def handshake_exception_handler(
    previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None,
) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """A loop exception handler that drops failed handshakes caused by the network (the
    transport counted them) and passes everything else on, printable, to `previous`
    (the loop's default handler when None): bugs stay visible."""

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if exc is not None and context.get("message") == HANDSHAKE_FAILED and classify(exc) is not None:
            return
        if isinstance(exc, type) and issubclass(exc, BaseException):
            context = {**context, "exception": exc()}  # a class has no traceback to print
        if previous is None:
            loop.default_exception_handler(context)
        else:
            previous(loop, context)

    return handle
