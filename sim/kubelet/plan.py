"""The plan of a pod: what the kubelet resolves before it starts a container (command, env,
user, ports, mounts, volumes, probes), or why it waits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fleetwire.sim.kubelet.images import (
    _LOCAL_PATH,
    IMAGES,
    LOCAL_COMMANDS,
    ImageConfig,
    image_config,
)
from fleetwire.sim.kubelet.model import (
    Mount,
    PodPlan,
    Probe,
    Waiting,
    _decoded,
    template_hash,
)
from fleetwire.sim.kubelet.volumes import volume_files


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
