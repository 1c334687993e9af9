"""Failed TLS handshakes are counted by reason and summarised, never printed one by one.

Junk of every kind a public port sees (TCP opened and closed, resets, a truncated
ClientHello, plain HTTP, no client certificate, a certificate from an unknown CA, a
client that never speaks) is thrown at a real server on loopback; stderr and every log
record are captured, and the counter must account for each connection exactly.
"""

from __future__ import annotations

import asyncio
import io
import logging
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop
from conftest import RunningServer, ServerFactory
from fleetwire.pki import make_ca, make_vehicle_cert, write_bundle
from fleetwire.server import app
from fleetwire.server.config import ConfigError
from fleetwire.server.environment import log_interval, suppress_logging
from fleetwire.server.handshake import REASONS, FailureSummary, classify
from fleetwire.server.transport import handshake_exception_handler
from fleetwire.sim.vehicle import client_context
from websockets.asyncio.client import connect

ASYNCIO_LOOP_FACTORY = uvloop.new_event_loop  # the loop `fleetwire serve` runs on

VIN = "5YJ3E1EA7KF000001"
JUNK_PER_KIND = 1000
BATCH = 50


# -- pure pieces ------------------------------------------------------------------------


def _ssl_error(reason: str, cls: type[ssl.SSLError] = ssl.SSLError, **attrs: Any) -> ssl.SSLError:
    exc = cls()
    exc.reason = reason  # type: ignore[misc]
    for name, value in attrs.items():
        setattr(exc, name, value)
    return exc


@pytest.mark.parametrize(("exc", "reason"), [
    (ConnectionResetError, "closed_before_handshake"),  # aiofastnet 1.2 passes the class for an EOF
    (ConnectionResetError(104, "reset"), "closed_before_handshake"),
    (BrokenPipeError(), "closed_before_handshake"),
    (ssl.SSLEOFError(), "closed_before_handshake"),
    (_ssl_error("UNEXPECTED_EOF_WHILE_READING"), "closed_before_handshake"),
    (_ssl_error("HTTP_REQUEST"), "not_tls"),
    (_ssl_error("WRONG_VERSION_NUMBER"), "not_tls"),
    (_ssl_error("PEER_DID_NOT_RETURN_A_CERTIFICATE"), "no_certificate"),
    (_ssl_error("CERTIFICATE_VERIFY_FAILED", ssl.SSLCertVerificationError, verify_code=20), "unknown_ca"),
    (_ssl_error("CERTIFICATE_VERIFY_FAILED", ssl.SSLCertVerificationError, verify_code=10), "bad_certificate"),
    (_ssl_error("TLSV1_ALERT_UNKNOWN_CA"), "server_certificate_rejected"),
    (_ssl_error("SSLV3_ALERT_BAD_CERTIFICATE"), "server_certificate_rejected"),
    (ConnectionAbortedError("SSL handshake is taking longer than 10 seconds"), "timeout"),
    (TimeoutError(), "timeout"),
    (_ssl_error("NO_SHARED_CIPHER"), "other"),
    (OSError(113, "no route to host"), "other"),
])
def test_network_errors_are_classified_into_the_fixed_set(exc: Any, reason: str) -> None:
    assert classify(exc) == reason
    assert reason in REASONS


@pytest.mark.parametrize("exc", [RuntimeError("bug"), TypeError, ValueError("x"), AttributeError()])
def test_anything_but_a_network_error_is_not_noise(exc: Any) -> None:
    assert classify(exc) is None


def test_suppression_reads_the_variable_as_the_reference_does() -> None:
    for value in ("1", "t", "T", "TRUE", "true", "True"):
        assert suppress_logging({"SUPPRESS_TLS_HANDSHAKE_ERROR_LOGGING": value}) is True
    for value in ("0", "f", "F", "FALSE", "false", "False", ""):
        assert suppress_logging({"SUPPRESS_TLS_HANDSHAKE_ERROR_LOGGING": value}) is False
    assert suppress_logging({}) is False
    for value in ("yes", "on", "tRuE", "2"):
        with pytest.raises(ValueError, match="not a boolean"):
            suppress_logging({"SUPPRESS_TLS_HANDSHAKE_ERROR_LOGGING": value})
    assert log_interval({}) == 60.0
    assert log_interval({"FLEETWIRE_TLS_HANDSHAKE_LOG_INTERVAL": "5"}) == 5.0
    for value in ("0", "-1", "soon", "nan"):
        with pytest.raises(ValueError):
            log_interval({"FLEETWIRE_TLS_HANDSHAKE_LOG_INTERVAL": value})


