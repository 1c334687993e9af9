"""The hand-written envelope codec against the FlatBuffers library.

Equivalence runs both ways: the codec decodes whatever `flatbuffers.Builder` builds
(any field order, absent fields, shared vtables, forced defaults, fields a newer schema
adds), and the library's `Table` reader (and the generated modules) read exactly what the
codec writes. Limits, malformed input and fuzzing: test_envelope_limits.py.
"""

from __future__ import annotations

import importlib

import flatbuffers
import pytest
from flatbuffers import encode, number_types, packer
from flatbuffers.table import Table
from fleetwire.proto.envelope_codec import (
    Frame,
    FrameError,
    Reply,
    decode_frame,
    decode_reply,
    encode_ack,
    encode_error,
    encode_stream,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from flatbuffers_reference import (
    Spec,
    build,
    check_alignment,
    lib_read,
    small_bytes,
    specs,
)


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
    gen_env = importlib.import_module("fleetwire.proto.envelope.FlatbuffersEnvelope")
    gen_stream = importlib.import_module("fleetwire.proto.envelope.FlatbuffersStream")
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
