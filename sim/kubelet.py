"""A kubelet stand-in: runs the pods of the emulated cluster's Deployments as local processes.

The operator builds the server's Deployment; without a node, nothing would ever run it, so
a wrong mount path, environment variable or probe port would only show on a real cluster.
This stand-in runs each Deployment's pod the way a kubelet does, as far as one process on
one machine can:

- the container's command: the image's ENTRYPOINT/CMD (`IMAGES`, checked against the
  Dockerfile) replaced by the container's `command`/`args` as Kubernetes does, with the
  image's executable mapped onto this machine's (`LOCAL_COMMANDS`: `fleetwire` is this
  venv's `python -P -m fleetwire.cli`);
- the pod's view of the filesystem, with bubblewrap: `/` read-only, Secret and ConfigMap
  volumes written in the kubelet's layout (`..data` a symlink to a timestamped directory,
  each key a symlink through it) and bound at their `mountPath`s, emptyDirs writable; a
  mount path whose parent is missing on this machine (`/etc/fleetwire/...`) gets a tmpfs
  over its nearest existing ancestor, whose entries are bound back (bubblewrap 0.8 has no
  overlay); nothing is written to the real `/etc`;
- `securityContext`: the uid and gid (in a user namespace), `runAsNonRoot` refused for
  uid 0, and a read-only root (always: this machine's root is never the pod's to write);
- `env` and `envFrom` from values, Secrets and ConfigMaps, and the image's ENV;
- the pod's own network namespace (only loopback): the pod listens on the very ports its
  spec names without colliding with other pods or the host. `fleetwire.sim.podsandbox`,
  the sandbox's first process, forwards a Unix socket per port into it; probes connect
  there, as a kubelet connects to the pod's IP, and each Service gets a stable loopback
  port (`address()`) that forwards to its ready pods' `targetPort`, as kube-proxy does;
- liveness and readiness probes as written (httpGet, tcpSocket, exec; delays, periods,
  timeouts, thresholds), a crashed or unhealthy container restarted with back-off,
  a rolling update (surge one, none unavailable) when the pod template changes;
- mounted Secrets and ConfigMaps updated in place by the `..data` swap when the objects
  change (so a server watching its certificate files sees what it would see in a pod);
- Pod objects and the Deployment's status (replicas, updated/ready/available replicas,
  observedGeneration, Available and Progressing conditions) written back to the API.

Not emulated: scheduling, resource limits, seccomp, capabilities beyond those bubblewrap
drops, several containers per pod, init containers, image pulls, subPath updates.

The decisions are pure functions (`plan_pod`, `rollout`, `deployment_status`,
`ProbeState.observe`, `restart_delay`, `sandbox_args`, `service_endpoints`) with tests of
their own; `Kubelet` is the thin asyncio shell that polls the API, starts processes and
writes status; `KubeletThread` runs it on a loop of its own for synchronous callers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import functools
import hashlib
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiohttp

from fleetwire.image import IMAGE_REPOSITORY

__all__ = [
    "IMAGES",
    "LOCAL_COMMANDS",
    "ImageConfig",
    "Kubelet",
    "KubeletThread",
    "PodPlan",
    "PodView",
    "Probe",
    "ProbeState",
    "Rollout",
    "Waiting",
    "deployment_status",
    "plan_pod",
    "restart_delay",
    "rollout",
    "sandbox_args",
    "service_endpoints",
    "template_hash",
    "volume_files",
    "write_volume",
]

T = TypeVar("T")

# ======================================================================================
# Images: what the container runtime would read from the image's config
# ======================================================================================


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an image's config a container's process depends on."""

    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    workdir: str
    user: int
    group: int


IMAGES: Mapping[str, ImageConfig] = {
    IMAGE_REPOSITORY: ImageConfig(
        entrypoint=("fleetwire",), cmd=("serve", "--config", "/etc/fleetwire/config.json"),
        env=(("PIP_DISABLE_PIP_VERSION_CHECK", "1"), ("PIP_NO_CACHE_DIR", "1"), ("PYTHONDONTWRITEBYTECODE", "1"),
             ("PYTHONUNBUFFERED", "1"), ("HOME", "/tmp")),
        workdir="/tmp", user=65532, group=65532),
}
"""By repository (any tag): the Dockerfile's ENTRYPOINT, CMD, ENV, WORKDIR and USER."""

LOCAL_COMMANDS: Mapping[str, tuple[str, ...]] = {"fleetwire": (sys.executable, "-P", "-m", "fleetwire.cli")}
"""An image's executable and what runs it on this machine (the image installs the same package)."""

_LOCAL_PATH = f"{Path(sys.executable).parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def image_config(image: str) -> ImageConfig | None:
    repository = image.rsplit("@", 1)[0]
    if ":" in repository.rsplit("/", 1)[-1]:
        repository = repository.rsplit(":", 1)[0]
    return IMAGES.get(repository)


