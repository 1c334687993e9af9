"""A local stand-in for Tesla's Fleet API, with simulated vehicles that act on their configs.

Why it exists: the way vehicles get configured fails in ways no unit test of a client
shows: single-use refresh tokens, 421 region hops, rate limits, skipped vehicles, a
push "accepted" over the config limit that never applies, a config signed by the wrong
key that reports `synced: true` and fails only in the telemetry errors, and vehicles that
trust nothing but the `ca` they were sent. This simulator behaves that way over real HTTP
(aiohttp), and its vehicles really connect: once a config applies, the vehicle opens an
mTLS WebSocket to the config's `hostname:port` (through a hostname → loopback map), trusts
only the pushed `ca`, checks the hostname against the certificate's SANs, streams `V`
records with the configured fields and counts acks. TLS and network failures become
`cloud_manager_error` entries, as on the real service, and are retried with backoff.

Cars as slow as real ones: a pushed config can take effect after a delay drawn per push
(`LongTailSync`: awake cars in seconds to minutes, parked ones hours later), vehicles drop
and redial on their own (`Reconnects`), every refused handshake is logged per vehicle with
its time (`TlsLog`, with the outages it makes), and vehicles beyond `max_streaming` still
judge the chain the server presents at each reconnect (`presented_chain`), so rotations of
10,000-vehicle fleets can be measured in vehicle-minutes of lost streaming.

Layout: one aiohttp application served on one port per region (the token's region
decides; a call on another region's port gets 421 with `Alt-Svc` naming the right one),
the token endpoint on every port, and optionally a TLS port that plays tesla-http-proxy
(signs unsigned configs with the app's key). Idle vehicles are a few hundred bytes of
state and no task; a task exists only for a vehicle that streams, and `max_streaming`
caps how many do.

Where the documentation is silent, the simulator picks one behaviour and says so:
a rejected config (bad signature, malformed) replaces the previous one and the vehicle
stops streaming for that app; a pre-2021 Model S/X whose owner has not enabled third-party
streaming is skipped as `unsupported_hardware`; `max_configs` is reported in
`skipped_vehicles` only with `report_max_configs=True`, otherwise the push is counted in
`updated_vehicles` and the vehicle refuses it when the config syncs (the documented trap).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import hashlib
import inspect
import ipaddress
import json
import logging
import math
import os
import random
import secrets
import shutil
import signal
import socket
import ssl
import tempfile
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from picows import ws_connect

from fleetwire.trust import refusal
from fleetwire.proto.ss256 import SignatureError, iss_claim, public_point, sign_telemetry_config, verify_token
from fleetwire.pki import Bundle, load_bundle, make_ca, make_vehicle_cert, write_bundle
from fleetwire.proto import vehicle_data_pb2
from fleetwire.proto.catalog import BY_NAME, firmware_at_least
from fleetwire.sim.vehicle import SimulatedVehicle, VehicleStats, _Client, vehicle_payload

__all__ = [
    "AppRegistration",
    "AppSlot",
    "BLACKHOLE",
    "FleetApiSimulator",
    "LongTailSync",
    "Reconnects",
    "SimVehicle",
    "TlsLog",
    "VehicleState",
    "run_cli",
]

log = logging.getLogger("fleetwire.sim.fleetapi")

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


# --------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------


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


class _DialError(Exception):
    """A vehicle could not reach or trust the server; the text is what the vehicle reports."""


class _ConfiguredCar(SimulatedVehicle):
    """A `SimulatedVehicle` that dials through the simulator's name map but checks the
    certificate against the configured hostname (SNI and SAN), as the car would."""

    def __init__(self, *args: Any, socket_factory: Callable[[Any], Awaitable[socket.socket]],
                 handshake_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._socket_factory = socket_factory
        self._handshake_timeout = handshake_timeout

    async def connect(self) -> None:
        self._disconnected.clear()
        self._transport, _ = await ws_connect(
            lambda: _Client(self), self.url, ssl_context=self.ssl_context,
            extra_headers={"X-Network-Interface": self.network_interface, "Version": "1.0.0"},
            read_buffer_init_size=4096, socket_factory=self._socket_factory,
            websocket_handshake_timeout=self._handshake_timeout, max_redirects=0,
        )


@dataclass(eq=False)
class _Streamer:
    """The live side of one (vehicle, app): exists only while the vehicle has a usable config."""

    vin: str
    client_id: str
    task: asyncio.Task[None] | None = None
    car: _ConfiguredCar | None = None
    woken: bool = False
    sleeper: asyncio.Future[None] | None = None
    context_key: tuple[str, str] | None = None
    context: ssl.SSLContext | None = None
    connects: int = 0

    def wake(self) -> None:
        self.woken = True
        if self.sleeper is not None and not self.sleeper.done():
            self.sleeper.set_result(None)


class SimVehicle:
    """A test's view of one simulated vehicle."""

    def __init__(self, sim: FleetApiSimulator, state: VehicleState) -> None:
        self._sim = sim
        self.state = state

    @property
    def vin(self) -> str:
        return self.state.vin

    @property
    def stats(self) -> VehicleStats:
        """Records sent, acked and refused over every connection this vehicle made."""
        return self._sim._stats.setdefault(self.vin, VehicleStats())

    @property
    def connected(self) -> bool:
        return any(s.car is not None and s.car.connected for s in self._sim._streamers_of(self.vin))

    @property
    def connects(self) -> int:
        """Successful connections so far (a reconnect after a new `ca` counts again)."""
        return sum(s.connects for s in self._sim._streamers_of(self.vin)) + self._sim._past_connects.get(self.vin, 0)

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [e for e in self._sim.errors if e["vin"] == self.vin]

    def config(self, client_id: str | None = None) -> dict[str, Any] | None:
        """The config this vehicle holds for the app (None when none is held)."""
        slot = self.state.slot(client_id or self._sim.client_id)
        return slot.config if slot else None