def test_summary_lines_come_at_most_once_per_interval() -> None:
    summary = FailureSummary(60)
    assert summary.add("not_tls", 1000.0) <= 0  # the first failure is reported at once
    first = summary.take(1000.0)
    assert first is not None and first.startswith("1 TLS handshake failed: 1 not_tls ")
    for n in range(500):
        due = summary.add("closed_before_handshake" if n % 2 else "unknown_ca", 1001.0 + n / 100)
    assert due == pytest.approx(1060.0 - 1005.99)
    line = summary.take(1060.0)
    assert line is not None
    assert line.startswith("500 TLS handshakes failed in 59 s: 250 closed_before_handshake, 250 unknown_ca ")
    assert summary.take(1070.0) is None


def test_the_exception_handler_drops_network_noise_and_shows_bugs() -> None:
    seen: list[dict[str, Any]] = []
    handler = handshake_exception_handler(lambda loop, context: seen.append(context))
    loop = asyncio.new_event_loop()
    try:
        handler(loop, {"message": "SSL handshake failed", "exception": ConnectionResetError})
        handler(loop, {"message": "SSL handshake failed", "exception": _ssl_error("HTTP_REQUEST")})
        assert seen == []
        handler(loop, {"message": "SSL handshake failed", "exception": RuntimeError("a bug")})
        handler(loop, {"message": "Fatal error on transport", "exception": KeyError})
        handler(loop, {"message": "Fatal error on transport", "exception": ConnectionResetError()})
    finally:
        loop.close()
    assert [type(c["exception"]) for c in seen] == [RuntimeError, KeyError, ConnectionResetError]
    assert all(isinstance(c["exception"], BaseException) for c in seen)  # printable, not a class


# -- against a real server -----------------------------------------------------------------


