"""The redis backend: records published to Redis pub/sub channels, as the reference does.

Settings are the reference's `redis` section (read in `settings.py` beside this module). Durations
(`publish_timeout`, the pool's timeouts) are Go `time.Duration` values in its JSON, i.e.
integer nanoseconds; 0 means the default (5 s to publish, as the reference).
`REDIS_PASSWORD` in the environment overrides `password`. `tls.server_cert`/`tls.server_key`
are the client certificate presented to Redis, `tls.ca_file` the CA that Redis' certificate
must chain to. Several
`addrs`, or `cluster_mode`, make a Redis Cluster client (as go-redis' universal client).
`publish_timeout` bounds a whole batch; `pool.read_timeout` is the socket timeout (3 s by
default, as go-redis), `pool.pool_size` (or `max_active_conns`) the connections per node
and `pool.pool_timeout` the wait for a free one; the other pool keys have no counterpart
in redis-py and only warn when set. `override_tls_server_name` checks every connection's
certificate against the host of the first address (cluster nodes announce themselves by
IP; the certificate names the service).

Where each record goes (`<ns>_<type>` is `<namespace>_<record_type>`):

- `publish_vin_topics`: ``PUBLISH <ns>_<type>_{<VIN>} payload``;
- `subscriber_set_prefix` P: the members of the sorted set ``P_<ns>_<type>_{<VIN>}`` are
  channels to publish to; members whose score (a lease's end, epoch seconds) has passed
  are removed first (``ZREMRANGEBYSCORE key -inf (now``). Both may be set: the set's
  channels, then the VIN channel. The braces make a VIN's keys one cluster slot.

The payload is the record's protobuf, or its protobuf-JSON with `transmit_decoded_records`.
A batch costs two round trips at most: the sets' cleanup and reads (pipelined), then the
publishes — one EVALSHA of a short Lua script running every PUBLISH of the batch, packed
here and sent on a connection the dispatcher keeps (pipelined PUBLISHes where scripts are
refused, concurrent ones in a cluster). Redis pub/sub stores nothing: a confirmation (the reliable ack) means Redis
accepted every PUBLISH of the batch; a channel nobody listens to at that moment gets
nothing (counted in `unheard`). A Redis that is down fails the batch with
`DispatchError`; the queue retries it with back-off and the client reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from fleetwire.server.dispatch import DispatchError
from fleetwire.server.records import Record
from fleetwire.server.dispatchers.redis.settings import ClientTls, RedisSettings, parse_settings, split_addr

if TYPE_CHECKING:
    from fleetwire.server.config import ServerConfig

# The backend's names as the registry (`parse_settings`, `create`) and tests reach them.
__all__ = ["ClientTls", "RedisDispatcher", "RedisSettings", "create", "evalsha_command", "parse_settings",
           "split_addr", "subscriber_set", "vin_channel"]

log = logging.getLogger("fleetwire.dispatch.redis")

# Pool settings of go-redis that redis-py's pool has no counterpart for.
DIAL_TIMEOUT = 5.0  # go-redis' DialTimeout
_CLUSTER_CONCURRENCY = 32  # publishes in flight at once in cluster mode
# A batch's PUBLISHes as one command: one reply to read instead of one per record (about
# a third of the client's CPU per record). Subscribers see the same PUBLISHes.
# It answers one flag per PUBLISH ("1": some subscriber received it), as one string.
_PUBLISH_ALL = ("local heard = {} for i = 1, #ARGV, 2 do heard[#heard + 1] = "
                "(redis.call('PUBLISH', ARGV[i], ARGV[i + 1]) > 0) and '1' or '0' end "
                "return table.concat(heard)")
_PUBLISH_ALL_SHA = hashlib.sha1(_PUBLISH_ALL.encode()).hexdigest().encode()
_SCRIPT_LOAD = b"*3\r\n$6\r\nSCRIPT\r\n$4\r\nLOAD\r\n$%d\r\n%s\r\n" % (len(_PUBLISH_ALL), _PUBLISH_ALL.encode())


def evalsha_command(publishes: Sequence[tuple[bytes, bytes]]) -> bytes:
    """The RESP bytes of ``EVALSHA <sha> 0 channel payload ...`` (packed here: a batch is
    one join, where the client library encodes argument by argument)."""
    parts = [b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n$1\r\n0\r\n" % (3 + 2 * len(publishes), _PUBLISH_ALL_SHA)]
    for channel, payload in publishes:
        parts.append(b"$%d\r\n%s\r\n$%d\r\n" % (len(channel), channel, len(payload)))
        parts.append(payload)
        parts.append(b"\r\n")
    return b"".join(parts)


# -- addressing (pure) ---------------------------------------------------------------


def vin_channel(namespace: str, record_type: str, vin: str) -> str:
    """``<namespace>_<record_type>_{<VIN>}``, the reference's per-VIN channel."""
    return f"{namespace}_{record_type}_{{{vin}}}"


