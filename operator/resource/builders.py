"""The Kubernetes objects of one FleetTelemetryConfig, built by pure functions returning dicts.

The kopf layer only applies what these return, so what a resource turns into is tested
without a cluster. Every object carries an owner reference to the FleetTelemetryConfig,
so deleting it deletes them (Kubernetes' garbage collector does the work).

The server runs as a non-root user on unprivileged ports (vehicles 8443, status 8080,
metrics 9090); the vehicle Service maps the spec's port (443) to 8443. The TLS Secret is
mounted as a volume: Kubernetes replaces a mounted Secret's files in place and the
server reloads its certificate within `TLS_RELOAD_SECONDS`, so a renewal reaches the
running pods without a restart and connected vehicles stay connected. For that the pod
template must not change with the certificate: it names the Secret, never its content,
and its only checksum is of config.json, so a configuration change does roll the pods.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from fleetwire.operator.resource import crd
from fleetwire.operator.environment import OperatorEnvironment
from fleetwire.operator.resource.spec import AcmeCertificate, FleetTelemetrySpec, SecretCertificate, SecretKeyRef
from fleetwire.server.drain import DEFAULT_DRAIN_SECONDS, DRAIN_ENV, grace_period_seconds
from fleetwire.server.environment import parse_drain_seconds
from fleetwire.server.worker_count import memory_cap

__all__ = [
    "CONFIG_CHECKSUM_ANNOTATION",
    "METRICS_PORT",
    "Names",
    "Owner",
    "SERVER_PORT",
    "STATUS_PORT",
    "TLS_RELOAD_SECONDS",
    "VEHICLE_CA_KEY",
    "config_checksum",
    "config_map",
    "deployment",
    "drain_seconds",
    "http01_service",
    "http01_service_reason",
    "labels",
    "metrics_service",
    "owner_reference",
    "secret",
    "server_config",
    "server_objects",
    "server_workers",
    "tls_secret_name",
    "vehicle_service",
]

SERVER_PORT = 8443
STATUS_PORT = 8080
METRICS_PORT = 9090
TLS_RELOAD_SECONDS = 5
"""How often the server looks at its certificate files: a renewal is served within seconds."""

CONFIG_DIR = "/etc/fleetwire/config"
TLS_DIR = "/etc/fleetwire/tls"
VEHICLE_CA_DIR = "/etc/fleetwire/vehicle-ca"
# The Secret keys the backends' settings refer to: <SECRETS_DIR>/<secret>/<key>.
SECRETS_DIR = "/etc/fleetwire/secrets"
VEHICLE_CA_KEY = "ca.crt"
CONFIG_CHECKSUM_ANNOTATION = f"{crd.GROUP}/config-checksum"
_RUN_AS = 65532  # the image's numeric non-root user


@dataclass(frozen=True, slots=True)
class Owner:
    """The FleetTelemetryConfig the objects belong to."""

    name: str
    namespace: str
    uid: str

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Owner:
        meta = body["metadata"]
        return cls(str(meta["name"]), str(meta["namespace"]), str(meta["uid"]))


@dataclass(frozen=True, slots=True)
class Names:
    """Every object name derived from the resource's name, in one place."""

    base: str

    @property
    def tls_secret(self) -> str:
        return f"{self.base}-tls"

    @property
    def ca_secret(self) -> str:
        return f"{self.base}-ca"

    @property
    def account_secret(self) -> str:
        return f"{self.base}-acme-account"

    @property
    def config_map(self) -> str:
        return f"{self.base}-server-config"

    @property
    def server(self) -> str:
        """The Deployment and the vehicles' Service."""
        return f"{self.base}-server"

    @property
    def metrics_service(self) -> str:
        return f"{self.base}-server-metrics"

    @property
    def http01_service(self) -> str:
        return f"{self.base}-http01-solver"

    @property
    def vehicle_ca(self) -> str:
        """The ConfigMap the user provides: the CAs that issue the vehicles' client certificates."""
        return f"{self.base}-vehicle-ca"


def owner_reference(owner: Owner) -> dict[str, Any]:
    """A controller reference, without blockOwnerDeletion: setting that needs update rights on
    the owner's finalizers, which the operator does not otherwise need."""
    return {"apiVersion": f"{crd.GROUP}/{crd.VERSION}", "kind": crd.KIND, "name": owner.name,
            "uid": owner.uid, "controller": True}


