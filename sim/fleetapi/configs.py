"""Config slots: pushes (signed, proxy-signed, legacy), what the vehicle skips or refuses, when a
pending config syncs, and the config endpoints."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web
from cryptography import x509

from fleetwire.proto.catalog import firmware_at_least
from fleetwire.proto.ss256 import (
    SignatureError,
    iss_claim,
    sign_telemetry_config,
    verify_token,
)
from fleetwire.sim.fleetapi.state import (
    _SIGNED_CLAIMS,
    LEGACY_SX_FIRMWARE,
    MIN_FIRMWARE,
    MIN_FIRMWARE_LEGACY,
    MIN_FIRMWARE_PROXY,
    AppRegistration,
    AppSlot,
    VehicleState,
    _ApiError,
    _Grant,
)


def _root_domain(hostname: str) -> str:
    """The registrable part of a name, approximated by its last two labels."""
    return ".".join(hostname.lower().rstrip(".").split(".")[-2:])


def _config_problem(config: Mapping[str, Any]) -> str | None:
    """What a vehicle refuses in a config it could verify (Go's JSON wording where it exists)."""
    port = config.get("port")
    if not isinstance(port, int) or isinstance(port, bool):
        return f"json: cannot unmarshal {type(port).__name__} into Go struct field .port of type int"
    if not 0 < port < 65536:
        return f"invalid port {port}"
    exp = config.get("exp")
    if isinstance(exp, int | float) and exp < time.time():
        return "config expired"
    try:
        x509.load_pem_x509_certificates(str(config.get("ca", "")).encode())
    except ValueError:
        return "x509: malformed certificate in ca"
    return None


class _Configs:
    """Mixin of `FleetApiSimulator`: the vehicle endpoints and each vehicle's config slots."""

    async def _fleet_status(self, request: web.Request) -> web.Response:
        self._authorize(request, "user", ("vehicle_device_data",))
        vins = self._vins(await self._body(request))
        states = [self._vehicles[v] for v in vins]
        info = {
            s.vin: {
                "firmware_version": s.firmware,
                "vehicle_command_protocol_required": not s.legacy_sx,
                "fleet_telemetry_version": "1.0.2" if firmware_at_least(s.firmware, MIN_FIRMWARE) else None,
                "safety_screen_streaming_toggle_enabled": s.safety_screen_toggle if s.legacy_sx else None,
                "discounted_device_data": False,
            }
            for s in states
        }
        return web.json_response({"response": {
            "key_paired_vins": [s.vin for s in states if s.key_paired],
            "unpaired_vins": [s.vin for s in states if not s.key_paired],
            "vehicle_info": info,
        }})

    async def _push_jws(self, request: web.Request) -> web.Response:
        grant = self._authorize(request, "user", ("vehicle_device_data",))
        data = await self._body(request)
        vins = self._vins(data)
        token = data.get("token")
        if not isinstance(token, str):
            raise _ApiError(400, "token must be the signed JWS of the config")
        claims, verdict = self._verdict(token, self.apps[grant.client_id])
        return self._push(grant, vins, claims, verdict, MIN_FIRMWARE)

    async def _push_unsigned(self, request: web.Request) -> web.Response:
        grant = self._authorize(request, "user", ("vehicle_device_data",))
        data = await self._body(request)
        vins = self._vins(data)
        config = data.get("config")
        if not isinstance(config, dict):
            raise _ApiError(400, "config must be a JSON object")
        app = self.apps[grant.client_id]
        if self._site(request) == "proxy":
            assert self._proxy_key is not None
            token = sign_telemetry_config(self._proxy_key, config)  # overwrites iss and aud
            claims, verdict = self._verdict(token, app)
            return self._push(grant, vins, claims, verdict, MIN_FIRMWARE_PROXY)
        if not app.legacy_csr:
            raise _ApiError(
                412, "fleet_telemetry_config requires the legacy CSR process",
                "sign the config and use fleet_telemetry_config_jws, or send it through the vehicle-command proxy")
        return self._push(grant, vins, {k: v for k, v in config.items() if k not in _SIGNED_CLAIMS}, None,
                          MIN_FIRMWARE_LEGACY)

    def _verdict(self, token: str, app: AppRegistration) -> tuple[dict[str, Any], str | None]:
        """The config in a JWS and what a vehicle will say of its signature (None: valid).

        The API itself accepts any well-formed token: vehicles check the signature when
        they load the config, and report a failure only as a `config_manager_error`.
        """
        parts = token.split(".")
        try:
            if len(parts) != 3:
                raise ValueError("not three parts")
            claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
            if not isinstance(claims, dict):
                raise ValueError("claims are not an object")
        except (ValueError, UnicodeDecodeError):
            raise _ApiError(400, "invalid token", "token is not a JWS compact serialization") from None
        verdict: str | None = None
        if app.public_point is None or claims.get("iss") != iss_claim(app.public_point):
            verdict = "InvalidSignature: unknown issuer"
        else:
            try:
                verify_token(token, app.public_point)
            except SignatureError:
                verdict = "crypto/ecdsa: verification error"
        config = {k: v for k, v in claims.items() if k not in _SIGNED_CLAIMS}
        return config, verdict

    def _push(self, grant: _Grant, vins: Sequence[str], config: dict[str, Any], verdict: str | None,
              min_firmware: str) -> web.Response:
        hostname = config.get("hostname")
        if not (isinstance(hostname, str) and hostname and "port" in config and isinstance(config.get("ca"), str)):
            raise _ApiError(400, "invalid config", "a config needs hostname, port and ca")
        fields = config.get("fields")
        if not isinstance(fields, dict):
            raise _ApiError(400, "invalid config", "fields must be an object of field name → settings")
        if "Location" in fields and "vehicle_location" not in grant.scopes:
            raise _ApiError(403, "missing scopes", "streaming Location needs the vehicle_location scope")
        app = self.apps[grant.client_id]
        if app.domain and _root_domain(hostname) != _root_domain(app.domain):
            raise _ApiError(400, "invalid hostname",
                            f"{hostname} does not share the registered domain {app.domain}")
        skipped: dict[str, list[str]] = {r: [] for r in ("missing_key", "unsupported_hardware",
                                                         "unsupported_firmware", "max_configs")}
        updated = 0
        for vin in vins:
            state = self._vehicles[vin]
            reason = self._skip_reason(state, grant.client_id, min_firmware)
            if reason is not None:
                skipped[reason].append(vin)
                continue
            self._stage(state, grant.client_id, config, verdict)  # one dict shared by the VINs of a push
            updated += 1
        return web.json_response({"response": {"updated_vehicles": updated, "skipped_vehicles": skipped}})

    def _skip_reason(self, state: VehicleState, client_id: str, min_firmware: str) -> str | None:
        if not state.hardware_supported:
            return "unsupported_hardware"
        if state.legacy_sx:
            if not firmware_at_least(state.firmware, LEGACY_SX_FIRMWARE) or not state.safety_screen_toggle:
                return "unsupported_hardware"
        elif not firmware_at_least(state.firmware, min_firmware):
            return "unsupported_firmware"
        elif not state.key_paired:
            return "missing_key"
        slot = state.slot(client_id)
        has_slot = slot is not None and slot.config is not None
        if self.report_max_configs and not has_slot and self._taken(state, client_id) >= self.max_configs:
            return "max_configs"
        return None

    def _taken(self, state: VehicleState, client_id: str) -> int:
        """Config slots in use on the vehicle by everyone but `client_id`."""
        ours = sum(1 for cid, s in (state.apps or {}).items() if cid != client_id and s.config is not None)
        return state.slots_used + ours

    def _stage(self, state: VehicleState, client_id: str, config: dict[str, Any], verdict: str | None) -> None:
        if state.apps is None:
            state.apps = {}
        slot = state.apps.setdefault(client_id, AppSlot())
        slot.pending, slot.pending_error = config, verdict
        if slot.timer is not None:
            slot.timer.cancel()
            slot.timer = None
        delay = self.sync_delay(state.vin) if callable(self.sync_delay) else self.sync_delay
        if delay <= 0:
            self._apply(state.vin, client_id)
        else:
            slot.timer = asyncio.get_running_loop().call_later(delay, self._apply, state.vin, client_id)

    def _apply(self, vin: str, client_id: str) -> None:
        """The vehicle receives the pending config: it takes it, refuses it over the limit
        (forgotten, not queued), or holds it but refuses to use it (bad signature, bad form)."""
        state = self._vehicles.get(vin)
        slot = state.slot(client_id) if state else None
        if state is None or slot is None or slot.pending is None:
            return
        config, verdict = slot.pending, slot.pending_error
        slot.pending = slot.pending_error = slot.timer = None
        if slot.config is None and self._taken(state, client_id) >= self.max_configs:
            slot.limit_reached, slot.error = True, None
        else:
            slot.limit_reached = False
            slot.config = config
            slot.error = verdict or _config_problem(config)
            if slot.error:
                self._record_error(vin, client_id, "config_manager_error", f"error loading config file: {slot.error}",
                                   config)
        self._notify(vin, client_id)

    async def _get_config(self, request: web.Request) -> web.Response:
        grant = self._authorize(request, "user", ("vehicle_device_data",))
        state = self._state(request)
        self._take_vehicle_rate(grant.client_id, state.vin)
        slot = state.slot(grant.client_id)
        if slot is None:
            full = self._taken(state, grant.client_id) >= self.max_configs
            body = {"synced": True, "config": None, "limit_reached": full}
        elif slot.pending is not None:
            body = {"synced": False, "config": slot.pending, "limit_reached": slot.limit_reached}
        else:
            body = {"synced": True, "config": slot.config, "limit_reached": slot.limit_reached}
        body["key_paired"] = state.key_paired
        return web.json_response({"response": body})

    async def _delete_config(self, request: web.Request) -> web.Response:
        grant = self._authorize(request, "user", ("vehicle_device_data",))
        state = self._state(request)
        self._take_vehicle_rate(grant.client_id, state.vin)
        slot = state.apps.pop(grant.client_id, None) if state.apps else None
        if slot is None:
            return web.json_response({"response": {"updated_vehicles": 0}})
        if slot.timer is not None:
            slot.timer.cancel()
        if not state.apps:
            state.apps = None
        self._notify(state.vin, grant.client_id)
        return web.json_response({"response": {"updated_vehicles": 1}})
