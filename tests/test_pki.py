"""The PKI helpers build chains that strict verifiers and OpenSSL accept."""

from __future__ import annotations

import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import (
    ClientVerifier,
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)
from fleetwire.server.identity import Identity, identify

from fleetwire.pki import (
    VEHICLE_ISSUER_CN,
    Bundle,
    load_bundle,
    make_ca,
    make_server_cert,
    make_vehicle_cert,
    write_bundle,
    write_pem,
)
from fleetwire.sim.fleet_pki import make_test_fleet_pki


@pytest.fixture(scope="module")
def root() -> Bundle:
    return make_ca("Test Root CA", path_length=1)


@pytest.fixture(scope="module")
def intermediate(root: Bundle) -> Bundle:
    return make_ca("Test Issuing CA", parent=root, path_length=0)


def client_verifier(root: x509.Certificate) -> ClientVerifier:
    """Web-PKI client rules, except that the identity is the subject CN (the VIN), not a SAN."""
    ee = ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.SubjectAlternativeName, Criticality.AGNOSTIC, None
    )
    return (
        PolicyBuilder()
        .store(Store([root]))
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee)
        .build_client_verifier()
    )


def san(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def test_root_ca_extensions(root: Bundle) -> None:
    cert = root.cert
    assert cert.issuer == cert.subject
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 1
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(root.key.public_key())
    assert root.key.curve.name == "secp256r1"


def test_intermediate_points_at_its_parent(root: Bundle, intermediate: Bundle) -> None:
    aki = intermediate.cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = root.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert intermediate.cert.issuer == root.cert.subject
    intermediate.cert.verify_directly_issued_by(root.cert)


def test_server_chain_verifies_for_each_name(root: Bundle, intermediate: Bundle) -> None:
    server = make_server_cert(intermediate, ["fleet.example.com", "localhost", "127.0.0.1"])
    names = san(server.cert)
    assert names.get_values_for_type(x509.DNSName) == ["fleet.example.com", "localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    eku = server.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    builder = PolicyBuilder().store(Store([root.cert]))
    for subject in (x509.DNSName("fleet.example.com"), x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))):
        chain = builder.build_server_verifier(subject).verify(server.cert, [intermediate.cert])
        assert chain[-1] == root.cert
    with pytest.raises(VerificationError):
        builder.build_server_verifier(x509.DNSName("other.example.com")).verify(server.cert, [intermediate.cert])


def test_cn_only_server_cert_has_no_san(root: Bundle) -> None:
    server = make_server_cert(root, ["fleet.example.com"], cn_only=True)
    with pytest.raises(x509.ExtensionNotFound):
        san(server.cert)
    assert server.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "fleet.example.com"
    with pytest.raises(VerificationError):
        PolicyBuilder().store(Store([root.cert])).build_server_verifier(
            x509.DNSName("fleet.example.com")
        ).verify(server.cert, [])


def test_server_cert_needs_a_name(root: Bundle) -> None:
    with pytest.raises(ValueError):
        make_server_cert(root, [])


def test_vehicle_cert_verifies_as_a_client(root: Bundle, intermediate: Bundle) -> None:
    vehicle = make_vehicle_cert(intermediate, "5YJ3E1EA7JF000001", ou=["Tesla Motors SN", "x"],
                                eku_oid="1.3.6.1.4.1.49279.2.5.1")
    subject = vehicle.cert.subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "5YJ3E1EA7JF000001"
    units = subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    assert [a.value for a in units] == ["Tesla Motors SN", "x"]
    eku = vehicle.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH, x509.ObjectIdentifier("1.3.6.1.4.1.49279.2.5.1")]
    verified = client_verifier(root.cert).verify(vehicle.cert, [intermediate.cert])
    assert verified.chain[0] == vehicle.cert and verified.chain[-1] == root.cert


def test_vehicle_cert_from_a_foreign_ca_does_not_verify(root: Bundle) -> None:
    stranger = make_vehicle_cert(make_ca("Other CA"), "VIN")
    with pytest.raises(VerificationError):
        client_verifier(root.cert).verify(stranger.cert, [])


