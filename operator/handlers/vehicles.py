"""kopf glue for the vehicles: one daemon per FleetTelemetryConfig runs its `VehicleReconciler`.

The daemon reads its inputs at every pass (the parsed spec, the chain and `ca` from the
server's TLS Secret and from a staged certificate's `<tls>-next`, the Fleet API credentials
from the Secrets `spec.fleetApi` names), runs a pass, and writes `status.vehicles` (counts
per state, `lastPush`, `caFingerprint`, the ConfigMaps holding the per-vehicle records, and
while a certificate is staged `next`: how many vehicles hold a `ca` accepting it, which its
promotion waits for) and the `VehiclesConfigured` condition. While staged, the `ca` pushed
holds both chains' certificates. It sleeps until the reconciler has something due, at most
`ca_check_seconds` (so a TLS Secret managed elsewhere is re-read often), and is woken at
once by a watch on the TLS Secrets the operator writes (a vehicle whose `ca` would refuse a
new chain is pushed immediately) and by spec changes.

Secrets, as the operator reads them:

* `partnerCredentialsSecretRef`: `client_id`, `client_secret`; optionally `auth_url` (the
  token endpoint, for a simulator) and `proxy-ca.crt` (trusts a tesla-http-proxy's TLS).
* `userTokenSecretRef`: `refresh_token`, and `access_token` / `expires_at` which the
  operator keeps fresh. A refresh token works once: the new pair is written back to this
  Secret before the new access token is used (`SecretTokenStore`).
* `signingKeySecretRef`: the app's P-256 private key (PEM) that signs configurations.

Per-vehicle records live in ConfigMaps `<name>-vehicles-<n>` (VIN → JSON), owned by the
resource so they go with it; `fleetwire vehicles <name>` prints them. Tokens and keys never
reach a log line, an event or the status.

`register()` adds these handlers to a kopf registry; `fleetwire.operator.handlers.resource` calls it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fleetwire.operator.resource import builders, crd
from fleetwire.operator.resource.builders import Names, Owner
from fleetwire.operator.policies.certificates import CertificateProblem, check, material_from_secret
from fleetwire.operator.reconcilers.vehicle_pass import Inputs, NotReady, PassResult
from fleetwire.operator.environment import VehicleSettings as Settings
from fleetwire.operator.reconcilers.vehicles import VehicleReconciler
from fleetwire.operator.clients.fleetapi import AUTH_URL, FleetApiClient
from fleetwire.operator.clients.kube import KubeError, KubernetesApi, load_configuration
from fleetwire.operator.clients.kube import secret_value as _decoded
from fleetwire.operator.stores.configmap_records import ConfigMapRecordStore
from fleetwire.operator.stores.secret_tokens import SecretTokenStore
from fleetwire.operator.policies.conditions import Condition
from fleetwire.operator.resource.spec import FleetTelemetrySpec, SpecError
from fleetwire.operator.environment import OperatorEnvironment, from_env
from fleetwire.operator.handlers.status import write_status
from fleetwire.operator.policies.conditions import VEHICLES_OWNED
from fleetwire.operator.resource.spec_cache import parse_once
from fleetwire.operator.policies.rotation import next_secret_name
from fleetwire.operator.policies.vehicles import CA_REFUSED, VEHICLES_CONFIGURED, ca_fingerprint, ca_union

__all__ = ["VehicleHandlers", "register"]

RESOURCE = (crd.GROUP, crd.VERSION, crd.PLURAL)
CERTIFICATE_LABELS = {"app.kubernetes.io/managed-by": "fleetwire-operator",
                      "app.kubernetes.io/component": "certificate"}
"""The TLS Secrets the operator writes (builders.labels): watched to re-push a new chain at once."""
RETRY_SECONDS = 10.0

log = logging.getLogger("fleetwire.operator.policies.vehicles")


# --------------------------------------------------------------------------------------
# One resource's daemon
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Credentials:
    """What a Fleet API client was built from; a change of any part builds a new client."""

    base_url: str
    proxy_url: str | None
    partner_version: str
    signing_version: str
    user_secret: str


class _ResourceVehicles:
    """The vehicles of one FleetTelemetryConfig: inputs, passes, status."""

    def __init__(self, body: kopf.Body, settings: Settings, ca_check: float) -> None:
        self.body = body
        self.owner = Owner.of(body)
        self.settings = settings
        self.ca_check = ca_check
        self.api = KubernetesApi(load_configuration())
        self.reconciler = VehicleReconciler(_NoFleetApi(), ConfigMapRecordStore(self.api, self.owner),
                                            signing_key=None, settings=settings,
                                            name=f"{self.owner.namespace}/{self.owner.name}")
        self._client: FleetApiClient | None = None
        self._built: _Credentials | None = None
        self._ca_fp = ""
        self._staged = False
        self._generation: Any = None
        self._announced: tuple[str, str] | None = None
        self._written: tuple[dict[str, Any], Condition] | None = None  # the status last written

    def wake(self) -> None:
        self.reconciler.wake()

    def certificate_changed(self, secret: Mapping[str, Any]) -> None:
        """A TLS Secret event (the one served, or one staged): wake when its `ca` is new to this daemon."""
        ca = _decoded(secret, "ca.crt")
        staged = str((secret.get("metadata") or {}).get("name", "")).endswith("-next")
        if ca and (staged != self._staged or ca_fingerprint(ca) != self._ca_fp):
            log.info("%s/%s: the server's chain changed; configuring the vehicles now",
                     self.owner.namespace, self.owner.name)
            self.wake()

    def resource_changed(self, body: Mapping[str, Any]) -> None:
        """A new generation (spec change) starts a pass."""
        generation = (body.get("metadata") or {}).get("generation")
        if generation != self._generation:
            self._generation = generation
            self.wake()

    async def run(self) -> None:
        """The reconciler's loop until cancelled: this daemon supplies the inputs and writes the
        status; a failure of one pass is logged and retried, never fatal."""
        await self.reconciler.run(self._inputs_of_pass, self._report_safely, retry=RETRY_SECONDS,
                                  most=self.ca_check, failure=self._failure)

    def _failure(self, exc: Exception) -> str:
        """The condition's text for a pass that failed (logged once here)."""
        where = f"{self.owner.namespace}/{self.owner.name}"
        if isinstance(exc, (KubeError, OSError)):
            log.warning("%s: vehicles pass failed, retried in %.0f s: %s", where, RETRY_SECONDS, exc)
            return f"Kubernetes API: {exc}"
        log.error("%s: vehicles pass failed, retried in %.0f s", where, RETRY_SECONDS, exc_info=exc)
        return f"unexpected failure, retried: {type(exc).__name__}: {exc}"

    async def _report_safely(self, result: PassResult) -> None:
        try:
            await self._report(result)
        except (KubeError, OSError) as exc:
            log.warning("%s/%s: cannot write status.vehicles: %s", self.owner.namespace, self.owner.name, exc)

    async def _inputs_of_pass(self) -> Inputs | None:
        inputs = await self._inputs()
        if inputs is not None:
            self._ca_fp = ca_fingerprint(inputs.ca_pem)
            self._staged = inputs.staged is not None
        return inputs

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
        await self.api.close()

    # ---- inputs -------------------------------------------------------------------------

    async def _inputs(self) -> Inputs | None:
        """The spec and the `ca`, with the Fleet API client ready; None when there is nothing
        to configure (no vehicles listed, none configured before)."""
        meta = self.body.get("metadata") or {}
        try:
            spec = parse_once(self.owner.uid, meta.get("generation"), dict(self.body.get("spec") or {}))
        except SpecError as exc:
            if not await self.reconciler.load():
                return None
            raise NotReady(f"the spec is invalid (see SpecValid): {exc.path}: {exc.message}") from None
        if not spec.vehicles and not await self.reconciler.load():
            return None
        if spec.fleet_api is None:
            raise NotReady("spec.fleetApi is required to configure vehicles")
        ca_pem, chains, staged = await self._ca(spec)
        await self._fleet_api(spec)
        return Inputs(spec, ca_pem, chains, staged)

    async def _secret(self, name: str, what: str) -> dict[str, Any]:
        secret = await self.api.get("Secret", self.owner.namespace, name)
        if secret is None:
            raise NotReady(f"Secret {self.owner.namespace}/{name} ({what}) does not exist")
        return secret

    async def _ca(self, spec: FleetTelemetrySpec) -> tuple[str, tuple[str, ...], str | None]:
        """The `ca` to push, the chains it must accept, and the staged chain (None: none staged).

        While a certificate is staged (`<tls>-next`), the `ca` holds both chains' certificates, so
        the server can switch without a vehicle noticing."""
        name = builders.tls_secret_name(self.owner, spec)
        secret = await self.api.get("Secret", self.owner.namespace, name)
        if secret is None:
            raise NotReady(f"waiting for the server certificate: Secret {self.owner.namespace}/{name} does not "
                           "exist yet")
        try:
            material = material_from_secret(secret, f"{self.owner.namespace}/{name}")
        except CertificateProblem as exc:
            raise NotReady(f"the server certificate cannot be used: {exc.message}") from None
        ca, chains, staged = material.ca_pem.decode(), (material.chain_pem.decode(),), None
        next_name = next_secret_name(name)
        found = await self.api.get("Secret", self.owner.namespace, next_name)
        if found is not None:
            try:
                upcoming = material_from_secret(found, f"{self.owner.namespace}/{next_name}")
            except CertificateProblem:
                return ca, chains, None  # the certificate handler ignores it too
            if upcoming.chain_pem == material.chain_pem or not check(upcoming, spec.hostname,
                                                                      dt.datetime.now(dt.UTC)).ok:
                return ca, chains, None  # promoted already, or unusable (expired waiting): nothing staged
            staged = upcoming.chain_pem.decode()
            ca, chains = ca_union(ca, upcoming.ca_pem.decode()), (*chains, staged)
        return ca, chains, staged

    async def _fleet_api(self, spec: FleetTelemetrySpec) -> None:
        """Build the Fleet API client (again, when its settings or Secrets changed)."""
        fleet = spec.fleet_api
        assert fleet is not None
        partner = await self._secret(fleet.partner_credentials_secret, "spec.fleetApi.partnerCredentialsSecretRef")
        signing_secret = (await self._secret(fleet.signing_key.name, "spec.fleetApi.signingKeySecretRef")
                          if fleet.signing_key is not None else None)
        built = _Credentials(fleet.base_url, fleet.proxy_url, _version(partner), _version(signing_secret),
                             fleet.user_token_secret)
        if built == self._built:
            return
        client_id, client_secret = _decoded(partner, "client_id"), _decoded(partner, "client_secret")
        if not client_id or not client_secret:
            raise NotReady(f"Secret {self.owner.namespace}/{fleet.partner_credentials_secret} needs client_id and "
                           "client_secret")
        key = None
        if fleet.signing_key is not None and not fleet.signed_by_proxy:
            key = _signing_key(signing_secret or {}, fleet.signing_key.key,
                               f"{self.owner.namespace}/{fleet.signing_key.name}")
        proxy_ssl = None
        proxy_ca = _decoded(partner, "proxy-ca.crt")
        if proxy_ca:
            proxy_ssl = ssl.create_default_context(cadata=proxy_ca)
        if self._client is not None:
            await self._client.close()
        self._client = FleetApiClient(
            client_id=client_id, client_secret=client_secret,
            token_store=SecretTokenStore(self.api, self.owner.namespace, fleet.user_token_secret),
            base_url=fleet.base_url, auth_url=_decoded(partner, "auth_url") or AUTH_URL,
            proxy_url=fleet.proxy_url, proxy_ssl=proxy_ssl,
        )
        self.reconciler.api = self._client
        self.reconciler.signing_key = key
        self._built = built
        log.info("%s/%s: Fleet API at %s%s", self.owner.namespace, self.owner.name, fleet.base_url,
                 f", configurations signed by the proxy at {fleet.proxy_url}" if key is None else "")

    # ---- status -------------------------------------------------------------------------

    async def _report(self, result: PassResult) -> None:
        generation = (self.body.get("metadata") or {}).get("generation")
        condition = Condition(VEHICLES_CONFIGURED, result.condition.status, result.condition.reason,
                              result.condition.message, generation)
        announced = (condition.status, condition.reason)
        if announced != self._announced:
            kind = "Warning" if condition.status == "False" and condition.reason not in (
                "VehiclesSyncing", "WaitingForInputs") else "Normal"
            kopf.event(self.body, type=kind, reason=condition.reason, message=condition.message)
            self._announced = announced
        rotated = result.pushed_codes.get(CA_REFUSED)
        if rotated:
            if result.next is not None:
                message = (f"a certificate from a new chain is staged: a ca accepting both chains (ca "
                           f"{result.ca_fingerprint}) was pushed to {rotated} vehicle(s) [{CA_REFUSED}]")
            else:
                message = (f"the server's certificate chain changed (ca {result.ca_fingerprint}): the new ca was "
                           f"pushed to {rotated} vehicle(s) whose ca refuses it [{CA_REFUSED}]")
            kopf.event(self.body, type="Normal", reason="VehiclesRepushed", message=message)
            log.info("%s/%s: %s", self.owner.namespace, self.owner.name, message)
            if result.next is None and result.refused:
                shown = ", ".join(result.refused[:20]) + (f" and {len(result.refused) - 20} more"
                                                          if len(result.refused) > 20 else "")
                kopf.event(self.body, type="Warning", reason="VehiclesCutOff",
                           message=f"{len(result.refused)} vehicle(s) hold a ca that refuses the chain the server "
                                   f"serves and stream nothing until they sync the new one: {shown}")
        await self._write_status(result.status(), condition)

    async def _write_status(self, vehicles: dict[str, Any], condition: Condition) -> None:
        """Merge `status.vehicles` and `VehiclesConfigured` (the only condition this daemon owns)
        in; nothing is written when it equals what this daemon wrote last."""
        if self._written == (vehicles, condition):
            return

        def keys(status: Mapping[str, Any]) -> dict[str, Any]:
            old = dict(status.get("vehicles") or {})
            return {"vehicles": {**{k: None for k in old if k not in vehicles}, **vehicles}}

        await write_status(self.api, self.owner, VEHICLES_OWNED, (condition,), keys, body=self.body)
        self._written = (vehicles, condition)


