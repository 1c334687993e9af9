"""DNS-01: one small provider interface, a Cloudflare provider, and the solver on top.

DNS-01 proves control of a name without opening port 80, which is what a node behind a
firewall or a load balancer without HTTP needs. Each DNS host gets one class behind
`DnsProvider`; the ACME side (`Dns01Solver`) never knows which.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol, runtime_checkable

import aiohttp

__all__ = ["CLOUDFLARE_API", "CloudflareDns", "Dns01Solver", "DnsProvider", "DnsProviderError"]

CLOUDFLARE_API = "https://api.cloudflare.com/client/v4"
_CF_IDENTICAL_RECORD = 81058  # "An identical record already exists": a retried set_txt
_CF_AUTH_CODES = {9109, 10000}  # invalid / unauthorized token

log = logging.getLogger("fleetwire.operator.clients.dns01")


class DnsProviderError(Exception):
    """A DNS host refused or could not be reached; the message says what to fix."""


@runtime_checkable
class DnsProvider(Protocol):
    """Publishes and withdraws TXT records. Both calls must be idempotent: the operator
    retries after failures and cleans up even when publishing half-failed."""

    async def set_txt(self, name: str, value: str) -> None: ...

    async def clear_txt(self, name: str, value: str) -> None: ...


class Dns01Solver:
    """Answers a dns-01 challenge by publishing `_acme-challenge.<domain>` TXT through a provider.

    `propagation_delay` (seconds) waits after publishing before the ACME server is told to
    look: API-driven hosts such as Cloudflare serve a new record within seconds, but the
    CA's resolvers may ask a secondary that has not caught up; 10–30 s is customary there.
    """

    challenge_type = "dns-01"

    def __init__(self, provider: DnsProvider, propagation_delay: float = 0.0) -> None:
        self.provider = provider
        self.propagation_delay = propagation_delay

    @staticmethod
    def record_name(domain: str) -> str:
        return f"_acme-challenge.{domain.rstrip('.')}"

    async def present(self, domain: str, token: str, validation: str) -> None:
        await self.provider.set_txt(self.record_name(domain), validation)
        if self.propagation_delay > 0:
            await asyncio.sleep(self.propagation_delay)

    async def cleanup(self, domain: str, token: str, validation: str) -> None:
        await self.provider.clear_txt(self.record_name(domain), validation)


def _unquote(content: str) -> str:
    """Cloudflare stores TXT content as quoted RFC 1035 strings; compare the text inside."""
    if len(content) >= 2 and content[0] == content[-1] == '"':
        return content[1:-1]
    return content


class CloudflareDns:
    """TXT records through Cloudflare's v4 API with a scoped API token (Zone → DNS → Edit).

    `zone_id` is the zone's identifier from the dashboard's overview page, not its name:
    looking it up would need the broader Zone:Read permission. `base_url` exists for tests.
    """

    def __init__(
        self,
        api_token: str,
        zone_id: str,
        *,
        ttl: int = 60,
        base_url: str = CLOUDFLARE_API,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 30.0,
    ) -> None:
        self._token = api_token
        self.zone_id = zone_id
        self.ttl = ttl
        self.base_url = base_url.rstrip("/")
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    def __repr__(self) -> str:  # never show the token
        return f"CloudflareDns(zone_id={self.zone_id!r}, base_url={self.base_url!r})"

    async def aclose(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _records_url(self, record_id: str | None = None) -> str:
        url = f"{self.base_url}/zones/{self.zone_id}/dns_records"
        return f"{url}/{record_id}" if record_id else url

    async def _call(self, method: str, url: str, action: str, **kwargs: Any) -> Any:
        """One API call; returns `result`, or raises with Cloudflare's own codes and messages."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        headers = {"Authorization": f"Bearer {self._token}"}
        try:
            async with self._session.request(method, url, headers=headers, **kwargs) as response:
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = None
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DnsProviderError(f"cannot reach the Cloudflare API at {self.base_url} to {action}: {exc}") from exc
        if isinstance(body, dict) and body.get("success") is True:
            return body.get("result")
        errors = body.get("errors", []) if isinstance(body, dict) else []
        codes = {e.get("code") for e in errors if isinstance(e, dict)}
        if _CF_IDENTICAL_RECORD in codes:
            return None
        detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors if isinstance(e, dict))
        hint = ""
        if status in (401, 403) or codes & _CF_AUTH_CODES:
            hint = f" — the API token must be valid and allow DNS Edit on zone {self.zone_id}"
        elif status == 404 or 7003 in codes:
            hint = f" — check the zone id {self.zone_id!r}"
        raise DnsProviderError(f"Cloudflare could not {action} (HTTP {status}): {detail or 'no detail'}{hint}")

    async def set_txt(self, name: str, value: str) -> None:
        payload = {"type": "TXT", "name": name, "content": f'"{value}"', "ttl": self.ttl}
        await self._call("POST", self._records_url(), f"create TXT {name}", json=payload)
        log.info("published TXT %s in Cloudflare zone %s", name, self.zone_id)

    async def clear_txt(self, name: str, value: str) -> None:
        """Delete every TXT record at `name` holding `value` (others at that name stay)."""
        listed = await self._call(
            "GET", self._records_url(), f"list TXT {name}", params={"type": "TXT", "name": name, "per_page": "100"}
        )
        for record in listed or []:
            if _unquote(str(record.get("content", ""))) == value:
                await self._call("DELETE", self._records_url(str(record["id"])), f"delete TXT {name}")
                log.info("removed TXT %s from Cloudflare zone %s", name, self.zone_id)
