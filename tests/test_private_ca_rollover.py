"""privateCA: a CA near its end is rolled over with a cross-certificate; a replaced CA is staged.

The certificate mode runs against an in-memory Kubernetes API (`get`, `apply`, `delete`: what
the mode calls), so each pass can be driven with its clock. A rollover needs no push and no
wait: the new leaf is presented with the new CA certified by the old one, which a vehicle
holding only the old CA accepts; a CA whose key is gone (its Secret deleted) cannot
cross-sign, so the new certificate is staged until the vehicles hold a `ca` for both.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fleetwire import pki
from fleetwire.operator.resource.builders import Owner
from fleetwire.trust import refusal
from fleetwire.operator.reconcilers.certificate_context import CertificateContext, CertificateOutcome
from fleetwire.operator.reconcilers.private_ca import PrivateCaSource
from fleetwire.operator.environment import from_env
from fleetwire.operator.resource.spec_parse import parse_spec

HOST = "telemetry.fleetwire.test"
OWNER = Owner("fleet", "default", "uid-1")


class MemoryKube:
    """The three calls a certificate mode makes, on dicts."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, name))

    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        self.objects[(obj["kind"], obj["metadata"]["name"])] = dict(obj)
        return dict(obj)

    async def delete(self, kind: str, namespace: str, name: str) -> bool:
        return self.objects.pop((kind, name), None) is not None

    def data(self, name: str, key: str) -> bytes:
        return base64.b64decode(self.objects[("Secret", name)]["data"][key])


async def run(kube: MemoryKube, now: dt.datetime, *, annotations: Mapping[str, str] | None = None,
              vehicles: Mapping[str, Any] | None = None, **spec: Any) -> CertificateOutcome:
    parsed = parse_spec({"hostname": HOST, "certificate": {"privateCA": spec}, "vehicles": ["5YJ3E7EB0NF000001"],
                         "fields": {"Soc": {"interval_seconds": 60}},
                         "fleetApi": {"baseUrl": "http://127.0.0.1:1", "partnerCredentialsSecretRef": {"name": "p"},
                                      "userTokenSecretRef": {"name": "u"}, "signingKeySecretRef": {"name": "k"}}})

    async def nothing(*_: Any) -> Any:
        raise AssertionError("not used by privateCA")

    ctx = CertificateContext(api=kube, owner=OWNER, spec=parsed, env=from_env({}), previous={},  # type: ignore[arg-type]
                             generation=1, now=now, http01=nothing, record_order=nothing,
                             annotations=dict(annotations or {}), vehicles=dict(vehicles or {}))
    return await PrivateCaSource().ensure(ctx)


def test_a_cross_signed_ca_is_accepted_by_either_anchor() -> None:
    old, new = pki.make_ca("Old", path_length=1), pki.make_ca("New", path_length=1)
    cross = pki.cross_sign(new, old)
    leaf = pki.make_server_cert(new, [HOST])
    chain = leaf.cert_pem + cross.public_bytes(serialization.Encoding.PEM)
    now = dt.datetime.now(dt.UTC)
    assert refusal(chain, old.cert_pem, HOST, now) is None  # the vehicle that missed the push
    assert refusal(chain, new.cert_pem, HOST, now) is None  # the vehicle that took it
    assert refusal(leaf.cert_pem, old.cert_pem, HOST, now) is not None  # without the cross-certificate
    assert cross.not_valid_after_utc <= old.cert.not_valid_after_utc
    leaf_only = pki.make_ca("Leaves only", path_length=0)  # cannot certify its successor
    assert refusal(leaf.cert_pem + pki.cross_sign(new, leaf_only).public_bytes(serialization.Encoding.PEM),
                   leaf_only.cert_pem, HOST, now) is not None


