"""What the cluster demo waits on and reads: a check until it holds, the server's metrics, a
Secret's `ca.crt`."""

from __future__ import annotations

import asyncio
import base64
import inspect
import time
from collections.abc import Callable, Mapping
from typing import Any


async def _until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `check` (a plain or an async callable) until it returns something true; that."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)


async def _scrape(address: tuple[str, int]) -> dict[str, float]:
    """The server's Prometheus samples (name{labels} -> value), read as Prometheus would."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://{address[0]}:{address[1]}/metrics",
                               timeout=aiohttp.ClientTimeout(total=3)) as response:
            text = await response.text()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


def ca_of(secret: Mapping[str, Any] | None) -> str:
    """The `ca.crt` of a Secret as the API returns it (empty when absent)."""
    return base64.b64decode(((secret or {}).get("data") or {}).get("ca.crt", "")).decode()
