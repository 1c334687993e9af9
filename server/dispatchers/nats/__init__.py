"""The nats backend: records on subjects `<namespace>.<VIN>.<data|alerts|errors|connectivity>`.

Settings: `settings.py` beside this module; subjects and headers: `layout.py`;
the connection kept up in the background: `connection.py`.

Each record is one message: the subject above (`data` for V records), the protobuf payload
(protobuf-JSON with `transmit_decoded_records`), and the reference's metadata (`vin`,
`receivedat`, `timestamp`, `txid`, `txtype`, `version`, `device_client_version`) as
message headers.

Confirmation, i.e. what a reliable ack waits for:

- JetStream (the default): the stream's publish acknowledgement of every message of the
  batch. The batch is sent at once, each message with its own reply subject, and the acks
  are awaited together. A stream that covers the subjects is used as found; when none
  does, one is created over `<namespace>.>` (file storage). With `deduplicate`, a batch
  sent again after a lost connection is not stored twice (within the stream's duplicate
  window, 2 minutes by default).
- Core NATS (`"jetstream": false`): the messages, then a PING answered by the server's
  PONG (flush). That proves the server has read and routed the messages to the
  subscribers connected at that moment; nothing is stored, and a subscriber that is slow
  or away loses them.

Cost: a batch is encoded into protocol commands in one go and handed to the client's
write buffer, and the JetStream acks are taken from the client's parser without a message
object each (see `_commands`, `_shortcut_acks`): about 6 us of CPU per record with
JetStream and 2 us with core NATS, against about 22 us through the client's per-message
`publish` and subscription callback. Both use internals of nats-py 2.x; without them
the client's own publish and callback do the same work (tested to write the same bytes).

A broker that is down at start is retried in the background; once connected the client
reconnects by itself, waiting `reconnect_initial_ms`, doubled per failure up to
`reconnect_max_ms`. Acks waiting on a connection that drops fail the batch at once, and
the queue in front retries it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from fleetwire.server.dispatch import DispatchError
from fleetwire.server.dispatchers.nats.connection import NatsConnection
from fleetwire.server.dispatchers.nats.layout import KINDS, covers, header_block, headers, record_header_block, subject, token
from fleetwire.server.dispatchers.nats.settings import NatsSettings, NatsTls, check_namespace, parse_settings, redact, tls_context
from fleetwire.server.records import Record
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.js.api import StorageType
from nats.js.errors import Error as JetStreamError
from nats.js.errors import NotFoundError, ServiceUnavailableError

from fleetwire.strictjson import ConfigError

if TYPE_CHECKING:
    from fleetwire.server.config import ServerConfig
    from nats.aio.msg import Msg

# The backend's names as tests and the registry reach them (`parse_settings`, `create`).
__all__ = ["KINDS", "NatsDispatcher", "NatsSettings", "NatsTls", "TooLarge", "covers", "create", "header_block",
           "headers", "parse_settings", "record_header_block", "redact", "subject"]

log = logging.getLogger("fleetwire.dispatch.nats")


class TooLarge(Exception):
    """A record larger than the server's max_payload: it can never be published, and
    sending it would make the server close the connection. Not a DispatchError, so the
    queue publishes the batch's other records one by one and gives up on this one only."""


class _Acks:
    """The outstanding JetStream acks of one batch (one reply subject; one ack per message)."""

    __slots__ = ("done", "remaining")

    def __init__(self, n: int, loop: asyncio.AbstractEventLoop) -> None:
        self.remaining = n
        self.done: asyncio.Future[None] = loop.create_future()

    def ack(self) -> None:
        self.remaining -= 1
        if self.remaining <= 0 and not self.done.done():
            self.done.set_result(None)

    def fail(self, error: DispatchError) -> None:
        if not self.done.done():
            self.done.set_exception(error)


