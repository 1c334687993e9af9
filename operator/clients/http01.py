"""HTTP-01 responder: answers `GET /.well-known/acme-challenge/<token>` with the key authorization.

A few dozen lines of asyncio instead of a web framework: the ACME validator sends one
small GET per challenge and nothing else reaches this port, so a minimal HTTP/1.1
reader with strict size limits is both enough and easy to audit.
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType

__all__ = ["CHALLENGE_PREFIX", "Http01Responder"]

CHALLENGE_PREFIX = "/.well-known/acme-challenge/"
_MAX_HEAD = 8192  # request line plus headers; validators send a few hundred bytes
_READ_TIMEOUT = 10.0

log = logging.getLogger("fleetwire.operator.clients.http01")


class Http01Responder:
    """Serves key authorizations from a token → value map the ACME client fills and clears.

    Also an HTTP-01 challenge solver for `AcmeClient.issue` (`present`/`cleanup`). Port 80 in
    production (Let's Encrypt validates there and nowhere else); any port in tests.
    """

    challenge_type = "http-01"

    def __init__(self, host: str = "0.0.0.0", port: int = 80) -> None:
        self.host = host
        self.port = port
        self.tokens: dict[str, str] = {}
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen; with `port=0` the kernel picks one and `self.port` reports it."""
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._handle, self.host, self.port, limit=_MAX_HEAD)
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("HTTP-01 responder listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Http01Responder:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- the solver interface ---------------------------------------------------------------

    async def present(self, domain: str, token: str, validation: str) -> None:
        """Publish the key authorization for `token` (the domain does not matter on a port)."""
        self.tokens[token] = validation

    async def cleanup(self, domain: str, token: str, validation: str) -> None:
        self.tokens.pop(token, None)

    # -- HTTP ---------------------------------------------------------------------------------

    def respond(self, method: str, target: str) -> tuple[int, bytes]:
        """Status and body for one request: the decision, separate from the socket work."""
        if method not in ("GET", "HEAD"):
            return 405, b"method not allowed\n"
        path = target.split("?", 1)[0]
        if not path.startswith(CHALLENGE_PREFIX):
            return 404, b"not found\n"
        value = self.tokens.get(path[len(CHALLENGE_PREFIX):])
        if value is None:
            return 404, b"unknown token\n"
        return 200, value.encode("ascii")

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                return
            parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            if len(parts) != 3:
                status, body = 400, b"bad request\n"
                method = "GET"
            else:
                method = parts[0]
                status, body = self.respond(method, parts[1])
            log.debug("HTTP-01 %s %s -> %d", method, parts[1] if len(parts) == 3 else "?", status)
            reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}[status]
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode("ascii")
                + (b"" if method == "HEAD" else body)
            )
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
