"""`FleetApiSimulator`: the service's state and lifecycle, composed of one mixin per concern."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import shutil
import ssl
import tempfile
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec

from fleetwire.proto.ss256 import public_point
from fleetwire.sim.fleetapi.auth import _Auth
from fleetwire.sim.fleetapi.configs import _Configs
from fleetwire.sim.fleetapi.dialer import _Dialer, _Streamer
from fleetwire.sim.fleetapi.routes import _Http
from fleetwire.sim.fleetapi.slowcars import TlsLog
from fleetwire.sim.fleetapi.state import (
    REGION_NAMES,
    AppRegistration,
    HostTarget,
    KeyFetcher,
    VehicleState,
    _Grant,
    _to_point,
)
from fleetwire.sim.fleetapi.streaming import _Streaming
from fleetwire.sim.vehicle import VehicleStats
from fleetwire.pki import Bundle, write_bundle

log = logging.getLogger("fleetwire.sim.fleetapi")  # one logger for the whole simulator

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


class FleetApiSimulator(_Auth, _Configs, _Http, _Streaming, _Dialer):
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

    def inject_failures(self, status: int = 503, count: int = 1) -> None:
        """The next `count` API calls (not token grants) answer `status`: outages on demand."""
        self._faults.extend([status] * count)

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
        self._add_routes(app.router)
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
