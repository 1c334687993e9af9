"""kopf handlers for FleetTelemetryConfig: thin glue between the API and the pure policies.

Each handler gathers state, asks a policy in `fleetwire.operator.reconcile`, and writes the
answer (status conditions, events); the decisions live in the policies, where they are
tested without Kubernetes. Further concerns (certificate, server, vehicles) add handlers
here in the same shape: a `@kopf.on.create/update/resume` function calling a policy and
writing its condition through `write_conditions`, which merges with conditions other
handlers wrote in the same pass.

Loaded by `fleetwire operator` (`fleetwire.operator.main`), or by `kopf run -m
fleetwire.operator.handlers` for development.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import kopf

from fleetwire.operator import crd
from fleetwire.operator.reconcile import Reconciliation, reconcile

RESOURCE = (crd.GROUP, crd.VERSION, crd.PLURAL)
"""What the handlers watch: fleettelemetryconfigs.v1alpha1.fleetwire.io."""


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Keep kopf's bookkeeping under the project's own annotation prefix, not kopf's."""
    settings.persistence.finalizer = f"{crd.GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=crd.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=crd.GROUP, key="last-handled-configuration")


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster service account, else $KUBECONFIG: the same credentials the `kubernetes`
    client then uses for the objects the handlers create."""
    return kopf.login_via_client(**kwargs)


def write_conditions(patch: kopf.Patch, status: Mapping[str, Any], result: Reconciliation) -> None:
    """Put `result`'s conditions into the status patch, on top of what is already pending."""
    pending = patch.status.get("conditions")
    base = pending if pending is not None else status.get("conditions")
    patch.status.update(result.status_patch(base, dt.datetime.now(dt.UTC)))


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
def spec_valid(body: kopf.Body, spec: kopf.Spec, meta: kopf.Meta, status: kopf.Status, patch: kopf.Patch,
               logger: kopf.Logger, **_: Any) -> None:
    """Check the spec and say so in the SpecValid condition (and an event when it changes).

    An invalid spec is the user's to fix, so it is reported, not retried.
    """
    result = reconcile(dict(spec), dict(status), meta.get("generation"))
    write_conditions(patch, status, result)
    for event in result.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        (logger.warning if event.type == "Warning" else logger.info)("%s: %s", event.reason, event.message)
