"""The kubelet's vocabulary: why a container waits, a probe, a mount, a pod's plan; the template
hash; a Secret's or ConfigMap's decoded keys; the API's timestamps."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Waiting:
    """Why a pod's container cannot start (the kubelet's waiting reasons)."""

    reason: str
    message: str


@dataclass(frozen=True)
class Probe:
    """A probe as the kubelet runs it, its port resolved to a number."""

    action: Literal["http", "tcp", "exec"]
    port: int | None = None
    path: str = "/"
    scheme: str = "HTTP"
    command: tuple[str, ...] = ()
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3


@dataclass(frozen=True)
class Mount:
    volume: str
    path: str
    read_only: bool


@dataclass(frozen=True)
class PodPlan:
    """Everything needed to start the pod's container, resolved from the API's objects."""

    template_hash: str
    labels: Mapping[str, str]
    container: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    workdir: str
    uid: int
    gid: int
    ports: Mapping[str, int]
    """Named container ports (unnamed ones under their number)."""
    mounts: tuple[Mount, ...]
    volumes: Mapping[str, Mapping[str, tuple[bytes, int]] | None]
    """Per volume, its files (path -> content, mode); None for an emptyDir."""
    liveness: Probe | None
    readiness: Probe | None
    grace_seconds: float = 30.0

    @property
    def listened_ports(self) -> tuple[int, ...]:
        """The ports the sandbox forwards: the container's and its probes'."""
        wanted = set(self.ports.values())
        for probe in (self.liveness, self.readiness):
            if probe is not None and probe.port is not None:
                wanted.add(probe.port)
        return tuple(sorted(wanted))


def template_hash(template: Mapping[str, Any]) -> str:
    """Like pod-template-hash: equal templates, equal hashes."""
    return hashlib.sha256(json.dumps(template, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:10]


def _decoded(obj: Mapping[str, Any]) -> dict[str, bytes]:
    """A Secret's or ConfigMap's keys and their bytes."""
    if obj.get("kind") == "Secret" or "stringData" in obj or obj.get("type"):
        values = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        values.update({k: str(v).encode() for k, v in (obj.get("stringData") or {}).items()})
        return values
    values = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
    values.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    return values


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
