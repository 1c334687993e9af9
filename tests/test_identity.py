"""Identity from the client certificate: every issuer rule, EKU and OU override."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from functools import cache

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fleetwire.server.identity import (
    CLASSIC_ISSUERS,
    PRODUCT_ISSUERS,
    WIFI_EAP_OID,
    Identity,
    IdentityError,
    identify,
)

from fleetwire.pki import Bundle, generate_key, make_ca, make_vehicle_cert

VIN = "5YJ3E1EA7JF000001"
PRODUCT_CA = "Tesla Motors Product Issuing CA"
DEVICE_TYPES = {
    1: "vehicle_device", 11: "vehicle_board_device", 2: "energy_device", 12: "das_device",
    14: "vehicle_service", 15: "das_service", 16: "energy_service", 28: "robotics_device",
}


@cache
def ca(common_name: str) -> Bundle:
    return make_ca(common_name)


def der(
    issuer: str, vin: str = VIN, *, ou: str | Sequence[str] | None = None, eku_oid: str | Sequence[str] | None = None
) -> bytes:
    return make_vehicle_cert(ca(issuer), vin, ou=ou, eku_oid=eku_oid).cert_der


def refused(leaf: bytes) -> str:
    with pytest.raises(IdentityError) as info:
        identify(leaf)
    assert str(info.value)
    return info.value.reason


def raw_cert(subject: x509.Name, issuer: str, extensions: Sequence[x509.ExtensionType] = ()) -> bytes:
    """A certificate built without the PKI helpers' guard rails (no or odd subject names)."""
    key = generate_key()
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]) if issuer else x509.Name([]))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
    )
    for ext in extensions:
        builder = builder.add_extension(ext, critical=False)
    cert = builder.sign(key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.DER)


def cn(value: str) -> x509.NameAttribute[str]:
    return x509.NameAttribute(NameOID.COMMON_NAME, value, _validate=False)


@pytest.mark.parametrize("issuer", sorted(CLASSIC_ISSUERS))
def test_classic_issuers_are_vehicles(issuer: str) -> None:
    assert identify(der(issuer)) == Identity(VIN, "vehicle_device")


def test_board_device_needs_products_ca_and_first_ou() -> None:
    products = "Tesla Motors Products CA"
    assert identify(der(products, ou="Tesla Motors SN")).client_type == "vehicle_board_device"
    assert identify(der(products, ou=["Tesla Motors SN", "Other"])).client_type == "vehicle_board_device"
    assert identify(der(products, ou=["Other", "Tesla Motors SN"])).client_type == "vehicle_device"
    assert identify(der("TeslaMotors", ou="Tesla Motors SN")).client_type == "vehicle_device"
    assert identify(der("Tesla Issuing CA", ou="Tesla Motors SN")).client_type == "vehicle_device"


@pytest.mark.parametrize("issuer", sorted(PRODUCT_ISSUERS))
def test_every_product_issuer_reads_the_eku(issuer: str) -> None:
    assert identify(der(issuer, eku_oid="1.3.6.1.4.1.49279.2.5.1")) == Identity(VIN, "vehicle_device")
    assert refused(der(issuer)) == "no_eku"  # clientAuth alone names no device type


@pytest.mark.parametrize("env", [4, 5], ids=["eng", "prod"])
@pytest.mark.parametrize(("n", "kind"), sorted(DEVICE_TYPES.items()))
def test_eku_device_types(env: int, n: int, kind: str) -> None:
    assert identify(der(PRODUCT_CA, eku_oid=f"1.3.6.1.4.1.49279.2.{env}.{n}")) == Identity(VIN, kind)


@pytest.mark.parametrize("oid", ["1.3.6.1.4.1.49279.2.5.3", "1.3.6.1.4.1.49279.2.6.1", "1.3.6.1.4.1.49279.2.5.1.2"])
def test_unmapped_ekus_are_refused(oid: str) -> None:
    assert refused(der(PRODUCT_CA, eku_oid=oid)) == "no_eku"


def test_first_mapped_eku_decides() -> None:
    oids = ["1.3.6.1.4.1.49279.2.5.99", "1.3.6.1.4.1.49279.2.4.12", "1.3.6.1.4.1.49279.2.5.1"]
    assert identify(der(PRODUCT_CA, eku_oid=oids)).client_type == "das_device"


def test_product_issuer_without_eku_extension() -> None:
    subject = x509.Name([cn(VIN)])
    assert refused(raw_cert(subject, PRODUCT_CA)) == "no_eku"


def test_eku_ignored_for_classic_issuers() -> None:
    assert identify(der("Tesla Issuing CA", eku_oid="1.3.6.1.4.1.49279.2.5.2")).client_type == "vehicle_device"


@pytest.mark.parametrize(
    "oids",
    [[WIFI_EAP_OID], [WIFI_EAP_OID, "1.3.6.1.4.1.49279.2.5.1"], ["1.3.6.1.4.1.49279.2.5.1", WIFI_EAP_OID]],
    ids=["alone", "before a device type", "after a device type"],
)
def test_wifi_eap_is_refused(oids: list[str]) -> None:
    assert refused(der(PRODUCT_CA, eku_oid=oids)) == "wifi_eap"


