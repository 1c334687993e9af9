"""Tesla.SS256: the published vectors byte for byte, round trips, and every way a token must fail."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fleetwire.proto import ss256 as signing
from fleetwire.proto.ss256 import (
    TELEMETRY_AUDIENCE,
    SignatureError,
    iss_claim,
    public_point,
    sign,
    sign_telemetry_config,
    verify,
    verify_token,
)
from hypothesis import given, settings
from hypothesis import strategies as st

# Public test vectors of Tesla.SS256 (published in the tests of teslamotors/vehicle-command).
VECTOR_SCALAR = 0x0300000000000000000000000000000000000000000000000000000000000000
VECTOR_MESSAGE = b"hello world"
VECTOR_SIGNATURE = bytes.fromhex(
    "7cfdbeb5baa730540401550bdefa20976453e8539ae4b2f26ce33125801a08f9"
    "0ed20c3d846497ff82cc9772e3db4703982f47bd0b0b89dfb9a49cd2e5240546"
    "02b1e05fbf95f5686faea7a5809eb92f5ecc22eae74ceccc5e2a65dd67ff20fc"
)
VECTOR_JWT_PUBLIC_POINT = bytes.fromhex(
    "04775e2ef570d292df424c09f70e7d95678d5ce78124acb3f9375b198a4da9f9e9"
    "f0cc6d880e2e606e9b01b0fa62c6150e371aa5d8f7f09cc9e1bd3a1b449893ec"
)
VECTOR_JWT = (
    "eyJhbGciOiJUZXNsYS5TUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJhdWQiOiJjb20udGVzbGEudmVoaWNsZS5NM1RFUkFTSElNQUJVQ0swMSIsImZvbyI6ImJhciIsImlzcyI6IkJIZGVM"
    "dlZ3MHBMZlFrd0o5dzU5bFdlTlhPZUJKS3l6K1RkYkdZcE5xZm5wOE14dGlBNHVZRzZiQWJENllzWVZEamNhcGRqMzhK"
    "eko0YjA2RzBTWWsrdz0ifQ."
    "4Xq2tsynDYOhLBWpnqLJfsAzdOqTOwHkVowI47A-yzVXIQHaawObJvAYRoRs61oVwWiEQ7XYXG8WE_Vz_49eVirAV9NG"
    "Kymj3HBTTjN5DmViWmFzfaIOXRWKJlE--vzU"
)

CONFIG = {
    "hostname": "telemetry.example.com",
    "port": 443,
    "ca": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    "fields": {"VehicleSpeed": {"interval_seconds": 10}},
    "alert_types": ["service"],
    "exp": 1_900_000_000,
}

N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(token: str, index: int) -> dict[str, object]:
    part = token.split(".")[index]
    decoded: dict[str, object] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


# -- the public vectors -------------------------------------------------------------------


def test_signature_vector_reproduced_byte_for_byte() -> None:
    key = ec.derive_private_key(VECTOR_SCALAR, ec.SECP256R1())
    assert sign(key, VECTOR_MESSAGE) == VECTOR_SIGNATURE
    assert verify(public_point(key), VECTOR_MESSAGE, VECTOR_SIGNATURE)


def test_jwt_vector_verifies_with_its_public_key() -> None:
    claims = verify_token(VECTOR_JWT, VECTOR_JWT_PUBLIC_POINT)
    assert claims["foo"] == "bar"
    assert claims["iss"] == iss_claim(VECTOR_JWT_PUBLIC_POINT)
    assert claims["iss"].endswith("=")  # standard, padded base64
    assert verify_token(VECTOR_JWT) == claims  # the key named by iss


def test_jwt_vector_claims_are_compact_and_sorted_like_ours() -> None:
    """Our serializer writes the vector's claims to the very bytes the reference signer wrote."""
    header_b64, claims_b64, _ = VECTOR_JWT.split(".")
    claims = verify_token(VECTOR_JWT)
    assert signing._json_segment(claims) == claims_b64
    assert signing._json_segment({"typ": "JWT", "alg": "Tesla.SS256"}) == header_b64


