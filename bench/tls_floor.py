"""OpenSSL's own cost of a server-side mTLS handshake, measured in-process.

Client and server `ssl.SSLObject`s talk through memory BIOs in one thread, so no socket,
event loop or framework is involved: the server's CPU time is the thread CPU time spent
inside its own calls (the handshake, reading one tiny request, writing one tiny reply).
TLS 1.3 with no session tickets, a fresh handshake every time (no resumption), the same
certificates and verification as the servers under test. This is the floor a server's
handshake cost is compared with (`handshakes ≤ 1.25x OpenSSL`).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"
T = TypeVar("T")


def server_context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.num_tickets = 0
    ctx.load_verify_locations(cafile=ca)
    ctx.load_cert_chain(cert, key)
    return ctx


class _Timed:
    """Thread CPU time spent in the server's calls only."""

    def __init__(self) -> None:
        self.ns = 0

    def __call__(self, fn: Callable[[], T]) -> T:
        start = time.thread_time_ns()
        try:
            return fn()
        finally:
            self.ns += time.thread_time_ns() - start


def _untimed(fn: Callable[[], T]) -> T:
    return fn()


def _pump(source: ssl.MemoryBIO, sink: ssl.MemoryBIO) -> bool:
    data = source.read()
    if data:
        sink.write(data)
    return bool(data)


def one_handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, timed: _Timed) -> None:
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    server = timed(lambda: server_ctx.wrap_bio(s_in, s_out, server_side=True))
    done = {"client": False, "server": False}

    def step(obj: ssl.SSLObject, name: str, timer: Callable[[Callable[[], None]], None]) -> None:
        if not done[name]:
            try:
                timer(obj.do_handshake)
                done[name] = True
            except ssl.SSLWantReadError:
                pass

    for _ in range(20):
        step(client, "client", _untimed)
        _pump(c_out, s_in)
        step(server, "server", timed)
        moved = _pump(s_out, c_in)
        if done["client"] and done["server"] and not moved:
            break
    else:
        raise RuntimeError("handshake did not finish")
    client.write(REQUEST)
    _pump(c_out, s_in)
    request = timed(lambda: server.read(4096))
    assert request == REQUEST, request
    timed(lambda: server.write(RESPONSE))
    _pump(s_out, c_in)
    assert client.read(4096) == RESPONSE


def handshakes(server_ctx: ssl.SSLContext, client_contexts: Sequence[ssl.SSLContext], *,
               warmup: int = 50, count: int = 1000) -> dict[str, float]:
    """Server CPU per handshake over `count` fresh handshakes (after `warmup` untimed ones)."""
    for i in range(warmup):
        one_handshake(server_ctx, client_contexts[i % len(client_contexts)], _Timed())
    timed = _Timed()
    wall = time.perf_counter()
    for i in range(count):
        one_handshake(server_ctx, client_contexts[i % len(client_contexts)], timed)
    wall = time.perf_counter() - wall
    return {
        "handshakes": count,
        "server_cpu_ms_per_handshake": timed.ns / count / 1e6,
        "per_server_cpu_s": count / (timed.ns / 1e9),
        "wall_s": wall,
    }
