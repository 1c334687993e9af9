"""The nats backend: records on subjects `<namespace>.<VIN>.<data|alerts|errors|connectivity>`.

Settings (the ``"nats"`` section; `url` and `name` as in the community fork)::

    "nats": {
      "url": "nats://nats:4222",          // or a list, or "nats://a:4222,nats://b:4222" (a cluster)
      "name": "fleetwire",                // the connection's name, shown by the server
      "user": "", "password": "",         // or "token": "", or "creds_file": "/path/user.creds"
      "tls": {"ca_file": "", "cert_file": "", "key_file": ""},   // or a tls:// url
      "jetstream": true,                  // false: core NATS, no persistence
      "stream": "",                       // JetStream stream to use or create (default: the namespace)
      "deduplicate": true,                // Nats-Msg-Id from VIN, type and txid
      "connect_timeout_ms": 2000, "publish_timeout_ms": 5000,
      "reconnect_initial_ms": 100, "reconnect_max_ms": 5000
    }

`NATS_PASSWORD` and `NATS_TOKEN` in the environment override `password` and `token`.

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
import random
import re
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fleetwire.server.dispatch import DispatchError
from fleetwire.server.records import Record
from fleetwire.server.metadata import metadata
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.js.api import StorageType
from nats.js.errors import Error as JetStreamError
from nats.js.errors import NotFoundError, ServiceUnavailableError

from fleetwire.strictjson import ConfigError, Reader, show

if TYPE_CHECKING:
    from fleetwire.server.config import ServerConfig
    from nats.aio.msg import Msg

log = logging.getLogger("fleetwire.dispatch.nats")

KINDS: Mapping[str, str] = {"V": "data", "alerts": "alerts", "errors": "errors", "connectivity": "connectivity"}
"""The last subject token per record type."""

SCHEMES = ("nats", "tls", "ws", "wss")
_UNSAFE_TOKEN = re.compile(r"[\s.*>]")
_UNSAFE_HEADER = re.compile(r"[\r\n]")


# -- settings ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NatsTls:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True, slots=True)
class NatsSettings:
    servers: tuple[str, ...] = ()
    name: str = "fleetwire"
    user: str = ""
    password: str = ""
    token: str = ""
    creds_file: Path | None = None
    tls: NatsTls | None = None
    jetstream: bool = True
    stream: str = ""
    deduplicate: bool = True
    connect_timeout_ms: int = 2000
    publish_timeout_ms: int = 5000
    reconnect_initial_ms: int = 100
    reconnect_max_ms: int = 5000

    @property
    def uses_tls(self) -> bool:
        return self.tls is not None or any(s.startswith(("tls://", "wss://")) for s in self.servers)


def redact(url: str) -> str:
    """`url` without the password or token it may carry (`nats://user:***@host:4222`)."""
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    if "@" not in parts.netloc:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
    masked = f"{user}:***" if user else "***"
    return f"{parts.scheme}://{masked}@{host}{parts.path}"


def _server_url(text: str, key: str) -> str:
    text = text.strip()
    expected = 'expected "nats://host:port" (scheme nats, tls, ws or wss; port 4222 by default)'
    shown = repr(redact(text)) if len(text) <= 200 and "\n" not in text else show(text)
    url = text if "://" in text else f"nats://{text}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError(key, f"{expected}, got {shown} (bad port)") from None
    if parts.scheme.lower() not in SCHEMES:
        raise ConfigError(key, f"{expected}, got {shown}")
    if not parts.hostname:
        raise ConfigError(key, f"{expected}, got {shown} (no host)")
    if port == 0:
        raise ConfigError(key, f"{expected}, got {shown} (bad port)")
    return url


def parse_settings(s: Reader, env: Mapping[str, str], in_use: bool) -> NatsSettings:
    s.known(("url", "name", "user", "password", "token", "creds_file", "tls", "jetstream", "stream",
             "deduplicate", "connect_timeout_ms", "publish_timeout_ms", "reconnect_initial_ms",
             "reconnect_max_ms"))
    url_key = s.key("url")
    raw = s.data.get("url", "")
    if isinstance(raw, str):
        entries = [part for part in raw.split(",") if part.strip()]
    elif isinstance(raw, list) and all(isinstance(u, str) for u in raw):
        entries = [part for u in raw for part in u.split(",") if part.strip()]
    else:
        raise ConfigError(url_key, "expected a server URL (\"nats://host:4222\") or a list of them, "
                          f"got {show(raw, url_key)}")
    if not entries and in_use:
        raise ConfigError(url_key, 'missing: expected the NATS server, e.g. "nats://nats:4222" '
                          "(a list or a comma-separated string for a cluster)")
    servers = tuple(_server_url(entry, url_key) for entry in entries)

    password = env.get("NATS_PASSWORD") or s.string("password", "")
    token = env.get("NATS_TOKEN") or s.string("token", "")
    user = s.string("user", "")
    if password and not user:
        raise ConfigError(s.key("user"), "missing: a password is set (nats.password or NATS_PASSWORD) "
                          "but no user; set nats.user")
    if token and user:
        raise ConfigError(s.key("token"), "a token and a user are both set; NATS takes one way of "
                          "logging in: keep either nats.token or nats.user/password")
    read = s.existing_file if in_use else s.file_path
    creds_file = read("creds_file", required=False)
    if creds_file is not None and (user or token):
        raise ConfigError(s.key("creds_file"), "a credentials file and a user or token are both set; "
                          "keep one way of logging in")

    tls: NatsTls | None = None
    if "tls" in s.data:
        t = s.section("tls")
        t.known(("ca_file", "cert_file", "key_file"))
        tread = t.existing_file if in_use else t.file_path
        tls = NatsTls(tread("ca_file", required=False), tread("cert_file", required=False),
                      tread("key_file", required=False))
        if (tls.cert_file is None) != (tls.key_file is None):
            missing = "key_file" if tls.key_file is None else "cert_file"
            raise ConfigError(t.key(missing), "missing: a client certificate needs both cert_file and key_file")

    stream = s.string("stream", "")
    if stream and not _valid_stream_name(stream):
        raise ConfigError(s.key("stream"), f"expected a JetStream stream name (no spaces, '.', '*', '>', "
                          f"'/' or '\\'), got {show(stream)}")
    initial = s.integer("reconnect_initial_ms", 100, minimum=1)
    return NatsSettings(
        servers=servers,
        name=s.string("name", "fleetwire"),
        user=user,
        password=password,
        token=token,
        creds_file=creds_file,
        tls=tls,
        jetstream=s.boolean("jetstream", True),
        stream=stream,
        deduplicate=s.boolean("deduplicate", True),
        connect_timeout_ms=s.integer("connect_timeout_ms", 2000, minimum=1),
        publish_timeout_ms=s.integer("publish_timeout_ms", 5000, minimum=1),
        reconnect_initial_ms=initial,
        reconnect_max_ms=s.integer("reconnect_max_ms", max(5000, initial), minimum=initial),
    )


def _valid_stream_name(name: str) -> bool:
    return bool(name) and re.search(r"[\s.*>/\\]", name) is None


def check_namespace(namespace: str) -> str:
    """The subject prefix: `namespace` if it is one or more valid subject tokens."""
    if not namespace:
        raise ConfigError("namespace", 'missing: the nats dispatcher publishes to "<namespace>.<VIN>.<kind>"; '
                          'set it, e.g. "namespace": "tesla_telemetry"')
    if any(not token or _UNSAFE_TOKEN.search(token) for token in namespace.split(".")):
        raise ConfigError("namespace", f"expected NATS subject tokens separated by '.' (no spaces, '*' or '>') "
                          f"for the nats dispatcher, got {show(namespace)}")
    return namespace


def tls_context(settings: NatsSettings) -> ssl.SSLContext | None:
    """The client TLS context, or None for a plain connection."""
    if not settings.uses_tls:
        return None
    tls = settings.tls or NatsTls()
    try:
        context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError("nats.tls.ca_file", f"cannot load CA certificates from {tls.ca_file}: "
                          f"{getattr(exc, 'reason', None) or exc.strerror or exc}") from None
    if tls.cert_file is not None and tls.key_file is not None:
        try:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError("nats.tls.cert_file", f"cannot load the client certificate {tls.cert_file} with "
                              f"key {tls.key_file}: {getattr(exc, 'reason', None) or exc.strerror or exc}") from None
    return context


# -- subjects (pure) ---------------------------------------------------------------


def token(text: str) -> str:
    """One subject token: '.', wildcards and whitespace would split or widen the subject."""
    return _UNSAFE_TOKEN.sub("_", text) if _UNSAFE_TOKEN.search(text) else text or "_"


def subject(namespace: str, record: Record) -> str:
    """`<namespace>.<VIN>.<kind>` for `record`."""
    return f"{namespace}.{token(record.vin)}.{KINDS.get(record.record_type) or token(record.record_type)}"


def covers(pattern: str, subject: str) -> bool:
    """Whether stream subject `pattern` matches every subject that `subject` (which may
    itself hold wildcards) matches."""
    p, s = pattern.split("."), subject.split(".")
    for i, pt in enumerate(p):
        if pt == ">":
            return len(s) > i
        if i >= len(s):
            return False
        st = s[i]
        if pt == "*":
            if st == ">":
                return False
        elif pt != st:
            return False
    return len(p) == len(s)


def headers(record: Record, deduplicate: bool) -> dict[str, str]:
    """The reference's metadata as NATS headers (no line breaks: they end a header)."""
    out = metadata(record)
    for key, value in out.items():
        if "\r" in value or "\n" in value:
            out[key] = _UNSAFE_HEADER.sub(" ", value)
    if deduplicate and record.record_type != "connectivity":
        # Connectivity records of one connection share their txid (the connection id).
        out["Nats-Msg-Id"] = f"{out['vin']}:{record.record_type}:{out['txid']}"
    return out