@pytest.mark.parametrize(
    ("ou", "kind"),
    [
        ("Solar Inverter", "solar_inverter_device"),
        ("Gen3 Wall Connector", "wall_connector_device"),
        (["Site 4", "Gen3 Wall Connector"], "wall_connector_device"),
        ("Powerwall", "energy_device"),
    ],
)
def test_ou_overrides_the_eku_type(ou: str | list[str], kind: str) -> None:
    leaf = der("Tesla Energy Product Issuing CA", ou=ou, eku_oid="1.3.6.1.4.1.49279.2.5.2")
    assert identify(leaf).client_type == kind


def test_ou_override_needs_a_device_eku() -> None:
    assert refused(der(PRODUCT_CA, ou="Solar Inverter")) == "no_eku"
    assert identify(der("Tesla Issuing CA", ou="Solar Inverter")).client_type == "vehicle_device"


@pytest.mark.parametrize(
    "issuer", ["Some Other CA", "tesla issuing ca", "Tesla Issuing CA ", "Tesla Motors Products", "Fleetwire Test"]
)
def test_unknown_issuers_are_refused(issuer: str) -> None:
    assert refused(der(issuer)) == "unknown_issuer"
    assert refused(der(issuer, eku_oid="1.3.6.1.4.1.49279.2.5.1")) == "unknown_issuer"


def test_issuer_without_cn_is_refused() -> None:
    assert refused(raw_cert(x509.Name([cn(VIN)]), "")) == "unknown_issuer"


@pytest.mark.filterwarnings("ignore:Attribute's length must be:UserWarning")
def test_missing_or_empty_cn_is_refused() -> None:
    ou_only = x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "x")])
    assert refused(raw_cert(ou_only, "Tesla Issuing CA")) == "missing_cn"
    assert refused(raw_cert(x509.Name([cn("")]), "Tesla Issuing CA")) == "missing_cn"


def test_two_cns_are_ambiguous() -> None:
    assert refused(raw_cert(x509.Name([cn(VIN), cn("5YJ3E1EA7JF000002")]), "Tesla Issuing CA")) == "ambiguous_cn"


def test_vin_dots_become_dashes() -> None:
    identity = identify(der("Tesla Issuing CA", vin="LRW.3E7.FA1NC000001"))
    assert identity.vin == "LRW-3E7-FA1NC000001"
    assert identity.sender_id == "vehicle_device.LRW-3E7-FA1NC000001"


def test_sender_id_and_immutability() -> None:
    identity = identify(der(PRODUCT_CA, eku_oid="1.3.6.1.4.1.49279.2.4.28"))
    assert identity.sender_id == f"robotics_device.{VIN}"
    with pytest.raises(AttributeError):
        identity.vin = "other"  # type: ignore[misc]


def test_garbage_is_a_bad_certificate() -> None:
    assert refused(b"not a certificate") == "bad_certificate"
    assert refused(b"") == "bad_certificate"


def test_results_and_refusals_are_cached() -> None:
    leaf = der("TeslaMotors", vin="CACHE1")
    first = identify(leaf)
    assert identify(bytes(bytearray(leaf))) is first  # equal bytes, another object
    bad = der("Nobody", vin="CACHE2")
    errors = []
    for _ in range(2):
        with pytest.raises(IdentityError) as info:
            identify(bad)
        errors.append(info.value)
    assert errors[0] is not errors[1] and errors[0].reason == errors[1].reason == "unknown_issuer"


def test_client_auth_is_not_a_device_type() -> None:
    usages = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    assert refused(raw_cert(x509.Name([cn(VIN)]), PRODUCT_CA, [usages])) == "no_eku"


def test_the_cache_holds_a_fleet_and_keeps_no_certificate() -> None:
    """After a restart every vehicle of the fleet reconnects: a cache smaller than the storm
    would parse each certificate again, and a cache keyed by the DER would keep ~0.5 KB of
    certificate per vehicle for as long as the process lives."""
    import gc
    import tracemalloc

    from fleetwire.server.identity import CACHE_SIZE

    assert CACHE_SIZE >= 10_000
    ca_bundle = ca("Tesla Issuing CA")
    leaves = [make_vehicle_cert(ca_bundle, f"5YJ3E1EA7KF{i:06d}").cert_der for i in range(200)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        copies = [bytes(bytearray(leaf)) for leaf in leaves]  # fresh bytes, as each handshake hands over
        identities = [identify(copy) for copy in copies]
        del copies
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    # What identify and these copies left behind, not what other threads of the run did meanwhile.
    only_identity = [tracemalloc.Filter(True, identify.__code__.co_filename), tracemalloc.Filter(True, __file__)]
    grown = after.filter_traces(only_identity).compare_to(before.filter_traces(only_identity), "filename")
    kept = sum(stat.size_diff for stat in grown) / len(leaves)
    assert {i.vin for i in identities} == {f"5YJ3E1EA7KF{i:06d}" for i in range(200)}
    assert kept < len(leaves[0])
