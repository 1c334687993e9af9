"""The HTTP-01 responder: serves only the tokens presented, only on GET."""

from __future__ import annotations

import asyncio


from fleetwire.operator.clients.http01 import Http01Responder


# ======================================================================================
# HTTP-01 responder
# ======================================================================================


async def _http(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    data = await reader.read()
    writer.close()
    return data


async def test_http01_responder_serves_only_known_tokens() -> None:
    async with Http01Responder("127.0.0.1", 0) as responder:
        await responder.present("a.fleetwire.test", "tok", "tok.thumb")
        ok = await _http(responder.port, b"GET /.well-known/acme-challenge/tok HTTP/1.1\r\nHost: a\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200") and ok.endswith(b"\r\n\r\ntok.thumb")
        assert (await _http(responder.port, b"GET /.well-known/acme-challenge/x HTTP/1.1\r\n\r\n")).startswith(
            b"HTTP/1.1 404"
        )
        assert (await _http(responder.port, b"GET / HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 404")
        assert (await _http(responder.port, b"POST /.well-known/acme-challenge/tok HTTP/1.1\r\n\r\n")).startswith(
            b"HTTP/1.1 405"
        )
        await responder.cleanup("a.fleetwire.test", "tok", "tok.thumb")
        assert responder.tokens == {}
