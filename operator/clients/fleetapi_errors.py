"""The Fleet API client's errors: each names what failed and what a person can do about it.

`status` is the HTTP status (0: no answer), so callers branch on the class, never on a message;
`error_detail` gives the API's own words for a refusal, short, and never the request.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "FleetApiError",
    "LegacyEndpointError",
    "MissingScopeError",
    "RateLimitedError",
    "ServerError",
    "TokenError",
    "TokenStoreError",
    "UnreachableError",
    "error_detail",
    "json_or_none",
]


class FleetApiError(Exception):
    """A Fleet API call that did not succeed; `status` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, *, status: int = 0, path: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.path = path


class TokenError(FleetApiError):
    """401, or a token grant refused: the token expired or is invalid even after one renewal."""


class TokenStoreError(FleetApiError):
    """The token store could not save a rotated token pair; it is kept in memory, unused."""


class MissingScopeError(FleetApiError):
    """403: the token lacks a scope (e.g. `vehicle_location` for Location) or the right kind."""


class LegacyEndpointError(FleetApiError):
    """412: the unsigned config endpoint works only for apps on the legacy CSR process."""


class RateLimitedError(FleetApiError):
    """429 on every attempt, or a `Retry-After` longer than the policy accepts to wait."""

    def __init__(self, message: str, *, retry_after: float | None, path: str = "") -> None:
        super().__init__(message, status=429, path=path)
        self.retry_after = retry_after


class ServerError(FleetApiError):
    """5xx on every attempt: the service is failing, not the request."""


class UnreachableError(FleetApiError):
    """No answer at all (connection refused, DNS, TLS, timeout) on every attempt."""


def json_or_none(raw: bytes) -> Any:
    """An answer's body as JSON; None when empty or not JSON (an error page, a proxy's text)."""
    try:
        return json.loads(raw) if raw else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def error_detail(payload: Any, raw: bytes) -> str:
    """The API's own words for an error (`error`, `error_description`), short, never the request."""
    if isinstance(payload, dict):
        parts = [str(payload[k]) for k in ("error", "error_description") if payload.get(k)]
        if parts:
            return ": ".join(parts)[:300]
    text = raw.decode("utf-8", "replace").strip()
    return text[:200] if text else "no body"