# -- tokens -------------------------------------------------------------------------------


def test_telemetry_config_round_trip(key: ec.EllipticCurvePrivateKey) -> None:
    token = sign_telemetry_config(key, CONFIG)
    assert _segment(token, 0) == {"alg": "Tesla.SS256", "typ": "JWT"}
    claims = verify_token(token, public_point(key))
    assert claims == {**CONFIG, "iss": iss_claim(public_point(key)), "aud": TELEMETRY_AUDIENCE}
    assert list(_segment(token, 1)) == sorted(claims)
    assert len(base64.urlsafe_b64decode(token.split(".")[2] + "==")) == 96
    assert "=" not in token


def test_signing_is_deterministic(key: ec.EllipticCurvePrivateKey) -> None:
    assert sign_telemetry_config(key, CONFIG) == sign_telemetry_config(key, dict(reversed(CONFIG.items())))


def test_iss_and_aud_in_the_config_are_overwritten(key: ec.EllipticCurvePrivateKey) -> None:
    claims = verify_token(sign_telemetry_config(key, {**CONFIG, "iss": "someone", "aud": "elsewhere"}))
    assert claims["iss"] == iss_claim(public_point(key))
    assert claims["aud"] == TELEMETRY_AUDIENCE


def test_tampered_payload_fails(key: ec.EllipticCurvePrivateKey) -> None:
    header, _, signature = sign_telemetry_config(key, CONFIG).split(".")
    forged = {**CONFIG, "hostname": "evil.example.com", "iss": iss_claim(public_point(key)), "aud": TELEMETRY_AUDIENCE}
    with pytest.raises(SignatureError, match="does not verify"):
        verify_token(f"{header}.{signing._json_segment(forged)}.{signature}", public_point(key))


def test_tampered_signature_fails(key: ec.EllipticCurvePrivateKey) -> None:
    header, claims, signature = sign_telemetry_config(key, CONFIG).split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    for index in (0, 40, 95):  # Vx, Vy, r
        bad = bytearray(raw)
        bad[index] ^= 1
        with pytest.raises(SignatureError, match="does not verify"):
            verify_token(f"{header}.{claims}.{_b64url(bytes(bad))}", public_point(key))
    with pytest.raises(SignatureError, match="does not verify"):
        verify_token(f"{header}.{claims}.{_b64url(bytes(raw[:95]))}", public_point(key))


def test_wrong_issuer_fails(key: ec.EllipticCurvePrivateKey) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    token = sign_telemetry_config(key, CONFIG)
    with pytest.raises(SignatureError, match="iss claim names another key"):
        verify_token(token, public_point(other))
    # iss swapped for another key while the signature stays: the iss is part of what is signed
    header, _, signature = token.split(".")
    claims = {**_segment(token, 1), "iss": iss_claim(public_point(other))}
    with pytest.raises(SignatureError, match="does not verify"):
        verify_token(f"{header}.{signing._json_segment(claims)}.{signature}")


def test_wrong_algorithm_and_malformed_tokens_fail(key: ec.EllipticCurvePrivateKey) -> None:
    _, claims, signature = sign_telemetry_config(key, CONFIG).split(".")
    es256 = signing._json_segment({"alg": "ES256", "typ": "JWT"})
    with pytest.raises(SignatureError, match="alg is 'ES256'"):
        verify_token(f"{es256}.{claims}.{signature}")
    with pytest.raises(SignatureError, match="3 dot-separated parts"):
        verify_token(f"{claims}.{signature}")
    with pytest.raises(SignatureError, match="not base64url"):
        verify_token(f"{es256}.{claims}=.{signature}")
    no_iss = signing._json_segment({"aud": TELEMETRY_AUDIENCE})
    with pytest.raises(SignatureError, match="no iss claim"):
        verify_token(f"{signing._json_segment(signing._HEADER)}.{no_iss}.{signature}")
    bad_iss = signing._json_segment({"iss": base64.b64encode(b"\x04" + b"\x01" * 64).decode()})
    with pytest.raises(SignatureError, match="not a P-256 public point"):
        verify_token(f"{signing._json_segment(signing._HEADER)}.{bad_iss}.{signature}")