def _version(obj: Mapping[str, Any] | None) -> str:
    meta = (obj or {}).get("metadata") or {}
    return str(meta.get("resourceVersion") or meta.get("uid") or "")


def _signing_key(secret: Mapping[str, Any], key: str, where: str) -> ec.EllipticCurvePrivateKey:
    pem = _decoded(secret, key)
    if not pem:
        raise NotReady(f"Secret {where} has no {key}: it must hold the app's P-256 private key (PEM)")
    try:
        loaded = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise NotReady(f"Secret {where}: {key} is not a readable unencrypted PEM private key") from None
    if not isinstance(loaded, ec.EllipticCurvePrivateKey) or not isinstance(loaded.curve, ec.SECP256R1):
        raise NotReady(f"Secret {where}: {key} must be a P-256 (prime256v1) EC key: vehicles accept no other")
    return loaded


class _NoFleetApi:
    """The client before the credentials are read: a pass never gets this far without them."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"the Fleet API client is not configured yet ({name})")


# --------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------


class VehicleHandlers:
    """The daemons of one operator process, by resource, for the watches to wake."""

    def __init__(self, settings: Settings, ca_check: float) -> None:
        self.settings = settings
        self.ca_check = ca_check
        self.running: dict[tuple[str, str], _ResourceVehicles] = {}

    async def daemon(self, body: kopf.Body, meta: kopf.Meta, stopped: kopf.DaemonStopped, **_: Any) -> None:
        """Keep the resource's vehicles configured until it is deleted (or the operator stops)."""
        key = (str(meta["namespace"]), str(meta["name"]))
        vehicles = _ResourceVehicles(body, self.settings, self.ca_check)
        self.running[key] = vehicles
        task = asyncio.create_task(vehicles.run(), name=f"vehicles {key[0]}/{key[1]}")
        try:
            await stopped.wait()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            if self.running.get(key) is vehicles:
                del self.running[key]
            await vehicles.close()

    async def certificate_event(self, body: kopf.Body, **_: Any) -> None:
        meta = body.get("metadata") or {}
        instance = (meta.get("labels") or {}).get("app.kubernetes.io/instance")
        vehicles = self.running.get((str(meta.get("namespace")), str(instance)))
        tls = Names(str(instance)).tls_secret
        if vehicles is not None and meta.get("name") in (tls, next_secret_name(tls)):
            vehicles.certificate_changed(body)

    async def resource_event(self, body: kopf.Body, **_: Any) -> None:
        meta = body.get("metadata") or {}
        vehicles = self.running.get((str(meta.get("namespace")), str(meta.get("name"))))
        if vehicles is not None:
            vehicles.resource_changed(body)


def register(registry: kopf.OperatorRegistry | None = None, environ: Mapping[str, str] | None = None,
             environment: OperatorEnvironment | None = None) -> VehicleHandlers:
    """Add the vehicle handlers to `registry` (kopf's default one when None), with the settings
    of `environment` (else read from `environ`, else from the process: `environment.from_env`)."""
    env = environment if environment is not None else from_env(environ)
    handlers = VehicleHandlers(env.vehicles, env.vehicles_ca_check_seconds)
    kopf.daemon(*RESOURCE, id="vehicles", registry=registry, cancellation_timeout=10.0)(handlers.daemon)
    kopf.on.event("v1", "secrets", id="vehicles-certificate", registry=registry,
                  labels=dict(CERTIFICATE_LABELS))(handlers.certificate_event)
    kopf.on.event(*RESOURCE, id="vehicles-spec", registry=registry)(handlers.resource_event)
    return handlers

