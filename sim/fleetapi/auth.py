"""Tokens, partner registration and rate limits: single-use refresh tokens, regional grants
(421 with `Alt-Svc` on another region's port), token buckets per token and per vehicle."""

from __future__ import annotations

import inspect
import math
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fleetwire.proto.ss256 import public_point
from fleetwire.sim.fleetapi.state import (
    KEY_PATH,
    TESLA_REGION_URLS,
    USER_SCOPES,
    _ApiError,
    _Grant,
)


def _take(bucket: list[float], burst: float, per_second: float) -> None:
    """Take one request from a token bucket [tokens, last refill], or answer 429 with Retry-After."""
    now = time.monotonic()
    bucket[0] = min(burst, bucket[0] + (now - bucket[1]) * per_second)
    bucket[1] = now
    if bucket[0] < 1.0:
        wait = (1.0 - bucket[0]) / per_second
        raise _ApiError(429, "rate limit exceeded", "too many requests", {"Retry-After": str(max(1, math.ceil(wait)))})
    bucket[0] -= 1.0


class _Auth:
    """Mixin of `FleetApiSimulator`: who calls, from which region, how often."""

    def issue_user_tokens(
        self, client_id: str | None = None, *, scopes: Iterable[str] = USER_SCOPES, region: str = "na",
        expires_in: float | None = None,
    ) -> dict[str, Any]:
        """What the authorization_code flow hands an app: an access and a refresh token."""
        app = self.apps[client_id or self.client_id]
        if region not in self.regions:
            raise ValueError(f"region {region!r} is not served by this simulator ({', '.join(self.regions)})")
        grant = _Grant("user", app.client_id, frozenset(scopes), region, 0.0)
        return self._mint(grant, expires_in)

    def expire_access_tokens(self) -> None:
        """Every access token issued so far expires now (refresh tokens stay valid)."""
        for grant in self._access.values():
            grant.expires_at = 0.0

    def revoke_refresh_tokens(self) -> None:
        self._refresh.clear()

    def _authorize(self, request: web.Request, kind: str, scopes: Sequence[str] = ()) -> _Grant:
        """The grant behind the bearer token, checked for expiry, rate, kind, region and scopes."""
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        grant = self._access.get(token)
        if grant is None:
            raise _ApiError(401, "invalid bearer token", "the token is unknown or was revoked")
        if grant.expires_at <= time.time():
            raise _ApiError(401, "token expired (401)", "the access token has expired; refresh it")
        self._take_rate(token)
        if grant.kind != kind:
            raise _ApiError(403, "unauthorized", f"this endpoint needs a {kind} token, not a {grant.kind} token")
        site = self._site(request)
        if site != "proxy" and grant.region != site:
            raise _ApiError(
                421, "user out of region",
                f"this account is served by the {grant.region} region",
                {"Alt-Svc": f'h2="{self._authority(self._ports[grant.region])}"; ma=86400'},
            )
        missing = [s for s in scopes if s not in grant.scopes]
        if missing:
            raise _ApiError(403, "missing scopes", f"the token lacks the scope(s) {', '.join(missing)}")
        return grant

    def _take_rate(self, token: str) -> None:
        """A token bucket per access token: `rate_limit` = (burst, refill per second)."""
        if self.rate_limit is not None:
            _take(self._buckets.setdefault(token, [self.rate_limit[0], time.monotonic()]), *self.rate_limit)

    def _take_vehicle_rate(self, client_id: str, vin: str) -> None:
        """A token bucket per app and vehicle for the calls that name one vehicle, as Tesla
        limits requests per device: `vehicle_rate_limit` = (burst, refill per second)."""
        if self.vehicle_rate_limit is not None:
            bucket = self._vehicle_buckets.setdefault((client_id, vin), [self.vehicle_rate_limit[0], time.monotonic()])
            _take(bucket, *self.vehicle_rate_limit)

    def _mint(self, grant: _Grant, expires_in: float | None = None) -> dict[str, Any]:
        if len(self._access) > 10_000:  # a long-running simulator forgets expired tokens
            now = time.time()
            for token in [t for t, g in self._access.items() if g.expires_at <= now]:
                del self._access[token]
                self._buckets.pop(token, None)
        ttl = self.access_token_ttl if expires_in is None else expires_in
        grant.expires_at = time.time() + ttl
        access = secrets.token_urlsafe(32)
        self._access[access] = grant
        body: dict[str, Any] = {"access_token": access, "token_type": "Bearer", "expires_in": int(ttl)}
        if grant.kind == "user":
            refresh = secrets.token_urlsafe(32)
            self._refresh[refresh] = _Grant("user", grant.client_id, grant.scopes, grant.region, 0.0)
            body["refresh_token"] = refresh
        body["scope"] = " ".join(sorted(grant.scopes))
        return body

    # ---- endpoints: tokens and partner --------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        if request.content_type == "application/json":
            form: Mapping[str, Any] = await self._body(request)
        else:
            form = await request.post()
        grant_type = form.get("grant_type")
        app = self.apps.get(str(form.get("client_id", "")))
        if grant_type == "client_credentials":
            if app is None or not secrets.compare_digest(str(form.get("client_secret", "")), app.client_secret):
                raise _ApiError(401, "invalid_client", "unknown client_id or wrong client_secret")
            audience = str(form.get("audience", "")).rstrip("/")
            region = TESLA_REGION_URLS.get(audience) or next(
                (r for r in self.regions if self.base_url(r) == audience), None)
            if region is None:
                raise _ApiError(400, "invalid_request", "audience must be a regional Fleet API URL")
            scopes = frozenset(str(form.get("scope", "")).split())
            return web.json_response(self._mint(_Grant("partner", app.client_id, scopes, region, 0.0)))
        if grant_type == "refresh_token":
            old = self._refresh.pop(str(form.get("refresh_token", "")), None)  # single use
            if old is None or app is None or old.client_id != app.client_id:
                raise _ApiError(401, "invalid_grant", "the refresh token is invalid, expired or already used")
            return web.json_response(self._mint(_Grant("user", old.client_id, old.scopes, old.region, 0.0)))
        raise _ApiError(400, "unsupported_grant_type", "use client_credentials or refresh_token")

    async def _user_region(self, request: web.Request) -> web.Response:
        grant = self._authorize(request, "user")
        body = {"region": grant.region, "fleet_api_base_url": self.base_url(grant.region)}
        return web.json_response({"response": body})

    async def _register(self, request: web.Request) -> web.Response:
        grant = self._authorize(request, "partner")
        domain = str((await self._body(request)).get("domain", "")).strip().lower()
        if not domain or "/" in domain or ":" in domain:
            raise _ApiError(400, "invalid domain", "give the bare domain that serves the public key")
        try:
            pem = await self._fetch_key(domain)
            key = serialization.load_pem_public_key(pem)
        except Exception as exc:
            raise _ApiError(
                400, "public key not found",
                f"could not load https://{domain}{KEY_PATH}: {type(exc).__name__}") from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
            raise _ApiError(400, "invalid public key", "the public key must be an EC key on prime256v1")
        app = self.apps[grant.client_id]
        app.public_point, app.domain = public_point(key), domain
        app.regions.add(grant.region)
        return web.json_response({"response": {"client_id": app.client_id, "domain": domain,
                                               "public_key": app.public_point.hex()}})

    async def _fetch_key(self, domain: str) -> bytes:
        fetcher = self.key_fetcher
        if callable(fetcher):
            result = fetcher(domain)
            return await result if inspect.isawaitable(result) else result
        url = (fetcher or "https://{domain}" + KEY_PATH).format(domain=domain)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            async with session.get(url) as response:
                response.raise_for_status()
                return await response.read()
