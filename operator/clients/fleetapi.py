"""Async client of the Fleet API calls that configure vehicles to stream.

What it takes care of, so the operator's handlers do not have to:

* Regions. Each region has its own base URL; a call sent to the wrong one may be answered
  with HTTP 421 and an `Alt-Svc` header naming the right host. The client retries there
  and keeps using that host from then on.
* Two kinds of token. A partner token (OAuth client_credentials, audience = the regional
  URL) for `partner_accounts` calls and telemetry errors; a user token for vehicle calls,
  renewed with its refresh token.
* Rotating refresh tokens. A refresh token is replaced on every use and the old one stops
  working, so the new pair is handed to the `TokenStore` and `save()` must return before
  the new access token is used. If the process died between the refresh and the save, the
  only valid refresh token would be lost and the user would have to authorize again; if
  `save()` fails, the new pair is kept in memory and saving is retried before any other
  call, never used unsaved.
* Rate limits and outages. 429 is retried after `Retry-After`, 5xx and connection errors
  after an exponential backoff with full jitter, both a bounded number of times (every
  answered call under 500 is billed, 429s included).
* Errors a person can act on: `TokenError` (401 after one refresh), `MissingScopeError`
  (403, e.g. `vehicle_location` to stream Location), `LegacyEndpointError` (412: the
  unsigned endpoint needs the CSR process or the vehicle-command proxy), `RateLimitedError`,
  `ServerError`, `UnreachableError`.

Tokens and secrets never reach a log line, an exception message or a `repr`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp

from fleetwire.operator.clients.fleetapi_errors import (
    FleetApiError,
    LegacyEndpointError,
    MissingScopeError,
    RateLimitedError,
    ServerError,
    TokenError,
    TokenStoreError,
    UnreachableError,
    error_detail,
    json_or_none,
)
from fleetwire.operator.clients.fleetapi_retry import RetryPolicy, alt_svc_base_url, retry_after_seconds
from fleetwire.operator.clients.fleetapi_types import (
    FleetStatus,
    PushResult,
    TelemetryError,
    TokenStore,
    Tokens,
    VehicleConfigState,
)

__all__ = ["AUTH_URL", "REGIONS", "FleetApiClient"]

log = logging.getLogger("fleetwire.fleetapi")

REGIONS: Mapping[str, str] = {
    "na": "https://fleet-api.prd.na.vn.cloud.tesla.com",  # North America and Asia-Pacific
    "eu": "https://fleet-api.prd.eu.vn.cloud.tesla.com",  # Europe, Middle East, Africa
    "cn": "https://fleet-api.prd.cn.vn.cloud.tesla.cn",
}
AUTH_URL = "https://fleet-auth.prd.vn.cloud.tesla.com/oauth2/v3/token"


# --------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------

TokenKind = Literal["user", "partner"]


class FleetApiClient:
    """The Fleet API calls that configure streaming; use as `async with FleetApiClient(...)`.

    `region` picks a base URL from `REGIONS`; `base_url` overrides it (a simulator, or the
    URL `GET /api/1/users/region` returned). `token_store` holds the user's tokens (vehicle
    calls), `client_secret` enables the partner token (registration, telemetry errors).
    `proxy_url` is a tesla-http-proxy (TLS; `proxy_ssl` trusts its certificate) used by
    `push_config_unsigned`, which then signs the config with the app's key.
    """

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str | None = None,
        token_store: TokenStore | None = None,
        region: str = "na",
        base_url: str | None = None,
        auth_url: str = AUTH_URL,
        partner_scope: str = "openid vehicle_device_data vehicle_location",
        proxy_url: str | None = None,
        proxy_ssl: ssl.SSLContext | None = None,
        ssl_context: ssl.SSLContext | None = None,
        retry: RetryPolicy = RetryPolicy(),
        timeout: float = 30.0,
        refresh_margin: float = 60.0,
        session: aiohttp.ClientSession | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if base_url is None:
            if region not in REGIONS:
                raise ValueError(f"unknown region {region!r}: expected one of {', '.join(REGIONS)} or a base_url")
            base_url = REGIONS[region]
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self._client_secret = client_secret
        self._store = token_store
        self.auth_url = auth_url
        self.partner_scope = partner_scope
        self.proxy_url = proxy_url.rstrip("/") if proxy_url else None
        self._proxy_ssl = proxy_ssl
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self.retry = retry
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._refresh_margin = refresh_margin
        self._session = session
        self._own_session = session is None
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._user: Tokens | None = None
        self._unsaved: Tokens | None = None
        self._user_lock = asyncio.Lock()
        self._partner: tuple[str, float, str] | None = None  # token, expires_at, audience
        self._partner_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"FleetApiClient(base_url={self.base_url!r}, client_id={self.client_id!r})"

    async def __aenter__(self) -> FleetApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    # ---- calls ----------------------------------------------------------------------

    async def user_region(self) -> tuple[str, str]:
        """(region, fleet_api_base_url) of the user whose token this client holds."""
        data = await self._call("GET", "/api/1/users/region", "user")
        return str(data.get("region", "")), str(data.get("fleet_api_base_url", ""))

    async def register_partner(self, domain: str) -> dict[str, Any]:
        """Register the app in this region; Tesla then fetches the public key from
        https://<domain>/.well-known/appspecific/com.tesla.3p.public-key.pem."""
        return await self._call("POST", "/api/1/partner_accounts", "partner", body={"domain": domain})

    async def fleet_status(self, vins: Sequence[str]) -> FleetStatus:
        data = await self._call("POST", "/api/1/vehicles/fleet_status", "user", body={"vins": list(vins)})
        return FleetStatus.from_response(data)

    async def push_config_jws(self, vins: Sequence[str], token: str) -> PushResult:
        """Send a config signed with `sign_telemetry_config` (the way that needs no proxy)."""
        data = await self._call(
            "POST", "/api/1/vehicles/fleet_telemetry_config_jws", "user", body={"vins": list(vins), "token": token}
        )
        return PushResult.from_response(data)

    async def push_config_unsigned(self, vins: Sequence[str], config: Mapping[str, Any]) -> PushResult:
        """Send an unsigned config: through `proxy_url` (the proxy signs it), else straight to
        the Fleet API, which accepts that only from apps on the legacy CSR process (412)."""
        data = await self._call(
            "POST", "/api/1/vehicles/fleet_telemetry_config", "user",
            body={"vins": list(vins), "config": dict(config)}, via_proxy=self.proxy_url is not None,
        )
        return PushResult.from_response(data)

    async def get_config(self, vin: str) -> VehicleConfigState:
        data = await self._call("GET", f"/api/1/vehicles/{vin}/fleet_telemetry_config", "user")
        return VehicleConfigState.from_response(data)

    async def delete_config(self, vin: str) -> int:
        """Remove this app's config from the vehicle; returns updated_vehicles (0 or 1)."""
        data = await self._call("DELETE", f"/api/1/vehicles/{vin}/fleet_telemetry_config", "user")
        return int(data.get("updated_vehicles", 0))

    async def telemetry_errors(self) -> list[TelemetryError]:
        data = await self._call("GET", "/api/1/partner_accounts/fleet_telemetry_errors", "partner")
        return [TelemetryError.from_response(item) for item in data.get("fleet_telemetry_errors") or []]

    # ---- the request loop -------------------------------------------------------------

    async def _call(
        self, method: str, path: str, kind: TokenKind, *, body: Mapping[str, Any] | None = None,
        via_proxy: bool = False,
    ) -> dict[str, Any]:
        """One logical call: tokens, 421 hops, 429/5xx/connection retries, typed errors."""
        policy = self.retry
        attempt = redirects = 0
        renewed = False
        while True:
            token = await (self._user_token() if kind == "user" else self._partner_token())
            base = self.proxy_url if via_proxy else self.base_url
            ssl_arg = (self._proxy_ssl or True) if via_proxy else self._ssl
            attempt += 1
            try:
                async with self._http().request(
                    method, base + path, json=body, headers={"Authorization": f"Bearer {token}"}, ssl=ssl_arg,
                ) as response:
                    status = response.status
                    headers = response.headers
                    raw = await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                log.warning("%s %s: no answer from %s (%s), attempt %d of %d",
                            method, path, urlsplit(base).netloc, reason, attempt, policy.max_attempts)
                if attempt >= policy.max_attempts:
                    raise UnreachableError(
                        f"{method} {path}: no answer from {urlsplit(base).netloc} after {attempt} attempts: {reason}",
                        path=path,
                    ) from None
                await self._sleep(policy.backoff(attempt, self._rng))
                continue
            log.debug("%s %s%s -> %d", method, urlsplit(base).netloc, path, status)
            payload = json_or_none(raw)
            if status < 400:
                response_body = payload.get("response") if isinstance(payload, dict) else None
                return response_body if isinstance(response_body, dict) else {}
            detail = error_detail(payload, raw)
            if status == 421 and not via_proxy:
                target = alt_svc_base_url(headers.get("Alt-Svc", ""), self.base_url)
                if target is None or target == self.base_url or redirects >= policy.max_redirects:
                    raise FleetApiError(
                        f"{method} {path}: HTTP 421, this account belongs to another region, and the answer "
                        f"names no usable host (Alt-Svc {headers.get('Alt-Svc')!r}); set the region or base_url",
                        status=421, path=path,
                    )
                log.info("%s %s: HTTP 421 from %s, the account's region is %s; using it from now on",
                         method, path, urlsplit(self.base_url).netloc, urlsplit(target).netloc)
                self.base_url = target
                self._partner = None  # its audience was the old regional URL
                redirects += 1
                attempt -= 1  # a hop is not a failed attempt
                continue
            if status == 429:
                wait = retry_after_seconds(headers.get("Retry-After"), time.time())
                if wait is not None and wait > policy.max_retry_after:
                    raise RateLimitedError(
                        f"{method} {path}: rate limited for {wait:.0f} s, longer than the"
                        f" {policy.max_retry_after:.0f} s"
                        " this client waits; slow down the calls", retry_after=wait, path=path,
                    )
                if attempt >= policy.max_attempts:
                    raise RateLimitedError(
                        f"{method} {path}: still rate limited after {attempt} attempts; slow down the calls",
                        retry_after=wait, path=path,
                    )
                delay = wait + self._rng.uniform(0.0, policy.base_delay) if wait is not None else policy.backoff(
                    attempt, self._rng)
                log.info("%s %s: rate limited, retrying in %.2f s (attempt %d of %d)",
                         method, path, delay, attempt, policy.max_attempts)
                await self._sleep(delay)
                continue
            if status == 401:
                if not renewed:
                    renewed = True
                    attempt -= 1
                    log.info("%s %s: HTTP 401, renewing the %s token once", method, path, kind)
                    if kind == "user":
                        await self._user_token(rejected=token)
                    else:
                        self._partner = None
                    continue
                raise TokenError(
                    f"{method} {path}: HTTP 401, the {kind} token is expired or invalid even after a renewal"
                    f" ({detail}); " + ("the user must authorize the app again" if kind == "user"
                                       else "check client_id, client_secret and the audience"),
                    status=401, path=path,
                )
            if status >= 500:
                if attempt >= policy.max_attempts:
                    raise ServerError(
                        f"{method} {path}: HTTP {status} after {attempt} attempts ({detail}); the Fleet API is failing",
                        status=status, path=path,
                    )
                delay = policy.backoff(attempt, self._rng)
                log.warning("%s %s: HTTP %d, retrying in %.2f s", method, path, status, delay)
                await self._sleep(delay)
                continue
            if status == 403:
                raise MissingScopeError(
                    f"{method} {path}: HTTP 403 ({detail}); the {kind} token lacks a scope or right for this call"
                    " (streaming Location needs vehicle_location; vehicle calls need a user token, partner"
                    " calls a partner token)", status=403, path=path,
                )
            if status == 412:
                raise LegacyEndpointError(
                    f"{method} {path}: HTTP 412 ({detail}); the unsigned endpoint works only for apps on the"
                    " legacy CSR process: sign the config and use push_config_jws, or send it through"
                    " tesla-http-proxy (proxy_url)", status=412, path=path,
                )
            raise FleetApiError(f"{method} {path}: HTTP {status} ({detail})", status=status, path=path)

    # ---- tokens -------------------------------------------------------------------------

    async def _user_token(self, rejected: str | None = None) -> str:
        """The current access token; renewed when expiring, or when `rejected` (a 401) names it.

        One lock serialises renewals: two concurrent refreshes with the same single-use
        refresh token would make the second fail.
        """
        if self._store is None:
            raise TokenError("this call needs a user token: give the client a token_store")
        async with self._user_lock:
            if self._unsaved is not None:  # a rotated pair whose save failed: save it first
                await self._save(self._unsaved)
            if self._user is None or rejected is not None:
                # On a 401, another process sharing the store may have rotated the pair.
                self._user = await self._store.load()
            current = self._user
            if rejected is None and not current.expired(self._refresh_margin):
                return current.access_token
            if rejected is not None and current.access_token != rejected and not current.expired(self._refresh_margin):
                return current.access_token
            fresh = await self._grant(
                {"grant_type": "refresh_token", "client_id": self.client_id, "refresh_token": current.refresh_token},
                "refresh_token",
            )
            new = Tokens(
                fresh["access_token"], str(fresh.get("refresh_token") or current.refresh_token),
                time.time() + float(fresh.get("expires_in", 0)) if fresh.get("expires_in") else 0.0,
            )
            self._unsaved = new
            await self._save(new)  # durable BEFORE the new access token is used
            log.info("user token renewed and saved; the previous refresh token is no longer valid")
            return new.access_token

    async def _save(self, tokens: Tokens) -> None:
        try:
            await self._store.save(tokens)  # type: ignore[union-attr]
        except Exception as exc:
            raise TokenStoreError(
                f"the renewed user tokens could not be saved ({type(exc).__name__}); they are kept in memory and"
                " saving is retried before the next call, since the previous refresh token no longer works"
            ) from None
        self._user, self._unsaved = tokens, None

    async def _partner_token(self) -> str:
        async with self._partner_lock:
            now = time.time()
            if self._partner is not None:
                token, expires_at, audience = self._partner
                if audience == self.base_url and (expires_at == 0 or now < expires_at - self._refresh_margin):
                    return token
            if not self._client_secret:
                raise TokenError("this call needs a partner token: give the client its client_secret")
            audience = self.base_url
            fresh = await self._grant(
                {"grant_type": "client_credentials", "client_id": self.client_id,
                 "client_secret": self._client_secret, "scope": self.partner_scope, "audience": audience},
                "client_credentials",
            )
            expires_in = float(fresh.get("expires_in", 0) or 0)
            self._partner = (fresh["access_token"], now + expires_in if expires_in else 0.0, audience)
            return self._partner[0]

    async def _grant(self, form: Mapping[str, str], grant: str) -> dict[str, Any]:
        """POST the token endpoint; retried like any call, refused grants are TokenError."""
        for attempt in range(1, self.retry.max_attempts + 1):
            try:
                async with self._http().post(self.auth_url, data=dict(form), ssl=self._ssl) as response:
                    status, headers, raw = response.status, response.headers, await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                if attempt >= self.retry.max_attempts:
                    raise UnreachableError(
                        f"token endpoint {urlsplit(self.auth_url).netloc} did not answer ({type(exc).__name__})"
                    ) from None
                await self._sleep(self.retry.backoff(attempt, self._rng))
                continue
            log.debug("POST %s (%s grant) -> %d", urlsplit(self.auth_url).netloc, grant, status)
            payload = json_or_none(raw)
            if status == 200 and isinstance(payload, dict) and isinstance(payload.get("access_token"), str):
                return payload
            if (status == 429 or status >= 500) and attempt < self.retry.max_attempts:
                wait = retry_after_seconds(headers.get("Retry-After"), time.time()) if status == 429 else None
                await self._sleep(min(wait, self.retry.max_retry_after) if wait is not None
                                  else self.retry.backoff(attempt, self._rng))
                continue
            detail = error_detail(payload, raw)
            hint = (
                "the refresh token was refused (already used, revoked or expired): the user must authorize"
                " the app again" if grant == "refresh_token" else "check client_id, client_secret, scope and audience"
            )
            raise TokenError(
                f"token endpoint refused the {grant} grant: HTTP {status} ({detail}); {hint}", status=status)
        raise TokenError(f"token endpoint: no usable answer to the {grant} grant")
