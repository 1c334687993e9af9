"""Tesla.SS256: the Schnorr signature (NIST P-256, SHA-256) that vehicles require of configs.

Vehicles accept a telemetry config only as a JWS signed with the app's P-256 key under
the algorithm "Tesla.SS256", which no JOSE library implements. It is a Schnorr signature:

    k = RFC 6979 nonce (HMAC-DRBG, SHA-256) from the private scalar x and SHA256(m)
    V = k·G,  A = x·G                     (65-byte uncompressed points)
    c = SHA256(len‖G ‖ len‖V ‖ len‖A ‖ len‖m)   (len: 4-byte big-endian length of the next item)
    r = (k − x·c) mod n
    signature = Vx ‖ Vy ‖ r               (96 bytes)

and it verifies when r·G + c·A == V. Everything here is a pure function. The curve
arithmetic that matters for secrecy (k·G and x·G while signing) is left to
`cryptography`; the only hand-written arithmetic is the affine point addition that
verification needs, since `cryptography` exposes no point addition.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = [
    "ALGORITHM",
    "TELEMETRY_AUDIENCE",
    "SignatureError",
    "iss_claim",
    "public_point",
    "sign",
    "sign_telemetry_config",
    "verify",
    "verify_token",
]

ALGORITHM = "Tesla.SS256"
TELEMETRY_AUDIENCE = "com.tesla.fleet.TelemetryClient"

# NIST P-256 (SEC 2, secp256r1): field prime, curve coefficient a, group order.
_P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
_A = _P - 3
_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_CURVE = ec.SECP256R1()
_HEADER = {"alg": ALGORITHM, "typ": "JWT"}
_B64URL = re.compile(r"[A-Za-z0-9_-]*")

_Point = tuple[int, int] | None  # affine coordinates; None is the point at infinity


class SignatureError(ValueError):
    """A token that must not be trusted: bad form, wrong algorithm, wrong issuer or signature."""


# --------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------


def _scalar_point(scalar: int) -> bytes:
    """scalar·G as a 65-byte uncompressed point, computed by `cryptography` (constant time)."""
    key = ec.derive_private_key(scalar, _CURVE)
    return key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


_G = _scalar_point(1)


def public_point(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> bytes:
    """The 65-byte uncompressed public point (0x04 ‖ X ‖ Y): what `iss` and the challenge carry."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    if not isinstance(public.curve, ec.SECP256R1):
        raise ValueError(f"Tesla.SS256 needs a NIST P-256 key, not {public.curve.name}")
    return public.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def iss_claim(point: bytes) -> str:
    """The `iss` claim: standard, padded base64 of the public point (vehicles compare it as is)."""
    return base64.b64encode(point).decode("ascii")


def _rfc6979_nonce(x: int, digest: bytes) -> int:
    """The deterministic nonce of RFC 6979 §3.2 for P-256/SHA-256.

    Determinism is part of the format here, not just hygiene: the published vectors
    pin the signature bytes, so the nonce must come out exactly as the reference
    signer's. With qlen = hlen = 256 bits, bits2int is a plain big-endian read and one
    HMAC output fills a candidate.
    """
    key_bytes = x.to_bytes(32, "big")
    h1 = (int.from_bytes(digest, "big") % _N).to_bytes(32, "big")  # bits2octets

    def mac(k: bytes, data: bytes) -> bytes:
        return hmac.new(k, data, hashlib.sha256).digest()

    v, k = b"\x01" * 32, b"\x00" * 32
    k = mac(k, v + b"\x00" + key_bytes + h1)
    v = mac(k, v)
    k = mac(k, v + b"\x01" + key_bytes + h1)
    v = mac(k, v)
    while True:
        v = mac(k, v)
        candidate = int.from_bytes(v, "big")
        if 1 <= candidate < _N:
            return candidate
        k = mac(k, v + b"\x00")
        v = mac(k, v)


def _challenge(nonce_point: bytes, key_point: bytes, message: bytes) -> int:
    """c = SHA256(len‖G ‖ len‖V ‖ len‖A ‖ len‖m), each len 4 bytes big-endian."""
    h = hashlib.sha256()
    for item in (_G, nonce_point, key_point, message):
        h.update(len(item).to_bytes(4, "big"))
        h.update(item)
    return int.from_bytes(h.digest(), "big")


# --------------------------------------------------------------------------------------
# Signing and verification of raw messages
# --------------------------------------------------------------------------------------


