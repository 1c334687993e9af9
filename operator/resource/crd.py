"""The FleetTelemetryConfig custom resource definition, built in one place.

Everything that names the resource (group, version, plural, kind: `crd_names`) and its
schema (`crd_schema`) is reached from here, so the chart's YAML (`scripts/render_crd.py`), the kopf handlers and the tests can
never disagree. The schema refuses what the API server can check on its own (types,
ranges, patterns, one certificate mode); `fleetwire.operator.resource.spec` repeats those checks
in Python and adds what a schema cannot express (the closest catalog name to a misspelt
field, which certificate mode was given twice), so a cluster without schema validation
still gets an error a user can act on. Field names and per-field rules come from the
field catalog, so the CRD follows the wire schema whenever it grows.

Kopf's peering resources (`KopfPeering`, `ClusterKopfPeering`) are built here too: two
operator replicas coordinate through them, and the chart installs them with ours.
"""
from __future__ import annotations

from typing import Any

from fleetwire.operator.resource.crd_names import (
    ALERT_TYPES_HINT,
    CERTIFICATE_MODES,
    CHALLENGES,
    DEFAULT_ACME_DIRECTORY,
    DELIVERY_POLICIES,
    DISPATCHERS,
    DNS01_PROVIDERS,
    DURATION_PATTERN,
    FIELD_NAME_PATTERN,
    FLEET_REGIONS,
    GROUP,
    HOSTNAME_PATTERN,
    HTTPS_URL_PATTERN,
    KIND,
    PLURAL,
    RECORD_TYPES,
    SERVICE_TYPES,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    VIN_PATTERN,
)
from fleetwire.operator.resource.crd_schema import CREDENTIAL_KEYS, spec_schema, status_schema

__all__ = [
    "CREDENTIAL_KEYS",
    "FIELD_NAME_PATTERN",
    "HTTPS_URL_PATTERN",
    "ALERT_TYPES_HINT",
    "CERTIFICATE_MODES",
    "CHALLENGES",
    "DEFAULT_ACME_DIRECTORY",
    "DELIVERY_POLICIES",
    "DISPATCHERS",
    "DNS01_PROVIDERS",
    "FLEET_REGIONS",
    "DURATION_PATTERN",
    "GROUP",
    "HOSTNAME_PATTERN",
    "KIND",
    "PLURAL",
    "RECORD_TYPES",
    "SERVICE_TYPES",
    "SHORT_NAMES",
    "SINGULAR",
    "VERSION",
    "VIN_PATTERN",
    "build_crd",
    "build_peering_crds",
    "crd_name",
]


def crd_name() -> str:
    """`<plural>.<group>`, the name the API server requires for the definition."""
    return f"{PLURAL}.{GROUP}"


def build_crd() -> dict[str, Any]:
    """The `apiextensions.k8s.io/v1` CustomResourceDefinition of FleetTelemetryConfig."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": crd_name(), "labels": {"app.kubernetes.io/part-of": "fleetwire"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"kind": KIND, "listKind": f"{KIND}List", "plural": PLURAL, "singular": SINGULAR,
                      "shortNames": list(SHORT_NAMES), "categories": ["fleetwire"]},
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Hostname", "type": "string", "jsonPath": ".spec.hostname"},
                    {"name": "Cert Expiry", "type": "date", "jsonPath": ".status.certificate.notAfter"},
                    {"name": "Ready Vehicles", "type": "integer", "jsonPath": ".status.vehicles.applied"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": "Streams a fleet's telemetry to a self-hosted server.",
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": spec_schema(),
                        "status": status_schema(),
                    },
                    "required": ["spec"],
                }},
            }],
        },
    }


def build_peering_crds() -> list[dict[str, Any]]:
    """Kopf's `ClusterKopfPeering` and `KopfPeering` definitions (group kopf.dev).

    Replicas of the operator write keep-alives into the status of a peering object; the
    one with the highest priority works, the others pause until it is gone.
    """
    def peering(kind: str, plural: str, scope: str) -> dict[str, Any]:
        return {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.kopf.dev"},
            "spec": {
                "scope": scope,
                "group": "kopf.dev",
                "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
                "versions": [{
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {
                        "type": "object",
                        "properties": {"status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                    }},
                }],
            },
        }

    return [
        peering("ClusterKopfPeering", "clusterkopfpeerings", "Cluster"),
        peering("KopfPeering", "kopfpeerings", "Namespaced"),
    ]
