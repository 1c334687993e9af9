"""A lean load generator: picows on uvloop, pre-encoded frames, replies counted.

Every phase is a coroutine that returns a dict of figures. The server under test is
observed from outside through /proc (its CPU time and RSS), so any server can be measured.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import ssl
import statistics
import time
from collections import deque
from collections.abc import Sequence

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect
from system import core_busy, cpu_seconds, rss_bytes


class Tally:
    """Replies counted across all connections of a phase."""

    __slots__ = ("replies",)

    def __init__(self) -> None:
        self.replies = 0


class Conn(WSListener):
    """One vehicle connection. Sends pre-encoded frames straight to the TLS transport.

    With ``refill`` on, every reply is answered by the next frame (a closed loop keeping a
    fixed window in flight); sends made in one loop iteration go out in a single write.
    With ``sent_at`` set, replies are matched to send times in order (acks come in order).
    """

    def __init__(self, frames: Sequence[bytes], offset: int, tally: Tally) -> None:
        super().__init__()
        self.frames = frames
        self.next = offset % len(frames)
        self.tally = tally
        self.replies = 0
        self.refill = False
        self.owed = 0
        self.sent_at: deque[float] | None = None
        self.latencies: list[tuple[float, float]] = []
        self.waiter: asyncio.Future[None] | None = None
        self.wait_for = 0
        self.kept: list[bytes] | None = None
        self.transport: WSTransport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.BINARY:
            self.replies += 1
            self.tally.replies += 1
            if self.kept is not None:
                self.kept.append(frame.get_payload_as_bytes())
            if self.sent_at is not None and self.sent_at:
                sent = self.sent_at.popleft()
                self.latencies.append((sent, time.perf_counter() - sent))
            if self.refill:
                if not self.owed:
                    asyncio.get_running_loop().call_soon(self._flush)
                self.owed += 1
            if self.waiter is not None and self.replies >= self.wait_for and not self.waiter.done():
                self.waiter.set_result(None)
        elif frame.msg_type is WSMsgType.CLOSE:
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("disconnected"))

    def _flush(self) -> None:
        n, self.owed = self.owed, 0
        if self.refill:
            self.send(n)

    def send(self, n: int = 1) -> None:
        if self.closed.done() or self.transport is None:
            return
        frames, i, size = self.frames, self.next, len(self.frames)
        if self.sent_at is not None:
            self.sent_at.extend(itertools.repeat(time.perf_counter(), n))
        if n == 1:
            data = frames[i]
        else:
            data = b"".join(frames[(i + k) % size] for k in range(n))
        self.next = (i + n) % size
        self.transport.underlying_transport.write(data)

    async def request(self, n: int = 1, timeout: float = 10.0) -> None:
        """Send n frames and wait for their replies."""
        self.waiter = asyncio.get_running_loop().create_future()
        self.wait_for = self.replies + n
        self.send(n)
        await asyncio.wait_for(self.waiter, timeout)

    def alive(self) -> bool:
        return not self.closed.done()

    def session_reused(self) -> bool:
        assert self.transport is not None
        ssl_object = self.transport.underlying_transport.get_extra_info("ssl_object")
        return bool(ssl_object is not None and ssl_object.session_reused)

    async def close(self) -> None:
        if self.transport is not None and not self.closed.done():
            self.transport.send_close()
            self.transport.disconnect()
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), 5)
        except TimeoutError:
            pass


class HttpsConn:
    """One mTLS connection to a plain HTTPS server (nginx): a tiny GET where a vehicle sends a record.

    Only the idle and handshake phases use it: what they measure is the TLS layer, which a
    WebSocket adds nothing to while idle."""

    REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tally: Tally) -> None:
        self.reader, self.writer, self.tally = reader, writer, tally

    async def request(self, n: int = 1, timeout: float = 10.0) -> None:
        for _ in range(n):
            self.writer.write(self.REQUEST)
            headers = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
            length = next(int(line.split(b":", 1)[1]) for line in headers.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            await asyncio.wait_for(self.reader.readexactly(length), timeout)
            self.tally.replies += 1

    def alive(self) -> bool:
        return not (self.reader.at_eof() or self.writer.is_closing())

    def session_reused(self) -> bool:
        ssl_object = self.writer.get_extra_info("ssl_object")
        return bool(ssl_object is not None and ssl_object.session_reused)

    async def close(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 5)
        except (TimeoutError, OSError, ssl.SSLError):
            pass


async def connect(url: str, ctx: ssl.SSLContext, frames: Sequence[bytes], offset: int, tally: Tally
                  ) -> Conn | HttpsConn:
    """A vehicle's connection: a WebSocket for `wss://`, a plain HTTPS one for `https://` (nginx)."""
    if url.startswith("https://"):
        host, _, port = url.removeprefix("https://").rstrip("/").rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(port), ssl=ctx, server_hostname=host)
        return HttpsConn(reader, writer, tally)
    _, listener = await ws_connect(
        lambda: Conn(frames, offset, tally), url, ssl_context=ctx,
        extra_headers={"Version": "1.0.0", "X-Network-Interface": "wifi"},
        read_buffer_init_size=4096, websocket_handshake_timeout=30,
    )
    assert isinstance(listener, Conn)
    return listener