def test_other_curves_are_refused() -> None:
    with pytest.raises(ValueError, match="P-256"):
        sign(ec.generate_private_key(ec.SECP384R1()), b"m")


# -- the verification arithmetic ----------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(a=st.integers(1, N - 1), b=st.integers(1, N - 1))
def test_point_addition_agrees_with_scalar_multiplication(a: int, b: int) -> None:
    pa, pb = signing._decode_point(signing._scalar_point(a)), signing._decode_point(signing._scalar_point(b))
    total = (a + b) % N
    expected = signing._decode_point(signing._scalar_point(total)) if total else None
    assert signing._add(pa, pb) == expected
    assert signing._add(pa, pa) == signing._decode_point(signing._scalar_point(2 * a % N))


def test_verify_tells_c_a_from_its_negation(monkeypatch: pytest.MonkeyPatch, key: ec.EllipticCurvePrivateKey) -> None:
    """x(c·A) alone cannot tell V = r·G + c·A from V = r·G − c·A; verify must accept only the first."""
    c, r = 0x1234567890ABCDEF << 128, 0xFEDCBA0987654321 << 64
    monkeypatch.setattr(signing, "_challenge", lambda *_: c)
    x = key.private_numbers().private_value
    c_a = signing._decode_point(signing._scalar_point(c * x % N))
    r_g = signing._decode_point(signing._scalar_point(r))
    for sign_of_c, accepted in ((1, True), (-1, False)):
        cx, cy = c_a
        v = signing._add(r_g, (cx, cy if sign_of_c > 0 else (-cy) % signing._P))
        assert v is not None
        signature = v[0].to_bytes(32, "big") + v[1].to_bytes(32, "big") + r.to_bytes(32, "big")
        assert verify(public_point(key), b"any", signature) is accepted


def test_verify_refuses_out_of_range_r_and_off_curve_nonce_points(key: ec.EllipticCurvePrivateKey) -> None:
    good = sign(key, b"m")
    assert not verify(public_point(key), b"m", good[:64] + N.to_bytes(32, "big"))
    assert not verify(public_point(key), b"m", good[:64] + bytes(32))
    assert not verify(public_point(key), b"m", bytes(64) + good[64:])
    with pytest.raises(ValueError):
        verify(b"\x04" + bytes(64), b"m", good)


# -- properties ---------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(scalar=st.integers(1, N - 1), message=st.binary(max_size=512), flip=st.integers(0, 95))
def test_round_trip_for_random_keys_and_messages(scalar: int, message: bytes, flip: int) -> None:
    key = ec.derive_private_key(scalar, ec.SECP256R1())
    signature = sign(key, message)
    assert len(signature) == 96
    assert verify(public_point(key), message, signature)
    assert not verify(public_point(key), message + b"\x00", signature)
    tampered = bytearray(signature)
    tampered[flip] ^= 0x80
    assert not verify(public_point(key), message, bytes(tampered))


@settings(max_examples=25, deadline=None)
@given(
    scalar=st.integers(1, N - 1),
    config=st.dictionaries(
        st.text(min_size=1, max_size=12).filter(lambda k: k not in ("iss", "aud")),
        st.one_of(st.integers(), st.text(max_size=40), st.booleans(), st.lists(st.text(max_size=8), max_size=3)),
        max_size=6,
    ),
)
def test_token_round_trip_for_random_configs(scalar: int, config: dict[str, object]) -> None:
    key = ec.derive_private_key(scalar, ec.SECP256R1())
    claims = verify_token(sign_telemetry_config(key, config), public_point(key))
    assert claims == {**config, "iss": iss_claim(public_point(key)), "aud": TELEMETRY_AUDIENCE}
