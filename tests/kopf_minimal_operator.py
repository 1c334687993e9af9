"""A minimal kopf operator for the harness tests.

On a FleetTelemetryConfig it creates an owned ConfigMap holding the hostname (through
the `kubernetes` client, configured by kopf's login), writes its name into status and
posts a Kubernetes event;
it follows hostname changes and logs deletions (which makes kopf add a finalizer).
"""

from __future__ import annotations

from typing import Any

import kopf
import kubernetes

from fleetwire.operator.resource import crd


def _config_map_name(name: str) -> str:
    return f"{name}-hostname"


@kopf.on.create(crd.GROUP, crd.VERSION, crd.PLURAL)
def created(body: kopf.Body, name: str, namespace: str, spec: kopf.Spec, patch: kopf.Patch,
            logger: kopf.Logger, **_: Any) -> None:
    config_map: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": _config_map_name(name), "labels": {"app.kubernetes.io/managed-by": "harness"}},
        "data": {"hostname": spec.get("hostname", "")},
    }
    kopf.adopt(config_map, owner=body)
    kubernetes.client.CoreV1Api().create_namespaced_config_map(namespace, config_map)
    patch.status["configMap"] = config_map["metadata"]["name"]
    kopf.info(body, reason="ConfigMapCreated", message=f"created config map {config_map['metadata']['name']}")
    logger.info("created config map %s", config_map["metadata"]["name"])


@kopf.on.update(crd.GROUP, crd.VERSION, crd.PLURAL, field="spec.hostname")
def hostname_changed(name: str, namespace: str, new: str, **_: Any) -> None:
    kubernetes.client.CoreV1Api().patch_namespaced_config_map(
        _config_map_name(name), namespace, {"data": {"hostname": new}})


@kopf.on.delete(crd.GROUP, crd.VERSION, crd.PLURAL)
def deleted(name: str, logger: kopf.Logger, **_: Any) -> None:
    logger.info("letting %s go", name)