# ======================================================================================
# The plan of a pod: what the kubelet resolves before it starts a container
# ======================================================================================


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


def volume_files(volume: Mapping[str, Any], secrets_: Mapping[str, Mapping[str, Any]],
                 config_maps: Mapping[str, Mapping[str, Any]]) -> Mapping[str, tuple[bytes, int]] | Waiting | None:
    """The files of a Secret or ConfigMap volume (None: an emptyDir), or why it cannot be mounted."""
    if "emptyDir" in volume:
        return None
    if "secret" in volume:
        source, kind, objects, name = volume["secret"], "secret", secrets_, volume["secret"].get("secretName", "")
    elif "configMap" in volume:
        source, kind, objects, name = volume["configMap"], "configmap", config_maps, volume["configMap"].get("name", "")
    else:
        other = next(iter(k for k in volume if k != "name"), "?")
        return Waiting("ContainerCreating", f"volume {volume.get('name')}: {other} volumes are not emulated")
    mode = int(source.get("defaultMode", 0o644))
    obj = objects.get(name)
    if obj is None:
        if source.get("optional"):
            return {}
        return Waiting("ContainerCreating", f'MountVolume.SetUp failed for volume "{volume.get("name")}" : '
                                            f'{kind} "{name}" not found')
    values = _decoded(obj)
    items = source.get("items")
    if not items:
        return {key: (value, mode) for key, value in values.items()}
    files: dict[str, tuple[bytes, int]] = {}
    for item in items:
        if item["key"] not in values:
            if source.get("optional"):
                continue
            return Waiting("ContainerCreating", f'MountVolume.SetUp failed for volume "{volume.get("name")}" : '
                                                f'configmap references non-existent config key: {item["key"]}')
        files[item["path"]] = (values[item["key"]], int(item.get("mode", mode)))
    return files


def _port_number(port: Any, ports: Mapping[str, int]) -> int | None:
    """A probe's port as a number; None for a name the container does not have (the kubelet
    starts the container anyway, and the probe fails every time)."""
    if isinstance(port, int):
        return port
    if isinstance(port, str) and port.isdigit():
        return int(port)
    return ports.get(str(port))


def _probe(spec: Mapping[str, Any] | None, ports: Mapping[str, int], where: str) -> Probe | Waiting | None:
    if not spec:
        return None
    timing = {"initial_delay": float(spec.get("initialDelaySeconds", 0)), "period": float(spec.get("periodSeconds", 10)),
              "timeout": float(spec.get("timeoutSeconds", 1)), "success_threshold": int(spec.get("successThreshold", 1)),
              "failure_threshold": int(spec.get("failureThreshold", 3))}
    if "httpGet" in spec:
        port = _port_number(spec["httpGet"].get("port"), ports)
        return Probe("http", port, str(spec["httpGet"].get("path", "/")), str(spec["httpGet"].get("scheme", "HTTP")),
                     **timing)  # type: ignore[arg-type]
    if "tcpSocket" in spec:
        port = _port_number(spec["tcpSocket"].get("port"), ports)
        return Probe("tcp", port, **timing)  # type: ignore[arg-type]
    if "exec" in spec:
        return Probe("exec", command=tuple(spec["exec"].get("command") or ()), **timing)  # type: ignore[arg-type]
    return Waiting("CreateContainerConfigError", f"{where}: no httpGet, tcpSocket or exec handler")


def _env(container: Mapping[str, Any], image: ImageConfig, secrets_: Mapping[str, Mapping[str, Any]],
         config_maps: Mapping[str, Mapping[str, Any]], pod_name: str, namespace: str,
         ) -> tuple[tuple[str, str], ...] | Waiting:
    env: dict[str, str] = {"PATH": _LOCAL_PATH, "HOSTNAME": pod_name, **dict(image.env)}
    for source in container.get("envFrom") or []:
        ref = source.get("secretRef") or source.get("configMapRef") or {}
        kind = "secret" if "secretRef" in source else "configmap"
        obj = (secrets_ if kind == "secret" else config_maps).get(ref.get("name", ""))
        if obj is None:
            if ref.get("optional"):
                continue
            return Waiting("CreateContainerConfigError", f'{kind} "{ref.get("name")}" not found')
        for key, value in _decoded(obj).items():
            env[source.get("prefix", "") + key] = value.decode(errors="replace")
    fields = {"metadata.name": pod_name, "metadata.namespace": namespace, "status.podIP": "127.0.0.1",
              "spec.nodeName": "stand-in"}
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        source = item.get("valueFrom") or {}
        if "fieldRef" in source:
            env[item["name"]] = fields.get(source["fieldRef"].get("fieldPath", ""), "")
            continue
        ref = source.get("secretKeyRef") or source.get("configMapKeyRef")
        if ref is None:
            env[item["name"]] = ""
            continue
        kind = "secret" if "secretKeyRef" in source else "configmap"
        obj = (secrets_ if kind == "secret" else config_maps).get(ref.get("name", ""))
        values = _decoded(obj) if obj is not None else {}
        if ref.get("key") not in values:
            if ref.get("optional"):
                continue
            missing = f'{kind} "{ref.get("name")}" not found' if obj is None else (
                f"couldn't find key {ref.get('key')} in {kind.capitalize()} {namespace}/{ref.get('name')}")
            return Waiting("CreateContainerConfigError", missing)
        env[item["name"]] = values[ref["key"]].decode(errors="replace")
    return tuple(env.items())