def subscriber_set(prefix: str, namespace: str, record_type: str, vin: str) -> str:
    """``<prefix>_<namespace>_<record_type>_{<VIN>}``: the sorted set of subscriber channels."""
    return f"{prefix}_{vin_channel(namespace, record_type, vin)}"


# -- the client ----------------------------------------------------------------------


def _client(settings: RedisSettings) -> Any:
    """A redis-py asyncio client (cluster or not) for `settings`; connects lazily."""
    pool = settings.pool
    read_timeout = settings.seconds(pool.get("read_timeout"), 3.0)  # go-redis' default ReadTimeout
    common: dict[str, Any] = {
        "username": settings.username or None,
        "password": settings.password or None,
        "socket_timeout": read_timeout,
        "socket_connect_timeout": DIAL_TIMEOUT,
        # One attempt per command: the dispatch queue retries whole batches with back-off.
        "retry": Retry(NoBackoff(), 0),
    }
    size = pool.get("pool_size") or pool.get("max_active_conns")
    if settings.tls is not None:
        tls = settings.tls
        common.update(ssl=True, ssl_ca_certs=str(tls.ca_file) if tls.ca_file else None,
                      ssl_certfile=str(tls.server_cert) if tls.server_cert else None,
                      ssl_keyfile=str(tls.server_key) if tls.server_key else None)
    server_name = split_addr(settings.addrs[0])[0] if settings.override_tls_server_name else None

    class NamedSSLConnection(SSLConnection):
        """Checks every node's certificate against the first address' host name."""

        def _connection_arguments(self) -> Mapping[str, Any]:
            return {**super()._connection_arguments(), "server_hostname": server_name}

    if settings.cluster:
        nodes = [ClusterNode(*split_addr(a)) for a in settings.addrs]
        client = RedisCluster(startup_nodes=nodes, max_connections=size or 100, **common)
        if settings.tls is not None and server_name:
            # Nodes are built from these arguments: the startup nodes now, the rest when discovered.
            client.connection_kwargs["connection_class"] = NamedSSLConnection
            for node in client.startup_nodes:
                node.connection_class = NamedSSLConnection
        return client
    host, port = split_addr(settings.addrs[0])
    kwargs = dict(common)
    if kwargs.pop("ssl", False):
        kwargs["connection_class"] = NamedSSLConnection if server_name else SSLConnection
    pool_timeout = settings.seconds(pool.get("pool_timeout"), (read_timeout or 3.0) + 1.0)
    connection_pool = aioredis.BlockingConnectionPool(host=host, port=port, db=settings.db, max_connections=size or 50,
                                                      timeout=pool_timeout, **kwargs)
    return aioredis.Redis(connection_pool=connection_pool)


# -- the dispatcher ------------------------------------------------------------------