def sign(private_key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    """The 96-byte Tesla.SS256 signature Vx ‖ Vy ‖ r of `message`."""
    key_point = public_point(private_key)
    x = private_key.private_numbers().private_value
    k = _rfc6979_nonce(x, hashlib.sha256(message).digest())
    nonce_point = _scalar_point(k)
    c = _challenge(nonce_point, key_point, message)
    r = (k - x * c) % _N
    return nonce_point[1:] + r.to_bytes(32, "big")


def _decode_point(point: bytes) -> tuple[int, int]:
    """Affine coordinates of an uncompressed point; `cryptography` rejects points off the curve."""
    ec.EllipticCurvePublicKey.from_encoded_point(_CURVE, point)  # raises ValueError if invalid
    if len(point) != 65:
        raise ValueError("expected a 65-byte uncompressed P-256 point")
    return int.from_bytes(point[1:33], "big"), int.from_bytes(point[33:], "big")


def _add(p1: _Point, p2: _Point) -> _Point:
    """Affine point addition on P-256: the only hand-written curve arithmetic, used to verify.

    Verification handles public values only, so a plain, variable-time formula is fine.
    """
    if p1 is None:
        return p2
    if p2 is None:
        return p1
    (x1, y1), (x2, y2) = p1, p2
    if x1 == x2:
        if (y1 + y2) % _P == 0:
            return None
        slope = (3 * x1 * x1 + _A) * pow(2 * y1, -1, _P) % _P
    else:
        slope = (y2 - y1) * pow(x2 - x1, -1, _P) % _P
    x3 = (slope * slope - x1 - x2) % _P
    return x3, (slope * (x1 - x3) - y1) % _P


def _x_of_multiple(scalar: int, point: ec.EllipticCurvePublicKey) -> int:
    """x(scalar·point) through ECDH, which returns exactly that coordinate."""
    shared = ec.derive_private_key(scalar, _CURVE).exchange(ec.ECDH(), point)
    return int.from_bytes(shared, "big")


def verify(public_point: bytes, message: bytes, signature: bytes) -> bool:
    """True when `signature` is a valid Tesla.SS256 signature of `message` by `public_point`.

    The equation r·G + c·A == V is checked as W == c·A with W = V − r·G, where r·G comes
    from `cryptography` and W from one point addition. `cryptography` yields only the
    x-coordinate of c·A (through ECDH), which leaves W = ±c·A; comparing x(W + A) with
    x((c+1)·A) settles the sign, since for W = −c·A it would need (1−c)·A = ±(c+1)·A,
    i.e. c ≡ 0. The degenerate challenges c ≡ 0 and c ≡ −1 (mod n; probability 2⁻²⁵⁵)
    are refused. Raises ValueError if `public_point` is not a P-256 point.
    """
    key = ec.EllipticCurvePublicKey.from_encoded_point(_CURVE, public_point)
    if len(public_point) != 65:
        raise ValueError("expected a 65-byte uncompressed P-256 point")
    if len(signature) != 96:
        return False
    nonce_point = b"\x04" + signature[:64]
    try:
        v = _decode_point(nonce_point)
    except ValueError:
        return False
    r = int.from_bytes(signature[64:], "big")
    c = _challenge(nonce_point, public_point, message) % _N
    if not 0 < r < _N or c in (0, _N - 1):
        return False
    rx, ry = _decode_point(_scalar_point(r))
    w = _add(v, (rx, (-ry) % _P))
    if w is None:
        return False
    w_plus_a = _add(w, _decode_point(public_point))
    return (
        w_plus_a is not None
        and w[0] == _x_of_multiple(c, key)
        and w_plus_a[0] == _x_of_multiple(c + 1, key)
    )


# --------------------------------------------------------------------------------------
# JWS tokens
# --------------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str, what: str) -> bytes:
    if not _B64URL.fullmatch(text):
        raise SignatureError(f"the token's {what} is not base64url without padding")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError as exc:
        raise SignatureError(f"the token's {what} is not valid base64url: {exc}") from exc


def _json_segment(data: Mapping[str, Any]) -> str:
    """Compact JSON with sorted keys, as Go's encoder writes maps.

    The reference signer marshals the claims as a Go map, which always comes out in
    sorted key order (the published JWT vector shows aud, foo, iss); sorting makes our
    tokens byte-identical to its tokens for the same config and key.
    """
    text = json.dumps(data, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return _b64url(text.encode("utf-8"))


def sign_telemetry_config(private_key: ec.EllipticCurvePrivateKey, config: Mapping[str, Any]) -> str:
    """The JWS compact token for POST /api/1/vehicles/fleet_telemetry_config_jws.

    Claims are every key of `config` plus `iss` (this key) and `aud` (the telemetry
    client); `iss` and `aud` in `config` are overwritten, as Tesla's signing proxy does,
    because a vehicle trusts only those values.
    """
    claims = {**config, "iss": iss_claim(public_point(private_key)), "aud": TELEMETRY_AUDIENCE}
    signing_input = f"{_json_segment(_HEADER)}.{_json_segment(claims)}"
    return f"{signing_input}.{_b64url(sign(private_key, signing_input.encode('ascii')))}"


def verify_token(token: str, public_point: bytes | None = None) -> dict[str, Any]:
    """The claims of a Tesla.SS256 token, or SignatureError saying why it cannot be trusted.

    With `public_point`, the token must name that key in `iss` and be signed by it (a
    config signed by another key is what vehicles report as "unknown issuer"). Without
    it, the key named by `iss` is used: that proves integrity, not who signed.
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise SignatureError(f"a JWS compact token has 3 dot-separated parts, this one has {len(parts)}")
    header_b64, claims_b64, signature_b64 = parts
    try:
        header = json.loads(_b64url_decode(header_b64, "header"))
        claims = json.loads(_b64url_decode(claims_b64, "claims"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SignatureError(f"the token's header or claims are not JSON: {exc}") from exc
    if not isinstance(header, dict) or header.get("alg") != ALGORITHM:
        alg = header.get("alg") if isinstance(header, dict) else None
        raise SignatureError(f"the token's alg is {alg!r}, expected {ALGORITHM!r}")
    if not isinstance(claims, dict):
        raise SignatureError("the token's claims are not a JSON object")
    iss = claims.get("iss")
    if not isinstance(iss, str):
        raise SignatureError("the token has no iss claim naming the signing key")
    try:
        named = base64.b64decode(iss, validate=True)
    except ValueError as exc:
        raise SignatureError(f"the iss claim is not standard base64: {exc}") from exc
    if public_point is not None and named != public_point:
        raise SignatureError(
            f"the iss claim names another key ({iss}) than the expected one ({iss_claim(public_point)})"
        )
    try:
        valid = verify(named, f"{header_b64}.{claims_b64}".encode("ascii"), _b64url_decode(signature_b64, "signature"))
    except ValueError as exc:
        if isinstance(exc, SignatureError):
            raise
        raise SignatureError(f"the iss claim is not a P-256 public point: {exc}") from exc
    if not valid:
        raise SignatureError(f"the signature does not verify with the key {iss}")
    return claims
