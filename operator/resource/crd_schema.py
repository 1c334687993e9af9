"""The OpenAPI schema of a FleetTelemetryConfig's `spec` and `status` (`crd.build_crd` wraps it).

Field names and per-field rules come from the field catalog; record types and dispatchers
from the server (`crd_names`), so the schema follows the wire schema and the server.
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
    FLEET_REGIONS,
    HOSTNAME_PATTERN,
    HTTPS_URL_PATTERN,
    SERVICE_TYPES,
    VIN_PATTERN,
)
from fleetwire.proto import catalog

__all__ = ["CREDENTIAL_KEYS", "spec_schema", "status_schema"]


def _string(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


def _integer(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "integer", "description": description, **extra}


def _object(description: str, properties: dict[str, Any], required: list[str] | None = None,
            **extra: Any) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "object", "description": description, "properties": properties}
    if required:
        node["required"] = required
    node.update(extra)
    return node


def _free_object(description: str) -> dict[str, Any]:
    return {"type": "object", "description": description, "x-kubernetes-preserve-unknown-fields": True}


def _secret_ref(description: str, default_key: str | None = None) -> dict[str, Any]:
    properties: dict[str, Any] = {"name": _string("Secret name, in the resource's namespace.", minLength=1)}
    if default_key is not None:
        properties["key"] = _string("Key inside the Secret.", minLength=1, default=default_key)
    return _object(description, properties, required=["name"])


def _certificate_schema() -> dict[str, Any]:
    dns01 = _object(
        "DNS-01 validation: a TXT record is written through the provider's API.",
        {
            "provider": _string("DNS provider.", enum=list(DNS01_PROVIDERS)),
            "zone": _string("The DNS zone holding the hostname, e.g. example.com.", minLength=1),
            "apiTokenSecretRef": _secret_ref("Secret holding the provider's API token.", default_key="api-token"),
        },
        required=["provider", "zone", "apiTokenSecretRef"],
    )
    acme = _object(
        "Issue and renew through ACME (Let's Encrypt or any RFC 8555 CA). The `ca` sent to the "
        "vehicles is the issued chain completed with `rootCertificates`.",
        {
            "directoryUrl": _string("ACME directory URL.", default=DEFAULT_ACME_DIRECTORY,
                                    pattern=HTTPS_URL_PATTERN),
            "email": _string("Account contact e-mail (expiry notices).", pattern=r"^[^@\s]+@[^@\s]+$"),
            "challenge": _string("Validation method.", enum=list(CHALLENGES), default="http01"),
            "dns01": dns01,
            "renewBefore": _string(
                "Renew this long before expiry, e.g. 720h. Default: once two thirds of the "
                "certificate's lifetime have passed.", pattern=DURATION_PATTERN),
            "rootCertificates": _string(
                "PEM of the root(s) that complete the chain in the vehicles' `ca`."),
            "accountSecretName": _string("Secret that keeps the ACME account key (created if absent).",
                                         minLength=1),
        },
        **{"x-kubernetes-validations": [{
            "rule": "self.challenge != 'dns01' || has(self.dns01)",
            "message": "challenge dns01 needs the dns01 settings",
        }]},
    )
    secret_ref = _object(
        "Use a kubernetes.io/tls Secret managed elsewhere (e.g. by cert-manager); its ca.crt, "
        "when present, completes the vehicles' `ca`.",
        {"name": _string("Secret name, in the resource's namespace.", minLength=1)},
        required=["name"],
    )
    private_ca = _object(
        "Run a private CA: its long-lived root is the vehicles' `ca`, so renewing the leaf "
        "never forces a new configuration onto the vehicles.",
        {
            "validityDays": _integer("Lifetime of the CA certificate.", minimum=1, default=3650),
            "leafValidityDays": _integer("Lifetime of the server certificate.", minimum=1, default=365),
        },
        **{"x-kubernetes-validations": [{
            "rule": "self.leafValidityDays <= self.validityDays",
            "message": "leafValidityDays must not exceed validityDays",
        }]},
    )
    rotation = _object(
        "How a certificate from a chain the vehicles' `ca` would refuse (a new root, another CA) "
        "replaces the current one: staged, the vehicles sent a `ca` accepting both, promoted once "
        "every vehicle holds it, or at the earlier of maxWait after staging and safetyMargin before "
        "the current certificate expires (the annotation fleetwire.io/promote-next promotes at once).",
        {
            "maxWait": _string("Longest wait for the vehicles, e.g. 72h.", pattern=DURATION_PATTERN,
                               default="72h"),
            "safetyMargin": _string("Promote at the latest this long before the current certificate "
                                    "expires, e.g. 12h.", pattern=DURATION_PATTERN, default="12h"),
        },
    )
    return _object(
        "Where the server certificate comes from: exactly one of acme, secretRef, privateCA "
        "(and how a rotation is staged: rotation).",
        {"acme": acme, "secretRef": secret_ref, "privateCA": private_ca, "rotation": rotation},
        minProperties=1,
        maxProperties=2,
        oneOf=[{"required": [mode]} for mode in CERTIFICATE_MODES],
    )


# Credentials each backend's settings may hold: the API server refuses them written in place
# (they would sit in the resource and the server's ConfigMap); a {secretKeyRef} is required.
CREDENTIAL_KEYS: dict[str, tuple[str, ...]] = {
    "mqtt": ("password",),
    "redis": ("password",),
    "nats": ("password", "token"),
    "kafka": ("sasl.password", "ssl.key.password", "ssl.keystore.password", "ssl.key.pem",
              "sasl.oauthbearer.client.secret"),
}


def _credential_rule(key: str) -> dict[str, str]:
    value = f"self.{key}" if key.isidentifier() else f"self[{key!r}]"
    present = f"has(self.{key})" if key.isidentifier() else f"({key!r} in self)"
    return {
        "rule": f"!{present} || type({value}) != string || {value} == ''",
        "message": f"{key} is a credential: give {{secretKeyRef: {{name: <Secret>, key: <key>}}}}, "
                   "never the value itself",
    }


def _dispatcher_schema(name: str) -> dict[str, Any]:
    node = _free_object(f"Settings of the {name} dispatcher, as in the server's config.json; a value "
                        "may be {secretKeyRef: {name, key}}, mounted into the server pod as a file.")
    if name in CREDENTIAL_KEYS:
        node["x-kubernetes-validations"] = [_credential_rule(key) for key in CREDENTIAL_KEYS[name]]
    return node


def _env_schema() -> dict[str, Any]:
    secret_key_ref = _object("One key of a Secret in the resource's namespace.",
                             {"name": _string("Secret name.", minLength=1), "key": _string("Key.", minLength=1)},
                             required=["name", "key"])
    return {
        "type": "array",
        "description": "Environment of the server container, e.g. REDIS_PASSWORD or AWS_* for kinesis; "
                       "credentials only as valueFrom.secretKeyRef.",
        "items": _object("One variable.", {
            "name": _string("Variable name.", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$"),
            "value": {"type": "string", "description": "A plain value (not for credentials)."},
            "valueFrom": _object("Where the value comes from.", {"secretKeyRef": secret_key_ref},
                                 required=["secretKeyRef"]),
        }, required=["name"]),
    }


def _server_schema() -> dict[str, Any]:
    dispatchers = {name: _dispatcher_schema(name) for name in DISPATCHERS if name != "logger"}
    dispatchers["logger"] = _free_object("Settings of the logger dispatcher.")
    vin_list = {"type": "array", "items": _string("VIN.", pattern=VIN_PATTERN)}
    return _object(
        "The managed ingest server (Deployment and Service).",
        {
            "replicas": _integer("Server pods.", minimum=1, default=1),
            "image": _string("Server image; default: the operator's own version.", minLength=1),
            "resources": _free_object("Container resources (requests/limits)."),
            "serviceType": _string("How vehicles reach the server.", enum=list(SERVICE_TYPES),
                                   default="LoadBalancer"),
            "records": {
                "type": "object",
                "description": "Record type (V, alerts, errors, connectivity) → dispatcher names.",
                "additionalProperties": {"type": "array", "items": {"type": "string", "enum": list(DISPATCHERS)}},
            },
            "reliableAckSources": {
                "type": "object",
                "description": "Record type → the dispatcher whose delivery acknowledges to the vehicle "
                               "(a backend that stores records: not logger; not for connectivity).",
                "additionalProperties": {"type": "string", "enum": [d for d in DISPATCHERS if d != "logger"]},
                "x-kubernetes-validations": [{"rule": "!('connectivity' in self)",
                                              "message": "connectivity records are never acked"}],
            },
            **dispatchers,
            "namespace": _string("Prefix of topics and keys written by the dispatchers."),
            "rateLimit": _object(
                "Per-connection message rate limit.",
                {
                    "enabled": {"type": "boolean", "description": "Turn the limit on.", "default": False},
                    "messageLimit": _integer("Messages allowed per interval.", minimum=1),
                    "messageIntervalTime": {"type": "number", "description": "Interval in seconds.",
                                            "exclusiveMinimum": True, "minimum": 0},
                },
            ),
            "vins": _object("VINs the server accepts (deny wins; empty allow accepts all).",
                            {"allow": vin_list, "deny": vin_list}),
            "env": _env_schema(),
        },
    )


def _fleet_api_schema() -> dict[str, Any]:
    return _object(
        "How the operator reaches Tesla's Fleet API to configure the vehicles.",
        {
            "region": _string("Fleet API region.", enum=list(FLEET_REGIONS)),
            "baseUrl": _string("Fleet API base URL (instead of region), e.g. a local simulator.",
                               pattern=HTTPS_URL_PATTERN),
            "partnerCredentialsSecretRef": _secret_ref("Secret with client_id and client_secret."),
            "userTokenSecretRef": _secret_ref("Secret with refresh_token (and access_token, kept fresh)."),
            "signingKeySecretRef": _secret_ref("Secret with the app's P-256 private key (PEM) that signs "
                                               "configurations.", default_key="private-key.pem"),
            "proxyUrl": _string("tesla-http-proxy URL: it signs the configurations itself.",
                                pattern=HTTPS_URL_PATTERN),
        },
        required=["partnerCredentialsSecretRef", "userTokenSecretRef"],
        oneOf=[{"required": ["region"]}, {"required": ["baseUrl"]}],
        **{"x-kubernetes-validations": [{
            "rule": "has(self.signingKeySecretRef) || has(self.proxyUrl)",
            "message": "configurations must be signed: give signingKeySecretRef or proxyUrl",
        }]},
    )


def _fields_schema(field_config: dict[str, Any]) -> dict[str, Any]:
    """The `fields` map: names from the catalog, floors of `minimum_delta` where one applies.

    The names are checked by a CEL rule rather than by listing each as a property: a listed
    schema makes the API server drop an unknown name silently (or only warn), where the rule
    refuses it. `maxProperties` bounds the rule's cost, which the API server estimates.
    """
    names = [info.name for info in catalog.FIELDS if info.number != 0]
    rules: list[dict[str, str]] = [{
        "rule": "self.all(name, name in [" + ", ".join(f"'{name}'" for name in names) + "])",
        "message": "unknown field name: fields must be Field names of vehicle_data.proto "
                   "(the SpecValid condition names the closest one)",
    }]
    for name, floor in sorted(catalog.MINIMUM_DELTA_FLOORS.items()):
        rules.append({
            "rule": f"!('{name}' in self) || (has(self.{name}.minimum_delta) "
                    f"&& self.{name}.minimum_delta >= {float(floor)!r})",
            "message": f"{name} needs minimum_delta of at least {floor:g}",
        })
    newest = max((info.min_firmware for info in catalog.FIELDS if info.min_firmware), default=None)
    provisional = [info.number for info in catalog.FIELDS if info.provisional]
    notes = []
    if newest is not None:
        latest = [info.number for info in catalog.FIELDS if info.min_firmware == newest]
        notes.append(f"{min(latest)}-{max(latest)} need firmware {'.'.join(map(str, newest))}")
    if provisional:
        notes.append(f"{min(provisional)}-{max(provisional)} are provisional (numbers may change)")
    return {
        "type": "object",
        "description": "Field name (vehicle_data.proto Field enum) → how often to send it. A vehicle whose "
                       "firmware is older than a field's minimum never sends it (`fleetwire vehicles` lists "
                       f"them); {'; '.join(notes)}.",
        "additionalProperties": field_config,
        "maxProperties": len(names),
        "x-kubernetes-validations": rules,
    }


def spec_schema() -> dict[str, Any]:
    field_config = _object(
        "How often the vehicle sends this field.",
        {
            "interval_seconds": _integer("Send at most once per this many seconds.", minimum=1),
            "minimum_delta": {"type": "number", "minimum": 0,
                              "description": "Send only when the value moved this much (metres for Location)."},
            "resend_interval_seconds": _integer("Resend an unchanged value after this many seconds.", minimum=1),
        },
        required=["interval_seconds"],
    )
    return _object(
        "Desired telemetry setup: server certificate, server, and the configuration pushed to vehicles.",
        {
            "hostname": _string("Public DNS name of the server (in the vehicles' config and the certificate).",
                                pattern=HOSTNAME_PATTERN, maxLength=253),
            "port": _integer("Port vehicles connect to (an integer: a string port stops vehicles streaming).",
                             minimum=1, maximum=65535, default=443),
            "certificate": _certificate_schema(),
            "server": _server_schema(),
            "vehicles": {"type": "array", "description": "VINs to configure.",
                         "items": _string("VIN (17 characters).", pattern=VIN_PATTERN),
                         "x-kubernetes-list-type": "set"},
            "fields": _fields_schema(field_config),
            "alertTypes": {"type": "array", "description": f"Alert types to stream, e.g. {ALERT_TYPES_HINT}.",
                           "items": {"type": "string", "minLength": 1}, "x-kubernetes-list-type": "set"},
            "exp": _integer("Days until the pushed configuration expires on the vehicles.", minimum=1),
            "deliveryPolicy": _string("Resend until acknowledged (firmware 2025.2.6 or newer).",
                                      enum=list(DELIVERY_POLICIES)),
            "fleetApi": _fleet_api_schema(),
        },
        required=["hostname", "certificate"],
        **{"x-kubernetes-validations": [{
            "rule": "!has(self.vehicles) || size(self.vehicles) == 0 || has(self.fleetApi)",
            "message": "vehicles are configured through the Fleet API: give fleetApi",
        }]},
    )


def status_schema() -> dict[str, Any]:
    condition = _object(
        "A condition in the Kubernetes convention.",
        {
            "type": _string("Condition type, e.g. SpecValid."),
            "status": _string("True, False or Unknown.", enum=["True", "False", "Unknown"]),
            "reason": _string("CamelCase reason."),
            "message": _string("What happened, for a human."),
            "lastTransitionTime": _string("When status last changed.", format="date-time"),
            "observedGeneration": _integer("The generation this condition describes."),
        },
        required=["type", "status"],
    )
    return {
        "type": "object",
        "description": "Observed state, written by the operator.",
        "x-kubernetes-preserve-unknown-fields": True,
        "properties": {
            "observedGeneration": _integer("The spec generation last processed."),
            "conditions": {"type": "array", "items": condition,
                           "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
            "certificate": {
                "type": "object", "description": "The server certificate in use.",
                "x-kubernetes-preserve-unknown-fields": True,
                "properties": {"notAfter": _string("Expiry.", format="date-time"),
                               "notBefore": _string("Start of validity.", format="date-time"),
                               "next": {
                                   "type": "object",
                                   "description": "The staged certificate waiting for the vehicles' `ca`.",
                                   "x-kubernetes-preserve-unknown-fields": True,
                                   "properties": {
                                       "fingerprint": _string("Chain fingerprint of its `ca`."),
                                       "notAfter": _string("Its expiry.", format="date-time"),
                                       "stagedAt": _string("When it was staged.", format="date-time"),
                                       "promoteBy": _string("When it is promoted at the latest.",
                                                            format="date-time"),
                                   }}},
            },
            "vehicles": {
                "type": "object",
                "description": "Vehicle configuration progress; each vehicle's record is in the ConfigMaps listed "
                               "in `records` (`fleetwire vehicles <name>` prints them).",
                "x-kubernetes-preserve-unknown-fields": True,
                "properties": {
                    "desired": _integer("Vehicles to configure."),
                    "applied": _integer("Vehicles whose config is synced and equal to the desired one."),
                    "pending": _integer("Vehicles the desired config is still to be pushed to."),
                    "pushed": _integer("Vehicles the API accepted the config for, not synced yet."),
                    "skipped": _integer("Vehicles that cannot take the config (unpaired key, firmware, slots)."),
                    "failing": _integer("Applied, but the vehicle reports errors (TLS to the server, signature)."),
                    "fieldsTooNew": _integer(
                        "Vehicles taking the config whose firmware (from fleet_status) is too old to send some "
                        "of its fields: those fields never arrive until the vehicle updates "
                        "(`fleetwire vehicles <name>` lists them per vehicle)."),
                    "lastPush": _string("When a config was last pushed.", format="date-time"),
                    "caFingerprint": _string(
                        "Chain fingerprint of the `ca` the desired config carries "
                        "(the same value as status.certificate.chainFingerprint)."
                    ),
                    "records": {"type": "array", "items": {"type": "string"},
                                "description": "ConfigMaps holding the per-vehicle records."},
                },
            },
        },
    }
