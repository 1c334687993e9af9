"""Who is connecting, read from the verified client certificate.

Only the leaf of the chain OpenSSL verified counts (`transport.verified_leaf`):
identity taken from any other certificate the peer sent would let one vehicle claim
another's VIN. The VIN is the leaf's subject CN ("." becomes "-"); the client type
comes from the issuing CA:

- the classic vehicle CAs ("TeslaMotors", "Tesla Issuing CA", "Tesla Motors Products
  CA") issue `vehicle_device` certificates; under "Tesla Motors Products CA" a first OU
  of "Tesla Motors SN" marks a `vehicle_board_device`;
- the product issuing CAs (`PRODUCT_ISSUERS`) state the type in an extended key usage
  ``1.3.6.1.4.1.49279.2.{4 eng | 5 prod}.N``; the first such OID in the certificate
  decides. An OU "Solar Inverter" or "Gen3 Wall Connector" then overrides it with
  `solar_inverter_device` or `wall_connector_device`: these are the type names the
  vehicles' own reference server assigns, so sender ids and the client type that
  dispatchers publish stay what those devices and existing consumers expect (rather
  than folding both into `energy_device`);
- a WiFi-EAP certificate (EKU ``1.3.6.1.4.1.49279.2.5.1.1``) is a network credential,
  not a telemetry identity: it is refused wherever the OID appears in the list;
- any other issuer is refused.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509
from cryptography.x509.oid import NameOID

__all__ = ["CLASSIC_ISSUERS", "PRODUCT_ISSUERS", "Identity", "IdentityError", "identify"]

CLASSIC_ISSUERS = frozenset({"TeslaMotors", "Tesla Issuing CA", "Tesla Motors Products CA"})
_BOARD_ISSUER = "Tesla Motors Products CA"
_BOARD_OU = "Tesla Motors SN"

PRODUCT_ISSUERS = frozenset({
    "Tesla Motors Product Issuing CA",
    "Tesla Motors Product RSA Issuing CA",
    "Tesla Motors GF3 Product Issuing CA",
    "Tesla Motors GF3 Product RSA Issuing CA",
    "Tesla Energy Product Issuing CA",
    "Tesla Energy GF0 Product Issuing CA",
    "Tesla Motors GF0 Product Issuing CA",
    "Tesla Motors GF Austin Product Issuing CA",
    "Tesla Motors GF Berlin Product Issuing CA",
    "Tesla Product Access Issuing CA",
    "Tesla China Product Access Issuing CA",
    "Tesla GF0 Product Access Issuing CA",
    "Tesla GF3 Product Access Issuing CA",
    "Tesla GF Austin Product Access Issuing CA",
    "Tesla GF Berlin Product Access Issuing CA",
})

_DEVICE_TYPES = {
    1: "vehicle_device",
    11: "vehicle_board_device",
    2: "energy_device",
    12: "das_device",
    14: "vehicle_service",
    15: "das_service",
    16: "energy_service",
    28: "robotics_device",
}
_EKU_TYPES = {
    f"1.3.6.1.4.1.49279.2.{env}.{n}": kind
    for env in (4, 5)  # 4: engineering, 5: production
    for n, kind in _DEVICE_TYPES.items()
}
WIFI_EAP_OID = "1.3.6.1.4.1.49279.2.5.1.1"
_OU_TYPES = {"Solar Inverter": "solar_inverter_device", "Gen3 Wall Connector": "wall_connector_device"}

CACHE_SIZE = 65536
"""Distinct certificates remembered, enough for a fleet: after a restart every vehicle
reconnects at once, and a cache smaller than the fleet would miss on each of them. An
entry keeps the certificate's SHA-256 and its identity (about 300 bytes), not the
certificate."""


@dataclass(frozen=True, slots=True)
class Identity:
    """A connected client: its VIN and client type."""

    vin: str
    client_type: str

    @property
    def sender_id(self) -> str:
        """The id a client names itself by in its frames: ``<client type>.<VIN>``."""
        return f"{self.client_type}.{self.vin}"


class IdentityError(Exception):
    """The certificate names no acceptable client; `reason` is a short metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def identify(leaf_der: bytes) -> Identity:
    """The identity in a verified leaf certificate (DER); raises `IdentityError`.

    Results, refusals included, are cached by the certificate's SHA-256.
    """
    der = bytes(leaf_der)
    result = _classify(_Leaf(hashlib.sha256(der).digest(), der))
    if isinstance(result, Identity):
        return result
    raise IdentityError(*result)  # a fresh exception each time: no traceback pile-up


class _Leaf:
    """A certificate as a cache key: equal by digest, so the cache need not keep the DER."""

    __slots__ = ("der", "digest")

    def __init__(self, digest: bytes, der: bytes) -> None:
        self.digest = digest
        self.der = der

    def __hash__(self) -> int:
        return hash(self.digest)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Leaf) and other.digest == self.digest


@lru_cache(maxsize=CACHE_SIZE)
def _classify(leaf: _Leaf) -> Identity | tuple[str, str]:
    der, leaf.der = leaf.der, b""  # the cache keeps this key: the digest is all it needs
    try:
        cert = x509.load_der_x509_certificate(der)
        return _identity(cert)
    except (ValueError, x509.DuplicateExtension) as exc:  # unparsable certificate or extension
        return ("bad_certificate", f"unreadable client certificate: {exc}")


def _strings(name: x509.Name, oid: x509.ObjectIdentifier) -> list[str]:
    return [a.value if isinstance(a.value, str) else a.value.decode("utf-8", "replace")
            for a in name.get_attributes_for_oid(oid)]


def _identity(cert: x509.Certificate) -> Identity | tuple[str, str]:
    names = _strings(cert.subject, NameOID.COMMON_NAME)
    if len(names) > 1:
        return ("ambiguous_cn", f"client certificate has {len(names)} subject CNs")
    if not names or not names[0]:
        return ("missing_cn", "client certificate has no subject CN (the VIN)")
    vin = names[0].replace(".", "-")

    issuers = _strings(cert.issuer, NameOID.COMMON_NAME)
    issuer = issuers[0] if len(issuers) == 1 else ""
    units = _strings(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME)

    if issuer in CLASSIC_ISSUERS:
        if issuer == _BOARD_ISSUER and units and units[0] == _BOARD_OU:
            return Identity(vin, "vehicle_board_device")
        return Identity(vin, "vehicle_device")

    if issuer not in PRODUCT_ISSUERS:
        return ("unknown_issuer", f"client certificate issued by {issuer or 'an unnamed CA'!r}, not a vehicle CA")

    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return ("no_eku", f"certificate from {issuer!r} has no extended key usage naming a device type")
    oids = [oid.dotted_string for oid in usages]
    if WIFI_EAP_OID in oids:
        return ("wifi_eap", "a WiFi-EAP certificate cannot stream telemetry")
    for oid in oids:
        kind = _EKU_TYPES.get(oid)
        if kind is not None:
            for unit in units:
                if unit in _OU_TYPES:
                    return Identity(vin, _OU_TYPES[unit])
            return Identity(vin, kind)
    return ("no_eku", f"certificate from {issuer!r} has no extended key usage naming a device type")
