"""What the service knows: constants of the real API, the apps, the grants, and each vehicle's
config slots (compact: a simulator may hold 10,000 vehicles)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fleetwire.proto import vehicle_data_pb2
from fleetwire.proto.ss256 import public_point

REGION_NAMES = ("na", "eu", "cn")
TESLA_REGION_URLS = {
    "https://fleet-api.prd.na.vn.cloud.tesla.com": "na",
    "https://fleet-api.prd.eu.vn.cloud.tesla.com": "eu",
    "https://fleet-api.prd.cn.vn.cloud.tesla.cn": "cn",
}
KEY_PATH = "/.well-known/appspecific/com.tesla.3p.public-key.pem"
MIN_FIRMWARE = "2024.26"  # self-service configs (fleet_telemetry_config_jws)
MIN_FIRMWARE_PROXY = "2024.26.4"  # configs signed by the vehicle-command proxy
MIN_FIRMWARE_LEGACY = "2023.20.6"  # the legacy CSR process
LEGACY_SX_FIRMWARE = "2025.20"  # pre-2021 Model S/X stream from here on, toggle permitting
USER_SCOPES = ("openid", "offline_access", "vehicle_device_data", "vehicle_location")
BLACKHOLE = None
"""A `hosts` value: the name resolves, but nothing answers (a dropped SYN: `i/o timeout`)."""

_SIGNED_CLAIMS = ("iss", "aud")
_FIELD_NAMES = frozenset(vehicle_data_pb2.Field.keys())  # a vehicle ignores names it does not know


@dataclass(slots=True)
class AppSlot:
    """One app's config on one vehicle: what is pending, what the vehicle holds, and why not."""

    config: dict[str, Any] | None = None  # what the vehicle holds (None: nothing, or refused over the limit)
    pending: dict[str, Any] | None = None  # pushed, not synced yet
    pending_error: str | None = None  # the verdict the vehicle will reach on the pending config
    error: str | None = None  # the vehicle refused the config it holds (it does not stream)
    limit_reached: bool = False
    timer: asyncio.TimerHandle | None = None


@dataclass(slots=True)
class VehicleState:
    """What the service knows of a vehicle; compact, since a simulator may hold 10,000."""

    vin: str
    firmware: str = "2025.20.1"
    key_paired: bool = True
    hardware_supported: bool = True
    model: str = "3"
    model_year: int = 2023
    safety_screen_toggle: bool = False  # "Allow Third-Party App Data Streaming", pre-2021 S/X only
    slots_used: int = 0  # configs of apps this simulator does not know
    apps: dict[str, AppSlot] | None = None

    @property
    def legacy_sx(self) -> bool:
        return self.model.upper() in ("S", "X") and self.model_year < 2021

    def slot(self, client_id: str) -> AppSlot | None:
        return self.apps.get(client_id) if self.apps else None


@dataclass
class AppRegistration:
    """A third-party app: OAuth client, its registered public key and domain."""

    client_id: str
    client_secret: str = field(repr=False)
    public_point: bytes | None = None
    domain: str | None = None
    legacy_csr: bool = False  # may use the unsigned endpoint directly
    regions: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Grant:
    kind: str  # "user" or "partner"
    client_id: str
    scopes: frozenset[str]
    region: str
    expires_at: float


class _ApiError(Exception):
    def __init__(self, status: int, error: str, description: str = "", headers: Mapping[str, str] | None = None):
        super().__init__(error)
        self.status, self.error, self.description, self.headers = status, error, description, dict(headers or {})


KeyFetcher = Callable[[str], bytes | Awaitable[bytes]]
HostTarget = tuple[str, int] | None


def _to_point(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey | bytes) -> bytes:
    """A public key given as a key object, a PEM, or the 65-byte point → the point."""
    if isinstance(key, bytes):
        if key.startswith(b"-----BEGIN"):
            loaded = serialization.load_pem_public_key(key)
            if not isinstance(loaded, ec.EllipticCurvePublicKey):
                raise ValueError("the app's public key must be an EC key on prime256v1")
            return public_point(loaded)
        return key
    return public_point(key)
