"""TLS for the vehicle port: mutual TLS with a short client-CA list, hot-reloadable leaf."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path


def server_context(cert_file: Path, key_file: Path, ca_file: Path) -> ssl.SSLContext:
    """An mTLS server context: TLS 1.2+, a client certificate required and verified.

    Python advertises no client-CA names in the CertificateRequest (it never sets the
    list), which is the short list vehicles need: a long list made them withhold their
    certificate.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=str(ca_file))
    ctx.load_cert_chain(str(cert_file), str(key_file))
    # No TLS 1.3 session tickets: each costs an encryption and a write per handshake, and
    # ticket keys die with the process, so they cannot speed up the reconnect storm after
    # a restart, the one moment handshake cost matters.
    ctx.num_tickets = 0
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
            probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            probe.load_cert_chain(str(self.cert_file), str(self.key_file))
            self.ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        except (ssl.SSLError, OSError) as exc:
            return "failed", f"{reason}, but the new pair does not load: {exc}"
        return "reloaded", reason