class RedisDispatcher:
    """Publishes batches through one Redis client (pipelined)."""

    name = "redis"

    def __init__(self, settings: RedisSettings, namespace: str = "", *, decoded: bool = False,
                 client: Any = None) -> None:
        self.settings = settings
        self.target = ",".join(settings.addrs)
        self._namespace = namespace
        self._decoded = decoded
        self._vin_topics = settings.publish_vin_topics
        self._prefix = settings.subscriber_set_prefix
        self._timeout = settings.publish_timeout_s
        self._cluster = settings.cluster
        self._client = client
        self.scripted = not self._cluster  # publishing by script (until Redis refuses scripts)
        self._conn: Any = None  # the connection the script path keeps (publishes are sequential)
        self._pinger: asyncio.Task[None] | None = None
        self._closed = False
        self._failing_since: float | None = None
        # state, read by metrics and tests
        self.messages_published = 0
        self.unheard = 0  # publishes no subscriber received (pub/sub keeps nothing)
        self.unheard_txids: deque[str] = deque(maxlen=1000)
        self.reachable = False
        self.last_error: str | None = None

    async def start(self) -> None:
        """Build the client and ping Redis in the background: a Redis that is down now is
        logged and pinged again with back-off, never fatal."""
        if self._client is None:
            self._client = _client(self.settings)
        if self._pinger is None:
            self._pinger = asyncio.get_running_loop().create_task(self._ping_until_up(), name="redis-ping")

    async def _ping_until_up(self) -> None:
        delay = 0.5
        while not self._closed:
            try:
                async with asyncio.timeout(DIAL_TIMEOUT + 1):
                    await self._client.ping()
            except (rexc.RedisError, OSError, TimeoutError) as exc:  # say so once, try again later
                self.last_error = f"{type(exc).__name__}: {exc}"
                if delay == 0.5:
                    log.warning("redis: %s does not answer (pinging again with back-off): %s",
                                self.target, self.last_error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            self.reachable = True
            log.info("redis: connected to %s", self.target)
            return

    def _payload(self, record: Record) -> bytes:
        return record.json(self.name) if self._decoded else record.payload

    async def publish(self, batch: Sequence[Record]) -> None:
        if self._closed or self._client is None:
            raise DispatchError("the redis dispatcher is closed" if self._closed else "the redis dispatcher "
                                "is not started", retryable=not self._closed)
        if not batch:
            return
        try:
            async with asyncio.timeout(self._timeout):
                heard = await self._publish(batch)
        except (TimeoutError, rexc.TimeoutError) as exc:
            raise self._failure(f"no answer within {self._timeout:g} s", exc) from None
        except rexc.ResponseError as exc:  # a command Redis refuses (WRONGTYPE on a set key, say): no retry mends it
            raise self._failure(str(exc), exc, retryable=False) from exc
        except (rexc.RedisError, OSError) as exc:
            raise self._failure(str(exc) or type(exc).__name__, exc) from exc
        if self._failing_since is not None:
            log.info("redis: publishing again after %.1f s", time.monotonic() - self._failing_since)
            self._failing_since = None
        self.reachable = True
        self.messages_published += len(batch)
        for record, receivers in zip(batch, heard, strict=True):
            if not receivers:
                self.unheard += 1
                self.unheard_txids.append(record.txid)

    def _failure(self, reason: str, exc: BaseException, retryable: bool = True) -> DispatchError:
        self.last_error = reason
        if self._failing_since is None:
            self._failing_since = time.monotonic()
        self.reachable = False
        return DispatchError(f"redis {self.target}: {reason}", retryable=retryable)

    async def _publish(self, batch: Sequence[Record]) -> list[int]:
        """Publish every record; returns, per record, how many subscribers received it."""
        namespace, client = self._namespace, self._client
        channels: list[list[str]] = [[] for _ in batch]
        if self._prefix:
            keys = {subscriber_set(self._prefix, namespace, r.record_type, r.vin) for r in batch}
            ordered = sorted(keys)
            now = int(time.time())
            pipe = client.pipeline(transaction=False)
            for key in ordered:
                pipe.zremrangebyscore(key, "-inf", f"({now}")
                pipe.zrange(key, 0, -1)
            replies = await pipe.execute(raise_on_error=True)
            members = {key: replies[2 * i + 1] for i, key in enumerate(ordered)}
            for i, r in enumerate(batch):
                found = members[subscriber_set(self._prefix, namespace, r.record_type, r.vin)]
                channels[i] = [m.decode() if isinstance(m, bytes) else m for m in found]
        if self._vin_topics:
            for i, r in enumerate(batch):
                channels[i].append(vin_channel(namespace, r.record_type, r.vin))
        publishes = [(channel, self._payload(r)) for r, targets in zip(batch, channels, strict=True)
                     for channel in targets]
        if not publishes:
            return [0] * len(batch)
        if self._cluster:
            # A cluster pipeline refuses PUBLISH (it has no key to route by): up to
            # `_CLUSTER_CONCURRENCY` at a time instead, each to a node of the client's choice.
            replies = []
            for at in range(0, len(publishes), _CLUSTER_CONCURRENCY):
                chunk = publishes[at:at + _CLUSTER_CONCURRENCY]
                replies += await asyncio.gather(*(client.publish(c, p) for c, p in chunk))
        elif self.scripted:
            replies = await self._publish_by_script(publishes)
        else:
            replies = await self._publish_pipelined(publishes)
        heard, at = [], 0
        for targets in channels:
            n = len(targets)
            heard.append(sum(replies[at:at + n]))
            at += n
        return heard

    async def _publish_pipelined(self, publishes: list[tuple[str, bytes]]) -> list[int]:
        pipe = self._client.pipeline(transaction=False)
        for channel, payload in publishes:
            pipe.publish(channel, payload)
        return list(await pipe.execute(raise_on_error=True))

    async def _publish_by_script(self, publishes: list[tuple[str, bytes]]) -> list[int]:
        command = evalsha_command([(channel.encode(), payload) for channel, payload in publishes])
        try:
            try:
                flags = await self._call(command)
            except rexc.NoScriptError:  # a restarted (or flushed) Redis: load it, once
                await self._call(_SCRIPT_LOAD)
                flags = await self._call(command)
        except rexc.ResponseError as exc:
            # Scripts refused (an ACL without EVALSHA, a proxy without scripting): PUBLISH
            # command by command from now on.
            log.warning("redis: %s refuses the publishing script (%s); publishing command by command",
                        self.target, exc)
            self.scripted = False
            return await self._publish_pipelined(publishes)
        return [flag == 49 for flag in flags]  # b"1"

    async def _call(self, command: bytes) -> Any:
        """Send `command` on the kept connection and read its reply. A connection left
        with a request in flight (an error, a timeout, a cancellation) is dropped: its late
        reply must not be read as the next one's."""
        conn = self._conn
        if conn is None:
            conn = self._conn = await self._client.connection_pool.get_connection()
        try:
            await conn.send_packed_command(command, check_health=False)
            return await conn.read_response()
        except rexc.ResponseError:
            raise  # a whole reply was read: the connection is in step
        except BaseException:
            self._conn = None
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)
            with contextlib.suppress(Exception):
                await self._client.connection_pool.release(conn)
            raise

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        pinger, self._pinger = self._pinger, None
        if pinger is not None:
            pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinger
        client = self._client
        conn, self._conn = self._conn, None
        if conn is not None and client is not None:
            with contextlib.suppress(Exception):
                await client.connection_pool.release(conn)
        if client is not None:
            with contextlib.suppress(Exception):
                closing = getattr(client, "aclose", None) or client.close
                await asyncio.wait_for(closing(), 5)


def create(config: ServerConfig) -> RedisDispatcher:
    return RedisDispatcher(config.backend("redis"), config.namespace, decoded=config.transmit_decoded_records)