def plan_pod(deployment: Mapping[str, Any], secrets_: Mapping[str, Mapping[str, Any]],
             config_maps: Mapping[str, Mapping[str, Any]], pod_name: str = "pod") -> PodPlan | Waiting:
    """What the kubelet would start for `deployment`'s template (Secrets and ConfigMaps of its
    namespace by name), or why it cannot start it."""
    namespace = str(deployment.get("metadata", {}).get("namespace", "default"))
    template = (deployment.get("spec") or {}).get("template") or {}
    pod = template.get("spec") or {}
    containers = pod.get("containers") or []
    if len(containers) != 1 or pod.get("initContainers"):
        return Waiting("NotEmulated", "the stand-in runs pods of exactly one container and no init containers")
    container = containers[0]
    image = image_config(str(container.get("image", "")))
    if image is None:
        return Waiting("ErrImagePull", f"image {container.get('image')!r} is not one the stand-in can run "
                                       f"(known: {', '.join(IMAGES)})")
    entrypoint = tuple(container.get("command") or image.entrypoint)
    args = tuple(container.get("args") or (() if container.get("command") else image.cmd))
    argv = entrypoint + args
    if not argv:
        return Waiting("CreateContainerConfigError", "no command to run")
    local = LOCAL_COMMANDS.get(argv[0])
    if local is None:
        return Waiting("RunContainerError", f'exec: "{argv[0]}": executable file not found in $PATH')
    pod_security = pod.get("securityContext") or {}
    security = {**pod_security, **(container.get("securityContext") or {})}
    uid = int(security.get("runAsUser", image.user))
    gid = int(security.get("runAsGroup", image.group))
    if security.get("runAsNonRoot") and uid == 0:
        return Waiting("CreateContainerConfigError", "container has runAsNonRoot and image will run as root")
    ports: dict[str, int] = {}
    for port in container.get("ports") or []:
        ports[str(port.get("name") or port["containerPort"])] = int(port["containerPort"])
    probes: dict[str, Probe | None] = {}
    for kind in ("livenessProbe", "readinessProbe"):
        probe = _probe(container.get(kind), ports, f"{container.get('name')}.{kind}")
        if isinstance(probe, Waiting):
            return probe
        probes[kind] = probe
    volumes_spec = {v["name"]: v for v in pod.get("volumes") or []}
    mounts: list[Mount] = []
    for mount in container.get("volumeMounts") or []:
        if mount["name"] not in volumes_spec:
            return Waiting("CreateContainerConfigError", f"volumeMount {mount['name']!r} names no volume of the pod")
        if mount.get("subPath"):
            return Waiting("NotEmulated", "subPath mounts are not emulated")
        mounts.append(Mount(mount["name"], str(mount["mountPath"]), bool(mount.get("readOnly"))))
    volumes: dict[str, Mapping[str, tuple[bytes, int]] | None] = {}
    for name in dict.fromkeys(m.volume for m in mounts):  # in mount order: the first problem is named
        files = volume_files(volumes_spec[name], secrets_, config_maps)
        if isinstance(files, Waiting):
            return files
        volumes[name] = files
    env = _env(container, image, secrets_, config_maps, pod_name, namespace)
    if isinstance(env, Waiting):
        return env
    return PodPlan(
        template_hash=template_hash(template), labels=dict((template.get("metadata") or {}).get("labels") or {}),
        container=str(container.get("name", "")), argv=(*local, *argv[1:]), env=env,
        workdir=str(container.get("workingDir") or image.workdir), uid=uid, gid=gid, ports=ports,
        mounts=tuple(mounts), volumes=volumes, liveness=probes["livenessProbe"], readiness=probes["readinessProbe"],
        grace_seconds=float(pod.get("terminationGracePeriodSeconds", 30)))


# ======================================================================================
# Probes, restarts, rollouts, status: pure decisions
# ======================================================================================


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


# ======================================================================================
# The sandbox: bubblewrap's arguments for a pod's view of the filesystem
# ======================================================================================

SOCKET_DIR = "/run/pod"
"""Where the pod sandbox's port sockets live inside the sandbox."""


def _ancestor(path: str, exists: Callable[[str], bool]) -> str:
    current = os.path.dirname(path.rstrip("/")) or "/"
    while not exists(current):
        current = os.path.dirname(current) or "/"
    return current


