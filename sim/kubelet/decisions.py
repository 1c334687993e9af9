"""Probes, restarts, rollouts, status: the kubelet's decisions as pure functions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from fleetwire.sim.kubelet.model import Probe, _now, template_hash

T = TypeVar("T")


@dataclass(frozen=True)
class ProbeState:
    """Consecutive results of one probe; `passing` flips at the thresholds, as the kubelet's."""

    passing: bool
    successes: int = 0
    failures: int = 0

    def observe(self, ok: bool, probe: Probe) -> ProbeState:
        if ok:
            successes = self.successes + 1
            return ProbeState(self.passing or successes >= probe.success_threshold, successes, 0)
        failures = self.failures + 1
        return ProbeState(self.passing and failures < probe.failure_threshold, 0, failures)


def restart_delay(restarts: int, base: float = 10.0, cap: float = 300.0) -> float:
    """The kubelet's crash back-off: base, doubled per restart, capped (10 s .. 5 min on a node)."""
    return min(cap, base * 2 ** max(0, restarts - 1)) if restarts > 0 else 0.0


@dataclass(frozen=True)
class PodView:
    """What rollout and status need to know of a running pod."""

    name: str
    template_hash: str
    ready: bool
    terminating: bool = False


@dataclass(frozen=True)
class Rollout:
    start: int
    stop: tuple[str, ...]


def rollout(replicas: int, wanted_hash: str, pods: Sequence[PodView]) -> Rollout:
    """The next step of a RollingUpdate with maxSurge 1 and maxUnavailable 0.

    New pods start while the total stays within replicas + 1; old pods stop only while
    enough ready pods remain, not-ready ones first; extra new pods stop.
    """
    live = [p for p in pods if not p.terminating]
    new = [p for p in live if p.template_hash == wanted_hash]
    old = [p for p in live if p.template_hash != wanted_hash]
    if replicas <= 0:
        return Rollout(0, tuple(p.name for p in live))
    stop: list[str] = [p.name for p in sorted(new, key=lambda p: p.ready)[:max(0, len(new) - replicas)]]
    start = max(0, min(replicas - len(new), replicas + 1 - len(live)))
    ready = sum(p.ready for p in live) - sum(p.ready for p in new if p.name in stop)
    for pod in sorted(old, key=lambda p: p.ready):
        if not pod.ready:  # stopping it costs no availability
            stop.append(pod.name)
        elif ready - 1 >= replicas:
            stop.append(pod.name)
            ready -= 1
    return Rollout(start, tuple(dict.fromkeys(stop)))


def _condition(type_: str, status: bool, reason: str, message: str, previous: Mapping[str, Any] | None,
               now: str) -> dict[str, Any]:
    value = "True" if status else "False"
    same = previous is not None and previous.get("status") == value
    return {"type": type_, "status": value, "reason": reason, "message": message,
            "lastUpdateTime": previous.get("lastUpdateTime", now) if same and previous.get("reason") == reason
            else now,
            "lastTransitionTime": previous.get("lastTransitionTime", now) if same else now}


def deployment_status(deployment: Mapping[str, Any], pods: Sequence[PodView], now: str | None = None,
                      ) -> dict[str, Any]:
    """The status the Deployment controller would write for these pods."""
    now = now or _now()
    meta, spec = deployment.get("metadata") or {}, deployment.get("spec") or {}
    wanted = int(spec.get("replicas", 1))
    current = template_hash(spec.get("template") or {})
    live = [p for p in pods if not p.terminating]
    updated = [p for p in live if p.template_hash == current]
    ready = sum(p.ready for p in live)
    previous = {c.get("type"): c for c in (deployment.get("status") or {}).get("conditions") or []}
    name = meta.get("name", "")
    available = ready >= wanted
    complete = len(updated) == wanted == len(live) and all(p.ready for p in updated)
    status: dict[str, Any] = {
        "observedGeneration": int(meta.get("generation", 1)), "replicas": len(live),
        "updatedReplicas": len(updated), "readyReplicas": ready, "availableReplicas": ready,
        "conditions": [
            _condition("Available", available, "MinimumReplicasAvailable" if available else
                       "MinimumReplicasUnavailable", "Deployment has minimum availability." if available else
                       "Deployment does not have minimum availability.", previous.get("Available"), now),
            _condition("Progressing", True, "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
                       f'ReplicaSet "{name}-{current}" has successfully progressed.' if complete else
                       f'ReplicaSet "{name}-{current}" is progressing.', previous.get("Progressing"), now),
        ],
    }
    if len(live) - ready > 0:
        status["unavailableReplicas"] = len(live) - ready
    if ready == 0:
        del status["readyReplicas"], status["availableReplicas"]  # the controller omits zeros
    return status


def service_endpoints(service: Mapping[str, Any], port: int | str,
                      pods: Iterable[tuple[Mapping[str, str], Mapping[str, int], bool, T]]) -> list[tuple[T, int]]:
    """(pod, container port) behind `service`'s port (its number or name): ready pods whose
    labels match the selector and whose container has the targetPort."""
    spec = service.get("spec") or {}
    selector = spec.get("selector") or {}
    entry = next((p for p in spec.get("ports") or [] if p.get("port") == port or p.get("name") == port), None)
    if entry is None or not selector:
        return []
    target = entry.get("targetPort", entry.get("port"))
    found = []
    for labels, ports, ready, pod in pods:
        if not ready or any(labels.get(k) != v for k, v in selector.items()):
            continue
        number = target if isinstance(target, int) else ports.get(str(target))
        if number is not None:
            found.append((pod, int(number)))
    return found
