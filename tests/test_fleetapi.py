"""The Fleet API client against the Fleet API simulator, over real HTTP on loopback: tokens,
regions, rate limits, outages, and that no token reaches a log.

Covers what goes wrong in practice: single-use refresh tokens (saved before use), region
hops (421), rate limits (429 + Retry-After), 401 and 5xx. Pushing configs (skipped vehicles,
the max_configs trap, the bad-signature trap, 403/412, DELETE) is test_fleetapi_push.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import stat
from pathlib import Path

import aiohttp
import pytest
from fleetwire.operator.clients.fleetapi import FleetApiClient
from fleetwire.operator.clients.fleetapi_errors import FleetApiError, RateLimitedError, ServerError, TokenError, TokenStoreError
from fleetwire.operator.clients.fleetapi_retry import RetryPolicy, alt_svc_base_url
from fleetwire.operator.clients.fleetapi_types import Tokens
from fleetwire.operator.stores.tokens import JsonFileTokenStore, MemoryTokenStore
from fleetwire.proto.ss256 import sign_telemetry_config
from fleetwire.pki import make_ca, make_server_cert, write_bundle
from fleetapi_helpers import (
    APP_KEY,
    FAST,
    VIN,
    OrderCheckingStore,
    SimFactory,
    api_calls,
    client,
    config,
    tokens_from,
    user_client,
)
from fleetapi_helpers import make_sim  # noqa: F401 - a fixture


# --------------------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------------------


async def test_refresh_token_rotates_and_is_saved_before_the_new_access_token_is_used(make_sim: SimFactory) -> None:
    sim = await make_sim()
    issued = sim.issue_user_tokens()
    store = OrderCheckingStore(tokens_from(issued, expires_at=1.0), sim)  # expired: refresh first
    async with client(sim, store) as api:
        state = await api.get_config(VIN)
        assert state.synced and state.config is None
        assert store.api_calls_at_save == [0]  # saved while the API had not been called yet
        assert store.tokens.refresh_token != issued["refresh_token"]
        assert store.tokens.access_token != issued["access_token"]
        assert not store.tokens.expired()
        await api.get_config(VIN)
        assert store.saves == 1  # a valid token is not renewed again

    async with aiohttp.ClientSession() as http:  # the replaced refresh token is dead
        async with http.post(sim.auth_url, data={"grant_type": "refresh_token", "client_id": sim.client_id,
                                                 "refresh_token": issued["refresh_token"]}) as response:
            assert response.status == 401
            assert (await response.json())["error"] == "invalid_grant"


async def test_a_failed_save_keeps_the_new_pair_unused_until_it_is_saved(make_sim: SimFactory) -> None:
    sim = await make_sim()
    store = OrderCheckingStore(tokens_from(sim.issue_user_tokens(), expires_at=1.0), sim)
    store.fail_saves = 1
    async with client(sim, store) as api:
        with pytest.raises(TokenStoreError, match="kept in memory"):
            await api.get_config(VIN)
        assert api_calls(sim) == 0  # the unsaved access token was never used
        assert sim.requests.get(("/oauth2/v3/token", 200)) == 1
        state = await api.get_config(VIN)  # saves the pending pair first, then calls
        assert state.synced
        assert store.api_calls_at_save == [0]
        assert sim.requests.get(("/oauth2/v3/token", 200)) == 1  # no second refresh was needed


async def test_401_renews_once_then_fails_with_a_clear_error(make_sim: SimFactory) -> None:
    sim = await make_sim()
    api, store = await user_client(sim)
    async with api:
        sim.expire_access_tokens()  # the client still believes its token is valid
        assert (await api.get_config(VIN)).synced
        assert store.saves == 1
        assert sim.requests[("/api/1/vehicles/{vin}/fleet_telemetry_config", 401)] == 1

        sim.expire_access_tokens()
        sim.revoke_refresh_tokens()
        with pytest.raises(TokenError, match="authorize the app again"):
            await api.get_config(VIN)


async def test_a_pair_rotated_by_another_process_is_picked_up_without_refreshing(make_sim: SimFactory) -> None:
    sim = await make_sim()
    api, store = await user_client(sim)
    async with api:
        await api.get_config(VIN)
        sim.expire_access_tokens()
        store.tokens = tokens_from(sim.issue_user_tokens())  # another replica refreshed meanwhile
        await api.get_config(VIN)
        assert store.saves == 0
        assert sim.requests.get(("/oauth2/v3/token", 200)) is None


async def test_partner_token_for_partner_calls_and_user_token_for_vehicle_calls(make_sim: SimFactory) -> None:
    sim = await make_sim()
    api, _store = await user_client(sim)
    async with api:
        assert await api.telemetry_errors() == []
        assert sim.requests[("/oauth2/v3/token", 200)] == 1  # the partner token, cached
        assert await api.telemetry_errors() == []
        assert sim.requests[("/oauth2/v3/token", 200)] == 1
    async with client(sim, None) as partner_only:
        with pytest.raises(TokenError, match="token_store"):
            await partner_only.get_config(VIN)
    async with FleetApiClient(client_id=sim.client_id, client_secret="wrong", base_url=sim.base_url(),
                              auth_url=sim.auth_url, retry=FAST) as bad:
        with pytest.raises(TokenError, match="client_credentials"):
            await bad.telemetry_errors()


async def test_token_store_json_file(tmp_path: Path) -> None:
    store = JsonFileTokenStore(tmp_path / "state" / "tokens.json")
    await store.save(Tokens("access-1", "refresh-1", 123.0))
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert await store.load() == Tokens("access-1", "refresh-1", 123.0)
    await store.save(Tokens("access-2", "refresh-2", 456.0))
    assert (await store.load()).refresh_token == "refresh-2"
    assert [p.name for p in store.path.parent.iterdir()] == ["tokens.json"]  # no temp files left
    assert "refresh-2" not in repr(await store.load())
    store.path.write_text("{")
    with pytest.raises(TokenStoreError, match="cannot read"):
        await store.load()


# --------------------------------------------------------------------------------------
# Regions, rate limits, outages
# --------------------------------------------------------------------------------------


def test_alt_svc_forms() -> None:
    current = "https://fleet-api.prd.na.vn.cloud.tesla.com"
    assert alt_svc_base_url('h2="fleet-api.prd.eu.vn.cloud.tesla.com:443"; ma=86400', current) == (
        "https://fleet-api.prd.eu.vn.cloud.tesla.com:443")
    assert alt_svc_base_url("fleet-api.prd.eu.vn.cloud.tesla.com", current) == (
        "https://fleet-api.prd.eu.vn.cloud.tesla.com")
    assert alt_svc_base_url("https://x.example/api", current) == "https://x.example"
    assert alt_svc_base_url("", current) is None


async def test_421_is_followed_to_the_alt_svc_host_and_remembered(make_sim: SimFactory) -> None:
    sim = await make_sim()
    api, _store = await user_client(sim, grant={"region": "eu"}, region="na")
    async with api:
        assert (await api.get_config(VIN)).synced
        assert api.base_url == sim.base_url("eu")
        await api.fleet_status([VIN])
        assert api_calls(sim, 421) == 1  # the second call went straight to eu
        region, url = await api.user_region()
        assert (region, url) == ("eu", sim.base_url("eu"))
        assert await api.telemetry_errors() == []  # the partner token's audience is eu


async def test_over_https_the_region_hop_keeps_the_scheme(make_sim: SimFactory, tmp_path: Path) -> None:
    ca = make_ca("Simulator CA")
    cert, key = write_bundle(make_server_cert(ca, ["127.0.0.1"]), tmp_path / "api.pem", tmp_path / "api.key")
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    sim = await make_sim(ssl_context=served)
    trust = ssl.create_default_context(cadata=ca.cert_pem.decode())
    api, _store = await user_client(sim, grant={"region": "cn"}, ssl_context=trust)
    async with api:
        assert (await api.get_config(VIN)).synced
        assert api.base_url == sim.base_url("cn") and api.base_url.startswith("https://")
        assert await api.telemetry_errors() == []


async def test_429_is_retried_after_retry_after(make_sim: SimFactory) -> None:
    sim = await make_sim(rate_limit=(2, 1.0))  # a burst of 2, then one call per second
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(seconds)

    api, _store = await user_client(sim, sleep=sleep)
    async with api:
        for _ in range(3):
            assert (await api.get_config(VIN)).synced
    assert api_calls(sim, 429) == 1
    assert len(slept) == 1 and 1.0 <= slept[0] <= 1.0 + FAST.base_delay

    api, _store = await user_client(sim, retry=RetryPolicy(max_attempts=2, base_delay=0.01), sleep=sleep)
    async with api:
        await api.get_config(VIN)
        await api.get_config(VIN)
        sim.rate_limit = (2, 0.001)  # Retry-After far beyond what the client waits
        with pytest.raises(RateLimitedError, match="slow down") as caught:
            await api.get_config(VIN)
        assert caught.value.retry_after is not None and caught.value.retry_after > 120


async def test_5xx_is_retried_with_backoff_then_reported(make_sim: SimFactory) -> None:
    sim = await make_sim()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    api, _store = await user_client(sim, sleep=sleep)
    async with api:
        sim.inject_failures(503, 2)
        assert (await api.get_config(VIN)).synced
        assert len(slept) == 2 and all(0 <= s <= FAST.max_delay for s in slept)
        sim.inject_failures(502, FAST.max_attempts)
        with pytest.raises(ServerError, match="HTTP 502 after 4 attempts"):
            await api.get_config(VIN)


async def test_no_answer_is_an_unreachable_error() -> None:
    store = MemoryTokenStore(Tokens("a", "r", 4102444800.0))
    async with FleetApiClient(client_id="x", token_store=store, base_url="http://127.0.0.1:9", auth_url="http://127.0.0.1:9/t",
                              retry=RetryPolicy(max_attempts=2, base_delay=0.0)) as api:
        with pytest.raises(FleetApiError, match="no answer from 127.0.0.1:9 after 2 attempts"):
            await api.get_config(VIN)


# --------------------------------------------------------------------------------------
# Secrets stay out of logs
# --------------------------------------------------------------------------------------


async def test_no_token_or_secret_reaches_the_logs(make_sim: SimFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sim = await make_sim(rate_limit=(3, 2.0))
    issued = sim.issue_user_tokens(region="eu")
    store = MemoryTokenStore(tokens_from(issued, expires_at=1.0))
    secrets_seen = {issued["access_token"], issued["refresh_token"], sim.apps[sim.client_id].client_secret}
    messages: list[str] = []
    api = client(sim, store, region="na")
    async with api:
        await api.push_config_jws([VIN], sign_telemetry_config(APP_KEY, config()))  # refresh, 421
        for _ in range(4):  # 429
            await api.get_config(VIN)
        await api.telemetry_errors()  # partner token
        sim.expire_access_tokens()
        await api.get_config(VIN)  # 401, refresh
        secrets_seen |= {store.tokens.access_token, store.tokens.refresh_token, api._partner[0]}  # type: ignore[index]
        sim.expire_access_tokens()
        sim.revoke_refresh_tokens()
        try:
            await api.get_config(VIN)
        except TokenError as exc:
            messages.append(str(exc))
        messages += [repr(store.tokens), repr(api)]
    assert sim.requests.get(("/api/1/vehicles/{vin}/fleet_telemetry_config", 429))
    assert "fleetwire.fleetapi" in {r.name for r in caplog.records}
    text = caplog.text + "\n".join(messages) + json.dumps([r.args for r in caplog.records], default=str)
    for secret in secrets_seen:
        assert secret not in text
