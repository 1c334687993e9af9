"""Failed TLS handshakes, free of I/O: why one failed, and when a summary line is due.

A public port 443 sees load-balancer health checks, port scanners, plain HTTP and clients
of other services all day. Each is a failed handshake, not a fault of the server: it is
counted by a reason from a fixed set and summarised in one line at most once per interval,
never logged per connection.
"""

from __future__ import annotations

import collections
import math
import ssl

from fleetwire.server.environment import SUPPRESS_ENV

__all__ = [
    "REASONS",
    "FailureSummary",
    "classify",
]

# Metric label values, in the order a summary line lists them.
REASONS = (
    "closed_before_handshake",  # TCP closed or reset before the handshake finished
    "not_tls",  # plain HTTP or other bytes that are not a TLS ClientHello
    "no_certificate",  # a TLS client that sent no client certificate
    "unknown_ca",  # a client certificate chained to no CA the server trusts
    "bad_certificate",  # a client certificate from a trusted CA that fails verification (expired, …)
    "server_certificate_rejected",  # the client refused the server's certificate (its `ca` is stale?)
    "timeout",  # the handshake did not finish within the server's handshake timeout
    "other",  # any other TLS failure: no common protocol version or cipher, …
)


# OpenSSL's reason codes (`SSLError.reason`) of bytes that are not TLS at all.
_NOT_TLS = frozenset({
    "HTTP_REQUEST", "HTTPS_PROXY_REQUEST", "WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL",
    "PACKET_LENGTH_TOO_LONG", "RECORD_LENGTH_MISMATCH", "UNEXPECTED_RECORD", "UNEXPECTED_MESSAGE",
    "BAD_RECORD_TYPE", "LENGTH_MISMATCH", "RECORD_LAYER_FAILURE",
})
_NO_CERTIFICATE = frozenset({"PEER_DID_NOT_RETURN_A_CERTIFICATE", "NO_CERTIFICATE_RETURNED"})
_EOF = frozenset({"UNEXPECTED_EOF_WHILE_READING"})
# X509_V_ERR_* codes that mean "the issuer is not one the server trusts".
_UNKNOWN_ISSUER_CODES = frozenset({
    2,  # UNABLE_TO_GET_ISSUER_CERT
    18,  # DEPTH_ZERO_SELF_SIGNED_CERT
    19,  # SELF_SIGNED_CERT_IN_CHAIN
    20,  # UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    21,  # UNABLE_TO_VERIFY_LEAF_SIGNATURE
})


def classify(exc: BaseException | type[BaseException]) -> str | None:
    """The reason a handshake failed with `exc`, or None when `exc` is no network error.

    `exc` may be an exception class: aiofastnet 1.2 reports an EOF during the handshake
    as the class `ConnectionResetError`. None means a bug (a `RuntimeError`, a
    `TypeError`, …): the caller must let it be seen rather than count it as noise.
    """
    kind = exc if isinstance(exc, type) else type(exc)
    if not issubclass(kind, OSError):
        return None
    if issubclass(kind, ssl.SSLCertVerificationError):
        code = getattr(exc, "verify_code", None)
        return "unknown_ca" if code is None or code in _UNKNOWN_ISSUER_CODES else "bad_certificate"
    if issubclass(kind, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)):
        return "closed_before_handshake"
    if issubclass(kind, ssl.SSLError):
        reason = str(getattr(exc, "reason", None) or "")
        if reason in _NOT_TLS:
            return "not_tls"
        if reason in _NO_CERTIFICATE:
            return "no_certificate"
        if reason == "CERTIFICATE_VERIFY_FAILED":
            return "unknown_ca"
        if reason in _EOF:
            return "closed_before_handshake"
        if "ALERT" in reason and ("CERTIFICATE" in reason or "UNKNOWN_CA" in reason):
            return "server_certificate_rejected"
        return "other"
    # aiofastnet aborts a handshake that outlives its timeout with ConnectionAbortedError.
    if issubclass(kind, (TimeoutError, ConnectionAbortedError)):
        return "timeout"
    if issubclass(kind, (ConnectionResetError, BrokenPipeError, EOFError)):
        return "closed_before_handshake"
    return "other"


class FailureSummary:
    """Pending failure counts and the decision when the next summary line is due.

    The first failure after a quiet interval is reported at once; later ones wait until
    an interval has passed since the last line, so a flood costs one line per interval.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._pending: collections.Counter[str] = collections.Counter()
        self._since = 0.0
        self._last_line = -math.inf

    def add(self, reason: str, now: float) -> float:
        """Count one failure; the seconds until a line is due (0 or less: due now)."""
        if not self._pending:
            self._since = now
        self._pending[reason] += 1
        return self._last_line + self.interval - now

    def take(self, now: float) -> str | None:
        """The summary of the failures counted since the last line, or None if there were none."""
        if not self._pending:
            return None
        counts = ", ".join(f"{self._pending[r]} {r}" for r in REASONS if self._pending[r])
        total = sum(self._pending.values())
        window = now - self._since
        self._pending.clear()
        self._last_line = now
        span = f" in {window:.0f} s" if window >= 1 else ""
        return (
            f"{total} TLS handshake{'s' if total != 1 else ''} failed{span}: {counts} "
            f"(counted in fleetwire_tls_handshake_failures_total; {SUPPRESS_ENV}=true silences this line)"
        )
