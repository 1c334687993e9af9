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

from fleetwire.sim.kubelet.decisions import (
    PodView,
    ProbeState,
    Rollout,
    deployment_status,
    restart_delay,
    rollout,
    service_endpoints,
)
from fleetwire.sim.kubelet.images import (
    IMAGES,
    LOCAL_COMMANDS,
    ImageConfig,
    image_config,
)
from fleetwire.sim.kubelet.model import PodPlan, Probe, Waiting, template_hash
from fleetwire.sim.kubelet.node import Kubelet, KubeletThread
from fleetwire.sim.kubelet.plan import plan_pod
from fleetwire.sim.kubelet.processes import Pod
from fleetwire.sim.kubelet.sandbox import sandbox_args
from fleetwire.sim.kubelet.volumes import volume_files, write_volume

__all__ = [
    "IMAGES",
    "LOCAL_COMMANDS",
    "ImageConfig",
    "Kubelet",
    "KubeletThread",
    "Pod",
    "PodPlan",
    "PodView",
    "Probe",
    "ProbeState",
    "Rollout",
    "Waiting",
    "deployment_status",
    "image_config",
    "plan_pod",
    "restart_delay",
    "rollout",
    "sandbox_args",
    "service_endpoints",
    "template_hash",
    "volume_files",
    "write_volume",
]
