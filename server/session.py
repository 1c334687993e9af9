"""One vehicle connection's protocol logic, free of sockets.

The transport feeds whole WebSocket messages in; the session answers through the
`Link` it was given (send a reply, pause reading) and hands records to dispatch queues.
Everything here runs synchronously inside the read callback: nothing awaits a backend.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from fleetwire.proto.record_types import RECORD_TYPES, SERVER_RECORD_TYPES
from fleetwire.server.dispatch_queue import DispatchQueue
from fleetwire.server.records import Record
from fleetwire.proto.envelope_codec import FrameError, decode_frame, encode_ack, encode_error
from fleetwire.server.identity import Identity
from fleetwire.server.metrics import ServerMetrics
from fleetwire.server.ratelimit import TokenBucket
from fleetwire.server.records import RecordError, connectivity_record, decode_record

RATE_LIMITED = b"rate limit exceeded"
# Metric label of an unrouted topic: a known record type, else "other". The topic comes
# from the wire, and every distinct label value would be a new series in every scrape.
UNROUTED_LABELS: Mapping[bytes, str] = {name.encode(): name for name in RECORD_TYPES}
SENDER_MISMATCH = b"sender id does not match the client certificate"


class Link(Protocol):
    """What a session needs of its transport."""

    def send(self, data: bytes) -> None: ...

    def hold(self, queue: DispatchQueue) -> None:
        """Stop reading this vehicle until `queue` has room again (back-pressure)."""


@dataclass(frozen=True)
class Route:
    """Where one record type goes: every queue gets it; the ack waits for `confirm` if set."""

    queues: tuple[DispatchQueue, ...]
    confirm: DispatchQueue | None = None


@dataclass
class Router:
    """Record type → route, keyed by the topic bytes as they arrive on the wire."""

    routes: Mapping[str, Route]
    by_topic: dict[bytes, tuple[str, Route]] = field(init=False)

    def __post_init__(self) -> None:
        # Connectivity records are the server's own: a vehicle sending that topic is not
        # dispatched, so it cannot fake connects and disconnects.
        self.by_topic = {
            name.encode(): (name, route) for name, route in self.routes.items() if name not in SERVER_RECORD_TYPES
        }


@dataclass(frozen=True, slots=True)
class Peer:
    """One socket as its upgrade request described it (the headers are the client's,
    bounded by the transport)."""

    connection_id: str  # the server's own id of the socket, unique
    network_interface: str = ""  # X-Network-Interface: wifi, cellular
    vehicle_txid: str = ""  # X-TXID: kept, but two sockets of one VIN may send the same
    client_version: str = ""  # Version: the vehicle client's, for backends' metadata


@dataclass(frozen=True)
class RateLimit:
    limit: int
    interval: float


class Session:
    """Decodes, checks, dispatches and acknowledges one vehicle's messages."""

    __slots__ = (
        "identity", "peer", "_router", "_metrics", "_link",
        "_limiter", "_clock", "_vin_bytes", "_sender_bytes", "owed_acks",
    )

    def __init__(
        self,
        identity: Identity,
        peer: Peer,
        router: Router,
        metrics: ServerMetrics,
        link: Link,
        rate_limit: RateLimit | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.identity = identity
        self.peer = peer
        self._router = router
        self._metrics = metrics
        self._link = link
        self._clock = clock
        self._limiter = (
            TokenBucket(rate_limit.limit, rate_limit.interval, clock()) if rate_limit else None
        )
        self._vin_bytes = identity.vin.encode()
        self._sender_bytes = identity.sender_id.encode()
        # Records received whose ack waits for a reliable dispatcher: a drain waits for them.
        self.owed_acks = 0

    # -- lifecycle -------------------------------------------------------------------

    def opened(self, vin_connections: int | None = None) -> None:
        """The socket is up; `vin_connections`: the VIN's open sockets, this one included."""
        self._connectivity("CONNECTED", vin_connections)

    def closed(self, vin_connections: int | None = None) -> None:
        """The socket is down; `vin_connections`: the VIN's sockets still open."""
        self._connectivity("DISCONNECTED", vin_connections)

    def _connectivity(self, status: Literal["CONNECTED", "DISCONNECTED"], vin_connections: int | None) -> None:
        entry = self._router.routes.get("connectivity")
        if entry is None:
            return
        now = self._clock()
        peer = self.peer
        payload = connectivity_record(
            self.identity.vin, peer.connection_id, status, peer.network_interface, now,
            vehicle_txid=peer.vehicle_txid, vin_connections=vin_connections,
        )
        message, payload = decode_record("connectivity", payload, self.identity.vin)
        txid = peer.vehicle_txid.encode("utf-8", "replace")
        self._dispatch(entry, self._record("connectivity", txid, payload, message, now, now), None)

    # -- messages --------------------------------------------------------------------

    def message(self, data: bytes) -> None:
        """Handle one complete binary WebSocket message."""
        metrics = self._metrics
        try:
            frame = decode_frame(data)
        except FrameError as exc:
            metrics.error(exc.reason)
            self._link.send(encode_error(exc.txid))
            return
        now = self._clock()
        limiter = self._limiter
        if limiter is not None and not limiter.allow(now):
            metrics.error("rate_limited")
            self._link.send(encode_error(frame.txid, RATE_LIMITED))
            return
        routed = self._router.by_topic.get(frame.topic)
        if routed is None:
            sender = frame.sender_id
            if sender and sender != self._sender_bytes and sender != self._vin_bytes:
                metrics.error("sender_mismatch")
                self._link.send(encode_error(frame.txid, SENDER_MISMATCH))
                return
            metrics.unrouted[UNROUTED_LABELS.get(frame.topic, "other")] += 1
            self._ack(frame.txid, frame.topic)
            return
        record_type, route = routed
        identity = self.identity
        try:
            message, payload = decode_record(record_type, frame.payload, identity.vin)
        except RecordError as exc:
            metrics.error(exc.reason)
            self._link.send(encode_error(frame.txid))
            return
        txid = frame.txid
        peer = self.peer
        record = Record(
            record_type, identity.vin, identity.client_type, txid.decode("utf-8", "replace"), peer.connection_id,
            payload, message, float(frame.created_at) if frame.created_at else now, now, peer.client_version,
        )
        metrics.records[record_type] += 1
        confirm = route.confirm
        if confirm is None:
            self._dispatch(route, record, None)
            self._ack(txid, frame.topic)
            return
        self.owed_acks += 1
        self._dispatch(route, record, Receipt(self, txid, frame.topic))

    def _record(
        self, record_type: str, txid: bytes, payload: bytes, message: object, created: float, now: float
    ) -> Record:
        return Record(
            record_type=record_type,
            vin=self.identity.vin,
            client_type=self.identity.client_type,
            txid=txid.decode("utf-8", "replace"),
            connection_id=self.peer.connection_id,
            payload=payload,
            message=message,
            created_at=created,
            received_at=now,
            client_version=self.peer.client_version,
        )

    def _dispatch(self, route: Route, record: Record, receipt: Receipt | None) -> None:
        """Every queue of the route gets the record; the confirming one also its receipt."""
        confirm = route.confirm
        for queue in route.queues:
            if not queue.offer(record, receipt if queue is confirm else None):
                self._link.hold(queue)

    def _ack(self, txid: bytes, topic: bytes) -> None:
        self._metrics.acks += 1
        self._link.send(encode_ack(txid, topic))

    def _unconfirmed(self) -> None:
        self._metrics.error("dispatch_failed")


class Receipt:
    """A reliable record's ack, owed once the dispatcher confirms (a `dispatch_queue.Waiter`).

    The queue tells it directly: a Future with a done-callback did the same at the cost of
    one more loop callback and closure per record. Only success acks; a record the queue
    gave up on (an outage outlasting the retries, a shutdown) is counted, not acked, so the
    vehicle sends it again.
    """

    __slots__ = ("_done", "_session", "_topic", "_txid")

    def __init__(self, session: Session, txid: bytes, topic: bytes) -> None:
        self._session = session
        self._txid = txid
        self._topic = topic
        self._done = False

    def done(self) -> bool:
        return self._done

    def _settle(self) -> bool:
        """True the first time only: a receipt is settled once, either way."""
        if self._done:
            return False
        self._done = True
        self._session.owed_acks -= 1
        return True

    def set_result(self, result: None, /) -> None:
        if self._settle():
            self._session._ack(self._txid, self._topic)

    def set_exception(self, exception: BaseException, /) -> None:
        if self._settle():
            self._session._unconfirmed()
