"""`fleetwire operator`: kopf running the project's handlers, with liveness and peering.

Two replicas coordinate through kopf peering: each writes keep-alives into a peering
object (`ClusterKopfPeering` when serving all namespaces, a `KopfPeering` in each served
namespace otherwise; the chart installs their CRDs from charts/fleetwire/crds/). The
replica with the highest priority works and the others pause. Kopf pauses *every*
replica whose priority equals another's, so each replica picks a random priority at
start unless `--priority` is given. A replica that stops removes its keep-alive and the
next takes over at once; one that dies is presumed gone after 60 s. The operator creates
its peering objects at start (RBAC: create on kopfpeerings/clusterkopfpeerings).
`--standalone` turns peering off, for a single replica or a development run.

Liveness: kopf answers on `--liveness` (default http://0.0.0.0:8080/healthz) while its
loop runs; point the Deployment's livenessProbe there.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import kopf
import kubernetes

__all__ = [
    "DEFAULT_LIVENESS",
    "DEFAULT_PEERING",
    "OperatorOptions",
    "PeeringError",
    "ensure_peering",
    "load_kube_config",
    "main",
    "operate",
    "peering_objects",
]

DEFAULT_LIVENESS = "http://0.0.0.0:8080/healthz"
DEFAULT_PEERING = "fleetwire"
PEERING_GROUP, PEERING_VERSION = "kopf.dev", "v1"

logger = logging.getLogger("fleetwire.operator")


class PeeringError(RuntimeError):
    """The peering objects cannot be created (CRDs missing, no permission)."""


@dataclass(frozen=True, slots=True)
class OperatorOptions:
    """How to run: which namespaces (none given: all), peering or standalone, liveness URL."""

    namespaces: tuple[str, ...] = ()
    standalone: bool = False
    liveness: str | None = DEFAULT_LIVENESS
    peering: str = DEFAULT_PEERING
    priority: int | None = None

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    def effective_priority(self) -> int:
        """The given priority, else a random one: equal priorities would pause every replica."""
        return self.priority if self.priority is not None else 1 + secrets.randbelow(1_000_000)


def peering_objects(name: str, namespaces: Sequence[str]) -> list[dict[str, Any]]:
    """The peering objects kopf expects: one cluster-wide, or one per served namespace."""
    if not namespaces:
        return [{"apiVersion": f"{PEERING_GROUP}/{PEERING_VERSION}", "kind": "ClusterKopfPeering",
                 "metadata": {"name": name}}]
    return [{"apiVersion": f"{PEERING_GROUP}/{PEERING_VERSION}", "kind": "KopfPeering",
             "metadata": {"name": name, "namespace": namespace}} for namespace in namespaces]


def load_kube_config() -> None:
    """Configure the `kubernetes` client: in-cluster service account, else $KUBECONFIG."""
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()


def ensure_peering(name: str, namespaces: Sequence[str],
                   api: kubernetes.client.ApiClient | None = None) -> list[str]:
    """Create the missing peering objects; returns what was created ("ns/name" or "name").

    Without them kopf's mandatory peering would keep every replica paused.
    """
    objects = kubernetes.client.CustomObjectsApi(api)
    created: list[str] = []
    for obj in peering_objects(name, namespaces):
        namespace = obj["metadata"].get("namespace")
        where = f"{namespace}/{name}" if namespace else name
        try:
            if namespace:
                objects.create_namespaced_custom_object(PEERING_GROUP, PEERING_VERSION, namespace, "kopfpeerings", obj)
            else:
                objects.create_cluster_custom_object(PEERING_GROUP, PEERING_VERSION, "clusterkopfpeerings", obj)
        except kubernetes.client.ApiException as exc:
            if exc.status == 409:
                continue
            hint = ("install the peering CRDs (charts/fleetwire/crds/kopfpeerings.yaml)" if exc.status == 404
                    else "grant create on kopfpeerings/clusterkopfpeerings" if exc.status == 403
                    else exc.reason)
            raise PeeringError(f"cannot create {obj['kind']} {where}: HTTP {exc.status}: {hint}; "
                               "or run with --standalone (a single replica)") from None
        created.append(where)
    return created


def scoped(settings: kopf.OperatorSettings, *, clusterwide: bool) -> kopf.OperatorSettings:
    """Settings for the scope served. Serving named namespaces (the chart's Role mode), kopf
    must not watch namespaces and CRDs cluster-wide: a Role cannot grant it, and kopf backs
    off after each refusal (1+1+2+3+5+8+13+21 s) before it serves anything."""
    settings.scanning.disabled = not clusterwide
    return settings


async def operate(options: OperatorOptions, *, stop_flag: asyncio.Event | None = None) -> None:
    """Run kopf with the project's handlers until stopped (SIGTERM/SIGINT or `stop_flag`)."""
    importlib.import_module("fleetwire.operator.handlers.resource")  # its decorators register the handlers

    priority = None if options.standalone else options.effective_priority()
    scope = "all namespaces" if options.clusterwide else ", ".join(options.namespaces)
    logger.info("serving %s; %s", scope, "standalone" if priority is None
                else f"peering {options.peering!r} with priority {priority}")
    await kopf.operator(
        settings=scoped(kopf.OperatorSettings(), clusterwide=options.clusterwide),
        clusterwide=options.clusterwide,
        namespaces=list(options.namespaces),
        standalone=options.standalone,
        peering_name=None if options.standalone else options.peering,
        priority=priority,
        liveness_endpoint=options.liveness or None,
        stop_flag=stop_flag,
    )


def main(options: OperatorOptions, *, verbose: bool = False) -> int:
    """Entry point of `fleetwire operator`; returns the exit status."""
    kopf.configure(verbose=verbose)
    if not options.standalone:
        load_kube_config()
        try:
            created = ensure_peering(options.peering, options.namespaces)
        except PeeringError as exc:
            logger.error("%s", exc)
            return 2
        for where in created:
            logger.info("created peering object %s", where)
    asyncio.run(operate(options))
    return 0
