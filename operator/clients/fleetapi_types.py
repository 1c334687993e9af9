"""What the Fleet API client hands out and takes in: the user's tokens (and the protocol of
the store that keeps them), and typed answers of the configuration calls.

Pure data, parsed leniently from the API's JSON (`from_response`), so the reconciler and its
policies reason about vehicles without knowing the wire shapes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "SKIP_REASONS",
    "FleetStatus",
    "PushResult",
    "TelemetryError",
    "TokenStore",
    "Tokens",
    "VehicleConfigState",
    "VehicleInfo",
]

SKIP_REASONS = ("missing_key", "unsupported_hardware", "unsupported_firmware", "max_configs")
_SIGNED_CLAIMS = ("iss", "aud")  # added by the signer; never part of the desired config


# --------------------------------------------------------------------------------------
# Tokens and the protocol of their stores (implemented in fleetwire.operator.stores)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tokens:
    """A user's token pair. The refresh token is single-use: each refresh replaces it."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: float = 0.0  # epoch seconds; 0 means unknown (refresh on the first 401)

    def expired(self, margin: float = 0.0, now: float | None = None) -> bool:
        return self.expires_at > 0 and (now if now is not None else time.time()) >= self.expires_at - margin

    def as_dict(self) -> dict[str, Any]:
        return {"access_token": self.access_token, "refresh_token": self.refresh_token, "expires_at": self.expires_at}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Tokens:
        try:
            return cls(str(data["access_token"]), str(data["refresh_token"]), float(data.get("expires_at", 0.0)))
        except KeyError as exc:
            raise ValueError(f"a token record needs access_token and refresh_token; {exc.args[0]} is missing") from None


class TokenStore(Protocol):
    """Where the user's current token pair lives between calls and restarts.

    `save()` must have made the pair durable when it returns: the client uses a new
    access token only after that, because the refresh token it replaced is already dead.
    """

    async def load(self) -> Tokens: ...

    async def save(self, tokens: Tokens) -> None: ...


# --------------------------------------------------------------------------------------
# Typed responses
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PushResult:
    """What a config push answered. `updated_vehicles` counts acceptances by the API, not
    configs applied on vehicles: poll `get_config` to know that."""

    updated_vehicles: int
    skipped: dict[str, list[str]]  # reason → VINs; only reasons with VINs

    def skip_reason(self, vin: str) -> str | None:
        return next((reason for reason, vins in self.skipped.items() if vin in vins), None)

    @classmethod
    def from_response(cls, data: Mapping[str, Any]) -> PushResult:
        skipped_raw = data.get("skipped_vehicles") or {}
        skipped = {str(reason): [str(v) for v in vins] for reason, vins in skipped_raw.items() if vins}
        return cls(int(data.get("updated_vehicles", 0)), skipped)


@dataclass(frozen=True)
class VehicleConfigState:
    """GET fleet_telemetry_config: what the vehicle holds for this app."""

    synced: bool
    config: dict[str, Any] | None
    limit_reached: bool
    key_paired: bool

    def applied(self, desired: Mapping[str, Any]) -> bool:
        """Applied only when synced, present, equal to `desired`, under the limit and paired:
        `synced` alone is true for a config refused over the limit or signed by another key."""
        if not self.synced or self.config is None or self.limit_reached or not self.key_paired:
            return False
        return _unsigned(self.config) == _unsigned(desired)

    @classmethod
    def from_response(cls, data: Mapping[str, Any]) -> VehicleConfigState:
        config = data.get("config")
        return cls(
            synced=bool(data.get("synced")),
            config=dict(config) if isinstance(config, Mapping) else None,
            limit_reached=bool(data.get("limit_reached")),
            key_paired=bool(data.get("key_paired")),
        )


def _unsigned(config: Mapping[str, Any]) -> dict[str, Any]:
    """A config without the claims a signer adds, for comparing what was sent with what is held."""
    return {k: v for k, v in config.items() if k not in _SIGNED_CLAIMS}


@dataclass(frozen=True)
class VehicleInfo:
    firmware_version: str | None
    vehicle_command_protocol_required: bool | None
    fleet_telemetry_version: str | None
    safety_screen_streaming_toggle_enabled: bool | None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_response(cls, data: Mapping[str, Any]) -> VehicleInfo:
        known = (
            "firmware_version", "vehicle_command_protocol_required", "fleet_telemetry_version",
            "safety_screen_streaming_toggle_enabled",
        )
        return cls(*(data.get(k) for k in known), extra={k: v for k, v in data.items() if k not in known})


@dataclass(frozen=True)
class FleetStatus:
    key_paired_vins: list[str]
    unpaired_vins: list[str]
    vehicle_info: dict[str, VehicleInfo]

    @classmethod
    def from_response(cls, data: Mapping[str, Any]) -> FleetStatus:
        info = data.get("vehicle_info") or {}
        return cls(
            list(data.get("key_paired_vins") or []),
            list(data.get("unpaired_vins") or []),
            {vin: VehicleInfo.from_response(item or {}) for vin, item in info.items()},
        )


@dataclass(frozen=True)
class TelemetryError:
    """One entry of the partner's telemetry errors: how a bad signature (`config_manager_error`)
    or an unreachable / untrusted server (`cloud_manager_error`) becomes visible at all."""

    vin: str
    error_name: str  # config_manager_error, cloud_manager_error, ...
    error: str
    created_at: str
    name: str
    txid: str
    hostname: str | None
    port: int | None

    @classmethod
    def from_response(cls, data: Mapping[str, Any]) -> TelemetryError:
        port = data.get("port")
        return cls(
            vin=str(data.get("vin", "")),
            error_name=str(data.get("error_name", "")),
            error=str(data.get("error", "")),
            created_at=str(data.get("created_at", "")),
            name=str(data.get("name", "")),
            txid=str(data.get("txID", data.get("txid", ""))),
            hostname=data.get("hostname"),
            port=int(port) if isinstance(port, int | str) and str(port).isdigit() else None,
        )