def test_written_files_and_modes(tmp_path: Path, root: Bundle, intermediate: Bundle) -> None:
    leaf = make_server_cert(intermediate, ["localhost"])
    cert_path, key_path = write_bundle(leaf, tmp_path / "tls.crt", tmp_path / "tls.key", chain=[intermediate.cert])
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert_path.stat().st_mode) == 0o644
    assert x509.load_pem_x509_certificates(cert_path.read_bytes()) == [leaf.cert, intermediate.cert]
    loaded = load_bundle(cert_path, key_path)
    assert loaded.cert == leaf.cert and loaded.key_pem == leaf.key_pem


def test_rewriting_a_key_tightens_its_mode(tmp_path: Path, root: Bundle) -> None:
    path = tmp_path / "k.pem"
    path.write_bytes(b"old")
    path.chmod(0o644)
    write_pem(path, root.key_pem, private=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == root.key_pem


def test_test_fleet_pki(tmp_path: Path) -> None:
    pki = make_test_fleet_pki(tmp_path / "pki")
    for key in (pki.server_key, pki.vehicle_ca_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    vehicle_root = x509.load_pem_x509_certificate(pki.vehicle_root_cert.read_bytes())
    vehicle_ca = load_bundle(pki.vehicle_ca_cert, pki.vehicle_ca_key)
    assert vehicle_ca.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == VEHICLE_ISSUER_CN
    assert set(x509.load_pem_x509_certificates(pki.ca_file.read_bytes())) == {vehicle_root, vehicle_ca.cert}

    server = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    server_ca = x509.load_pem_x509_certificate(pki.server_ca_cert.read_bytes())
    assert san(server).get_values_for_type(x509.DNSName) == ["localhost"]
    assert san(server).get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    PolicyBuilder().store(Store([server_ca])).build_server_verifier(x509.DNSName("localhost")).verify(server, [])

    vehicle = make_vehicle_cert(vehicle_ca, "5YJ3E1EA7JF000002")
    client_verifier(vehicle_root).verify(vehicle.cert, [vehicle_ca.cert])


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, hostname: str) -> ssl.SSLObject:
    """An in-memory TLS handshake; returns the server side."""
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=hostname)
    done = {"s": False, "c": False}
    for _ in range(20):
        for name, side in (("c", client), ("s", server)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    # TLS 1.3: the server learns of a refused client certificate on its first read.
    client.write(b"ping")
    s_in.write(c_out.read())
    assert server.read(4) == b"ping"
    return server


def test_openssl_mtls_handshake_with_the_test_fleet(tmp_path: Path) -> None:
    pki = make_test_fleet_pki(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pki.server_cert, pki.server_key)
    server_ctx.load_verify_locations(pki.ca_file)
    server_ctx.verify_mode = ssl.CERT_REQUIRED

    vehicle = make_vehicle_cert(load_bundle(pki.vehicle_ca_cert, pki.vehicle_ca_key), "5YJ3E1EA7JF000003")
    write_bundle(vehicle, tmp_path / "car.pem", tmp_path / "car.key")
    client_ctx = ssl.create_default_context(cafile=str(pki.server_ca_cert))
    client_ctx.load_cert_chain(tmp_path / "car.pem", tmp_path / "car.key")

    for host in ("localhost", "127.0.0.1"):
        server = _handshake(server_ctx, client_ctx, host)
        peer = server.getpeercert(binary_form=True)
        assert peer == vehicle.cert_der
        assert identify(peer) == Identity("5YJ3E1EA7JF000003", "vehicle_device")

    stranger = make_vehicle_cert(make_ca(VEHICLE_ISSUER_CN), "5YJ3E1EA7JF000004")
    write_bundle(stranger, tmp_path / "x.pem", tmp_path / "x.key")
    rogue_ctx = ssl.create_default_context(cafile=str(pki.server_ca_cert))
    rogue_ctx.load_cert_chain(tmp_path / "x.pem", tmp_path / "x.key")
    with pytest.raises(ssl.SSLError):
        _handshake(server_ctx, rogue_ctx, "localhost")
