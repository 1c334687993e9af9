"""aiofastnet's TLS engine without the work nobody asked for.

aiofastnet 1.2 (picows' TLS layer) stores ``getpeercert()`` in every transport's extra
info when a handshake completes. For a verified peer that is CPython's dict form of the
certificate, which CPython can only produce from a file: each handshake wrote the
certificate to a temporary file, had OpenSSL parse it again and unlinked the file. That
cost more server CPU than the rest of the handshake outside OpenSSL, and kept a dict of
strings per idle connection. The server reads identity from the verified leaf in DER
(`transport.verified_leaf`) and never reads that dict, so on server-side transports that
require a client certificate the engine hands back a `PeerCertificate`: the same mapping,
decoded the first time someone actually reads it.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Callable, Iterator, Mapping
from typing import Any

__all__ = ["PeerCertificate", "install"]

# aiofastnet's own getpeercert (the decoding one), once `install` has replaced the engine.
_decode: Callable[[Any], dict[str, Any] | None] = lambda engine: None


class PeerCertificate(Mapping[str, Any]):
    """`ssl.SSLObject.getpeercert()` of a connection, decoded on first access."""

    __slots__ = ("_decoded", "_engine")

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self._decoded: dict[str, Any] | None = None

    def _dict(self) -> dict[str, Any]:
        if self._decoded is None:
            self._decoded = _decode(self._engine) or {}
            self._engine = None
        return self._decoded

    def __getitem__(self, key: str) -> Any:
        return self._dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict())

    def __len__(self) -> int:
        return len(self._dict())

    def __repr__(self) -> str:
        return f"PeerCertificate({self._dict()!r})"


@functools.cache
def install() -> bool:
    """Give aiofastnet's transports the lean engine; False if this aiofastnet has none to
    replace (then certificates are decoded as before: slower, still correct)."""
    try:
        from aiofastnet import ssl_transport
    except ImportError:
        return False
    base = getattr(ssl_transport, "SSLEngineDirect", None)
    if not isinstance(base, type) or not callable(getattr(base, "getpeercert", None)):
        return False

    class LeanSSLEngine(base):  # type: ignore[misc, valid-type]
        __slots__ = ()

        def getpeercert(self, binary_form: bool = False) -> Any:
            if binary_form or not self.server_side or self.ssl_ctx_py.verify_mode != ssl.CERT_REQUIRED:
                return base.getpeercert(self, binary_form)
            # A completed handshake under CERT_REQUIRED always has a verified peer
            # certificate, so the only question left is its dict form: deferred.
            return PeerCertificate(self)

    global _decode
    _decode = base.getpeercert
    ssl_transport.SSLEngineDirect = LeanSSLEngine
    return True
