"""Shared by the Fleet API client's tests (test_fleetapi*.py): the app's keys, the vehicles,
a simulator factory (`make_sim`, a fixture: import it into the test module) and clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric import ec
from fleetwire.operator.clients.fleetapi import FleetApiClient
from fleetwire.operator.clients.fleetapi_retry import RetryPolicy
from fleetwire.operator.clients.fleetapi_types import Tokens
from fleetwire.operator.stores.tokens import MemoryTokenStore
from fleetwire.pki import make_ca
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