# -- the dispatcher ----------------------------------------------------------------


def header_block(fields: Mapping[str, str]) -> bytes:
    """The NATS header block (``NATS/1.0``, one ``Key: value`` line each, a blank line)."""
    lines = "".join(f"{key}: {value}\r\n" for key, value in fields.items())
    return f"NATS/1.0\r\n{lines}\r\n".encode()


def _clean(text: str) -> str:
    return _UNSAFE_HEADER.sub(" ", text) if "\r" in text or "\n" in text else text


def record_header_block(record: Record, deduplicate: bool) -> bytes:
    """`header_block(headers(record, deduplicate))`, in one format: this runs per record."""
    vin, txid, kind = _clean(record.vin), _clean(record.txid), record.record_type
    block = (f"NATS/1.0\r\nvin: {vin}\r\nreceivedat: {int(record.received_at * 1000)}\r\ntimestamp: 0\r\n"
             f"txid: {txid}\r\ntxtype: {kind}\r\nversion: 0\r\n"
             f"device_client_version: {_clean(record.client_version)}\r\n")
    if deduplicate and kind != "connectivity":
        block += f"Nats-Msg-Id: {vin}:{kind}:{txid}\r\n"
    return (block + "\r\n").encode()


def hpub(subj: str, reply: str, block: bytes, payload: bytes) -> bytes:
    """One HPUB protocol command: what the client would write for this message."""
    size = len(block)
    line = f"HPUB {subj} {reply} {size} {size + len(payload)}\r\n" if reply else \
        f"HPUB {subj} {size} {size + len(payload)}\r\n"
    return b"".join((line.encode(), block, payload, b"\r\n"))


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


class NatsDispatcher:
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

    def _fail_all(self, reason: str) -> None:
        for acks in self._batches.values():
            acks.fail(DispatchError(reason))


class _Attempt:
    """The client callbacks of one connection: they act only while it is the current one."""

    def __init__(self, dispatcher: NatsDispatcher) -> None:
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


def create(config: ServerConfig) -> NatsDispatcher:
    settings: NatsSettings = config.backend("nats")
    if not settings.servers:
        raise ConfigError("nats.url", 'missing: expected the NATS server, e.g. "nats://nats:4222"')
    types = [t for t, names in config.records.items() if "nats" in names]
    kinds = [KINDS.get(t, t) for t in types] or list(KINDS.values())
    return NatsDispatcher(settings, config.namespace, decoded=config.transmit_decoded_records, kinds=kinds)