def image_paths() -> tuple[str, ...]:
    """What stands for the container image here: this interpreter's venv and installation,
    and the project's source (an editable install)."""
    project = Path(__file__).resolve().parent.parent
    return tuple(dict.fromkeys((sys.prefix, sys.base_prefix, str(project))))


def sandbox_args(plan: PodPlan, volume_dirs: Mapping[str, Path], socket_dir: Path, hostname: str, *,
                 exists: Callable[[str], bool] = os.path.isdir,
                 entries: Callable[[str], list[tuple[str, str | None]]] | None = None,
                 image: Sequence[str] | None = None) -> list[str]:
    """bwrap's arguments: user, pid and network namespaces; `/` read-only; each volume at its
    mountPath (a missing parent gets a tmpfs over its nearest existing ancestor, with that
    ancestor's entries bound back); the image's paths a mount would hide, bound back; the
    sockets directory; the environment; the workdir."""
    entries = entries or _entries
    image = image_paths() if image is None else image
    args = ["--unshare-user", "--uid", str(plan.uid), "--gid", str(plan.gid), "--unshare-pid", "--unshare-net",
            "--unshare-ipc", "--unshare-uts", "--hostname", hostname, "--die-with-parent", "--new-session",
            "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/run"]
    covered: list[str] = []
    mounts = sorted(plan.mounts, key=lambda m: m.path.count("/"))
    for mount in mounts:
        if exists(mount.path) or any(mount.path.startswith(c.rstrip("/") + "/") for c in covered):
            continue
        ancestor = _ancestor(mount.path, exists)
        if ancestor == "/" or any(ancestor.startswith(c.rstrip("/") + "/") or ancestor == c for c in covered):
            continue
        covered.append(ancestor)
        args += ["--tmpfs", ancestor]
        for name, link in entries(ancestor):
            path = f"{ancestor.rstrip('/')}/{name}"
            args += ["--symlink", link, path] if link is not None else ["--ro-bind", path, path]
    for mount in mounts:
        writable = plan.volumes.get(mount.volume) is None and not mount.read_only  # emptyDir
        args += ["--bind" if writable else "--ro-bind", str(volume_dirs[mount.volume]), mount.path]
    for path in image:  # a container's image is never hidden by its own volumes
        if any(path == m.path or path.startswith(m.path.rstrip("/") + "/") for m in mounts):
            args += ["--ro-bind", path, path]
    args += ["--bind", str(socket_dir), SOCKET_DIR]
    for ancestor in covered:
        args += ["--remount-ro", ancestor]  # a read-only root stays read-only under the tmpfs
    args += ["--clearenv", *[a for key, value in plan.env for a in ("--setenv", key, value)], "--chdir", plan.workdir]
    return args


def _entries(directory: str) -> list[tuple[str, str | None]]:
    found = []
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        found.append((entry.name, os.readlink(entry.path) if entry.is_symlink() else None))
    return found


def write_volume(directory: Path, files: Mapping[str, tuple[bytes, int]]) -> bool:
    """Write a Secret or ConfigMap volume as the kubelet's atomic writer does; False if unchanged.

    The files go to a fresh `..TIMESTAMP` directory; `..data` is swapped to it with one
    rename (a reader sees the old set or the new, never a mix); each key is a symlink
    `KEY -> ..data/KEY`; the previous directory is removed afterwards.
    """
    data = directory / "..data"
    if data.is_symlink():
        current = directory / os.readlink(data)
        if _same_files(current, files):
            return False
    else:
        current = None
    stamp = dt.datetime.now(dt.UTC).strftime("..%Y_%m_%d_%H_%M_%S.") + f"{time.time_ns() % 10**9:09d}"
    fresh = directory / stamp
    fresh.mkdir(parents=True)
    for path, (content, mode) in files.items():
        target = fresh / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        target.chmod(mode)
    fresh.chmod(0o755)
    tmp = directory / "..data_tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(stamp)
    os.replace(tmp, data)
    tops = {path.split("/", 1)[0] for path in files}
    for top in tops:
        link = directory / top
        if not link.is_symlink():
            link.symlink_to(f"..data/{top}")
    for entry in directory.iterdir():
        if entry.is_symlink() and not entry.name.startswith("..") and entry.name not in tops:
            entry.unlink()
    if current is not None:
        shutil.rmtree(current, ignore_errors=True)
    return True


def _same_files(directory: Path, files: Mapping[str, tuple[bytes, int]]) -> bool:
    try:
        present = {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()}
        return present == set(files) and all(
            (directory / path).read_bytes() == content and (directory / path).stat().st_mode & 0o7777 == mode
            for path, (content, mode) in files.items())
    except OSError:
        return False


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ======================================================================================
# The shell: pods as processes, status written back
# ======================================================================================