class _Lines(logging.Handler):
    """Every log record, formatted with its traceback; a record that cannot be formatted
    (an exception class where an instance belongs) counts as a traceback too."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.tracebacks = 0
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # noqa: BLE001 - a record logging cannot print is what this counts
            self.tracebacks += 1
            return
        if record.exc_info or "Traceback" in text:
            self.tracebacks += 1
        self.lines.extend(text.splitlines())


@pytest.fixture
def logs() -> Iterator[_Lines]:
    handler = _Lines()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


Junk = Callable[[RunningServer], Awaitable[None]]


async def _tcp_close(srv: RunningServer) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", srv.ports.vehicles)
    writer.close()


async def _tcp_reset(srv: RunningServer) -> None:
    sock = socket.socket()
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", srv.ports.vehicles))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def _truncated_hello(srv: RunningServer) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", srv.ports.vehicles)
    writer.write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    await writer.drain()
    writer.close()


async def _answered(srv: RunningServer, request: bytes, ctx: ssl.SSLContext | None = None) -> None:
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", srv.ports.vehicles, ssl=ctx, server_hostname="localhost" if ctx else None
        )
        writer.write(request)
        await asyncio.wait_for(reader.read(), 5)
        writer.close()
    except (OSError, ssl.SSLError):
        pass  # the server ended it: what is counted is what matters


async def _plain_http(srv: RunningServer) -> None:
    await _answered(srv, b"GET / HTTP/1.1\r\nHost: fleetwire\r\n\r\n")


def _no_certificate(srv: RunningServer) -> Junk:
    ctx = ssl.create_default_context(cafile=str(srv.pki.server_ca_cert))
    return lambda srv: _answered(srv, b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n", ctx)


def _unknown_ca(srv: RunningServer, tmp_path: Path) -> Junk:
    impostor = make_ca("Tesla Issuing CA")  # the right name, but not a CA the server trusts
    cert, key = write_bundle(make_vehicle_cert(impostor, VIN), tmp_path / "i.pem", tmp_path / "i.key")
    ctx = client_context(cert, key, srv.pki.server_ca_cert)
    return lambda srv: _answered(srv, b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n", ctx)


async def _throw(srv: RunningServer, junk: Junk, count: int) -> None:
    for start in range(0, count, BATCH):
        await asyncio.gather(*(junk(srv) for _ in range(min(BATCH, count - start))))


async def _counted(srv: RunningServer, expected: dict[str, float], timeout: float = 10.0) -> dict[str, float]:
    """The failure counts once they reach `expected` (or whatever they are at the timeout)."""
    def counts() -> dict[str, float]:
        return {reason: srv.metric("fleetwire_tls_handshake_failures_total", reason=reason) for reason in REASONS}

    deadline = asyncio.get_running_loop().time() + timeout
    while counts() != expected and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # nothing more trickles in
    return counts()


async def _assert_vehicle_streams(srv: RunningServer) -> None:
    cert, key = srv.vehicle_cert(VIN)
    ws = await connect(srv.url, ssl=client_context(cert, key, srv.pki.server_ca_cert), compression=None,
                       proxy=None, open_timeout=5, close_timeout=1)
    await ws.close()


async def test_a_thousand_junk_connections_of_each_kind_are_counted_not_shouted(
    running_server: ServerFactory, logs: _Lines, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    srv = await running_server()
    kinds: list[tuple[str, Junk]] = [
        ("closed_before_handshake", _tcp_close),
        ("closed_before_handshake", _tcp_reset),
        ("closed_before_handshake", _truncated_hello),
        ("not_tls", _plain_http),
        ("no_certificate", _no_certificate(srv)),
        ("unknown_ca", _unknown_ca(srv, tmp_path)),
    ]
    expected = dict.fromkeys(REASONS, 0.0)
    for reason, junk in kinds:
        await _throw(srv, junk, JUNK_PER_KIND)
        expected[reason] += JUNK_PER_KIND
    assert await _counted(srv, expected) == expected
    await _assert_vehicle_streams(srv)  # the server is unharmed
    assert srv.metric("fleetwire_connections_active") == 0

    err = capfd.readouterr().err
    assert "Traceback" not in err and "Logging error" not in err, err[:3000]
    assert logs.tracebacks == 0, "\n".join(logs.lines[:60])
    handshake_lines = [line for line in logs.lines if "TLS handshake" in line]
    # The first failure is reported at once; the rest wait for the next interval (60 s).
    assert len(handshake_lines) == 1, handshake_lines
    assert len(logs.lines) <= 5, logs.lines
    await srv.server.stop()  # what was still pending is summarised, in one line
    summary = [line for line in logs.lines if "TLS handshake" in line][-1]
    assert f"{6 * JUNK_PER_KIND - 1} TLS handshakes failed" in summary
    assert "SUPPRESS_TLS_HANDSHAKE_ERROR_LOGGING" in summary


async def test_suppression_silences_the_line_and_keeps_the_count(
    running_server: ServerFactory, logs: _Lines, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPPRESS_TLS_HANDSHAKE_ERROR_LOGGING", "true")
    srv = await running_server()
    await _throw(srv, _tcp_close, 100)
    await _throw(srv, _plain_http, 100)
    expected = dict.fromkeys(REASONS, 0.0) | {"closed_before_handshake": 100.0, "not_tls": 100.0}
    assert await _counted(srv, expected) == expected
    await srv.server.stop()
    assert [line for line in logs.lines if "TLS handshake" in line] == []
    assert "Traceback" not in capfd.readouterr().err


async def test_a_bad_suppression_value_refuses_to_start(
    running_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPPRESS_TLS_HANDSHAKE_ERROR_LOGGING", "yes")
    with pytest.raises(ConfigError, match="SUPPRESS_TLS_HANDSHAKE_ERROR_LOGGING: 'yes' is not a boolean"):
        await running_server()
    monkeypatch.delenv("SUPPRESS_TLS_HANDSHAKE_ERROR_LOGGING")
    monkeypatch.setenv("FLEETWIRE_TLS_HANDSHAKE_LOG_INTERVAL", "soon")
    with pytest.raises(ConfigError, match="FLEETWIRE_TLS_HANDSHAKE_LOG_INTERVAL: 'soon' is not a positive"):
        await running_server()


async def test_a_client_that_never_finishes_its_handshake_is_counted_as_a_timeout(
    running_server: ServerFactory, logs: _Lines, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app, "HANDSHAKE_TIMEOUT_SECONDS", 0.3)
    srv = await running_server()
    idle = [await asyncio.open_connection("127.0.0.1", srv.ports.vehicles) for _ in range(5)]
    expected = dict.fromkeys(REASONS, 0.0) | {"timeout": 5.0}
    assert await _counted(srv, expected, timeout=5) == expected
    for _, writer in idle:
        writer.close()
    assert logs.tracebacks == 0


async def test_a_bug_during_a_handshake_is_still_shown(running_server: ServerFactory) -> None:
    """Only network errors are noise: anything else reaches the loop's previous handler."""
    seen: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda loop, context: seen.append(context))
    try:
        await running_server()
        loop.call_exception_handler({"message": "SSL handshake failed", "exception": RuntimeError("a bug")})
        loop.call_exception_handler({"message": "SSL handshake failed", "exception": ConnectionResetError})
    finally:
        loop.set_exception_handler(None)
    assert [(c["message"], repr(c["exception"])) for c in seen] == [("SSL handshake failed", "RuntimeError('a bug')")]


def test_the_summary_is_logged_as_one_line() -> None:
    stream = io.StringIO()
    summary = FailureSummary(1)
    summary.add("not_tls", 0.0)
    print(summary.take(0.0), file=stream)
    assert stream.getvalue().count("\n") == 1
