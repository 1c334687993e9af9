"""The Fleet API client against the Fleet API simulator, over real HTTP on loopback.

Covers what goes wrong in practice: single-use refresh tokens (saved before use), region
hops (421), rate limits (429 + Retry-After), 401/403/412 and 5xx, skipped vehicles, the
max_configs trap, the bad-signature trap and DELETE; and that no token reaches a log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fleetwire.operator.clients.fleetapi import (
    FleetApiClient,
    FleetApiError,
    LegacyEndpointError,
    MissingScopeError,
    RateLimitedError,
    RetryPolicy,
    ServerError,
    TokenError,
    TokenStoreError,
    Tokens,
    alt_svc_base_url,
)
from fleetwire.operator.stores.tokens import JsonFileTokenStore, MemoryTokenStore
from fleetwire.proto.ss256 import sign_telemetry_config
from fleetwire.pki import make_ca, make_server_cert, write_bundle
from fleetwire.sim.fleetapi import FleetApiSimulator

APP_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())
CA_PEM = make_ca("Example Server CA").cert_pem.decode()
VIN, VIN2, VIN3 = "5YJ3E1EA7KF000001", "5YJ3E1EA7KF000002", "5YJ3E1EA7KF000003"
FAST = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05)


def config(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "hostname": "telemetry.example.com",
        "port": 443,
        "ca": CA_PEM,
        "fields": {"VehicleSpeed": {"interval_seconds": 10}, "Soc": {"interval_seconds": 60}},
        "alert_types": ["service"],
    }
    return {**base, **changes}


class OrderCheckingStore(MemoryTokenStore):
    """Fails the test if a rotated access token reaches the API before it was saved."""

    def __init__(self, tokens: Tokens, sim: Any) -> None:
        super().__init__(tokens)
        self.sim = sim
        self.api_calls_at_save: list[int] = []
        self.fail_saves = 0

    async def save(self, tokens: Tokens) -> None:
        if self.fail_saves:
            self.fail_saves -= 1
            raise OSError("store unavailable")
        self.api_calls_at_save.append(api_calls(self.sim))
        await super().save(tokens)


def api_calls(sim: Any, status: int | None = None) -> int:
    return sum(n for (path, st), n in sim.requests.items() if path.startswith("/api/") and status in (None, st))


SimFactory = Callable[..., Awaitable[Any]]


@pytest_asyncio.fixture
async def make_sim() -> AsyncIterator[SimFactory]:
    sims: list[FleetApiSimulator] = []

    async def make(**options: Any) -> FleetApiSimulator:
        options.setdefault("public_key", APP_KEY.public_key())
        options.setdefault("max_streaming", 0)  # these tests are about the API, not streaming
        sim = FleetApiSimulator(**options)
        for vin in (VIN, VIN2, VIN3):
            sim.add_vehicle(vin)
        await sim.start()
        sims.append(sim)
        return sim

    yield make
    for sim in sims:
        await sim.stop()


def tokens_from(issued: dict[str, Any], expires_at: float | None = None) -> Tokens:
    return Tokens(issued["access_token"], issued["refresh_token"],
                  expires_at if expires_at is not None else 4102444800.0)


def client(sim: Any, store: Any = None, *, region: str = "na", **options: Any) -> FleetApiClient:
    options.setdefault("retry", FAST)
    return FleetApiClient(
        client_id=sim.client_id, client_secret=sim.apps[sim.client_id].client_secret, token_store=store,
        base_url=sim.base_url(region), auth_url=sim.auth_url, **options,
    )


async def user_client(sim: Any, **options: Any) -> tuple[FleetApiClient, MemoryTokenStore]:
    store = MemoryTokenStore(tokens_from(sim.issue_user_tokens(**options.pop("grant", {}))))
    return client(sim, store, **options), store


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
# Pushing configs
# --------------------------------------------------------------------------------------


async def test_push_signed_config_applies_after_the_sync_delay(make_sim: SimFactory) -> None:
    sim = await make_sim(sync_delay=0.3)
    api, _store = await user_client(sim)
    desired = config()
    async with api:
        result = await api.push_config_jws([VIN, VIN2], sign_telemetry_config(APP_KEY, desired))
        assert (result.updated_vehicles, result.skipped) == (2, {})
        pending = await api.get_config(VIN)
        assert not pending.synced and not pending.applied(desired)
        await asyncio.sleep(0.45)
        state = await api.get_config(VIN)
        assert state.synced and state.key_paired and not state.limit_reached
        assert state.applied(desired) and not state.applied(config(port=4443))
        assert await api.telemetry_errors() == []


async def test_skip_reasons_and_fleet_status(make_sim: SimFactory) -> None:
    sim = await make_sim(report_max_configs=True)
    sim.add_vehicle("NOKEY", key_paired=False)
    sim.add_vehicle("OLDFW", firmware="2024.20.9")
    sim.add_vehicle("NOHW", hardware_supported=False)
    sim.add_vehicle("FULL", slots_used=3)
    sim.add_vehicle("OLDS", model="S", model_year=2019, firmware="2024.44.25", key_paired=False)
    sim.add_vehicle("OLDX", model="X", model_year=2020, firmware="2025.20.3", key_paired=False)
    sim.add_vehicle("OLDXOK", model="X", model_year=2020, firmware="2025.20.3", key_paired=False,
                    safety_screen_toggle=True)
    api, _store = await user_client(sim)
    vins = [VIN, "NOKEY", "OLDFW", "NOHW", "FULL", "OLDS", "OLDX", "OLDXOK"]
    async with api:
        result = await api.push_config_jws(vins, sign_telemetry_config(APP_KEY, config()))
        assert result.updated_vehicles == 2  # VIN, and the old X with the toggle on (no key needed)
        assert result.skipped == {
            "missing_key": ["NOKEY"], "unsupported_firmware": ["OLDFW"],
            "unsupported_hardware": ["NOHW", "OLDS", "OLDX"], "max_configs": ["FULL"],
        }
        assert result.skip_reason("OLDFW") == "unsupported_firmware" and result.skip_reason(VIN) is None

        status = await api.fleet_status([VIN, "NOKEY", "OLDX"])
        assert status.key_paired_vins == [VIN] and status.unpaired_vins == ["NOKEY", "OLDX"]
        assert status.vehicle_info["OLDX"].safety_screen_streaming_toggle_enabled is False
        assert status.vehicle_info["OLDX"].vehicle_command_protocol_required is False
        assert status.vehicle_info[VIN].firmware_version == "2025.20.1"
        assert status.vehicle_info[VIN].safety_screen_streaming_toggle_enabled is None

        with pytest.raises(FleetApiError, match="404"):
            await api.get_config("UNKNOWNVIN")


async def test_max_configs_trap_and_a_freed_slot_does_not_apply_the_refused_config(make_sim: SimFactory) -> None:
    sim = await make_sim(max_configs=3)
    sim.add_vehicle("FULL", slots_used=3)
    api, _store = await user_client(sim)
    desired = config()
    token = sign_telemetry_config(APP_KEY, desired)
    async with api:
        result = await api.push_config_jws(["FULL"], token)
        assert (result.updated_vehicles, result.skipped) == (1, {})  # "accepted"...
        state = await api.get_config("FULL")
        assert state.synced and state.config is None and state.limit_reached  # ...but never applied
        assert not state.applied(desired)

        sim.vehicle("FULL").state.slots_used = 2  # another app's config went away
        await asyncio.sleep(0.05)
        state = await api.get_config("FULL")
        assert state.config is None  # the refused config is not applied by itself
        assert not (await api.get_config("FULL")).applied(desired)

        await api.push_config_jws(["FULL"], token)  # it must be sent again
        assert (await api.get_config("FULL")).applied(desired)


async def test_bad_signature_reports_synced_but_shows_in_telemetry_errors(make_sim: SimFactory) -> None:
    sim = await make_sim()
    api, _store = await user_client(sim)
    desired = config()
    async with api:
        result = await api.push_config_jws([VIN], sign_telemetry_config(OTHER_KEY, desired))  # the wrong key
        assert result.updated_vehicles == 1
        assert (await api.get_config(VIN)).applied(desired)  # looks applied: that is the trap
        errors = await api.telemetry_errors()
        assert [(e.vin, e.error_name, e.error) for e in errors] == [
            (VIN, "config_manager_error", "error loading config file: InvalidSignature: unknown issuer")]
        assert errors[0].name == sim.client_id
        assert (errors[0].hostname, errors[0].port) == ("telemetry.example.com", 443)

        good = sign_telemetry_config(APP_KEY, desired)
        header, claims, signature = good.split(".")
        forged = f"{header}.{claims}.{signature[:-4]}{'AAAA' if signature[-4:] != 'AAAA' else 'BBBB'}"
        await api.push_config_jws([VIN2], forged)  # the right issuer, a broken signature
        errors = await api.telemetry_errors()
        assert ("config_manager_error", "error loading config file: crypto/ecdsa: verification error") in {
            (e.error_name, e.error) for e in errors if e.vin == VIN2}
        assert sim.vehicle(VIN2).state.slot(sim.client_id).error is not None  # the vehicle will not stream it

        with pytest.raises(FleetApiError, match="400"):
            await api.push_config_jws([VIN], "not-a-jws")


async def test_delete_config(make_sim: SimFactory) -> None:
    sim = await make_sim()
    api, _store = await user_client(sim)
    async with api:
        await api.push_config_jws([VIN], sign_telemetry_config(APP_KEY, config()))
        assert (await api.get_config(VIN)).config is not None
        assert await api.delete_config(VIN) == 1
        state = await api.get_config(VIN)
        assert state.synced and state.config is None and not state.limit_reached
        assert await api.delete_config(VIN) == 0


async def test_location_needs_the_vehicle_location_scope(make_sim: SimFactory) -> None:
    sim = await make_sim()
    api, _store = await user_client(sim, grant={"scopes": ("openid", "offline_access", "vehicle_device_data")})
    with_location = config(fields={"Location": {"interval_seconds": 10, "minimum_delta": 50}})
    async with api:
        with pytest.raises(MissingScopeError, match="vehicle_location"):
            await api.push_config_jws([VIN], sign_telemetry_config(APP_KEY, with_location))
        assert (await api.push_config_jws([VIN], sign_telemetry_config(APP_KEY, config()))).updated_vehicles == 1


async def test_unsigned_config_needs_the_csr_process_or_the_proxy(make_sim: SimFactory) -> None:
    sim = await make_sim()
    api, _store = await user_client(sim)
    async with api:
        with pytest.raises(LegacyEndpointError, match="push_config_jws.*tesla-http-proxy"):
            await api.push_config_unsigned([VIN], config())

    legacy = await make_sim(legacy_csr=True)
    api, _store = await user_client(legacy)
    async with api:
        assert (await api.push_config_unsigned([VIN], config())).updated_vehicles == 1
        assert (await api.get_config(VIN)).applied(config())


async def test_proxy_signs_unsigned_configs_with_the_app_key(make_sim: SimFactory, tmp_path: Path) -> None:
    proxy_ca = make_ca("Proxy CA")
    same = make_server_cert(proxy_ca, ["127.0.0.1"])
    with pytest.raises(ValueError, match="TLS key equal to the command key"):
        FleetApiSimulator(public_key=same.key.public_key(), proxy_tls=same, proxy_key=same.key)
    sim = await make_sim(proxy_tls=make_server_cert(proxy_ca, ["127.0.0.1"]), proxy_key=APP_KEY)
    sim.add_vehicle("FW2426", firmware="2024.26.2")  # enough for _jws, not through the proxy
    proxy_ssl = ssl.create_default_context(cadata=proxy_ca.cert_pem.decode())
    api, _store = await user_client(sim, proxy_url=sim.proxy_url, proxy_ssl=proxy_ssl)
    desired = config(iss="ignored", aud="ignored")
    async with api:
        async with aiohttp.ClientSession() as http:
            async with http.get(sim.proxy_url + "/health", ssl=proxy_ssl) as response:
                assert (response.status, await response.text()) == (200, "OK")
        result = await api.push_config_unsigned([VIN, "FW2426"], desired)
        assert result.updated_vehicles == 1 and result.skipped == {"unsupported_firmware": ["FW2426"]}
        assert (await api.get_config(VIN)).applied(config())
        assert await api.telemetry_errors() == []  # signed with the registered key
        jws = await api.push_config_jws(["FW2426"], sign_telemetry_config(APP_KEY, config()))
        assert jws.updated_vehicles == 1


async def test_registration_fetches_the_public_key_from_the_domain(make_sim: SimFactory) -> None:
    pem = APP_KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    asked: list[str] = []

    async def fetch(domain: str) -> bytes:
        asked.append(domain)
        return pem

    sim = await make_sim(public_key=None, key_fetcher=fetch)
    api, _store = await user_client(sim)
    async with api:
        answer = await api.register_partner("example.com")
        assert asked == ["example.com"] and answer["domain"] == "example.com"
        await api.push_config_jws([VIN], sign_telemetry_config(APP_KEY, config()))
        assert await api.telemetry_errors() == []
        with pytest.raises(FleetApiError, match="does not share the registered domain"):
            await api.push_config_jws([VIN], sign_telemetry_config(APP_KEY, config(hostname="telemetry.other.org")))


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