def labels(owner: Owner, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "fleetwire",
        "app.kubernetes.io/instance": owner.name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "fleetwire",
        "app.kubernetes.io/managed-by": "fleetwire-operator",
    }


def _selector(owner: Owner) -> dict[str, str]:
    return {key: value for key, value in labels(owner, "server").items()
            if key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component")}


def _metadata(owner: Owner, name: str, component: str, annotations: Mapping[str, str] | None = None,
              *, owned: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": owner.namespace, "labels": labels(owner, component)}
    if owned:
        meta["ownerReferences"] = [owner_reference(owner)]
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def secret(owner: Owner, name: str, data: Mapping[str, bytes], *, type_: str = "Opaque",
           component: str = "certificate", annotations: Mapping[str, str] | None = None,
           owned: bool = True) -> dict[str, Any]:
    """A Secret with `data` base64-encoded, as the API stores it; `owned=False` for one the user
    named and may share, which must outlive this resource."""
    return {"apiVersion": "v1", "kind": "Secret", "type": type_,
            "metadata": _metadata(owner, name, component, annotations, owned=owned),
            "data": {key: base64.b64encode(value).decode("ascii") for key, value in sorted(data.items())}}


# -- the server -------------------------------------------------------------------------


def server_config(spec: FleetTelemetrySpec) -> dict[str, Any]:
    """The server's config.json (the reference format) for `spec.server`.

    Certificate paths point at the mounted Secret, the vehicles' CAs at the mounted
    ConfigMap; dispatcher settings pass through unchanged, as the server reads them.
    """
    server = spec.server
    config: dict[str, Any] = {
        "host": "0.0.0.0",
        "port": SERVER_PORT,
        "status_port": STATUS_PORT,
        "tls": {"server_cert": f"{TLS_DIR}/tls.crt", "server_key": f"{TLS_DIR}/tls.key",
                "ca_file": f"{VEHICLE_CA_DIR}/{VEHICLE_CA_KEY}", "reload_interval_seconds": TLS_RELOAD_SECONDS},
        "records": {record_type: list(names) for record_type, names in server.records.items()},
        "monitoring": {"prometheus_metrics_port": METRICS_PORT},
    }
    if server.namespace:
        config["namespace"] = server.namespace
    if server.reliable_ack_sources:
        config["reliable_ack_sources"] = dict(server.reliable_ack_sources)
    for name in sorted(server.dispatchers):
        config[name] = _with_secret_files(server.dispatchers[name])
    if server.rate_limit is not None:
        limit = server.rate_limit
        rate: dict[str, Any] = {"enabled": limit.enabled}
        if limit.message_limit is not None:
            rate["message_limit"] = limit.message_limit
        if limit.message_interval_time is not None:
            rate["message_interval_time"] = limit.message_interval_time
        config["rate_limit"] = rate
    if server.vins_allow or server.vins_deny:
        config["vins"] = {"allow": list(server.vins_allow), "deny": list(server.vins_deny)}
    return config


def secret_file(ref: SecretKeyRef) -> str:
    """Where the server pod finds one key of a Secret the spec refers to."""
    return f"{SECRETS_DIR}/{ref.name}/{ref.key}"


def _with_secret_files(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A plain, detached copy of a backend's settings, each credential replaced by the
    `{"file": path}` of its mounted Secret key, which the server reads at start."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, SecretKeyRef):
            out[key] = {"file": secret_file(value)}
        elif isinstance(value, Mapping):
            out[key] = _with_secret_files(value)
        else:
            out[key] = json.loads(json.dumps(value))
    return out


def _secret_refs(settings: Mapping[str, Any]) -> list[SecretKeyRef]:
    refs: list[SecretKeyRef] = []
    for value in settings.values():
        if isinstance(value, SecretKeyRef):
            refs.append(value)
        elif isinstance(value, Mapping):
            refs.extend(_secret_refs(value))
    return refs


def secret_volumes(spec: FleetTelemetrySpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Volumes and mounts for the Secret keys the backends' settings name: each Secret once,
    with only the keys named, at `<SECRETS_DIR>/<secret>/<key>`. The kubelet mounts them;
    the operator never reads them."""
    keys: dict[str, set[str]] = {}
    for settings in spec.server.dispatchers.values():
        for ref in _secret_refs(settings):
            keys.setdefault(ref.name, set()).add(ref.key)
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    for index, name in enumerate(sorted(keys)):
        volume = f"credentials-{index}"
        items = [{"key": key, "path": key} for key in sorted(keys[name])]
        volumes.append({"name": volume, "secret": {"secretName": name, "items": items, "defaultMode": 0o440}})
        mounts.append({"name": volume, "mountPath": f"{SECRETS_DIR}/{name}", "readOnly": True})
    return volumes, mounts


def container_env(spec: FleetTelemetrySpec) -> list[dict[str, Any]]:
    """`spec.server.env` as the container's `env`: credentials by reference only."""
    env: list[dict[str, Any]] = []
    for var in spec.server.env:
        if var.secret is not None:
            env.append({"name": var.name,
                        "valueFrom": {"secretKeyRef": {"name": var.secret.name, "key": var.secret.key}}})
        else:
            env.append({"name": var.name, "value": var.value})
    return env


def config_checksum(config: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON: equal configs, equal checksums, whatever the key order."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def config_map(owner: Owner, config: Mapping[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": _metadata(owner, Names(owner.name).config_map, "server"),
            "data": {"config.json": json.dumps(config, indent=2, sort_keys=True) + "\n"}}


def drain_seconds(spec: FleetTelemetrySpec) -> float:
    """The server's drain budget: `FLEETWIRE_DRAIN_SECONDS` of `spec.server.env` if set
    and valid (else the server refuses to start, naming it), the server's default otherwise."""
    for var in spec.server.env:
        if var.name == DRAIN_ENV and var.secret is None:
            try:
                return parse_drain_seconds(var.value)
            except ValueError:
                break
    return DEFAULT_DRAIN_SECONDS


def server_workers(resources: Mapping[str, Any], *, one_process: bool = False) -> str:
    """`--workers` for the server container: its CPU limit rounded up ("1500m" → 2, "0.5" → 1),
    no more than its memory limit holds (`worker_count.memory_cap`: "256Mi" → 1), or `auto`
    with no CPU limit, which the server resolves to the CPUs and memory it may use there (its
    cgroup limits, else the node's CPUs, as an unlimited pod may use all).
    A quantity the API server would refuse also gives `auto`: the Deployment's apply reports it.
    `one_process`: the records go to a dispatcher only one process can hold (ZMQ binds its address)."""
    if one_process:
        return "1"
    limits = (resources.get("limits") or {}) if isinstance(resources, Mapping) else {}
    try:
        cpus = parse_quantity(limits["cpu"]) if limits.get("cpu") is not None else None
        memory = parse_quantity(limits["memory"]) if limits.get("memory") is not None else None
    except ValueError:
        return "auto"
    if cpus is None:
        return "auto"
    workers = max(1, math.ceil(cpus))
    return str(min(workers, memory_cap(float(memory))) if memory is not None else workers)


def _routes_to(spec: FleetTelemetrySpec, dispatcher: str) -> bool:
    return any(dispatcher in names for names in spec.server.records.values())


def deployment(owner: Owner, spec: FleetTelemetrySpec, config: Mapping[str, Any], *, image: str,
               tls_secret: str) -> dict[str, Any]:
    """The server's Deployment: hardened pod, TLS Secret and config mounted read-only.

    Readiness asks `/readyz`, which turns 503 once a drain began; liveness asks `/healthz`,
    which answers while the process runs, so a draining pod is never restarted. The grace
    period outlasts the server's drain budget: SIGKILL never cuts off the acks in flight."""
    names = Names(owner.name)
    probe = {"httpGet": {"path": "/healthz", "port": "status"}, "periodSeconds": 10, "timeoutSeconds": 3}
    readiness = {**probe, "httpGet": {"path": "/readyz", "port": "status"}}
    container: dict[str, Any] = {
        "name": "server",
        "image": spec.server.image or image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["serve", "--config", f"{CONFIG_DIR}/config.json",
                 "--workers", server_workers(spec.server.resources, one_process=_routes_to(spec, "zmq"))],
        "ports": [
            {"name": "vehicles", "containerPort": SERVER_PORT, "protocol": "TCP"},
            {"name": "status", "containerPort": STATUS_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": readiness,
        "livenessProbe": {**probe, "initialDelaySeconds": 10, "failureThreshold": 3},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "tls", "mountPath": TLS_DIR, "readOnly": True},
            {"name": "vehicle-ca", "mountPath": VEHICLE_CA_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    credential_volumes, credential_mounts = secret_volumes(spec)
    container["volumeMounts"].extend(credential_mounts)
    env = container_env(spec)
    if env:
        container["env"] = env
    if spec.server.resources:
        container["resources"] = json.loads(json.dumps(dict(spec.server.resources)))
    pod_labels = labels(owner, "server")
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _metadata(owner, names.server, "server"),
        "spec": {
            "replicas": spec.server.replicas,
            "selector": {"matchLabels": _selector(owner)},
            "template": {
                "metadata": {"labels": pod_labels,
                             "annotations": {CONFIG_CHECKSUM_ANNOTATION: config_checksum(config)}},
                "spec": {
                    "automountServiceAccountToken": False,  # the server never calls the API
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": grace_period_seconds(drain_seconds(spec)),
                    "securityContext": {"runAsNonRoot": True, "runAsUser": _RUN_AS, "runAsGroup": _RUN_AS,
                                        "fsGroup": _RUN_AS, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                    "volumes": [
                        {"name": "config", "configMap": {"name": names.config_map}},
                        {"name": "tls", "secret": {"secretName": tls_secret, "defaultMode": 0o440}},
                        {"name": "vehicle-ca", "configMap": {"name": names.vehicle_ca}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                        *credential_volumes,
                    ],
                },
            },
        },
    }


def vehicle_service(owner: Owner, spec: FleetTelemetrySpec) -> dict[str, Any]:
    """Where vehicles connect: the spec's port (443) to the server's 8443."""
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": _metadata(owner, Names(owner.name).server, "server"),
            "spec": {"type": spec.server.service_type, "selector": _selector(owner),
                     "ports": [{"name": "vehicles", "port": spec.port, "targetPort": "vehicles", "protocol": "TCP"}]}}


def metrics_service(owner: Owner) -> dict[str, Any]:
    """Prometheus scrapes here, inside the cluster only."""
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": _metadata(owner, Names(owner.name).metrics_service, "server"),
            "spec": {"type": "ClusterIP", "selector": _selector(owner),
                     "ports": [{"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"}]}}


def http01_service_reason(spec: FleetTelemetrySpec, namespace: str, env: OperatorEnvironment) -> tuple[bool, str]:
    """Whether this resource needs an HTTP-01 solver Service, and why (or why not).

    The CA fetches the challenge from port 80 of the hostname; the operator answers it on
    `env.http01_port`. A Service selects pods of its own namespace only, so one in a
    namespace other than the operator's would reach nothing.
    """
    certificate = spec.certificate
    if not isinstance(certificate, AcmeCertificate) or certificate.challenge != "http01":
        return False, "no HTTP-01 challenge in use"
    if not env.http01_service:
        return False, "HTTP-01 is served through a Service the installation provides"
    if env.namespace is not None and env.namespace != namespace:
        return False, (f"the operator runs in namespace {env.namespace}, so a Service in {namespace} cannot "
                       "reach it; use the Service the installation provides, or DNS-01")
    return True, f"the CA validates HTTP-01 on port 80, answered by the operator on port {env.http01_port}"


def http01_service(owner: Owner, env: OperatorEnvironment) -> dict[str, Any]:
    """Port 80 for the CA's HTTP-01 requests, forwarded to the operator's responder."""
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": _metadata(owner, Names(owner.name).http01_service, "acme-http01"),
            "spec": {"type": "LoadBalancer", "selector": dict(env.operator_selector),
                     "ports": [{"name": "http", "port": 80, "targetPort": env.http01_port, "protocol": "TCP"}]}}


def tls_secret_name(owner: Owner, spec: FleetTelemetrySpec) -> str:
    """The Secret the server mounts: the user's in secretRef mode, the operator's otherwise."""
    if isinstance(spec.certificate, SecretCertificate):
        return spec.certificate.secret_name
    return Names(owner.name).tls_secret


def server_objects(owner: Owner, spec: FleetTelemetrySpec, env: OperatorEnvironment) -> list[dict[str, Any]]:
    """ConfigMap, Deployment, vehicle and metrics Services, in the order they are applied."""
    config = server_config(spec)
    return [
        config_map(owner, config),
        deployment(owner, spec, config, image=env.image, tls_secret=tls_secret_name(owner, spec)),
        vehicle_service(owner, spec),
        metrics_service(owner),
    ]
