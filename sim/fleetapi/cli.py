"""`fleetwire fleet-api-sim`: the simulator as a process, its credentials written to a file."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import ssl
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fleetwire.proto.ss256 import public_point
from fleetwire.sim.fleetapi.simulator import FleetApiSimulator
from fleetwire.sim.fleetapi.state import REGION_NAMES, _to_point
from fleetwire.pki import load_bundle


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