# --------------------------------------------------------------------------------------
# Slow cars: when a vehicle syncs a pushed config, and when it reconnects on its own
# --------------------------------------------------------------------------------------


class LongTailSync:
    """A vehicle's delay from a push to the config taking effect, drawn per push (seconds).

    Awake cars (`awake_share` of them) sync in seconds to minutes (log-normal, median 30 s);
    parked ones when they next wake, hours later (log-normal, median 4 h, up to a day), as
    owners report "a few hours to almost a full day". `time_factor` scales every draw
    (1/3600: an hour takes a second), so tests and benchmarks keep the shape in seconds.
    """

    def __init__(self, time_factor: float = 1.0, *, awake_share: float = 0.6, seed: int = 0) -> None:
        self.time_factor, self.awake_share = time_factor, awake_share
        self._rng = random.Random(seed)

    def __call__(self, vin: str) -> float:
        rng = self._rng
        if rng.random() < self.awake_share:
            seconds = min(600.0, max(2.0, rng.lognormvariate(math.log(30.0), 1.0)))
        else:
            seconds = min(86_400.0, max(1800.0, rng.lognormvariate(math.log(4 * 3600.0), 0.8)))
        return seconds * self.time_factor


class Reconnects:
    """When a connected vehicle drops and dials again on its own (radio drops, sleep and
    wake-ups): exponential gaps with mean `mean` seconds (2 h by default), scaled by `time_factor`."""

    def __init__(self, time_factor: float = 1.0, *, mean: float = 7200.0, seed: int = 1) -> None:
        self.time_factor, self.mean = time_factor, mean
        self._rng = random.Random(seed)

    def __call__(self, vin: str) -> float:
        return self._rng.expovariate(1.0 / self.mean) * self.time_factor


@dataclass
class TlsLog:
    """Every TLS failure of every vehicle, with its time, and the outages they make: from a
    vehicle's first refused handshake to its next accepted one (it streams nothing meanwhile)."""

    failures: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    outages: dict[str, list[list[float | None]]] = field(default_factory=dict)

    def failed(self, vin: str, text: str, at: float) -> None:
        self.failures.setdefault(vin, []).append((at, text))
        spans = self.outages.setdefault(vin, [])
        if not spans or spans[-1][1] is not None:
            spans.append([at, None])

    def connected(self, vin: str, at: float) -> None:
        spans = self.outages.get(vin)
        if spans and spans[-1][1] is None:
            spans[-1][1] = at

    @property
    def count(self) -> int:
        return sum(len(f) for f in self.failures.values())

    @property
    def vehicles(self) -> set[str]:
        return set(self.failures)

    def lost_seconds(self, now: float, *, since: float = 0.0) -> float:
        """Vehicle-seconds without streaming because of TLS failures after `since` (open outages end at `now`)."""
        total = 0.0
        for spans in self.outages.values():
            for start, end in spans:
                assert start is not None
                total += max(0.0, (end if end is not None else now) - max(start, since))
        return total

    def cut_off(self) -> set[str]:
        """Vehicles whose last handshake was refused (still not streaming)."""
        return {vin for vin, spans in self.outages.items() if spans and spans[-1][1] is None}


def _is_tls_failure(text: str) -> bool:
    return text.startswith(("x509:", "remote error: tls", "tls:"))


# --------------------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------------------

KeyFetcher = Callable[[str], bytes | Awaitable[bytes]]
HostTarget = tuple[str, int] | None


