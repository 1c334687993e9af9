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

Modules, one per concern: `state` (constants, apps, grants, config slots), `auth` (tokens,
partner registration, rate limits), `configs` (pushes and the config endpoints), `routes`
(the aiohttp plumbing), `streaming` (the vehicles' connections and sockets-free judging),
`dialer` (the car's TLS client), `slowcars` (sync delays, reconnects, the TLS log),
`simulator` (the class that composes them), `cli` (`fleetwire fleet-api-sim`).
"""

from fleetwire.sim.fleetapi.cli import run_cli
from fleetwire.sim.fleetapi.simulator import FleetApiSimulator, SimVehicle
from fleetwire.sim.fleetapi.slowcars import LongTailSync, Reconnects, TlsLog
from fleetwire.sim.fleetapi.state import (
    BLACKHOLE,
    AppRegistration,
    AppSlot,
    VehicleState,
)

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
