"""The envelope codec's limits and malformed input: fuzzing proves that no input escapes as
anything but `FrameError`, and decoding and acking stay on the fast path.
"""

from __future__ import annotations

import struct
import timeit
from collections.abc import Callable

import pytest
from fleetwire.proto.envelope_codec import (
    MAX_MESSAGE_BYTES,
    FrameError,
    decode_frame,
    decode_reply,
    encode_ack,
    encode_error,
    encode_stream,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from flatbuffers_reference import (
    Spec,
    build,
    specs,
)


# --- limits and malformed input ----------------------------------------------------------


def test_oversize_keeps_the_txid() -> None:
    head = len(encode_stream(b"tx-9", b"V", b""))
    exact = encode_stream(b"tx-9", b"V", b"x" * (MAX_MESSAGE_BYTES - head))
    assert len(exact) == MAX_MESSAGE_BYTES
    assert decode_frame(exact).txid == b"tx-9"
    with pytest.raises(FrameError) as info:
        decode_frame(exact + b"\0")
    assert (info.value.reason, info.value.txid) == ("oversize", b"tx-9")
    with pytest.raises(FrameError) as info:
        decode_frame(b"\xff" * (MAX_MESSAGE_BYTES + 1))
    assert (info.value.reason, info.value.txid) == ("oversize", b"")


def _patched(buf: bytes, at: int, fmt: str, value: int) -> bytes:
    out = bytearray(buf)
    struct.pack_into(fmt, out, at, value)
    return bytes(out)


VALID = encode_stream(b"txid", b"V", b"payload", created_at=5, device_id=b"VIN")
# Offsets in the codec's stream layout (see the layout comment in the module).
MALFORMED = {
    "empty": b"",
    "short root": b"\x04\x00",
    "root past end": _patched(VALID, 0, "<I", len(VALID)),
    "vtable before start": _patched(VALID, 20, "<i", 1000),
    "vtable past end": _patched(VALID, 20, "<i", -len(VALID)),
    "vtable shorter than header": _patched(VALID, 4, "<H", 2),
    "odd vtable size": _patched(VALID, 4, "<H", 13),
    "vtable size past end": _patched(VALID, 4, "<H", 0xFFFE),
    "table size past end": _patched(VALID, 6, "<H", 0xFFFF),
    "topic offset past end": _patched(VALID, 28, "<I", 0xFFFFFFF0),
    "topic length past end": _patched(VALID, 92 + 8, "<I", 0xFFFFFFFF),
    "message offset past end": _patched(VALID, 32, "<I", len(VALID)),
    "payload length past end": _patched(VALID, 60 + 20 + struct.unpack_from("<I", VALID, 80)[0], "<I", 1000),
    "stream vtable too short": _patched(VALID, 44, "<H", 0),
    "stream field past end": _patched(VALID, 44 + 4, "<H", 0xFFF0),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_is_a_frame_error(name: str) -> None:
    with pytest.raises(FrameError) as info:
        decode_frame(MALFORMED[name])
    assert info.value.reason == "envelope"


def test_malformed_after_txid_keeps_the_txid() -> None:
    with pytest.raises(FrameError) as info:
        decode_frame(MALFORMED["payload length past end"])
    assert info.value.txid == b"txid"


def test_short_vtable_means_absent_fields() -> None:
    """An older writer's vtable lists fewer slots: the rest are absent, not an error."""
    short = _patched(VALID, 44, "<H", 12)  # stream vtable without device_id and delivered
    frame = decode_frame(short)
    assert (frame.payload, frame.device_id, frame.created_at) == (b"payload", b"", 5)


# --- fuzzing: FrameError or a Frame, never anything else -------------------------------


def must_not_escape(fn: Callable[[bytes], object], data: bytes) -> None:
    try:
        fn(data)
    except FrameError:
        pass


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data: bytes) -> None:
    must_not_escape(decode_frame, data)
    must_not_escape(decode_reply, data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs(), st.data())
def test_fuzz_truncations_flips_and_overwrites(spec: Spec, data: st.DataObject) -> None:
    buf = build(spec)
    cut = data.draw(st.integers(0, len(buf)))
    must_not_escape(decode_frame, buf[:cut])
    must_not_escape(decode_reply, buf[:cut])
    flipped = bytearray(buf)
    for bit in data.draw(st.lists(st.integers(0, len(buf) * 8 - 1), min_size=1, max_size=8)):
        flipped[bit // 8] ^= 1 << (bit % 8)
    must_not_escape(decode_frame, bytes(flipped))
    must_not_escape(decode_reply, bytes(flipped))
    overwritten = bytearray(buf)
    at = data.draw(st.integers(0, len(buf) - 4))
    edge = st.sampled_from([0, 1, 2, 3, 4, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF])
    struct.pack_into("<I", overwritten, at, data.draw(edge | st.integers(0, 2**32 - 1)))
    must_not_escape(decode_frame, bytes(overwritten))
    must_not_escape(decode_reply, bytes(overwritten))


def test_every_truncation_and_single_bit_flip() -> None:
    for buf in (VALID, encode_ack(b"txid", b"V"), encode_error(b"txid")):
        for cut in range(len(buf)):
            must_not_escape(decode_frame, buf[:cut])
            must_not_escape(decode_reply, buf[:cut])
        for bit in range(len(buf) * 8):
            flipped = bytearray(buf)
            flipped[bit // 8] ^= 1 << (bit % 8)
            must_not_escape(decode_frame, bytes(flipped))
            must_not_escape(decode_reply, bytes(flipped))


# --- the hot path stays fast --------------------------------------------------------------


def test_decode_and_ack_stay_on_the_fast_path() -> None:
    """A regression guard, far above the budget (~5 us) but below any Builder-based path."""
    frame = encode_stream(b"0f8e6a3c-8c0d-4d1e-9a7b-2b3c4d5e6f70", b"V", b"\x0a" * 220,
                          created_at=1_700_000_000, device_type=b"vehicle_device", device_id=b"5YJ3E1EA7JF000001")

    def one() -> bytes:
        f = decode_frame(frame)
        return encode_ack(f.txid, f.topic)

    per_call = min(timeit.repeat(one, number=2000, repeat=7)) / 2000
    assert per_call < 25e-6
