"""Small PKI toolkit: CAs, server and vehicle certificates, PEM files.

Tests, the simulator, the demo and the benchmarks all need a vehicle CA that the server
trusts and a server certificate the vehicles trust; building them in one place keeps
their extensions right (chains built here verify under the strict web-PKI rules of
`cryptography.x509.verification` as well as under OpenSSL).
A test fleet's whole PKI, made with these builders, is `fleetwire.sim.fleet_pki`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "Bundle",
    "cross_sign",
    "VEHICLE_ISSUER_CN",
    "generate_key",
    "load_bundle",
    "make_ca",
    "make_server_cert",
    "make_vehicle_cert",
    "write_bundle",
    "write_pem",
]

VEHICLE_ISSUER_CN = "Tesla Issuing CA"
"""An issuer CN the server maps to `vehicle_device` without an EKU: the test fleet's CA."""

_BACKDATE = dt.timedelta(hours=1)  # tolerate clock skew between the machines involved


def generate_key() -> ec.EllipticCurvePrivateKey:
    """A new P-256 key, the curve vehicles and ACME servers both use."""
    return ec.generate_private_key(ec.SECP256R1())


@dataclass(frozen=True)
class Bundle:
    """A certificate with its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def cert_der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def _name(common_name: str | None, *, ou: Sequence[str] = (), organization: str | None = None) -> x509.Name:
    attrs: list[x509.NameAttribute[str]] = []
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    attrs += [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit) for unit in ou]
    if common_name is not None:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _builder(
    subject: x509.Name, key: ec.EllipticCurvePrivateKey, issuer: Bundle | None, days: int,
    *, now: dt.datetime | None = None, within_issuer: bool = False,
) -> x509.CertificateBuilder:
    """Validity, serial, SKI and (under an issuer) AKI: what every certificate here has.

    `within_issuer` keeps the validity inside the issuer's: a certificate that outlives its
    CA is refused for the rest of its life, so an operator issuing one must not."""
    now = now or dt.datetime.now(dt.UTC)
    not_before, not_after = now - _BACKDATE, now + dt.timedelta(days=days)
    if within_issuer and issuer is not None:
        not_before = max(not_before, issuer.cert.not_valid_before_utc)
        not_after = min(not_after, issuer.cert.not_valid_after_utc)
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    if issuer is not None:
        ski = issuer.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    return builder


def _leaf_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )


def make_ca(
    common_name: str,
    *,
    parent: Bundle | None = None,
    days: int = 3650,
    path_length: int | None = None,
    organization: str | None = None,
    key: ec.EllipticCurvePrivateKey | None = None,
) -> Bundle:
    """A root CA (no parent) or an intermediate signed by `parent`."""
    key = key or generate_key()
    cert = (
        _builder(_name(common_name, organization=organization), key, parent, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign((parent.key if parent else key), hashes.SHA256())
    )
    return Bundle(cert, key)


def cross_sign(ca: Bundle, issuer: Bundle, *, not_after: dt.datetime | None = None) -> x509.Certificate:
    """`ca`'s subject and key certified by `issuer`: a leaf of the new CA then verifies up to
    either, so clients that trust only the old CA keep accepting it (valid at most as long as
    `issuer`). Key identifiers and constraints are `ca`'s own, as a verifier expects of one CA."""
    end = min(not_after or issuer.cert.not_valid_after_utc, issuer.cert.not_valid_after_utc)
    constraints = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    usage = ca.cert.extensions.get_extension_for_class(x509.KeyUsage).value
    ski = issuer.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(ca.cert.subject)
        .issuer_name(issuer.cert.subject)
        .public_key(ca.cert.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(max(ca.cert.not_valid_before_utc, issuer.cert.not_valid_before_utc))
        .not_valid_after(end)
        .add_extension(constraints, critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca.cert.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
    )
    return builder.sign(issuer.key, hashes.SHA256())


def _san_entry(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def make_server_cert(
    ca: Bundle, hostnames: Sequence[str], *, days: int = 90, cn_only: bool = False, san_only: bool = False,
    now: dt.datetime | None = None,
) -> Bundle:
    """A TLS server certificate for `hostnames` (IP literals become IP SANs).

    The CN is the first hostname. `cn_only` leaves out the SAN extension: clients have
    ignored the CN for years, so such a certificate exists only to test that it is refused.
    `san_only` is what the operator issues: an empty subject, so the SAN is critical
    (RFC 5280 4.2.1.6), and a validity kept inside the CA's, from `now`.
    """
    if not hostnames:
        raise ValueError("a server certificate needs at least one hostname")
    key = generate_key()
    first = hostnames[0]
    subject = x509.Name([]) if san_only else _name(first if len(first) <= 64 else None)
    builder = (
        _builder(subject, key, ca, days, now=now, within_issuer=san_only)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_key_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    if not cn_only:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_san_entry(h) for h in hostnames]), critical=san_only
        )
    return Bundle(builder.sign(ca.key, hashes.SHA256()), key)