async def probe(url: str, ctx: ssl.SSLContext, frames: Sequence[bytes], n: int) -> list[bytes]:
    """The replies to n records sent on one connection, for checking they are acks."""
    conn = await connect(url, ctx, frames, 0, Tally())
    conn.kept = []
    try:
        await conn.request(n)
    finally:
        await conn.close()
    return conn.kept


async def open_many(
    url: str, contexts: Sequence[ssl.SSLContext], frames: Sequence[bytes], n: int,
    tally: Tally, concurrency: int = 32,
) -> list[Conn | HttpsConn]:
    """Open n connections, `concurrency` handshakes at a time, vehicle i using contexts[i]."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> Conn | HttpsConn:
        async with gate:
            return await connect(url, contexts[i % len(contexts)], frames, i * 7, tally)

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def close_all(conns: Sequence[Conn | HttpsConn]) -> None:
    await asyncio.gather(*(c.close() for c in conns))


class Window:
    """Snapshot of wall time, server and client CPU, and replies; `since` gives the deltas."""

    def __init__(self, server_pid: int, tally: Tally) -> None:
        self.pid, self.tally = server_pid, tally
        self.wall = time.perf_counter()
        self.server_cpu = cpu_seconds(server_pid)
        self.client_cpu = cpu_seconds()
        self.replies = tally.replies
        self.core = core_busy(os.sched_getaffinity(server_pid))

    def since(self, start: Window) -> dict[str, float]:
        wall = self.wall - start.wall
        return {
            "wall_s": wall,
            "replies": self.replies - start.replies,
            "server_cpu_s": self.server_cpu - start.server_cpu,
            "server_cpu_util": (self.server_cpu - start.server_cpu) / wall,
            "client_cpu_util": (self.client_cpu - start.client_cpu) / wall,
            # Busy share of the server's core, the server's own or anyone's: a value well above
            # server_cpu_util means other processes competed for that core during the window.
            "server_core_busy": (self.core[0] - start.core[0]) / max(1, self.core[1] - start.core[1]),
        }


async def saturate(
    url: str, contexts: Sequence[ssl.SSLContext], frames: Sequence[bytes], server_pid: int, *,
    connections: int, window: int, warmup: float, duration: float,
) -> dict[str, float]:
    """Closed loop: `window` records in flight on each connection; acks per second and CPU per ack."""
    tally = Tally()
    conns = await open_many(url, contexts, frames, connections, tally)
    try:
        for c in conns:
            c.refill = True
            c.send(window)
        await asyncio.sleep(warmup)
        start = Window(server_pid, tally)
        await asyncio.sleep(duration)
        w = Window(server_pid, tally).since(start)
        for c in conns:
            c.refill = False
        alive = sum(c.alive() for c in conns)
    finally:
        await close_all(conns)
    records = w["replies"]
    return {
        "connections": connections,
        "window": window,
        "records_per_s": records / w["wall_s"],
        "server_cpu_us_per_record": 1e6 * w["server_cpu_s"] / records if records else float("nan"),
        "server_cpu_util": w["server_cpu_util"],
        "server_core_busy": w["server_core_busy"],
        "client_cpu_util": w["client_cpu_util"],
        "records": records,
        "connections_alive": alive,
    }


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def latency(
    url: str, contexts: Sequence[ssl.SSLContext], frames: Sequence[bytes], server_pid: int, *,
    connections: int, rate: float, warmup: float, duration: float,
) -> dict[str, float]:
    """Open loop at a fixed aggregate rate, round robin over connections; ack latency percentiles."""
    tally = Tally()
    conns = await open_many(url, contexts, frames, connections, tally)
    for c in conns:
        c.sent_at = deque()
    try:
        t0 = time.perf_counter()
        measure_from, measure_to = t0 + warmup, t0 + warmup + duration
        sent, turn = 0, 0
        start: Window | None = None
        while (now := time.perf_counter()) < measure_to:
            if start is None and now >= measure_from:
                start = Window(server_pid, tally)
            for _ in range(int((now - t0) * rate) - sent):
                conns[turn].send()
                turn = (turn + 1) % connections
                sent += 1
            await asyncio.sleep(0.001)  # one libuv timer tick; shorter would spin
        assert start is not None
        w = Window(server_pid, tally).since(start)
        await asyncio.sleep(1.0)  # let the last acks in
    finally:
        await close_all(conns)
    samples = sorted(lat for c in conns for sent_at, lat in c.latencies if measure_from <= sent_at < measure_to)
    lost = sum(len(c.sent_at or ()) for c in conns)
    return {
        "rate": rate,
        "connections": connections,
        "acks_per_s": w["replies"] / w["wall_s"],
        "p50_ms": 1e3 * statistics.median(samples) if samples else float("nan"),
        "p99_ms": 1e3 * _percentile(samples, 0.99) if samples else float("nan"),
        "max_ms": 1e3 * samples[-1] if samples else float("nan"),
        "samples": len(samples),
        "unacked": lost,
        "server_cpu_util": w["server_cpu_util"],
        "server_core_busy": w["server_core_busy"],
        "client_cpu_util": w["client_cpu_util"],
    }


async def idle_memory(
    url: str, contexts: Sequence[ssl.SSLContext], frames: Sequence[bytes], server_pid: int, *,
    connections: int, settle: float = 1.0,
) -> dict[str, float]:
    """Server RSS growth per connection that opened, had one record acked, and went quiet."""
    tally = Tally()
    warm = await connect(url, contexts[-1], frames, 0, tally)  # load lazy state before the baseline
    await warm.request(4)
    await asyncio.sleep(settle)
    before = rss_bytes(server_pid)
    conns = await open_many(url, contexts, frames, connections, tally)
    try:
        await asyncio.gather(*(c.request(1, timeout=60) for c in conns))
        await asyncio.sleep(settle)
        after = rss_bytes(server_pid)
        alive = sum(c.alive() for c in conns)
    finally:
        await close_all([*conns, warm])
    return {
        "connections": connections,
        "connections_alive": alive,
        "rss_before_mb": before / 2**20,
        "rss_after_mb": after / 2**20,
        "kb_per_connection": (after - before) / connections / 1024,
    }


async def handshakes(
    url: str, contexts: Sequence[ssl.SSLContext], server_pid: int, *,
    concurrency: int, warmup: float, duration: float,
) -> dict[str, float]:
    """Fresh mTLS handshake + WebSocket upgrade (or one tiny GET) + close, `concurrency` at a time."""
    tally = Tally()
    frames = [b""]
    done = failed = resumed = 0
    stop = time.perf_counter() + warmup + duration

    async def worker(k: int) -> None:
        nonlocal done, failed, resumed
        i = k
        while time.perf_counter() < stop:
            try:
                conn = await connect(url, contexts[i % len(contexts)], frames, 0, tally)
                if isinstance(conn, HttpsConn):
                    await conn.request(1)  # nginx's tiny request; a WebSocket's is the upgrade
                resumed += conn.session_reused()
                await conn.close()
                done += 1
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                failed += 1
                if failed > 100:
                    raise RuntimeError(f"handshakes keep failing: {exc!r}") from exc
            i += concurrency

    workers = [asyncio.ensure_future(worker(k)) for k in range(concurrency)]
    await asyncio.sleep(warmup)
    start, done_at_start = Window(server_pid, tally), done
    await asyncio.sleep(duration)
    w, count = Window(server_pid, tally).since(start), done - done_at_start
    await asyncio.gather(*workers)
    return {
        "concurrency": concurrency,
        "handshakes_per_s": count / w["wall_s"],
        "per_server_cpu_s": count / w["server_cpu_s"] if w["server_cpu_s"] else float("nan"),
        "server_cpu_ms_per_handshake": 1e3 * w["server_cpu_s"] / count if count else float("nan"),
        "server_cpu_util": w["server_cpu_util"],
        "server_core_busy": w["server_core_busy"],
        "client_cpu_util": w["client_cpu_util"],
        "failures": failed,
        "resumed_sessions": resumed,
    }