class NatsDispatcher(NatsConnection):
    """Publishes records to NATS (JetStream by default), one connection kept up in the background."""

    name = "nats"

    def __init__(self, settings: NatsSettings, namespace: str, *, decoded: bool = False,
                 kinds: Sequence[str] = tuple(KINDS.values())) -> None:
        self.settings = settings
        self.namespace = check_namespace(namespace)
        self._decoded = decoded
        self._kinds = tuple(kinds)
        self._tls = tls_context(settings)
        self._where = ", ".join(redact(s) for s in settings.servers)
        self._connect_timeout = settings.connect_timeout_ms / 1000
        self._publish_timeout = settings.publish_timeout_ms / 1000
        self._nc: Client | None = None
        self._inbox = ""
        self._connected = asyncio.Event()
        self._lost: asyncio.Future[None] | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._batches: dict[int, _Acks] = {}
        self._subjects: dict[tuple[str, str], str] = {}
        self._batch_ids = itertools.count(1)
        self._streams_ok = False
        self.fast_path = True  # batches written as one buffer (False: the client's publish per message)
        # state, read by metrics and tests
        self.stream: str | None = None  # the stream the subjects are stored in
        self.created_stream = False
        self.connects = 0
        self.messages_published = 0
        self.last_error: str | None = None

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def start(self) -> None:
        """Start connecting; a server that is down now is retried, not fatal."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._maintain(), name="nats-connection")

    async def close(self) -> None:
        self._stop.set()
        self._fail_all("the NATS dispatcher is closing")
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        nc, self._nc = self._nc, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 2.0)

    # -- publishing --------------------------------------------------------------------

    async def publish(self, batch: Sequence[Record]) -> None:
        if not batch:
            return
        nc = await self._connection()
        lost = self._lost
        assert lost is not None
        try:
            if self.settings.jetstream:
                if not self._streams_ok:
                    await self._ensure_streams(nc)
                await self._publish_jetstream(nc, batch, lost)
            else:
                await self._publish_core(nc, batch, lost)
        except (DispatchError, TooLarge, asyncio.CancelledError):
            raise
        except Exception as exc:  # the client's errors: timeouts, buffer full, closed connection
            raise DispatchError(f"NATS publish to {self._where} failed: {type(exc).__name__}: {exc}") from exc
        self.messages_published += len(batch)

    def _commands(self, nc: Client, batch: Sequence[Record], reply: str) -> bytes:
        """The batch as the protocol commands the client would write, built in one go:
        the client's per-message publish costs several times more CPU (it re-validates the
        subject and every header line of every message)."""
        decoded, name = self._decoded, self.name
        dedup = self.settings.jetstream and self.settings.deduplicate
        limit = nc.max_payload
        subjects = self._subjects
        if len(subjects) > 100_000:  # one entry per vehicle and record type: a fleet's worth
            subjects.clear()
        commands = []
        for record in batch:
            payload = record.json(name) if decoded else record.payload
            block = record_header_block(record, dedup)
            size = len(block)
            total = size + len(payload)
            if total > limit:
                raise TooLarge(f"a {record.record_type} record of {record.vin} (txid {record.txid}) is "
                               f"{total} bytes, over the server's max_payload of {limit}")
            subj = subjects.get((record.vin, record.record_type))
            if subj is None:
                subj = subjects[(record.vin, record.record_type)] = subject(self.namespace, record)
            line = f"HPUB {subj} {reply} {size} {total}\r\n" if reply else f"HPUB {subj} {size} {total}\r\n"
            commands += (line.encode(), block, payload, b"\r\n")
        return b"".join(commands)

    async def _write(self, nc: Client, batch: Sequence[Record], reply: str) -> None:
        """Hand the batch to the client's write buffer and wake its flusher, as the
        client's own publish does per message; through that publish if this client
        version lacks those internals."""
        if not nc.is_connected:
            raise DispatchError(f"NATS server {self._where}: connection lost")
        send = getattr(nc, "_send_command", None)
        flush = getattr(nc, "_flush_pending", None)
        if send is None or flush is None or not self.fast_path:
            dedup = self.settings.jetstream and self.settings.deduplicate
            for record in batch:
                payload = record.json(self.name) if self._decoded else record.payload
                await nc.publish(subject(self.namespace, record), payload, reply=reply,
                                 headers=headers(record, dedup))
            return
        data = self._commands(nc, batch, reply)
        nc.stats["out_msgs"] += len(batch)
        nc.stats["out_bytes"] += len(data)
        await send(data)
        await flush()

    async def _publish_jetstream(self, nc: Client, batch: Sequence[Record], lost: asyncio.Future[None]) -> None:
        batch_id = next(self._batch_ids)
        acks = _Acks(len(batch), asyncio.get_running_loop())
        self._batches[batch_id] = acks
        try:
            await self._write(nc, batch, f"{self._inbox}.{batch_id}")
            # A lost connection fails every batch's acks (`_connection_down`); a timer, far
            # cheaper per batch than asyncio.wait, fails them when the server is silent.
            timer = asyncio.get_running_loop().call_later(self._publish_timeout, self._ack_timeout, acks, len(batch))
            try:
                await acks.done
            finally:
                timer.cancel()
        finally:
            del self._batches[batch_id]

    def _ack_timeout(self, acks: _Acks, size: int) -> None:
        acks.fail(DispatchError(f"NATS server {self._where}: no answer within {self._publish_timeout:g} s "
                                f"(waiting for {acks.remaining} of {size} JetStream ack(s))"))

    async def _publish_core(self, nc: Client, batch: Sequence[Record], lost: asyncio.Future[None]) -> None:
        await self._write(nc, batch, "")
        flushed = asyncio.ensure_future(nc.flush(timeout=self._publish_timeout))
        try:
            await self._wait(flushed, lost, lambda: "the server's PONG")
        finally:
            flushed.cancel()

    async def _wait(self, done: asyncio.Future[Any], lost: asyncio.Future[None], what: Callable[[], str]) -> None:
        """Wait for `done`; fail at once if the connection drops, or after publish_timeout."""
        finished, _ = await asyncio.wait((done, lost), timeout=self._publish_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        if done in finished:
            done.result()
            return
        if lost in finished:
            raise DispatchError(f"NATS server {self._where}: connection lost while waiting for {what()}")
        raise DispatchError(f"NATS server {self._where}: no answer within "
                            f"{self._publish_timeout:g} s (waiting for {what()})")

    def _on_ack(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        self._ack(msg.subject, msg.data, status == "503")

    def _ack(self, reply: str | bytes, data: bytes, no_responders: bool) -> None:
        """One JetStream answer on a batch's reply subject: an ack, or why not."""
        acks = self._batches.get(int(reply.rpartition("." if isinstance(reply, str) else b".")[2]))
        if acks is None:
            return  # a late ack of a batch already failed or retried
        if no_responders:
            self._streams_ok = False
            acks.fail(DispatchError(f"NATS server {self._where}: no JetStream stream stores the subjects; "
                                    "looking for one again"))
        elif b'"error"' in data:
            try:
                error = json.loads(data)["error"]
                text = f"{error.get('description', error)} (code {error.get('code')}, {error.get('err_code')})"
            except (ValueError, KeyError, AttributeError):
                text = data[:200].decode("utf-8", "replace")
            acks.fail(DispatchError(f"JetStream refused a message: {text}"))
        else:
            acks.ack()

    async def _ack_messages(self, msg: Msg) -> None:
        self._on_ack(msg)

    def _shortcut_acks(self, nc: Client, sid: int) -> None:
        """Take the ack subscription's messages straight from the client's parser: its
        general path builds a message object and hops through a queue and a task per ack,
        most of the CPU a JetStream publish costs here. Other subscriptions are untouched;
        without these internals the subscription's callback still receives every ack."""
        original = getattr(nc, "_process_msg", None)
        if original is None:
            return
        ack = self._ack

        async def process_msg(msg_sid: int, subj: bytes, reply: bytes, data: bytes, hdr: bytes | None) -> None:
            if msg_sid != sid:
                await original(msg_sid, subj, reply, data, hdr)
                return
            ack(subj, data, bool(hdr) and hdr.startswith(b"NATS/1.0 503"))  # type: ignore[union-attr]

        nc._process_msg = process_msg  # type: ignore[method-assign]

    # -- streams -----------------------------------------------------------------------

    async def _ensure_streams(self, nc: Client) -> None:
        """Find a stream storing each subject we publish to, or create one over `<namespace>.>`."""
        js = nc.jetstream(timeout=self._publish_timeout)
        wanted = [f"{self.namespace}.*.{kind}" for kind in self._kinds]
        name = self.settings.stream or token(self.namespace.replace(".", "_"))
        try:
            for _attempt in range(2):
                found: dict[str, str] = {}
                overlapping = await self._stream_names(nc, f"{self.namespace}.>")
                if self.settings.stream and self.settings.stream not in overlapping:
                    with contextlib.suppress(NotFoundError):
                        await js.stream_info(self.settings.stream)  # exists, over other subjects
                        raise DispatchError(
                            f"JetStream stream {self.settings.stream!r} (nats.stream) does not store "
                            f"{self.namespace}.>; add the subjects to it or name another stream", retryable=True)
                for stream in overlapping:
                    subjects = (await js.stream_info(stream)).config.subjects or []
                    for want in wanted:
                        if want not in found and any(covers(s, want) for s in subjects):
                            found[want] = stream
                missing = [w for w in wanted if w not in found]
                if not missing:
                    streams = sorted(set(found.values()))
                    self.stream = ", ".join(streams)
                    self._streams_ok = True
                    log.info("nats: publishing into JetStream stream(s) %s", self.stream)
                    return
                if overlapping:
                    raise DispatchError(
                        f"JetStream stream(s) {', '.join(overlapping)} store part of {self.namespace}.> but not "
                        f"{', '.join(missing)}; extend them or delete them to let fleetwire create one")
                try:
                    await js.add_stream(name=name, subjects=[f"{self.namespace}.>"], storage=StorageType.FILE)
                except JetStreamError as exc:
                    if _attempt == 0:  # created meanwhile by another server: look again
                        log.debug("nats: creating stream %s failed (%s); looking again", name, exc)
                        continue
                    raise
                self.created_stream = True
                log.info("nats: created JetStream stream %s over %s.>", name, self.namespace)
        except DispatchError as exc:
            self.last_error = str(exc)
            raise
        except Exception as exc:
            hint = ""
            if isinstance(exc, ServiceUnavailableError):
                hint = " (is JetStream enabled on the server? for core NATS set nats.jetstream false)"
            self.last_error = f"{type(exc).__name__}: {exc}{hint}"
            raise DispatchError(f"NATS server {self._where}: cannot find or create a JetStream stream for "
                                f"{self.namespace}.>: {self.last_error}") from exc
        raise DispatchError(f"NATS server {self._where}: no JetStream stream for {self.namespace}.>")

    async def _stream_names(self, nc: Client, filter_subject: str) -> list[str]:
        """Streams whose subjects overlap `filter_subject` (JetStream's STREAM.NAMES)."""
        names: list[str] = []
        while True:
            request = json.dumps({"subject": filter_subject, "offset": len(names)}).encode()
            try:
                msg = await nc.request("$JS.API.STREAM.NAMES", request, timeout=self._publish_timeout)
            except NoRespondersError:
                raise ServiceUnavailableError from None
            answer = json.loads(msg.data)
            if "error" in answer:
                raise DispatchError(f"JetStream refused to list streams: {answer['error']}")
            page = answer.get("streams") or []
            names += page
            if not page or len(names) >= answer.get("total", 0):
                return names

    def _fail_all(self, reason: str) -> None:
        for acks in self._batches.values():
            acks.fail(DispatchError(reason))


def create(config: ServerConfig) -> NatsDispatcher:
    settings: NatsSettings = config.backend("nats")
    if not settings.servers:
        raise ConfigError("nats.url", 'missing: expected the NATS server, e.g. "nats://nats:4222"')
    types = [t for t, names in config.records.items() if "nats" in names]
    kinds = [KINDS.get(t, t) for t in types] or list(KINDS.values())
    return NatsDispatcher(settings, config.namespace, decoded=config.transmit_decoded_records, kinds=kinds)
