"""The Fleet API client pushing configs against the Fleet API simulator, over real HTTP on
loopback: signed pushes and their sync, skipped vehicles and fleet status, the max_configs
trap, the bad-signature trap, DELETE, 403 (scope) and 412 (unsigned endpoint), the proxy,
and registration.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from fleetwire.operator.clients.fleetapi_errors import FleetApiError, LegacyEndpointError, MissingScopeError
from fleetwire.proto.ss256 import sign_telemetry_config
from fleetwire.pki import make_ca, make_server_cert
from fleetwire.sim.fleetapi import FleetApiSimulator
from fleetapi_helpers import (
    APP_KEY,
    OTHER_KEY,
    VIN,
    VIN2,
    SimFactory,
    config,
    user_client,
)
from fleetapi_helpers import make_sim  # noqa: F401 - a fixture


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
