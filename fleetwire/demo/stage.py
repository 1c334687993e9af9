"""What the steps of the cluster demo share: its names and settings, and a `Stage` holding the
API, the simulator, the node and the reads every step makes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

DEMO_HOST = "telemetry.fleetwire.demo"
DEMO_NAME, DEMO_NAMESPACE = "demo", "default"
DEMO_OPERATOR_SETTINGS = {
    # How often the certificate pass runs, and the vehicle cadences, shortened to seconds.
    "FLEETWIRE_RECONCILE_SECONDS": "1",
    "FLEETWIRE_VEHICLES_POLL_FIRST": "0.3", "FLEETWIRE_VEHICLES_POLL_MOST": "2",
    "FLEETWIRE_VEHICLES_MEMBER_WAIT": "10", "FLEETWIRE_VEHICLES_ERRORS_FAST": "0.5",
    "FLEETWIRE_VEHICLES_ERROR_QUIET": "2.5", "FLEETWIRE_VEHICLES_RETRY_AFTER_FAILURE": "1",
    "FLEETWIRE_VEHICLES_JITTER": "0", "FLEETWIRE_VEHICLES_CA_CHECK_SECONDS": "1",
}
DEMO_SYNC_DELAY = 2.0  # seconds the simulated vehicles take to apply a pushed config


@dataclass(frozen=True)
class Stage:
    """The cluster demo's running pieces, handed from the setup to the rotation steps."""

    api: Any  # fleetwire.operator.clients.kube.KubernetesApi
    sim: Any  # fleetwire.sim.fleetapi.FleetApiSimulator
    node: Any  # fleetwire.sim.kubelet.KubeletThread
    ns: str
    name: str
    healthy: list[str]
    vehicles: int
    say: Callable[[str], None]
    step_timeout: float
    resource: Callable[[], Awaitable[dict[str, Any]]]
    vehicles_status: Callable[[], Awaitable[dict[str, Any]]]
    records: Callable[[], Awaitable[dict[str, Any]]]
    metric: Callable[[str], Awaitable[float]]
