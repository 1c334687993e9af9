"""How the Fleet API client retries and follows regions: a backoff policy with full jitter,
`Retry-After` parsing, and the base URL a 421's `Alt-Svc` header points to. Pure functions."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

__all__ = ["RetryPolicy", "alt_svc_base_url", "retry_after_seconds"]


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5  # per call, counting the first
    base_delay: float = 0.5  # seconds; the backoff cap doubles from here
    max_delay: float = 30.0
    max_retry_after: float = 120.0  # wait no longer than this for a 429; raise instead
    max_redirects: int = 2  # 421 hops per call

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(max, base·2^(attempt-1))], so clients spread out."""
        return rng.uniform(0.0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


_ALT_SVC_AUTHORITY = re.compile(r'="([^"]*)"')


def alt_svc_base_url(header: str, current: str) -> str | None:
    """The base URL a 421 points to: `h2="host:port"` (Alt-Svc syntax), a host, or a URL.

    The scheme of `current` is kept: the answer names a host, not a protocol change.
    """
    header = header.strip()
    if not header:
        return None
    scheme = urlsplit(current).scheme or "https"
    match = _ALT_SVC_AUTHORITY.search(header)
    target = match.group(1) if match else header.split(";")[0].split(",")[0].strip()
    if "://" in target:
        parts = urlsplit(target)
        return f"{parts.scheme}://{parts.netloc}"
    if target.startswith(":") or not target:
        return None
    return f"{scheme}://{target}"
