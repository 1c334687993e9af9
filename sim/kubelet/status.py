"""Status written back: Pod objects for `kubectl get pods`, and what makes a write worth doing."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from fleetwire.sim.kubelet.processes import Pod


def _essence(status: Mapping[str, Any]) -> Any:
    """Status without the condition timestamps: what makes a write worth doing."""
    return {**status, "conditions": [{k: v for k, v in c.items() if not k.startswith("last")}
                                     for c in status.get("conditions") or []]}


class _Status:
    """Mixin of `Kubelet`: Pod objects written to the API."""


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