@dataclass
class Pod:
    """One running (or waiting) pod of a Deployment."""

    name: str
    namespace: str
    deployment: str
    template_hash: str
    labels: dict[str, str]
    directory: Path
    template: dict[str, Any]
    plan: PodPlan | None = None
    waiting: Waiting | None = None
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    ready: bool = False
    live: ProbeState = field(default_factory=lambda: ProbeState(True))
    readiness: ProbeState = field(default_factory=lambda: ProbeState(False))
    started_at: float | None = None
    ready_at: float | None = None
    created_at: float = field(default_factory=time.monotonic)
    terminating: bool = False
    last_exit: int | None = None
    last_reason: str = ""
    volume_updates: int = 0
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    sockets: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pod-")))
    """The sandbox's port sockets: a short path, as a Unix socket's path is at most 107 bytes."""

    @property
    def log(self) -> Path:
        return self.directory / "container.log"

    @property
    def pid(self) -> int | None:
        return None if self.process is None or self.process.returncode is not None else self.process.pid

    def view(self) -> PodView:
        return PodView(self.name, self.template_hash, self.ready, self.terminating)


class Kubelet:
    """Runs the Deployments of an emulated cluster (see the module docstring).

    `base_url` is the API; `workdir` holds each pod's volumes, sockets and log. Timings
    are a node's, scaled by `period` (how often the API is read) and `backoff`.
    """

    def __init__(self, base_url: str, workdir: Path, *, namespace: str | None = None, period: float = 0.25,
                 backoff: tuple[float, float] = (0.5, 8.0), probe_scale: float = 0.1,
                 headers: Mapping[str, str] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.workdir = workdir
        self.namespace = namespace
        self.period = period
        self.backoff = backoff
        self.probe_scale = probe_scale
        """Probe periods and delays are multiplied by this (a 10 s period probes each second)."""
        self.headers = {"User-Agent": "kubelet-stand-in/1", **(headers or {})}
        self.pods: dict[str, Pod] = {}
        self.errors: list[str] = []
        self._services: dict[tuple[str, str], dict[Any, tuple[asyncio.Server, int]]] = {}
        self._service_objects: dict[tuple[str, str], dict[str, Any]] = {}
        self._written: dict[tuple[str, str], dict[str, Any]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._bwrap = shutil.which("bwrap")

    # -- life ------------------------------------------------------------------------------

    async def start(self) -> Kubelet:
        if self._bwrap is None:
            raise RuntimeError("bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._session = aiohttp.ClientSession(headers=self.headers)
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="kubelet")
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*(self._kill(pod, grace=2.0) for pod in list(self.pods.values())),
                             return_exceptions=True)
        for pod in self.pods.values():
            shutil.rmtree(pod.sockets, ignore_errors=True)
        for listeners in self._services.values():
            for server, _port in listeners.values():
                server.close()
        self._services.clear()
        if self._session is not None:
            await self._session.close()

    def address(self, namespace: str, service: str, port: int | str) -> tuple[str, int]:
        """Where on loopback the Service's port answers (forwarded to its ready pods)."""
        listeners = self._services.get((namespace, service))
        if not listeners:
            raise LookupError(f"no Service {namespace}/{service} seen yet")
        for key, (_server, host_port) in listeners.items():
            if port in key:
                return "127.0.0.1", host_port
        raise LookupError(f"Service {namespace}/{service} has no port {port!r}")

    def pods_of(self, namespace: str, deployment: str) -> list[Pod]:
        return [p for p in self.pods.values() if p.namespace == namespace and p.deployment == deployment
                and not p.terminating]

    # -- the API ---------------------------------------------------------------------------

    async def _request(self, method: str, path: str, body: Any = None,
                       content_type: str = "application/merge-patch+json") -> Any:
        assert self._session is not None
        async with self._session.request(method, self.base_url + path, json=body,
                                         headers={"Content-Type": content_type}) as response:
            payload = await response.json(content_type=None)
            if response.status >= 400:
                raise RuntimeError(f"{method} {path}: {response.status} {payload}")
            return payload

    def _path(self, api: str, plural: str, namespace: str | None = None, name: str | None = None,
              sub: str | None = None) -> str:
        parts = [api] + (["namespaces", namespace] if namespace else []) + [plural]
        parts += [name] if name else []
        parts += [sub] if sub else []
        return "/".join(parts)

    async def _list(self, api: str, plural: str) -> list[dict[str, Any]]:
        return list((await self._request("GET", self._path(api, plural, self.namespace)))["items"])

    # -- the loop --------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            try:
                await self._sync()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the API is down for a moment, or a write conflicted: next pass
                self.errors.append(repr(exc))
                del self.errors[:-20]
            await asyncio.sleep(self.period)

    async def _sync(self) -> None:
        deployments = await self._list("/apis/apps/v1", "deployments")
        secrets_ = await self._list("/api/v1", "secrets")
        config_maps = await self._list("/api/v1", "configmaps")
        services = await self._list("/api/v1", "services")
        by_ns: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        for obj in secrets_:
            by_ns.setdefault(obj["metadata"]["namespace"], ({}, {}))[0][obj["metadata"]["name"]] = obj
        for obj in config_maps:
            by_ns.setdefault(obj["metadata"]["namespace"], ({}, {}))[1][obj["metadata"]["name"]] = obj
        seen: set[tuple[str, str]] = set()
        for deployment in deployments:
            meta = deployment["metadata"]
            key = (meta["namespace"], meta["name"])
            seen.add(key)
            if meta.get("deletionTimestamp"):
                continue
            objects = by_ns.get(key[0], ({}, {}))
            await self._reconcile(deployment, objects[0], objects[1])
        for pod in list(self.pods.values()):
            if (pod.namespace, pod.deployment) not in seen and not pod.terminating:
                await self._terminate(pod)
        await self._sync_services(services)

    async def _reconcile(self, deployment: dict[str, Any], secrets_: Mapping[str, Any],
                         config_maps: Mapping[str, Any]) -> None:
        meta, spec = deployment["metadata"], deployment.get("spec") or {}
        namespace, name = meta["namespace"], meta["name"]
        wanted = template_hash(spec.get("template") or {})
        pods = self.pods_of(namespace, name)
        for pod in pods:  # the kubelet's volume manager: mounted Secrets and ConfigMaps follow their objects
            if pod.plan is not None and pod.process is not None:
                volumes = {v["name"]: v for v in (pod.template.get("spec") or {}).get("volumes") or []}
                for volume, files in pod.plan.volumes.items():
                    fresh = volume_files(volumes[volume], secrets_, config_maps) if files is not None else None
                    if isinstance(fresh, Mapping) and write_volume(pod.directory / "volumes" / volume, fresh):
                        pod.volume_updates += 1
            elif pod.plan is None:  # waiting for a Secret, a ConfigMap, a fixed spec
                plan = plan_pod(deployment, secrets_, config_maps, pod.name)
                if isinstance(plan, PodPlan) and pod.template_hash == wanted:
                    pod.plan, pod.waiting = plan, None
                    pod.tasks.append(asyncio.get_running_loop().create_task(self._supervise(pod)))
                elif isinstance(plan, Waiting):
                    pod.waiting = plan
        step = rollout(int(spec.get("replicas", 1)), wanted, [p.view() for p in pods])
        for pod_name in step.stop:
            await self._terminate(self.pods[pod_name])
        for _ in range(step.start):
            await self._create_pod(deployment, secrets_, config_maps, wanted)
        pods = self.pods_of(namespace, name)
        status = deployment_status(deployment, [p.view() for p in pods])
        await self._write_pods(deployment, pods)
        old = deployment.get("status") or {}
        if _essence(old) != _essence(status):
            await self._request("PATCH", self._path("/apis/apps/v1", "deployments", namespace, name, "status"),
                                {"status": {**{k: None for k in old if k not in status}, **status}})

    async def _create_pod(self, deployment: Mapping[str, Any], secrets_: Mapping[str, Any],
                          config_maps: Mapping[str, Any], wanted: str) -> None:
        meta = deployment["metadata"]
        suffix = "".join(secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
        name = f"{meta['name']}-{wanted}-{suffix}"
        template = (deployment.get("spec") or {}).get("template") or {}
        pod = Pod(name, meta["namespace"], meta["name"], wanted,
                  dict((template.get("metadata") or {}).get("labels") or {}),
                  self.workdir / f"{meta['namespace']}_{name}", json.loads(json.dumps(template)))
        pod.directory.mkdir(parents=True)
        self.pods[name] = pod
        plan = plan_pod(deployment, secrets_, config_maps, name)
        if isinstance(plan, Waiting):
            pod.waiting = plan
            return
        pod.plan = plan
        pod.tasks.append(asyncio.get_running_loop().create_task(self._supervise(pod), name=f"pod {name}"))

    # -- one pod ---------------------------------------------------------------------------

    async def _supervise(self, pod: Pod) -> None:
        """Start the container; restart it with back-off when it exits or fails liveness."""
        assert pod.plan is not None
        plan = pod.plan
        volume_dirs: dict[str, Path] = {}
        for volume, files in plan.volumes.items():
            directory = pod.directory / "volumes" / volume
            directory.mkdir(parents=True, exist_ok=True)
            if files is not None:
                write_volume(directory, files)
            volume_dirs[volume] = directory
        args = sandbox_args(plan, volume_dirs, pod.sockets, pod.name[:63])
        sandbox = [sys.executable, "-P", "-m", "fleetwire.sim.podsandbox", SOCKET_DIR,
                   ",".join(map(str, plan.listened_ports)), "--", *plan.argv]
        while not pod.terminating:
            delay = restart_delay(pod.restarts, *self.backoff)
            if delay:
                pod.waiting = Waiting("CrashLoopBackOff", f"back-off {delay:g}s restarting failed container="
                                                          f"{plan.container} pod={pod.name}")
                await asyncio.sleep(delay)
                if pod.terminating:
                    return
            with pod.log.open("ab") as log:
                log.write(f"--- {_now()} start {pod.restarts} ---\n".encode())
                log.flush()
                pod.process = await asyncio.create_subprocess_exec(
                    self._bwrap or "bwrap", *args, "--", *sandbox, stdin=asyncio.subprocess.DEVNULL,
                    stdout=log, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
            pod.waiting, pod.started_at = None, time.monotonic()
            pod.live, pod.readiness, pod.ready = ProbeState(True), ProbeState(plan.readiness is None), \
                plan.readiness is None
            probes = [asyncio.get_running_loop().create_task(self._probe_loop(pod, kind, probe))
                      for kind, probe in (("liveness", plan.liveness), ("readiness", plan.readiness)) if probe]
            code = await pod.process.wait()
            for task in probes:
                task.cancel()
            await asyncio.gather(*probes, return_exceptions=True)
            pod.ready, pod.last_exit = False, code
            if pod.terminating:
                return
            pod.last_reason = pod.last_reason if pod.last_reason == "Unhealthy" else (
                "Completed" if code == 0 else "Error")
            pod.restarts += 1

    async def _probe_loop(self, pod: Pod, kind: str, probe: Probe) -> None:
        scale = self.probe_scale
        await asyncio.sleep(probe.initial_delay * scale)
        while True:
            ok = await self._probe(pod, probe)
            if kind == "readiness":
                pod.readiness = pod.readiness.observe(ok, probe)
                if pod.readiness.passing and not pod.ready:
                    pod.ready_at = time.monotonic()
                pod.ready = pod.readiness.passing
            else:
                pod.live = pod.live.observe(ok, probe)
                if not pod.live.passing and pod.process is not None and pod.process.returncode is None:
                    pod.last_reason = "Unhealthy"
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pod.process.pid, signal.SIGKILL)
                    return
            await asyncio.sleep(max(0.05, probe.period * scale))

    async def _probe(self, pod: Pod, probe: Probe) -> bool:
        """One probe: through the pod sandbox's socket for the port, as to the pod's IP."""
        try:
            if probe.action == "exec" or probe.port is None:
                return False  # exec probes are not emulated; an unknown port name fails as on a node
            path = pod.sockets / str(probe.port)
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), probe.timeout)
            try:
                if probe.action == "tcp":
                    # The sandbox accepts, then connects inside: a closed port shows as EOF at once.
                    try:
                        return await asyncio.wait_for(reader.read(1), min(0.2, probe.timeout)) != b""
                    except TimeoutError:
                        return True
                writer.write(f"GET {probe.path} HTTP/1.1\r\nHost: 127.0.0.1:{probe.port}\r\n"
                             "User-Agent: kube-probe/1.32\r\nConnection: close\r\n\r\n".encode())
                await writer.drain()
                line = await asyncio.wait_for(reader.readline(), probe.timeout)
                parts = line.split()
                return len(parts) >= 2 and parts[1].isdigit() and 200 <= int(parts[1]) < 400
            finally:
                writer.close()
        except (TimeoutError, OSError, ValueError):
            return False

    async def _terminate(self, pod: Pod) -> None:
        pod.terminating = True
        asyncio.get_running_loop().create_task(self._finish(pod), name=f"terminate {pod.name}")

    async def _finish(self, pod: Pod) -> None:
        await self._kill(pod, grace=min(pod.plan.grace_seconds if pod.plan else 2.0, 5.0))
        self.pods.pop(pod.name, None)
        self._written.pop((pod.namespace, pod.name), None)
        with contextlib.suppress(Exception):
            await self._request("DELETE", self._path("/api/v1", "pods", pod.namespace, pod.name))
        shutil.rmtree(pod.directory / "volumes", ignore_errors=True)
        shutil.rmtree(pod.sockets, ignore_errors=True)

    async def _kill(self, pod: Pod, grace: float) -> None:
        pod.terminating = True
        process = pod.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        for task in pod.tasks:
            task.cancel()
        await asyncio.gather(*pod.tasks, return_exceptions=True)

    # -- Pod objects -----------------------------------------------------------------------

    def pod_object(self, pod: Pod, deployment: Mapping[str, Any]) -> dict[str, Any]:
        """The Pod as the API shows it: for `kubectl get pods` and for tests."""
        template = (deployment.get("spec") or {}).get("template") or {}
        running = pod.process is not None and pod.process.returncode is None
        state: dict[str, Any]
        if pod.waiting is not None:
            state = {"waiting": {"reason": pod.waiting.reason, "message": pod.waiting.message}}
        elif running:
            state = {"running": {}}
        else:
            state = {"terminated": {"exitCode": pod.last_exit or 0, "reason": pod.last_reason or "Error"}}
        spec_container = ((template.get("spec") or {}).get("containers") or [{}])[0]
        image = str(spec_container.get("image", ""))
        container = {"name": str(spec_container.get("name", "")), "ready": pod.ready,
                     "restartCount": pod.restarts, "started": running, "state": state, "image": image,
                     "imageID": f"{image.rsplit(':', 1)[0]}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"}
        if pod.last_exit is not None:
            container["lastState"] = {"terminated": {"exitCode": pod.last_exit, "reason": pod.last_reason}}
        return {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod.name, "namespace": pod.namespace,
                         "labels": {**pod.labels, "pod-template-hash": pod.template_hash},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                              "name": pod.deployment, "uid": deployment["metadata"].get("uid", ""),
                                              "controller": True}]},
            "spec": template.get("spec") or {},
            "status": {"phase": "Running" if running else "Pending", "podIP": "127.0.0.1",
                       "conditions": [{"type": "Ready", "status": "True" if pod.ready else "False"}],
                       "containerStatuses": [container]},
        }

    async def _write_pods(self, deployment: Mapping[str, Any], pods: Sequence[Pod]) -> None:
        for pod in pods:
            obj = self.pod_object(pod, deployment)
            key = (pod.namespace, pod.name)
            if self._written.get(key) == obj["status"]:
                continue
            try:
                if key not in self._written:
                    await self._request("POST", self._path("/api/v1", "pods", pod.namespace), obj,
                                        content_type="application/json")
                await self._request("PATCH", self._path("/api/v1", "pods", pod.namespace, pod.name, "status"),
                                    {"status": obj["status"]})
            except RuntimeError as exc:  # reported; the Deployment's status is written all the same
                self.errors.append(repr(exc))
                del self.errors[:-20]
                continue
            self._written[key] = obj["status"]

    # -- Services --------------------------------------------------------------------------

    async def _sync_services(self, services: Sequence[Mapping[str, Any]]) -> None:
        present = set()
        for service in services:
            key = (service["metadata"]["namespace"], service["metadata"]["name"])
            present.add(key)
            self._service_objects[key] = dict(service)
            listeners = self._services.setdefault(key, {})
            for port in (service.get("spec") or {}).get("ports") or []:
                ident = (port.get("port"), port.get("name"))
                if ident not in listeners:
                    server = await asyncio.start_server(
                        functools.partial(self._proxy, key, port.get("port")), "127.0.0.1", 0)
                    listeners[ident] = (server, int(server.sockets[0].getsockname()[1]))
        for key in set(self._services) - present:
            for server, _port in self._services.pop(key).values():
                server.close()
            self._service_objects.pop(key, None)

    async def _proxy(self, key: tuple[str, str], port: int, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        service = self._service_objects.get(key)
        candidates = [] if service is None else service_endpoints(service, port, [
            (p.labels, p.plan.ports if p.plan else {}, p.ready, p) for p in self.pods.values()
            if p.namespace == key[0] and not p.terminating])
        if not candidates:
            writer.close()  # no ready endpoint: the connection is refused, as with no endpoints
            return
        pod, target = secrets.choice(candidates)
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(str(pod.sockets / str(target)))
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    if dst.can_write_eof():
                        dst.write_eof()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            writer.close()
            up_writer.close()


def _essence(status: Mapping[str, Any]) -> Any:
    """Status without the condition timestamps: what makes a write worth doing."""
    return {**status, "conditions": [{k: v for k, v in c.items() if not k.startswith("last")}
                                     for c in status.get("conditions") or []]}


class KubeletThread:
    """A `Kubelet` on a loop and thread of its own, for synchronous code and other loops."""

    def __init__(self, base_url: str, workdir: Path, **options: Any) -> None:
        self.kubelet = Kubelet(base_url, workdir, **options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kubelet-stand-in", daemon=True)

    def start(self) -> KubeletThread:
        self._thread.start()
        self.call(self.kubelet.start)
        return self

    def stop(self) -> None:
        async def everything() -> None:
            await self.kubelet.stop()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:  # connections still forwarded by the Services
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.call(everything, timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    def call(self, fn: Callable[[], Any], timeout: float = 10) -> Any:
        """`fn()` on the kubelet's loop (awaited if it returns an awaitable)."""
        async def run() -> Any:
            value = fn()
            if asyncio.iscoroutine(value):
                value = await value
            return value
        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def address(self, namespace: str, service: str, port: int | str) -> tuple[str, int]:
        return self.call(lambda: self.kubelet.address(namespace, service, port))  # type: ignore[no-any-return]

    def pods(self, namespace: str, deployment: str) -> list[Pod]:
        return self.call(lambda: list(self.kubelet.pods_of(namespace, deployment)))  # type: ignore[no-any-return]

    async def wait_address(self, namespace: str, service: str, port: int | str,
                           timeout: float = 15.0) -> tuple[str, int]:
        """`address()` once the Service is seen (async callers: the test's or demo's loop)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.address(namespace, service, port)
            except LookupError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