def make_vehicle_cert(
    ca: Bundle,
    vin: str,
    *,
    ou: str | Sequence[str] | None = None,
    eku_oid: str | Sequence[str] | None = None,
    days: int = 365,
) -> Bundle:
    """A vehicle's client certificate: CN = VIN, issued by `ca`.

    What makes the server accept it depends on the issuer's CN: the classic vehicle CAs
    need nothing more; product issuing CAs need a device-type EKU (`eku_oid`, e.g.
    "1.3.6.1.4.1.49279.2.5.1"); some device types are told by an OU (`ou`, the first one
    matters for "Tesla Motors SN"). clientAuth is always present, as OpenSSL requires it
    of client certificates that carry an EKU extension.
    """
    key = generate_key()
    units = [ou] if isinstance(ou, str) else list(ou or ())
    extra = [eku_oid] if isinstance(eku_oid, str) else list(eku_oid or ())
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + [x509.ObjectIdentifier(oid) for oid in extra]
    cert = (
        _builder(_name(vin, ou=units), key, ca, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_key_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return Bundle(cert, key)


def chain_fingerprint(pem: bytes | str) -> str:
    """SHA-256 over the DER of every certificate in `pem`, in order.

    It changes exactly when the `ca` vehicles must be sent changes (a new intermediate or
    root), not when only the leaf is renewed, and PEM formatting does not affect it. The
    certificate status and the vehicles' status show this same value.
    """
    data = pem.encode() if isinstance(pem, str) else pem
    digest = hashlib.sha256()
    for cert in x509.load_pem_x509_certificates(data):
        digest.update(cert.public_bytes(serialization.Encoding.DER))
    return digest.hexdigest()


def write_pem(path: str | os.PathLike[str], data: bytes, *, private: bool = False) -> Path:
    """Write PEM data; a private key is created with mode 0600 so it is never readable by others."""
    target = Path(path)
    mode = 0o600 if private else 0o644
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # the file may have existed with wider permissions
        os.write(fd, data)
    finally:
        os.close(fd)
    return target


def write_bundle(
    bundle: Bundle,
    cert_path: str | os.PathLike[str],
    key_path: str | os.PathLike[str],
    *,
    chain: Sequence[x509.Certificate] = (),
) -> tuple[Path, Path]:
    """Write the certificate (followed by `chain`, leaf first) and its key (0600)."""
    pem = bundle.cert_pem + b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    return write_pem(cert_path, pem), write_pem(key_path, bundle.key_pem, private=True)


def load_bundle(cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]) -> Bundle:
    """Read back a certificate (the first of the file) and its P-256 key."""
    cert = x509.load_pem_x509_certificates(Path(cert_path).read_bytes())[0]
    key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path}: expected an EC private key")
    return Bundle(cert, key)
