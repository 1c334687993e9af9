"""The hand-written envelope codec against the FlatBuffers library.

Equivalence runs both ways: the codec decodes whatever `flatbuffers.Builder` builds
(any field order, absent fields, shared vtables, forced defaults, fields a newer schema
adds), and the library's `Table` reader (and the generated modules) read exactly what the
codec writes. Fuzzing proves that no input escapes as anything but `FrameError`.
"""

from __future__ import annotations

import random
import struct
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import flatbuffers
import pytest
from flatbuffers import encode, number_types, packer
from flatbuffers.table import Table
from fleetwire.proto.envelope_codec import (
    MAX_MESSAGE_BYTES,
    Frame,
    FrameError,
    Reply,
    decode_frame,
    decode_reply,
    encode_ack,
    encode_error,
    encode_stream,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ENV_SLOTS = {"txid": 0, "topic": 1, "message_type": 2, "message": 3, "message_id": 4}
STREAM_SLOTS = {
    "created_at": 0, "sender_id": 1, "payload": 2, "device_type": 3, "device_id": 4,
    "delivered_at_epoch_ms": 5,
}
STREAM_VECTORS = ("sender_id", "payload", "device_type", "device_id")
ENV_VECTORS = ("txid", "topic", "message_id")

small_bytes = st.binary(max_size=48)
STREAM_TYPE: st.SearchStrategy[int | None] = st.just(4)
maybe_bytes = st.none() | small_bytes


# --- the reference writer: flatbuffers.Builder ----------------------------------------


@dataclass
class Spec:
    """What a frame carries (None: the field is absent) and how the Builder lays it out."""

    txid: bytes | None
    topic: bytes | None
    message_id: bytes | None
    message_type: int | None
    created_at: int | None
    sender_id: bytes | None
    payload: bytes | None
    device_type: bytes | None
    device_id: bytes | None
    delivered_at_epoch_ms: int | None
    with_message: bool
    force_defaults: bool
    extra_slots: int
    decoy_table: bool
    rng_seed: int

    def expected(self) -> Frame:
        return Frame(
            txid=self.txid or b"",
            topic=self.topic or b"",
            message_id=self.message_id or b"",
            payload=self.payload or b"",
            created_at=self.created_at or 0,
            sender_id=self.sender_id or b"",
            device_type=self.device_type or b"",
            device_id=self.device_id or b"",
        )


def build(spec: Spec) -> bytes:
    """Build the envelope with the library, shuffling every order the format leaves free."""
    rng = random.Random(spec.rng_seed)
    b = flatbuffers.Builder(0)
    b.ForceDefaults(spec.force_defaults)

    vectors: dict[str, int] = {}
    names = [name for name in ENV_VECTORS + STREAM_VECTORS if getattr(spec, name) is not None]
    rng.shuffle(names)
    for name in names:
        vectors[name] = b.CreateByteVector(getattr(spec, name))

    stream_fields = [name for name in STREAM_SLOTS if getattr(spec, name) is not None]
    stream_fields += [f"extra{i}" for i in range(spec.extra_slots)]
    rng.shuffle(stream_fields)

    def stream_table() -> int:
        b.StartObject(len(STREAM_SLOTS) + spec.extra_slots)
        for name in stream_fields:
            if name.startswith("extra"):
                b.PrependUint32Slot(len(STREAM_SLOTS) + int(name[5:]), 0xDEADBEEF, 0)
            elif name == "created_at":
                b.PrependUint32Slot(0, spec.created_at, 0)
            elif name == "delivered_at_epoch_ms":
                b.PrependUint64Slot(5, spec.delivered_at_epoch_ms, 0)
            else:
                b.PrependUOffsetTRelativeSlot(STREAM_SLOTS[name], vectors[name], 0)
        return b.EndObject()

    message = None
    if spec.with_message:
        if spec.decoy_table:
            stream_table()  # same shape: the real table may then share this one's vtable
        message = stream_table()

    b.StartObject(len(ENV_SLOTS) + spec.extra_slots)
    fields = [name for name in ENV_VECTORS if getattr(spec, name) is not None]
    if spec.message_type is not None:
        fields.append("message_type")
    if message is not None:
        fields.append("message")
    fields += [f"extra{i}" for i in range(spec.extra_slots)]
    rng.shuffle(fields)
    for name in fields:
        if name.startswith("extra"):
            b.PrependUint16Slot(len(ENV_SLOTS) + int(name[5:]), 0xBEEF, 0)
        elif name == "message_type":
            b.PrependUint8Slot(2, spec.message_type, 0)
        elif name == "message":
            b.PrependUOffsetTRelativeSlot(3, message, 0)
        else:
            b.PrependUOffsetTRelativeSlot(ENV_SLOTS[name], vectors[name], 0)
    b.Finish(b.EndObject())
    return bytes(b.Output())


@st.composite
def specs(draw: st.DrawFn, message_type: st.SearchStrategy[int | None] = STREAM_TYPE) -> Spec:
    return Spec(
        txid=draw(maybe_bytes),
        topic=draw(maybe_bytes),
        message_id=draw(maybe_bytes),
        message_type=draw(message_type),
        created_at=draw(st.none() | st.integers(0, 2**32 - 1)),
        sender_id=draw(maybe_bytes),
        payload=draw(st.none() | st.binary(max_size=400)),
        device_type=draw(maybe_bytes),
        device_id=draw(maybe_bytes),
        delivered_at_epoch_ms=draw(st.none() | st.integers(0, 2**64 - 1)),
        with_message=True,
        force_defaults=draw(st.booleans()),
        extra_slots=draw(st.integers(0, 3)),
        decoy_table=draw(st.booleans()),
        rng_seed=draw(st.integers(0, 2**32)),
    )


# --- the reference reader: flatbuffers.table.Table -------------------------------------


def lib_vector(tab: Table, slot: int) -> bytes | None:
    off = tab.Offset(4 + 2 * slot)
    if not off:
        return None
    start = tab.Vector(off)
    return bytes(tab.Bytes[start : start + tab.VectorLen(off)])


def lib_read(buf: bytes) -> dict[str, Any]:
    """Everything in an envelope, read with the library's Table."""
    env = Table(bytearray(buf), encode.Get(packer.uoffset, buf, 0))
    out: dict[str, Any] = {
        "txid": lib_vector(env, 0),
        "topic": lib_vector(env, 1),
        "message_type": env.GetSlot(4 + 2 * 2, 0, number_types.Uint8Flags),
        "message_id": lib_vector(env, 4),
    }
    off = env.Offset(4 + 2 * 3)
    if off:
        msg = Table(bytearray(), 0)
        env.Union(msg, off)
        out["message"] = {
            "created_at": msg.GetSlot(4, 0, number_types.Uint32Flags),
            "sender_id": lib_vector(msg, 1),
            "payload": lib_vector(msg, 2),
            "device_type": lib_vector(msg, 3),
            "device_id": lib_vector(msg, 4),
            "delivered_at_epoch_ms": msg.GetSlot(14, 0, number_types.Uint64Flags),
            "vtable_bytes": msg.Get(number_types.VOffsetTFlags, msg.Pos - msg.Get(number_types.SOffsetTFlags, msg.Pos)),
        }
    return out


def check_alignment(buf: bytes) -> None:
    """What a verifying reader insists on: tables 4-, vtables 2-, lengths 4-, uint64 8-aligned."""

    def table(pos: int, widths: dict[int, int]) -> int:
        assert pos % 4 == 0
        vt = pos - struct.unpack_from("<i", buf, pos)[0]
        assert vt % 2 == 0
        vsize, tsize = struct.unpack_from("<HH", buf, vt)
        assert vsize % 2 == 0 and pos + tsize <= len(buf)
        for slot in range((vsize - 4) // 2):
            off = struct.unpack_from("<H", buf, vt + 4 + 2 * slot)[0]
            if off:
                assert (pos + off) % widths.get(slot, 4) == 0, (slot, pos + off)
                assert off + widths.get(slot, 4) <= tsize
        return vt

    root = struct.unpack_from("<I", buf, 0)[0]
    vt = table(root, {2: 1})
    for slot in (0, 1, 3, 4):
        if slot < (struct.unpack_from("<H", buf, vt)[0] - 4) // 2:
            off = struct.unpack_from("<H", buf, vt + 4 + 2 * slot)[0]
            if off:
                target = root + off + struct.unpack_from("<I", buf, root + off)[0]
                assert target % 4 == 0
                if slot == 3:
                    svt = table(target, {5: 8})
                    for sslot in range(1, min(5, (struct.unpack_from("<H", buf, svt)[0] - 4) // 2)):
                        soff = struct.unpack_from("<H", buf, svt + 4 + 2 * sslot)[0]
                        if soff:
                            at = target + soff
                            assert (at + struct.unpack_from("<I", buf, at)[0]) % 4 == 0


# --- decoding what the library builds ---------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(specs())
def test_decodes_what_the_builder_builds(spec: Spec) -> None:
    assert decode_frame(build(spec)) == spec.expected()


@settings(max_examples=100, deadline=None)
@given(specs(message_type=st.sampled_from([None, 0, 1, 3, 5, 255])))
def test_other_message_types_are_not_streams(spec: Spec) -> None:
    with pytest.raises(FrameError) as info:
        decode_frame(build(spec))
    assert info.value.reason == "not_stream"
    assert info.value.txid == (spec.txid or b"")


def test_shared_vtable_after_its_table_is_followed() -> None:
    """A vtable deduplicated from an earlier object sits after the table (negative soffset)."""
    spec = Spec(b"t", b"V", None, 4, 7, None, b"p", b"d", b"i", None, True, False, 2, True, 1)
    buf = build(spec)
    env = Table(bytearray(buf), encode.Get(packer.uoffset, buf, 0))
    msg = Table(bytearray(), 0)
    env.Union(msg, env.Offset(10))
    assert msg.Get(number_types.SOffsetTFlags, msg.Pos) < 0
    assert decode_frame(buf) == spec.expected()


def test_empty_envelope_is_not_a_stream() -> None:
    b = flatbuffers.Builder(0)
    b.StartObject(5)
    b.Finish(b.EndObject())
    with pytest.raises(FrameError) as info:
        decode_frame(bytes(b.Output()))
    assert (info.value.reason, info.value.txid) == ("not_stream", b"")


def test_stream_type_without_message_is_malformed() -> None:
    spec = Spec(b"tx", b"V", None, 4, None, None, None, None, None, None, False, False, 0, False, 0)
    with pytest.raises(FrameError) as info:
        decode_frame(build(spec))
    assert (info.value.reason, info.value.txid) == ("envelope", b"tx")


def test_accepts_bytearray_and_memoryview() -> None:
    buf = encode_stream(b"tx", b"V", b"payload")
    assert decode_frame(bytearray(buf)) == decode_frame(memoryview(buf)) == decode_frame(buf)
    assert type(decode_frame(memoryview(buf)).payload) is bytes


# --- the library reads what the codec writes --------------------------------------------


@settings(max_examples=200, deadline=None)
@given(small_bytes, small_bytes)
def test_ack_reads_back_with_the_library(txid: bytes, topic: bytes) -> None:
    buf = encode_ack(txid, topic)
    got = lib_read(buf)
    assert got["txid"] == txid and got["topic"] == topic and got["message_type"] == 5
    assert got["message_id"] is None
    assert got["message"]["vtable_bytes"] == 4  # FlatbuffersStreamAck: no fields
    check_alignment(buf)
    assert decode_reply(buf) == Reply("ack", txid, topic, b"")


@settings(max_examples=200, deadline=None)
@given(
    small_bytes, small_bytes, st.binary(max_size=600), st.integers(0, 2**32 - 1),
    small_bytes, small_bytes, small_bytes, small_bytes, st.integers(0, 2**64 - 1),
)
def test_stream_reads_back_with_the_library(
    txid: bytes, topic: bytes, payload: bytes, created_at: int, sender_id: bytes,
    device_type: bytes, device_id: bytes, message_id: bytes, delivered: int,
) -> None:
    buf = encode_stream(
        txid, topic, payload, created_at=created_at, sender_id=sender_id,
        device_type=device_type, device_id=device_id, message_id=message_id,
        delivered_at_epoch_ms=delivered,
    )
    got = lib_read(buf)
    assert (got["txid"], got["topic"], got["message_type"], got["message_id"]) == (txid, topic, 4, message_id)
    msg = got["message"]
    assert (msg["created_at"], msg["payload"], msg["sender_id"]) == (created_at, payload, sender_id)
    assert (msg["device_type"], msg["device_id"], msg["delivered_at_epoch_ms"]) == (device_type, device_id, delivered)
    check_alignment(buf)
    assert decode_frame(buf) == Frame(txid, topic, message_id, payload, created_at, sender_id, device_type, device_id)


@settings(max_examples=100, deadline=None)
@given(small_bytes, st.binary(min_size=1, max_size=100))
def test_error_reads_back_with_the_library(txid: bytes, text: bytes) -> None:
    buf = encode_error(txid, text)
    got = lib_read(buf)
    assert (got["txid"], got["topic"], got["message_type"]) == (txid, b"", 4)
    assert got["message"]["payload"] == text
    check_alignment(buf)
    assert decode_reply(buf) == Reply("error", txid, b"", text)


def test_default_error_text() -> None:
    assert decode_reply(encode_error(b"")) == Reply("error", b"", b"", b"incorrect message format")


def test_generated_modules_read_the_codec() -> None:
    """The flatc-generated accessors, as a second reader."""
    gen_env = pytest.importorskip("fleetwire.proto.envelope.FlatbuffersEnvelope")
    gen_stream = pytest.importorskip("fleetwire.proto.envelope.FlatbuffersStream")
    buf = encode_stream(b"id-1", b"alerts", b"\x0a\x01x", created_at=1_700_000_000, device_id=b"VIN1")
    env = gen_env.FlatbuffersEnvelope.GetRootAs(buf, 0)
    assert bytes(env.Txid(i) for i in range(env.TxidLength())) == b"id-1"
    assert bytes(env.Topic(i) for i in range(env.TopicLength())) == b"alerts"
    assert env.MessageType() == 4
    stream = gen_stream.FlatbuffersStream()
    tab = env.Message()
    stream.Init(tab.Bytes, tab.Pos)
    assert bytes(stream.Payload(i) for i in range(stream.PayloadLength())) == b"\x0a\x01x"
    assert stream.CreatedAt() == 1_700_000_000
    ack = gen_env.FlatbuffersEnvelope.GetRootAs(encode_ack(b"id-1", b"V"), 0)
    assert ack.MessageType() == 5 and bytes(ack.Txid(i) for i in range(ack.TxidLength())) == b"id-1"


@pytest.mark.parametrize("kind", ["ack", "error"])
def test_decode_reply_reads_builder_replies(kind: str) -> None:
    b = flatbuffers.Builder(0)
    txid = b.CreateByteVector(b"abc")
    topic = b.CreateByteVector(b"V" if kind == "ack" else b"")
    if kind == "ack":
        b.StartObject(0)
        message, mtype = b.EndObject(), 5
    else:
        text = b.CreateByteVector(b"incorrect message format")
        b.StartObject(6)
        b.PrependUOffsetTRelativeSlot(2, text, 0)
        message, mtype = b.EndObject(), 4
    b.StartObject(5)
    b.PrependUOffsetTRelativeSlot(3, message, 0)
    b.PrependUint8Slot(2, mtype, 0)
    b.PrependUOffsetTRelativeSlot(1, topic, 0)
    b.PrependUOffsetTRelativeSlot(0, txid, 0)
    b.Finish(b.EndObject())
    reply = decode_reply(bytes(b.Output()))
    assert (reply.kind, reply.txid) == (kind, b"abc")
    assert reply.text == (b"" if kind == "ack" else b"incorrect message format")


def test_decode_reply_rejects_other_types() -> None:
    spec = Spec(b"t", b"V", None, 3, None, None, None, None, None, None, True, False, 0, False, 0)
    with pytest.raises(FrameError):
        decode_reply(build(spec))


def test_encode_stream_rejects_out_of_range_numbers() -> None:
    with pytest.raises(ValueError):
        encode_stream(b"", b"V", b"", created_at=2**32)
    with pytest.raises(ValueError):
        encode_stream(b"", b"V", b"", delivered_at_epoch_ms=-1)


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