async def test_a_ca_near_its_end_rolls_over_without_a_push_or_a_wait() -> None:
    kube = MemoryKube()
    start = dt.datetime.now(dt.UTC)
    first = await run(kube, start, validityDays=30, leafValidityDays=7)
    assert first.condition.status == "True"
    old_ca = kube.data("fleet-ca", "tls.crt")
    # 24 days later the CA has less than one leaf lifetime left: a new CA, cross-signed by the old.
    later = start + dt.timedelta(days=24)
    rolled = await run(kube, later, validityDays=30, leafValidityDays=7)
    assert "PrivateCaRolledOver" in [e.reason for e in rolled.events]
    assert rolled.rotating is None and rolled.condition.status == "True"  # served at once: nothing to wait for
    new_ca = kube.data("fleet-ca", "tls.crt")
    chain = kube.data("fleet-tls", "tls.crt")
    assert new_ca != old_ca and kube.data("fleet-tls", "ca.crt") == new_ca
    assert len(x509.load_pem_x509_certificates(chain)) == 2  # the leaf and the cross-certificate
    assert refusal(chain, old_ca, HOST, later) is None and refusal(chain, new_ca, HOST, later) is None
    assert ("Secret", "fleet-tls-next") not in kube.objects


async def test_a_replaced_ca_is_staged_until_the_vehicles_hold_both() -> None:
    kube = MemoryKube()
    now = dt.datetime.now(dt.UTC)
    await run(kube, now)
    served = kube.data("fleet-tls", "tls.crt")
    del kube.objects[("Secret", "fleet-ca")]  # the CA's key is gone: nothing can cross-sign
    staged = await run(kube, now)
    assert staged.rotating is not None and staged.rotating.reason == "WaitingForVehicles"
    assert kube.data("fleet-tls", "tls.crt") == served  # the server keeps the current certificate
    assert "next" in staged.status and "CertificateStaged" in [e.reason for e in staged.events]
    assert refusal(kube.data("fleet-tls-next", "tls.crt"), kube.data("fleet-tls", "ca.crt"), HOST, now) is not None


async def test_a_staged_certificate_is_promoted_by_the_fleet_the_annotation_or_the_deadline() -> None:
    from fleetwire.operator.policies.rotation import PROMOTE_ANNOTATION, staged_fingerprint

    for how in ("fleet", "annotation", "deadline"):
        kube = MemoryKube()
        now = dt.datetime.now(dt.UTC)
        await run(kube, now)
        del kube.objects[("Secret", "fleet-ca")]
        staged = await run(kube, now)
        assert staged.rotating is not None and staged.status["next"]["promoteBy"]
        chain = kube.data("fleet-tls-next", "tls.crt")
        progress = {"chain": staged_fingerprint(chain), "ready": 3, "total": 4, "behindCount": 1,
                    "behind": ["5YJ3E7EB0NF000009"]}
        waiting = await run(kube, now, vehicles={"next": progress})
        assert waiting.rotating is not None and waiting.rotating.message.startswith("3 of 4 vehicles hold the next ca")
        if how == "fleet":
            outcome = await run(kube, now, vehicles={"next": {**progress, "ready": 4, "behindCount": 0, "behind": []}})
            expected = "VehiclesReady"
        elif how == "annotation":
            outcome = await run(kube, now, annotations={PROMOTE_ANNOTATION: "now"}, vehicles={"next": progress})
            expected = "PromoteRequested"
        else:
            outcome = await run(kube, now + dt.timedelta(hours=73), vehicles={"next": progress})
            expected = "Deadline"
        assert outcome.promoted and outcome.rotating is not None and outcome.rotating.reason == expected, how
        assert kube.data("fleet-tls", "tls.crt") == chain and "next" not in outcome.status
        # The staged Secret keeps no copy of the served key once it is promoted.
        assert kube.data("fleet-tls-next", "tls.key") == b"" == kube.data("fleet-tls-next", "tls.crt")
        (event,) = [e for e in outcome.events if e.reason == "CertificatePromoted"]
        assert (event.type == "Normal") == (how == "fleet")
        if how != "fleet":  # the vehicles left behind are named
            assert "5YJ3E7EB0NF000009" in event.message
        again = await run(kube, now + dt.timedelta(hours=74))  # the promoted one is not staged again
        assert again.rotating is None and not again.promoted
