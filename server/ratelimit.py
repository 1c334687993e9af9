"""Per-connection rate limiting: a token bucket, pure and clock-injected.

The reference server's limiter never trips (its interval is never read) and would drop
silently; this one trips, and the caller tells the vehicle with an error reply.
"""

from __future__ import annotations


class TokenBucket:
    """Allows `limit` messages per `interval` seconds, with bursts up to `limit`."""

    __slots__ = ("_capacity", "_rate", "_tokens", "_last")

    def __init__(self, limit: int, interval: float, now: float) -> None:
        if limit <= 0 or interval <= 0:
            raise ValueError("limit and interval must be positive")
        self._capacity = float(limit)
        self._rate = limit / interval
        self._tokens = float(limit)
        self._last = now

    def allow(self, now: float) -> bool:
        """Take one token if there is one; False means the message is over the limit."""
        elapsed = now - self._last
        if elapsed > 0:
            self._tokens = min(self._capacity, self._tokens + elapsed * self._rate)
            self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
