"""Where the root of an issued chain comes from: CAs rarely send it, and vehicles need it
(one holding only an intermediate breaks when the CA signs a renewal with another one)."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Sequence

import aiohttp
from cryptography import x509

__all__ = ["PebbleRoots", "RootFetcher", "static_roots"]

RootFetcher = Callable[[x509.Certificate], Awaitable[Sequence[x509.Certificate]]]
"""Given the last certificate of the served chain, candidate roots that may have issued it."""


def _ssl_context(verify: bool | str) -> ssl.SSLContext | bool:
    if verify is True:
        return True
    if verify is False:
        return False
    return ssl.create_default_context(cafile=verify)


class PebbleRoots:
    """Roots from a pebble-style management endpoint: `/roots/0` plus its `alternate` links.

    Pebble makes a new root at every start and serves it only there, never in a chain.
    """

    def __init__(self, management_url: str, verify: bool | str = True, timeout: float = 10.0) -> None:
        self.base = management_url.rstrip("/")
        self.verify = verify
        self.timeout = timeout

    async def __call__(self, last: x509.Certificate) -> list[x509.Certificate]:
        ssl_arg = _ssl_context(self.verify)
        found: list[x509.Certificate] = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as session:
            async with session.get(f"{self.base}/roots/0", ssl=ssl_arg) as response:
                response.raise_for_status()
                found += x509.load_pem_x509_certificates(await response.read())
                alternates = [str(link["url"]) for link in response.links.getall("alternate", [])]
            for url in alternates:
                async with session.get(url, ssl=ssl_arg) as response:
                    response.raise_for_status()
                    found += x509.load_pem_x509_certificates(await response.read())
        return found


def static_roots(pem: bytes) -> RootFetcher:
    """A root source from PEM the user supplies, e.g. Let's Encrypt's ISRG Root X1 and X2."""
    roots = x509.load_pem_x509_certificates(pem)

    async def fetch(last: x509.Certificate) -> list[x509.Certificate]:
        return roots

    return fetch
