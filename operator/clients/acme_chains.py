"""What an ACME issuance yields and how its chain is completed: the certificate with the chain
the CA sent, its root when found (`assemble`, `pick_root`), and the choice among the chains a
CA offers (`choose_chain`). Pure: tested without sockets."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fleetwire.operator.clients.acme_errors import AcmeServerError

__all__ = ["IssuedCertificate", "assemble", "choose_chain", "pick_root"]


@dataclass(frozen=True)
class IssuedCertificate:
    """What the server needs (key + chain) and what vehicles need (`ca_chain_pem`).

    `ca_chain_pem` is everything above the leaf, the root included when it was found:
    vehicles verify the server against it, and one holding only an intermediate breaks as
    soon as the CA signs a renewal with another one. `root_missing_reason` says why the
    root is absent (no `root_fetcher`, fetch failed, no candidate matched).
    """

    key_pem: bytes = field(repr=False)
    chain_pem: bytes
    leaf: x509.Certificate
    ca_chain_pem: bytes
    root: x509.Certificate | None = None
    root_missing_reason: str | None = None
    alternates: tuple[IssuedCertificate, ...] = ()  # the same leaf under the other chains the CA offered

    @property
    def root_missing(self) -> bool:
        return self.root is None

    @property
    def chains(self) -> tuple[IssuedCertificate, ...]:
        """The chain the CA serves by default, then its alternates (RFC 8555 `Link: rel="alternate"`)."""
        return (self, *self.alternates)


def choose_chain(issued: IssuedCertificate, accepts: Callable[[IssuedCertificate], bool]) -> IssuedCertificate:
    """The first chain offered for the certificate that `accepts` (the `ca` the vehicles hold
    accepts it), else the default one: serving a chain the fleet already trusts costs no push."""
    return next((chain for chain in issued.chains if accepts(chain)), issued)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except Exception:  # InvalidSignature, a name mismatch, an unsupported key type
        return False
    return True


def pick_root(last: x509.Certificate, candidates: Sequence[x509.Certificate]) -> x509.Certificate | None:
    """The candidate that actually signed `last` (name match AND signature), if any."""
    for root in candidates:
        if root.subject == last.issuer and _issued_by(last, root):
            return root
    return None


def assemble(
    key_pem: bytes,
    fullchain_pem: bytes,
    hostname: str,
    roots: Sequence[x509.Certificate] = (),
    root_missing_reason: str | None = None,
) -> IssuedCertificate:
    """Check what the CA sent and add the root: the leaf must carry our key and our name."""
    chain = x509.load_pem_x509_certificates(fullchain_pem)
    leaf = chain[0]
    key = serialization.load_pem_private_key(key_pem, password=None)
    if leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        raise AcmeServerError("the ACME server returned a certificate for a different key than the CSR's")
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = [n.lower() for n in names.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        sans = []
    if hostname.lower() not in sans:
        raise AcmeServerError(f"the issued certificate does not name {hostname} in subjectAltName (has {sans})")
    above = chain[1:]
    last = chain[-1]
    root: x509.Certificate | None
    if len(chain) > 1 and last.subject == last.issuer and _issued_by(last, last):
        root, root_missing_reason = last, None  # this CA sends its root in the chain
    else:
        root = pick_root(last, roots)
        if root is not None:
            above, root_missing_reason = [*above, root], None
        elif root_missing_reason is None:
            root_missing_reason = f"none of {len(roots)} candidate root(s) signed {last.issuer.rfc4514_string()}"
    return IssuedCertificate(
        key_pem=key_pem,
        chain_pem=b"".join(_pem(c) for c in chain),
        leaf=leaf,
        ca_chain_pem=b"".join(_pem(c) for c in above),
        root=root,
        root_missing_reason=root_missing_reason,
    )