class FleetApiSimulator:
    """The Fleet API and its vehicles on loopback: `await start()`, use, `await stop()`.

    One app is registered from `client_id`, `client_secret` and `public_key` (its key may
    also come later from `POST /api/1/partner_accounts`, fetched with `key_fetcher`: a
    callable domain → PEM, or a URL template with `{domain}`). `vehicle_ca` issues each
    streaming vehicle's client certificate (the ingest server must trust it). `hosts`
    maps a config's hostname (or "hostname:port") to the loopback address to dial, or to
    `BLACKHOLE`. Times: `sync_delay` until a pushed config applies (seconds, or a callable
    VIN → seconds drawn per push such as `LongTailSync`); `reconnect_every` (VIN → seconds,
    e.g. `Reconnects`) when a connected vehicle drops and dials again on its own; `time_scale`
    multiplies the configured field intervals (0.01: 1 s becomes 10 ms). Every refused
    handshake is in `tls` (`TlsLog`: per vehicle, with its time). Vehicles beyond
    `max_streaming` still judge the server when `presented_chain` is given (the chain the
    server presents now): at each of their reconnects they verify it against the `ca` they
    hold exactly as a connecting car would (`certcheck.refusal`), without a socket, so a
    fleet of 10,000 can be watched through a rotation. Capacity:
    `max_streaming` caps the vehicles that connect, `max_connecting` the handshakes in
    flight (certificate issuance and TLS are CPU work on the simulator's loop).
    """

    def __init__(
        self,
        *,
        vehicle_ca: Bundle | None = None,
        client_id: str = "fleetwire-app",
        client_secret: str | None = None,
        public_key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey | bytes | None = None,
        domain: str | None = None,
        legacy_csr: bool = False,
        key_fetcher: KeyFetcher | str | None = None,
        regions: Sequence[str] = REGION_NAMES,
        host: str = "127.0.0.1",
        ports: Mapping[str, int] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        proxy_tls: Bundle | None = None,
        proxy_key: ec.EllipticCurvePrivateKey | None = None,
        hosts: Mapping[str, str | tuple[str, int] | None] | None = None,
        max_configs: int = 3,
        report_max_configs: bool = False,
        sync_delay: float | Callable[[str], float] = 0.0,
        reconnect_every: Callable[[str], float] | None = None,
        presented_chain: Callable[[], str | bytes] | None = None,
        access_token_ttl: float = 8 * 3600,
        rate_limit: tuple[float, float] | None = None,
        vehicle_rate_limit: tuple[float, float] | None = None,
        time_scale: float = 0.01,
        min_record_period: float = 0.02,
        connect_timeout: float = 2.0,
        reconnect_delay: tuple[float, float] = (0.1, 5.0),
        max_streaming: int | None = None,
        max_connecting: int = 64,
        error_log_size: int = 10_000,
    ) -> None:
        unknown = set(regions) - set(REGION_NAMES)
        if unknown or not regions:
            raise ValueError(f"regions must be among {REGION_NAMES}, not {sorted(unknown) or 'none'}")
        if (proxy_tls is None) != (proxy_key is None):
            raise ValueError(
                "the proxy needs both proxy_tls (its TLS certificate) and proxy_key (the app's command key)")
        if proxy_tls is not None and proxy_key is not None and public_point(proxy_tls.key) == public_point(proxy_key):
            raise ValueError("the proxy refuses a TLS key equal to the command key, as tesla-http-proxy does")
        self.client_id = client_id
        self.apps: dict[str, AppRegistration] = {}
        self.add_app(client_id, client_secret or secrets.token_urlsafe(24), public_key=public_key,
                     domain=domain, legacy_csr=legacy_csr)
        self.vehicle_ca = vehicle_ca
        self.key_fetcher = key_fetcher
        self.regions = tuple(regions)
        self.host = host
        self._requested_ports = dict(ports or {})
        self._server_ssl = ssl_context
        self._proxy_tls = proxy_tls
        self._proxy_key = proxy_key
        self._hosts: dict[str, HostTarget] = {}
        for name, target in (hosts or {}).items():
            self.set_host(name, target)
        self.max_configs = max_configs
        self.report_max_configs = report_max_configs
        self.sync_delay = sync_delay
        self.reconnect_every = reconnect_every
        self.presented_chain = presented_chain
        self.tls = TlsLog()
        self._judged: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._judge_cache: dict[tuple[int, int, int], str | None] = {}
        self.access_token_ttl = access_token_ttl
        self.rate_limit = rate_limit
        self.vehicle_rate_limit = vehicle_rate_limit
        self._vehicle_buckets: dict[tuple[str, str], list[float]] = {}
        self.time_scale = time_scale
        self.min_record_period = min_record_period
        self.connect_timeout = connect_timeout
        self.reconnect_delay = reconnect_delay
        self.max_streaming = max_streaming
        self.max_connecting = max_connecting
        self._connecting: asyncio.Semaphore | None = None
        self.requests: dict[tuple[str, int], int] = {}  # (path pattern, status) → count
        self._faults: list[int] = []

        self._vehicles: dict[str, VehicleState] = {}
        self._stats: dict[str, VehicleStats] = {}
        self._past_connects: dict[str, int] = {}
        self._streamers: dict[tuple[str, str], _Streamer] = {}
        self._access: dict[str, _Grant] = {}
        self._refresh: dict[str, _Grant] = {}
        self._buckets: dict[str, list[float]] = {}
        self._errors: OrderedDict[tuple[str, str, str, str], dict[str, Any]] = OrderedDict()
        self._error_log_size = error_log_size
        self._ports: dict[str, int] = {}
        self._port_site: dict[int, str] = {}
        self._runner: web.AppRunner | None = None
        self._workdir: Path | None = None
        self._certs: dict[str, tuple[str, str]] = {}
        self._closing = False

    # ---- setup ------------------------------------------------------------------------

    def add_app(
        self, client_id: str, client_secret: str, *,
        public_key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey | bytes | None = None,
        domain: str | None = None, legacy_csr: bool = False,
    ) -> AppRegistration:
        """Register another app (each holds its own config slot on the vehicles)."""
        app = AppRegistration(client_id, client_secret, _to_point(public_key) if public_key is not None else None,
                              domain, legacy_csr)
        self.apps[client_id] = app
        return app

    def add_vehicle(
        self, vin: str, *, firmware: str = "2025.20.1", key_paired: bool = True, slots_used: int = 0,
        model: str = "3", model_year: int = 2023, hardware_supported: bool = True,
        safety_screen_toggle: bool = False,
    ) -> SimVehicle:
        state = VehicleState(vin, firmware, key_paired, hardware_supported, model, model_year,
                             safety_screen_toggle, slots_used)
        self._vehicles[vin] = state
        return SimVehicle(self, state)

    def vehicle(self, vin: str) -> SimVehicle:
        return SimVehicle(self, self._vehicles[vin])

    def __len__(self) -> int:
        return len(self._vehicles)

    def set_host(self, hostname: str, target: str | tuple[str, int] | None) -> None:
        """Make vehicles dial `target` ("ip:port" or (ip, port); None = BLACKHOLE) for
        `hostname` (any port) or "hostname:port"."""
        if isinstance(target, str):
            ip, _, port = target.rpartition(":")
            target = (ip.strip("[]"), int(port))
        self._hosts[hostname.lower()] = target

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

    def reconnect(self, vins: Iterable[str]) -> int:
        """These vehicles drop their connection and dial again at once, as after a sleep or a
        drive out of coverage: the new handshake checks the server's current certificate
        against the `ca` they hold. Returns how many were connected."""
        connected = 0
        for vin in vins:
            for streamer in self._streamers_of(vin):
                connected += streamer.car is not None and streamer.car.connected
                streamer.wake()
            for client_id in self.apps:
                if (vin, client_id) in self._judged:
                    self._judge_soon(vin, client_id, 0.0)
        return connected

    def inject_failures(self, status: int = 503, count: int = 1) -> None:
        """The next `count` API calls (not token grants) answer `status`: outages on demand."""
        self._faults.extend([status] * count)

    @property
    def judging(self) -> int:
        """Vehicles without a socket that meet the server at their reconnects (`presented_chain`)."""
        return len(self._judged)

    @property
    def unsimulated(self) -> int:
        """Vehicles holding a usable config that do not stream because of `max_streaming`."""
        return sum(
            1 for state in self._vehicles.values() for cid in (state.apps or ())
            if (state.vin, cid) not in self._streamers and self._usable(state.vin, cid) is not None
        )

    # ---- addresses ----------------------------------------------------------------------

    def base_url(self, region: str = "na") -> str:
        return f"{self._scheme}://{self._authority(self._ports[region])}"

    @property
    def base_urls(self) -> dict[str, str]:
        return {region: self.base_url(region) for region in self.regions}

    @property
    def auth_url(self) -> str:
        return self.base_url(self.regions[0]) + "/oauth2/v3/token"

    @property
    def proxy_url(self) -> str:
        if "proxy" not in self._ports:
            raise RuntimeError("no proxy: give the simulator proxy_tls and proxy_key")
        return f"https://{self._authority(self._ports['proxy'])}"

    @property
    def _scheme(self) -> str:
        return "https" if self._server_ssl is not None else "http"

    def _authority(self, port: int) -> str:
        return f"[{self.host}]:{port}" if ":" in self.host else f"{self.host}:{port}"

    # ---- lifecycle --------------------------------------------------------------------

    async def start(self) -> FleetApiSimulator:
        self._closing = False
        self._connecting = asyncio.Semaphore(self.max_connecting)
        self._workdir = Path(tempfile.mkdtemp(prefix="fleet-api-sim-"))
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/oauth2/v3/token", self._token)
        app.router.add_get("/api/1/users/region", self._user_region)
        app.router.add_post("/api/1/partner_accounts", self._register)
        app.router.add_get("/api/1/partner_accounts/fleet_telemetry_errors", self._telemetry_errors)
        app.router.add_post("/api/1/vehicles/fleet_status", self._fleet_status)
        app.router.add_post("/api/1/vehicles/fleet_telemetry_config_jws", self._push_jws)
        app.router.add_post("/api/1/vehicles/fleet_telemetry_config", self._push_unsigned)
        app.router.add_get("/api/1/vehicles/{vin}/fleet_telemetry_config", self._get_config)
        app.router.add_delete("/api/1/vehicles/{vin}/fleet_telemetry_config", self._delete_config)
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sites: list[tuple[str, ssl.SSLContext | None]] = [(r, self._server_ssl) for r in self.regions]
        if self._proxy_tls is not None:
            cert, key = write_bundle(self._proxy_tls, self._workdir / "proxy.pem", self._workdir / "proxy.key")
            proxy_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            proxy_ctx.load_cert_chain(cert, key)
            sites.append(("proxy", proxy_ctx))
        for name, ctx in sites:
            site = web.TCPSite(self._runner, self.host, self._requested_ports.get(name, 0), ssl_context=ctx)
            await site.start()
            port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
            self._ports[name] = port
            self._port_site[port] = name
        return self

    async def stop(self) -> None:
        self._closing = True
        for handle in self._judged.values():
            handle.cancel()
        self._judged.clear()
        for state in self._vehicles.values():
            for slot in (state.apps or {}).values():
                if slot.timer is not None:
                    slot.timer.cancel()
                    slot.timer = None
        streamers = list(self._streamers.values())
        for streamer in streamers:
            streamer.wake()
        tasks = [s.task for s in streamers if s.task is not None]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=10)
            for task in pending:
                task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        self._certs.clear()

    async def __aenter__(self) -> FleetApiSimulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- telemetry errors ---------------------------------------------------------------

    @property
    def errors(self) -> list[dict[str, Any]]:
        """Every recorded telemetry error, oldest first (repeats update the entry's time)."""
        return [dict(e) for e in self._errors.values()]

    def _record_error(self, vin: str, client_id: str, error_name: str, error: str,
                      config: Mapping[str, Any] | None) -> None:
        key = (vin, client_id, error_name, error)
        entry = self._errors.pop(key, None)
        now = dt.datetime.now(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        if entry is None:
            entry = {"vin": vin, "name": client_id, "error_name": error_name, "error": error}
        entry.update(created_at=now, txID=str(uuid.uuid4()),
                     hostname=(config or {}).get("hostname"), port=(config or {}).get("port"))
        self._errors[key] = entry
        while len(self._errors) > self._error_log_size:
            self._errors.popitem(last=False)
        log.debug("vehicle %s: %s: %s", vin, error_name, error)

    # ---- HTTP plumbing ----------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                          ) -> web.StreamResponse:
        route = request.match_info.route.resource
        pattern = route.canonical if route is not None else request.path
        try:
            if self._faults and request.path.startswith("/api/"):
                status = self._faults.pop(0)
                raise _ApiError(status, "upstream internal error" if status >= 500 else "injected failure")
            response = await handler(request)
        except _ApiError as exc:
            response = web.json_response(
                {"response": None, "error": exc.error, "error_description": exc.description,
                 "txid": uuid.uuid4().hex}, status=exc.status, headers=exc.headers,
            )
        except web.HTTPException as exc:
            self.requests[(pattern, exc.status)] = self.requests.get((pattern, exc.status), 0) + 1
            raise
        self.requests[(pattern, response.status)] = self.requests.get((pattern, response.status), 0) + 1
        return response

    def _site(self, request: web.Request) -> str:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        return self._port_site.get(int(sockname[1]), "?") if sockname else "?"

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

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _ApiError(400, "invalid JSON body") from None
        if not isinstance(data, dict):
            raise _ApiError(400, "the body must be a JSON object")
        return data

    def _vins(self, data: Mapping[str, Any]) -> list[str]:
        vins = data.get("vins")
        if not isinstance(vins, list) or not vins or not all(isinstance(v, str) for v in vins):
            raise _ApiError(400, "vins must be a non-empty list of VINs")
        unknown = [v for v in vins if v not in self._vehicles]
        if unknown:
            raise _ApiError(404, "not_found", f"unknown vehicle(s): {', '.join(unknown[:5])}")
        return vins

    def _state(self, request: web.Request) -> VehicleState:
        state = self._vehicles.get(request.match_info["vin"])
        if state is None:
            raise _ApiError(404, "not_found", "vehicle not found")
        return state

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

    async def _telemetry_errors(self, request: web.Request) -> web.Response:
        grant = self._authorize(request, "partner")
        mine = [dict(e) for e in self._errors.values() if e["name"] == grant.client_id]
        return web.json_response({"response": {"fleet_telemetry_errors": mine}})

    async def _health(self, request: web.Request) -> web.Response:
        if self._site(request) != "proxy":
            raise web.HTTPNotFound()
        return web.Response(text="OK")

    # ---- endpoints: vehicles ------------------------------------------------------------

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

    # ---- vehicles that stream -----------------------------------------------------------

    def _usable(self, vin: str, client_id: str) -> dict[str, Any] | None:
        state = self._vehicles.get(vin)
        slot = state.slot(client_id) if state else None
        if slot is None or slot.config is None or slot.error or slot.limit_reached:
            return None
        return slot.config

    def _streamers_of(self, vin: str) -> list[_Streamer]:
        """By lookup per app, not a scan: tests poll this for thousands of vehicles."""
        return [s for cid in self.apps if (s := self._streamers.get((vin, cid))) is not None]

    def _notify(self, vin: str, client_id: str) -> None:
        """A config changed: wake the vehicle's connection, or start one if it now has a use."""
        streamer = self._streamers.get((vin, client_id))
        if streamer is not None:
            streamer.wake()
            return
        if self._closing or self._usable(vin, client_id) is None:
            return
        if self.max_streaming is not None and len(self._streamers) >= self.max_streaming:
            if self.presented_chain is not None:  # it still meets the server: judged, without a socket
                self._judge_soon(vin, client_id, 0.0)
            return  # the first `max_streaming` vehicles to get a usable config are the ones that stream
        streamer = _Streamer(vin, client_id)
        self._streamers[(vin, client_id)] = streamer
        streamer.task = asyncio.get_running_loop().create_task(self._drive(streamer), name=f"vehicle {vin}")

    def _judge_soon(self, vin: str, client_id: str, delay: float) -> None:
        key = (vin, client_id)
        handle = self._judged.pop(key, None)
        if handle is not None:
            handle.cancel()
        self._judged[key] = asyncio.get_running_loop().call_later(delay, self._judge, vin, client_id)

    def _judge(self, vin: str, client_id: str) -> None:
        """A vehicle without a socket meets the server: the handshake's verdict, as the car reaches it."""
        self._judged.pop((vin, client_id), None)
        config = self._usable(vin, client_id)
        if self._closing or config is None or self.presented_chain is None:
            return
        chain = self.presented_chain()
        chain_text = chain.decode() if isinstance(chain, bytes) else chain
        ca = str(config["ca"])
        now = time.time()
        key = (hash(chain_text), hash(ca), int(now // 60))
        if key not in self._judge_cache:
            if len(self._judge_cache) > 256:
                self._judge_cache.clear()
            refused = refusal(chain_text, ca, str(config["hostname"]), dt.datetime.now(dt.UTC))
            self._judge_cache[key] = None if refused is None else f"x509: {refused}"
        verdict = self._judge_cache[key]
        if verdict is not None:
            self.tls.failed(vin, verdict, now)
            self._record_error(vin, client_id, "cloud_manager_error", verdict, config)
            self._judge_soon(vin, client_id, self.reconnect_delay[1])
            return
        self.tls.connected(vin, now)
        if self.reconnect_every is not None:
            self._judge_soon(vin, client_id, self.reconnect_every(vin))

    async def _pause(self, streamer: _Streamer, seconds: float) -> None:
        """Sleep, cut short by `wake()` (a new config must not wait for a backoff)."""
        if streamer.woken:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        streamer.sleeper = future
        handle = loop.call_later(seconds, lambda: future.done() or future.set_result(None))
        try:
            await future
        finally:
            handle.cancel()
            streamer.sleeper = None

    async def _drive(self, streamer: _Streamer) -> None:
        """Connect, stream, reconnect: the life of one vehicle's connection to one server."""
        vin, client_id = streamer.vin, streamer.client_id
        failures = 0
        try:
            while not self._closing:
                streamer.woken = False
                config = self._usable(vin, client_id)
                if config is None:
                    break
                try:
                    assert self._connecting is not None
                    async with self._connecting:  # a burst of applied configs must not time out its own handshakes
                        car = await self._dial(streamer, config)
                except _DialError as exc:
                    self._record_error(vin, client_id, "cloud_manager_error", str(exc), config)
                    if _is_tls_failure(str(exc)):
                        self.tls.failed(vin, str(exc), time.time())
                    failures += 1
                    await self._pause(streamer, self._backoff(failures))
                    continue
                streamer.car = car
                streamer.connects += 1
                self.tls.connected(vin, time.time())
                failures = 0
                drop = (asyncio.get_running_loop().call_later(self.reconnect_every(vin), streamer.wake)
                        if self.reconnect_every is not None else None)
                try:
                    await self._stream(streamer, car, config)
                finally:
                    if drop is not None:
                        drop.cancel()
                    streamer.car = None
                    await car.close()
                if not streamer.woken and not self._closing:  # the server hung up
                    failures += 1
                    await self._pause(streamer, self._backoff(failures))
        except Exception:
            log.exception("simulated vehicle %s failed", vin)
        finally:
            if self._streamers.get((vin, client_id)) is streamer:
                del self._streamers[(vin, client_id)]
                self._past_connects[vin] = self._past_connects.get(vin, 0) + streamer.connects
            if not self._closing and self._usable(vin, client_id) is not None:
                self._notify(vin, client_id)  # a config arrived while this connection wound down

    def _backoff(self, failures: int) -> float:
        low, high = self.reconnect_delay
        return min(high, low * 2 ** (failures - 1))

    async def _stream(self, streamer: _Streamer, car: _ConfiguredCar, config: Mapping[str, Any]) -> None:
        """Send `V` records while connected: each field at its interval (scaled), in one record
        per tick with every field that is due, as vehicles batch them. A field newer than the
        vehicle's firmware (the catalog's minimum) is never sent, as on a real car."""
        intervals: dict[str, float] = {}
        firmware = self._vehicles[streamer.vin].firmware
        for name, settings in (config.get("fields") or {}).items():
            if name in _FIELD_NAMES and BY_NAME[name].available_on(firmware):
                raw = settings.get("interval_seconds", 1) if isinstance(settings, dict) else 1
                intervals[name] = max(1.0, float(raw or 1))
        if not intervals:
            while car.connected and not streamer.woken and not self._closing:
                await self._pause(streamer, 0.5)
            return
        shortest = min(intervals.values())
        every = {name: max(1, round(interval / shortest)) for name, interval in intervals.items()}
        period = max(self.min_record_period, shortest * self.time_scale)
        tick = 0
        while car.connected and not streamer.woken and not self._closing:
            due = [name for name, n in every.items() if tick % n == 0]
            car.send_record("V", vehicle_payload(car.vin, due, car._rng, time.time()))
            latencies = car.stats.ack_latencies
            if len(latencies) > 1000:
                del latencies[:-100]
            tick += 1
            await self._pause(streamer, period)
        if car.connected:
            await car.drain(timeout=1.0)

    def _resolve(self, hostname: str, port: int) -> HostTarget | str:
        """Where a vehicle dials: the override map, else the real address (refused if private)."""
        for key in (f"{hostname}:{port}".lower(), hostname.lower()):
            if key in self._hosts:
                return self._hosts[key]
        return hostname

    async def _dial(self, streamer: _Streamer, config: Mapping[str, Any]) -> _ConfiguredCar:
        hostname, port = str(config["hostname"]), int(config["port"])
        target = self._resolve(hostname, port)
        loop = asyncio.get_running_loop()
        if isinstance(target, str):
            try:
                infos = await loop.getaddrinfo(target, port, type=socket.SOCK_STREAM)
            except OSError:
                raise _DialError(f"dial tcp: lookup {hostname}: no such host") from None
            address = infos[0][4]
            ip = ipaddress.ip_address(address[0])
            if ip.is_private or ip.is_loopback or ip.is_link_local:
                raise _DialError(f"dial tcp {address[0]}:{port}: connection to a private IP address refused")
            target = (str(address[0]), port)
        context = self._client_context(streamer, str(config["ca"]))
        dial_target = target

        async def open_socket(_url: Any) -> socket.socket:
            if dial_target is None:  # BLACKHOLE: the SYN goes unanswered
                await asyncio.sleep(self.connect_timeout)
                raise _DialError(f"dial tcp {hostname}:{port}: i/o timeout")
            ip_text, dial_port = dial_target
            family = socket.AF_INET6 if ":" in ip_text else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await asyncio.wait_for(loop.sock_connect(sock, (ip_text, dial_port)), self.connect_timeout)
            except TimeoutError:
                sock.close()
                raise _DialError(f"dial tcp {ip_text}:{dial_port}: i/o timeout") from None
            except OSError as exc:
                sock.close()
                reason = (os.strerror(exc.errno) if exc.errno else str(exc)).lower()
                raise _DialError(f"dial tcp {ip_text}:{dial_port}: connect: {reason}") from None
            return sock

        car = _ConfiguredCar(
            streamer.vin, f"wss://{hostname}:{port}/", context, fields=(),
            socket_factory=open_socket, handshake_timeout=self.connect_timeout,
        )
        car.stats = self._stats.setdefault(streamer.vin, VehicleStats())
        try:
            await car.connect()
        except _DialError:
            raise
        except ssl.SSLCertVerificationError as exc:
            raise _DialError(await self._x509_error(exc, hostname, port, dial_target, streamer.vin)) from None
        except ssl.SSLError as exc:
            reason = (exc.reason or str(exc)).lower().replace("_", " ")
            raise _DialError(f"remote error: tls: {reason}") from None
        except TimeoutError:
            raise _DialError(f"dial tcp {hostname}:{port}: i/o timeout") from None
        except OSError as exc:
            raise _DialError(f"dial tcp {hostname}:{port}: {(exc.strerror or str(exc)).lower()}") from None
        except Exception as exc:
            raise _DialError(f"websocket: bad handshake ({type(exc).__name__}: {exc})") from None
        return car

    def _client_context(self, streamer: _Streamer, ca: str) -> ssl.SSLContext:
        """A car's TLS client: its own certificate, and the pushed `ca` as the only trust."""
        key = (hashlib.sha256(ca.encode()).hexdigest(), streamer.vin)
        if streamer.context_key == key and streamer.context is not None:
            return streamer.context
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.hostname_checks_common_name = False  # Go ignores the CN, and so do vehicles
        try:
            context.load_verify_locations(cadata=ca)
        except (ssl.SSLError, ValueError):
            raise _DialError("x509: malformed certificate in ca") from None
        context.load_cert_chain(*self._vehicle_cert(streamer.vin))
        streamer.context_key, streamer.context = key, context
        return context

    def _vehicle_cert(self, vin: str) -> tuple[str, str]:
        """The vehicle's client certificate, issued on first use (most vehicles never need one)."""
        paths = self._certs.get(vin)
        if paths is None:
            if self.vehicle_ca is None:
                self.vehicle_ca = make_ca("Fleet API Simulator Vehicle CA")
            assert self._workdir is not None, "start() the simulator first"
            cert, key = write_bundle(make_vehicle_cert(self.vehicle_ca, vin),
                                     self._workdir / f"{vin}.pem", self._workdir / f"{vin}.key")
            paths = self._certs[vin] = (str(cert), str(key))
        return paths

    async def _x509_error(self, exc: ssl.SSLCertVerificationError, hostname: str, port: int,
                          target: HostTarget, vin: str) -> str:
        """Go's wording for what OpenSSL refused, since vehicles are Go clients."""
        code = getattr(exc, "verify_code", 0)
        if code == 62 and target is not None:  # hostname mismatch: a SAN for another name, or no SAN at all
            names = await self._peer_names(hostname, target, vin)
            if names == []:
                return "x509: certificate relies on legacy Common Name field, use SANs instead"
            if names:
                return f"x509: certificate is valid for {', '.join(names)}, not {hostname}"
            return f"x509: certificate is not valid for {hostname}"
        if code in (2, 18, 19, 20, 21):
            return "x509: certificate signed by unknown authority"
        if code in (9, 10):
            return "x509: certificate has expired or is not yet valid"
        return f"x509: {getattr(exc, 'verify_message', '') or exc}"

    async def _peer_names(self, hostname: str, target: tuple[str, int], vin: str) -> list[str] | None:
        """The SAN DNS names of the server's leaf ([] without a SAN), from an unverified look."""
        probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        probe.check_hostname = False
        probe.verify_mode = ssl.CERT_NONE
        probe.load_cert_chain(*self._vehicle_cert(vin))
        try:
            _reader, writer = await asyncio.wait_for(
                asyncio.open_connection(target[0], target[1], ssl=probe, server_hostname=hostname),
                self.connect_timeout)
        except (OSError, TimeoutError, ssl.SSLError):
            return None
        try:
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        finally:
            writer.close()
        try:
            san = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except x509.ExtensionNotFound:
            return []
        return [str(n) for n in san.value.get_values_for_type(x509.DNSName)] + [
            str(ip) for ip in san.value.get_values_for_type(x509.IPAddress)]


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


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


def _take(bucket: list[float], burst: float, per_second: float) -> None:
    """Take one request from a token bucket [tokens, last refill], or answer 429 with Retry-After."""
    now = time.monotonic()
    bucket[0] = min(burst, bucket[0] + (now - bucket[1]) * per_second)
    bucket[1] = now
    if bucket[0] < 1.0:
        wait = (1.0 - bucket[0]) / per_second
        raise _ApiError(429, "rate limit exceeded", "too many requests", {"Retry-After": str(max(1, math.ceil(wait)))})
    bucket[0] -= 1.0


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


# --------------------------------------------------------------------------------------
# Command line: `fleetwire fleet-api-sim`
# --------------------------------------------------------------------------------------


def _read_public_key(path: Path) -> bytes:
    data = path.read_bytes()
    if b"PRIVATE KEY" in data:
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{path}: expected an EC key")
        return public_point(key)
    return _to_point(data)


async def _serve(args: argparse.Namespace) -> None:
    from fleetwire.sim.fleet import sim_vin

    server_ssl = None
    if args.tls_cert:
        server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ssl.load_cert_chain(args.tls_cert, args.tls_key)
    vehicle_ca = load_bundle(args.vehicle_ca_cert, args.vehicle_ca_key) if args.vehicle_ca_cert else None
    ports = {r: (args.port + i if args.port else 0) for i, r in enumerate(REGION_NAMES)}
    sim = FleetApiSimulator(
        vehicle_ca=vehicle_ca, client_id=args.client_id, client_secret=args.client_secret,
        public_key=_read_public_key(args.public_key) if args.public_key else None,
        host=args.host, ports=ports, ssl_context=server_ssl,
        hosts=dict(item.split("=", 1) for item in args.resolve),
        max_configs=args.max_configs, sync_delay=args.sync_delay, time_scale=args.time_scale,
        max_streaming=args.max_streaming, rate_limit=args.rate_limit, vehicle_rate_limit=args.vehicle_rate_limit,
    )
    for i in range(args.vehicles):
        sim.add_vehicle(sim_vin(i), firmware=args.firmware)
    await sim.start()
    try:
        tokens = sim.issue_user_tokens()
        credentials = {
            "client_id": sim.client_id, "client_secret": sim.apps[sim.client_id].client_secret,
            "auth_url": sim.auth_url, "base_urls": sim.base_urls,
            "access_token": tokens["access_token"], "refresh_token": tokens["refresh_token"],
            "expires_at": time.time() + tokens["expires_in"],
            "vins": [sim_vin(i) for i in range(args.vehicles)],
        }
        out = Path(args.credentials_out)
        out.touch(mode=0o600)
        out.chmod(0o600)
        out.write_text(json.dumps(credentials, indent=2))
        print(json.dumps({"base_urls": sim.base_urls, "auth_url": sim.auth_url, "vehicles": len(sim),
                          "credentials": str(out)}), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await sim.stop()


def run_cli(args: argparse.Namespace) -> int:
    """Run the simulator until interrupted (the arguments are defined by `fleetwire.cli`)."""
    import uvloop

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvloop.run(_serve(args))
    return 0
