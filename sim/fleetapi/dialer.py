"""The vehicle's dialer: a car resolves the config's hostname through the simulator's name map,
trusts only the pushed `ca`, checks the SANs, and reports failures in Go's wording."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import os
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from picows import ws_connect

from fleetwire.sim.fleetapi.state import HostTarget
from fleetwire.sim.vehicle import SimulatedVehicle, VehicleStats, _Client
from fleetwire.pki import make_ca, make_vehicle_cert, write_bundle


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


class _Dialer:
    """Mixin of `FleetApiSimulator`: how a vehicle reaches and judges the server."""

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
