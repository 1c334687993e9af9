"""TLS for the vehicle port: mutual TLS with a short client-CA list, hot-reloadable leaf."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from fleetwire.strictjson import ConfigError


_KEY_FORMS = "'-----BEGIN PRIVATE KEY-----', 'EC PRIVATE KEY' or 'RSA PRIVATE KEY'"


def _read(key: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror}") from None


def _certificates(key: str, path: Path, expected: str) -> list[x509.Certificate]:
    data = _read(key, path)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        hint = " (it holds a private key: are server_cert and server_key swapped?)" if b"PRIVATE KEY" in data else ""
        raise ConfigError(key, f"{path} holds no PEM certificate; expected {expected}{hint}")
    return certs


def check_tls_files(cert_file: Path, key_file: Path, ca_file: Path | None = None) -> None:
    """Refuse files OpenSSL would refuse, with the key and the file named.

    OpenSSL's own errors ("PEM lib", "key values mismatch") say neither which setting
    nor which file is wrong. Nothing read from a file is ever put in a message.
    """
    leaf = _certificates("tls.server_cert", cert_file, "'-----BEGIN CERTIFICATE-----' blocks, leaf first")[0]
    key_data = _read("tls.server_key", key_file)
    try:
        private = serialization.load_pem_private_key(key_data, password=None)
    except TypeError:
        raise ConfigError("tls.server_key", f"{key_file} is encrypted; the server needs an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm):
        hint = " (it holds a certificate: are server_cert and server_key swapped?)" if b"CERTIFICATE" in key_data else ""
        raise ConfigError("tls.server_key", f"{key_file} holds no PEM private key; expected {_KEY_FORMS}{hint}") from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if private.public_key().public_bytes(der, spki) != leaf.public_key().public_bytes(der, spki):
        raise ConfigError(
            "tls.server_key", f"{key_file} does not match the certificate in tls.server_cert ({cert_file})"
        )
    if ca_file is not None:
        _certificates("tls.ca_file", ca_file, "the vehicles' CA certificates in PEM (e.g. prod_ca.crt)")


def server_context(cert_file: Path, key_file: Path, ca_file: Path) -> ssl.SSLContext:
    """An mTLS server context: TLS 1.2+, a client certificate required and verified.

    Python advertises no client-CA names in the CertificateRequest (it never sets the
    list), which is the short list vehicles need: a long list made them withhold their
    certificate. Raises ConfigError, naming the setting and the file, for a file that
    does not load.
    """
    check_tls_files(cert_file, key_file, ca_file)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_verify_locations(cafile=str(ca_file))
    except ssl.SSLError as exc:
        raise ConfigError("tls.ca_file", f"OpenSSL cannot use {ca_file}: {exc.reason or exc}") from None
    try:
        ctx.load_cert_chain(str(cert_file), str(key_file))
    except ssl.SSLError as exc:
        raise ConfigError("tls.server_cert", f"OpenSSL cannot use {cert_file} with {key_file}: {exc.reason or exc}") from None
    # No TLS 1.3 session tickets: each costs an encryption and a write per handshake, and
    # ticket keys die with the process, so they cannot speed up the reconnect storm after
    # a restart, the one moment handshake cost matters.
    ctx.num_tickets = 0
    # OpenSSL reads and writes the socket itself instead of through aiofastnet's memory
    # BIOs, which are two 257 KB buffers per connection that an idle vehicle keeps a few
    # touched pages of (about 10 KB); it also saves a copy per handshake message. This is
    # aiofastnet 1.2's own switch (the path it uses for kernel TLS); versions without it
    # ignore the attribute.
    ctx._aiofastnet_force_socket_bio = True  # type: ignore[attr-defined]
    return ctx


@dataclass(frozen=True)
class FileStamp:
    """What identifies one version of a file on disk (Kubernetes swaps a symlink on update)."""

    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileStamp | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return cls(st.st_ino, st.st_size, st.st_mtime_ns)


def reload_reason(
    before: tuple[FileStamp | None, FileStamp | None], now: tuple[FileStamp | None, FileStamp | None]
) -> str | None:
    """Why the certificate should be reloaded, or None: a pure decision for the watcher."""
    if now[0] is None or now[1] is None:
        return None  # mid-update or deleted: keep serving the certificate we have
    if before[0] != now[0]:
        return "certificate file changed"
    if before[1] != now[1]:
        return "key file changed"
    return None


class CertificateReloader:
    """Swaps the server certificate of a live context when its files change.

    New handshakes get the new certificate; established connections keep theirs, so no
    vehicle is dropped. A pair that does not load (half-written, mismatched) is refused
    and the old one stays in use.
    """

    def __init__(self, ctx: ssl.SSLContext, cert_file: Path, key_file: Path) -> None:
        self.ctx = ctx
        self.cert_file = cert_file
        self.key_file = key_file
        self._stamps = self._stamp()

    def _stamp(self) -> tuple[FileStamp | None, FileStamp | None]:
        return FileStamp.of(self.cert_file), FileStamp.of(self.key_file)

    def check(self) -> tuple[str, str] | None:
        """Reload if the files changed; returns (outcome, detail) when something happened."""
        stamps = self._stamp()
        reason = reload_reason(self._stamps, stamps)
        if reason is None:
            return None
        self._stamps = stamps
        try:
            check_tls_files(self.cert_file, self.key_file)
            probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            probe.load_cert_chain(str(self.cert_file), str(self.key_file))
            self.ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        except ConfigError as exc:
            return "failed", f"{reason}, but the new pair does not load: {exc}"
        except (ssl.SSLError, OSError) as exc:
            return "failed", f"{reason}, but the new pair does not load: {getattr(exc, 'reason', None) or exc}"
        return "reloaded", reason
