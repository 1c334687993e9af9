"""A Kubernetes API on loopback: kmock's emulator, extended where kopf, kubectl and the operator need it.

No real API server can be installed on the machines fleetwire is developed and demonstrated
on, so the operator's tests and `fleetwire demo` run against kmock's `KubernetesEmulator`
(an in-memory Kubernetes-shaped store over HTTP, by kopf's author), served on a free
loopback port from a thread of its own (`KubeApi`), with a kubeconfig pointing at it. kmock
is an optional dependency (the `demo` and `test` extras): the operator itself never needs it.

kmock 0.8 gaps met while building this emulator, and how it covers each:

1. Discovery names the core group's version "/v1", so kubectl cannot map core kinds
   ("no matches for kind ConfigMap in version v1"); resources it was not told about have
   no kind, scope or verbs, and kopf waits forever without v1/namespaces and v1/events.
   → `KubeEmulator._serve_version` is rewritten; `STANDARD_RESOURCES` declares the core,
   apps, coordination and apiextensions resources with kind, scope, verbs, subresources.
2. A CustomResourceDefinition created through the API does not make its resource
   discoverable. → creating, changing or deleting a CRD (re)declares its served versions,
   so `kubectl apply -f crd.yaml` then a custom object works, and kopf's CRD scanning
   finds new resources as on a real cluster.
3. No uid, resourceVersion, generation or creationTimestamp; the URL's namespace is not
   copied into metadata (so namespaced watches miss the object); generateName is
   ignored (every second kopf event collides with 409). → stamped on create: uuid4 uid,
   a global revision counter, generation 1, RFC 3339 timestamp, namespace, generated
   names, apiVersion/kind; resourceVersion bumps on every change, generation when
   anything but metadata and status changes (and when deletion starts).
4. Create answers 200. → 201.
5. PUT is not supported. → replace, keeping status on the main resource and everything
   but status on /status, as the API server does.
6. PATCH is always a recursive merge: a JSON patch (list body) fails, apply-patch on a
   missing object is 404, no-op patches still produce a MODIFIED event, and a
   `metadata.resourceVersion` precondition is ignored. → JSON patches are applied with
   `jsonpatch`; apply-patch creates when absent; unchanged objects answer without an
   event or a new resourceVersion; a stale resourceVersion (PATCH or PUT) is 409.
7. The status subresource is not separated: a PATCH of the main resource writes status
   and a PATCH of /status writes spec. → split as the API server does for resources that
   declare the status subresource (so an operator that writes status the wrong way fails
   here as it would on a cluster); status sent on create is dropped likewise.
8. DELETE of an object with finalizers sets deletionTimestamp without a new
   resourceVersion. → done as an update (new resourceVersion and generation).
9. No garbage collection. → objects whose every ownerReference points to a gone uid are
   deleted (or marked for deletion if they hold finalizers), in cascade.
10. Lists lack `kind`/`apiVersion` and a real resourceVersion ("Object 'Kind' is missing"
    in kubectl). → added.
11. Watches replay every object whatever the resourceVersion, lose the events between
    that snapshot and the bus subscription, and ignore timeoutSeconds. → snapshot and
    subscription are taken atomically under the store's lock; with a resourceVersion
    only newer objects are replayed; timeoutSeconds ends the stream (kopf reconnects, as
    against a real server).
12. labelSelector and fieldSelector are ignored. → applied to lists and watches
    (equality, inequality, existence, in/notin; field selectors on any dotted path).
13. Create accepts resources nobody declared. → 404, as for a CRD not installed.
14. `kmock.Server` replaces aiohttp's resolver process-wide (a hazard with other aiohttp
    users in the same test), and the emulator serves from the test's event loop, which
    `KopfRunner.__exit__` blocks while joining kopf's thread. → served with aiohttp's
    low-level server from a dedicated thread and loop; the test's loop stays free.

15. No admission. → a custom resource is pruned, defaulted and validated against its CRD's
    `openAPIV3Schema`, CEL rules included, on create, replace and every patch
    (`fleetwire.sim.admission`); a refusal is the API server's 422 Status (`reason:
    Invalid`, `details.causes[].field`). `fieldValidation=Strict` turns pruning into
    refusal. Built-in objects (Events, ConfigMaps, Secrets, Services, Pods, Deployments,
    ...) are checked against the official schemas of the oldest Kubernetes the chart
    supports and the newest one kubernetes-validate knows (`builtin_versions`), strict.

16. No RBAC. → with a `policy` (`fleetwire.sim.rbac.Policy`, e.g. from the chart's rendered
    Role/ClusterRole and bindings), every request from the operator's user agents is
    authorized as that ServiceAccount (verb, group, resource/subresource, namespace; a
    server-side apply that creates needs create too); without a grant it is a 403 Status,
    and recorded in `denials`.

The CRDs it serves are data, as on a real API server: an emulator knows only the standard
resources until CustomResourceDefinitions are created (`KubeApi.install_crds`, or `kubectl
apply`); the callers pass the operator's (`tests/kube.py`, `fleetwire demo`), so nothing here
imports the operator.

Modules: `resources` (discovery's view of a resource), `objects` (merge patches, conditions),
`selectors`, `guards` (RBAC and admission wiring), `writes`, `reads` (discovery, lists,
watches), `emulator` (the class composing them), `server` (`KubeApi`: the emulator on a port,
in a thread, with a synchronous client).

Still not emulated (tests must not rely on them): authentication (identity is the user
agent), namespace existence, strategic-merge semantics (lists are
replaced whole, not merged by key), server-side-apply field ownership, delete-collection,
deleting a CRD's objects with it,
foreground/orphan deletion, chunked lists (limit/continue), watch bookmarks, the
aggregated discovery format (clients fall back), Table output for kubectl (plain lists).
"""

from fleetwire.sim.kube_emulator.emulator import KubeEmulator
from fleetwire.sim.kube_emulator.guards import OPERATOR_USER_AGENTS
from fleetwire.sim.kube_emulator.objects import condition, merge_diff, merge_patch
from fleetwire.sim.kube_emulator.resources import (
    ALL_VERBS,
    CONFIGMAPS,
    CRDS,
    DEPLOYMENTS,
    EVENTS,
    LEASES,
    NAMESPACES,
    PODS,
    SECRETS,
    SERVICE_ACCOUNTS,
    SERVICES,
    STANDARD_RESOURCES,
    Resource,
    find_in_discovery,
)
from fleetwire.sim.kube_emulator.selectors import Selector
from fleetwire.sim.kube_emulator.server import (
    KubeApi,
    KubeApiError,
    _api_error,
    write_kubeconfig,
)

__all__ = [
    "ALL_VERBS",
    "CONFIGMAPS",
    "CRDS",
    "DEPLOYMENTS",
    "EVENTS",
    "LEASES",
    "NAMESPACES",
    "OPERATOR_USER_AGENTS",
    "PODS",
    "SECRETS",
    "SERVICES",
    "SERVICE_ACCOUNTS",
    "STANDARD_RESOURCES",
    "KubeApi",
    "KubeApiError",
    "KubeEmulator",
    "Resource",
    "Selector",
    "_api_error",
    "condition",
    "find_in_discovery",
    "merge_diff",
    "merge_patch",
    "write_kubeconfig",
]
