"""Sans-I/O codec for the FlatBuffers envelope (`envelope.fbs`) every vehicle frame travels in.

Both ends of the wire use it, so it sits beside the schema and imports nothing of either:
the server decodes frames (`decode_frame`) and answers them (`encode_ack`,
`encode_error`); a vehicle, such as the simulator in `sim/`, writes frames
(`encode_stream`) and reads the answers (`decode_reply`). The generated modules in
`envelope/` are the schema's reference reading, used by tests, not by this codec.

Every vehicle message passes through `decode_frame` and, usually, `encode_ack`, so both
work on the FlatBuffers binary layout directly with precompiled `struct` readers: the
library's generated accessors and its `Builder` cost tens of microseconds per frame in
Python, an order of magnitude over the budget of the whole ingest path.

Layout facts the decoder relies on (all little-endian):

- the buffer starts with a uoffset (uint32) to the root table;
- a table starts with an soffset (int32); its vtable sits at ``table - soffset``;
- a vtable is ``uint16 vtable_bytes, uint16 table_bytes`` followed by one uint16 per
  field slot, the field's offset from the table start (0: absent, use the default);
  a vtable that lists fewer slots than the schema is valid (older writer), the rest
  are absent;
- a vector field holds a uoffset, relative to the field itself, to a uint32 length
  followed by the elements; a union value field holds a uoffset to its table.

Every offset and length is checked against the buffer, so any input either decodes
or raises `FrameError` — never an `IndexError` or `struct.error`.

The encoders write one fixed, fully aligned layout per reply kind (tables on 4-byte
boundaries, the uint64 on an 8-byte boundary, vectors' lengths on 4-byte boundaries),
which any FlatBuffers reader, including verifying ones, accepts.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "MAX_MESSAGE_BYTES",
    "Frame",
    "FrameError",
    "Reply",
    "decode_frame",
    "decode_reply",
    "encode_ack",
    "encode_error",
    "encode_stream",
]

MAX_MESSAGE_BYTES = 1_000_000
"""Largest message a vehicle may send; a larger one gets an error reply."""

DEFAULT_ERROR_TEXT = b"incorrect message format"

# Union tags of `Message` in proto/envelope.fbs.
MESSAGE_NONE = 0
MESSAGE_STREAM = 4
MESSAGE_STREAM_ACK = 5

_ENVELOPE_SLOTS = 5  # txid, topic, message_type, message, message_id
_STREAM_SLOTS = 6  # created_at, sender_id, payload, device_type, device_id, delivered_at_epoch_ms

_u32 = struct.Struct("<I").unpack_from
_i32 = struct.Struct("<i").unpack_from
_u16x2 = struct.Struct("<HH").unpack_from
_u16x7 = struct.Struct("<7H").unpack_from  # vtable header + 5 slots, in one read
_pack_u32 = struct.Struct("<I").pack
# Readers of the first k field slots of a vtable, k = 0 .. the schema's slot count.
_SLOTS: tuple[Callable[[bytes, int], tuple[int, ...]], ...] = tuple(
    struct.Struct(f"<{k}H").unpack_from for k in range(_STREAM_SLOTS + 1)
)
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")  # indexed by len % 4: bytes up to a 4-byte boundary


class FrameError(Exception):
    """A frame that cannot be processed; the reply is an error envelope.

    `reason` is a short label for metrics ("envelope", "not_stream", "oversize");
    `txid` is the frame's transaction id when it could be read (empty otherwise), so
    the error reply can still echo it.
    """

    def __init__(self, reason: str, txid: bytes = b"", message: str = "") -> None:
        super().__init__(message or reason)
        self.reason = reason
        self.txid = txid


@dataclass(slots=True)
class Frame:
    """The parts of a vehicle's stream envelope the server acts on."""

    txid: bytes
    topic: bytes
    message_id: bytes
    payload: bytes
    created_at: int
    sender_id: bytes
    device_type: bytes
    device_id: bytes


@dataclass(slots=True)
class Reply:
    """A server reply as a vehicle sees it: an ack, or an error carrying its text."""

    kind: Literal["ack", "error"]
    txid: bytes
    topic: bytes
    text: bytes


class _Malformed(Exception):
    """Internal: an offset or length points outside the buffer."""


def _fields(data: bytes, n: int, table: int, count: int) -> tuple[int, ...]:
    """Field offsets (0 = absent) of the first `count` slots of the table at `table`."""
    vtable = table - _i32(data, table)[0]
    if vtable < 0:
        raise _Malformed("vtable before the start of the buffer")
    vsize, tsize = _u16x2(data, vtable)
    if vsize < 4 or vsize & 1 or vtable + vsize > n or table + tsize > n:
        raise _Malformed("vtable or table runs past the buffer")
    present: int = (vsize - 4) >> 1
    if present >= count:
        return _SLOTS[count](data, vtable + 4)
    return _SLOTS[present](data, vtable + 4) + (0,) * (count - present)


def _clip(vsize: int, *slots: int) -> tuple[int, ...]:
    """Slots read past the end of a short vtable are absent fields."""
    if vsize < 4:
        raise _Malformed("vtable shorter than its header")
    present = (vsize - 4) >> 1
    return slots[:present] + (0,) * (len(slots) - present)


def _vector(data: bytes, n: int, at: int) -> bytes:
    """The bytes of the [ubyte] vector whose uoffset is stored at `at`."""
    start = at + _u32(data, at)[0] + 4
    end = start + _u32(data, start - 4)[0]
    if end > n:
        raise _Malformed("vector runs past the buffer")
    return data[start:end]


def _as_bytes(data: bytes | bytearray | memoryview) -> bytes:
    return data if type(data) is bytes else bytes(data)


def _peek_txid(data: bytes) -> bytes:
    """Best-effort txid of a frame rejected before decoding (for the error reply)."""
    try:
        n = len(data)
        root = _u32(data, 0)[0]
        f_txid = _fields(data, n, root, 1)[0]
        return _vector(data, n, root + f_txid) if f_txid else b""
    except (_Malformed, struct.error, IndexError):
        return b""


def decode_frame(data: bytes) -> Frame:
    """Decode a vehicle's envelope; only a stream (message_type 4) is a valid frame.

    Raises `FrameError` with reason "oversize" (more than `MAX_MESSAGE_BYTES`),
    "not_stream" (any other message type) or "envelope" (anything malformed).
    The vtables are read with one `struct` call each (the usual layouts); vectors go
    through `_vector`, which costs about 0.1 µs a field (3.4 µs per frame in all).
    """
    if type(data) is not bytes:
        data = bytes(data)
    n = len(data)
    if n > MAX_MESSAGE_BYTES:
        raise FrameError("oversize", _peek_txid(data), f"message of {n} bytes exceeds {MAX_MESSAGE_BYTES}")
    u32 = _u32
    txid = b""
    try:
        env = u32(data, 0)[0]
        vt = env - _i32(data, env)[0]
        if vt < 0:
            raise _Malformed("vtable before the start of the buffer")
        if vt + 14 <= n:
            vsize, tsize, f_txid, f_topic, f_type, f_msg, f_mid = _u16x7(data, vt)
            if vsize == 12:  # the usual writer leaves out the trailing, absent message_id
                f_mid = 0
            elif vsize < 14:
                f_txid, f_topic, f_type, f_msg, f_mid = _clip(vsize, f_txid, f_topic, f_type, f_msg, f_mid)
        else:
            f_txid, f_topic, f_type, f_msg, f_mid = _fields(data, n, env, _ENVELOPE_SLOTS)
            vsize, tsize = _u16x2(data, vt)
        if vsize & 1 or vt + vsize > n or env + tsize > n:
            raise _Malformed("vtable or table runs past the buffer")
        if f_txid:
            txid = _vector(data, n, env + f_txid)
        mtype = data[env + f_type] if f_type else MESSAGE_NONE
        if mtype != MESSAGE_STREAM:
            raise FrameError("not_stream", txid, f"message type {mtype} is not a stream")
        if not f_msg:
            raise _Malformed("stream message missing")
        topic = _vector(data, n, env + f_topic) if f_topic else b""
        message_id = _vector(data, n, env + f_mid) if f_mid else b""

        at = env + f_msg
        st = at + u32(data, at)[0]
        vt = st - _i32(data, st)[0]
        if vt < 0:
            raise _Malformed("vtable before the start of the buffer")
        if vt + 14 <= n:
            vsize, tsize, f_created, f_sender, f_payload, f_dtype, f_did = _u16x7(data, vt)
            if vsize < 14:
                f_created, f_sender, f_payload, f_dtype, f_did = _clip(
                    vsize, f_created, f_sender, f_payload, f_dtype, f_did
                )
        else:
            f_created, f_sender, f_payload, f_dtype, f_did = _fields(data, n, st, 5)
            vsize, tsize = _u16x2(data, vt)
        if vsize & 1 or vt + vsize > n or st + tsize > n:
            raise _Malformed("vtable or table runs past the buffer")
        payload = _vector(data, n, st + f_payload) if f_payload else b""
        sender_id = _vector(data, n, st + f_sender) if f_sender else b""
        device_type = _vector(data, n, st + f_dtype) if f_dtype else b""
        device_id = _vector(data, n, st + f_did) if f_did else b""
        created_at = u32(data, st + f_created)[0] if f_created else 0
    except (_Malformed, struct.error, IndexError) as exc:
        raise FrameError("envelope", txid, f"malformed envelope: {exc}") from None
    return Frame(txid, topic, message_id, payload, created_at, sender_id, device_type, device_id)


def decode_reply(data: bytes) -> Reply:
    """Decode a server reply as a vehicle does: type 5 is an ack, type 4 an error.

    An error is a stream envelope whose payload is the error text. Raises `FrameError`
    ("envelope") for anything malformed or of another message type.
    """
    data = _as_bytes(data)
    n = len(data)
    txid = b""
    try:
        env = _u32(data, 0)[0]
        f_txid, f_topic, f_type, f_msg, _ = _fields(data, n, env, _ENVELOPE_SLOTS)
        if f_txid:
            txid = _vector(data, n, env + f_txid)
        topic = _vector(data, n, env + f_topic) if f_topic else b""
        mtype = data[env + f_type] if f_type else MESSAGE_NONE
        if mtype == MESSAGE_STREAM_ACK:
            return Reply("ack", txid, topic, b"")
        if mtype != MESSAGE_STREAM or not f_msg:
            raise FrameError("envelope", txid, f"message type {mtype} is not a reply")
        at = env + f_msg
        st = at + _u32(data, at)[0]
        f_payload = _fields(data, n, st, 3)[2]
        return Reply("error", txid, topic, _vector(data, n, st + f_payload) if f_payload else b"")
    except (_Malformed, struct.error, IndexError) as exc:
        raise FrameError("envelope", txid, f"malformed reply: {exc}") from None


# The ack, offsets from the buffer start:
#   0 root uoffset -> 16
#   4 envelope vtable: 12 bytes, table 20 bytes; txid @4, topic @8, message_type @16, message @12
#  16 envelope table: soffset 12; txid uoffset; topic uoffset; message uoffset; message_type, pad 3
#  36 ack vtable: 4 bytes, table 4 bytes (no fields)
#  40 ack table: soffset 4
#  44 txid vector (uint32 length, bytes, pad to 4), then the topic vector (same)
_ACK_HEAD = struct.Struct("<I 6H i III B3x HH i I").pack
_ACK_TXID = 44
_ACK_DATA = 48
_ACK_TEMPLATE = _ACK_HEAD(
    16,
    12, 20, 4, 8, 16, 12,
    12, _ACK_TXID - 20, 0, 40 - 28, MESSAGE_STREAM_ACK,
    4, 4,
    4, 0,
)
# Only the topic's uoffset (at 24) and the txid's length (at 44) vary: pack just those.
_ACK_PREFIX = _ACK_TEMPLATE[:24]
_ack_varying = struct.Struct("<I16sI").pack
_ACK_MIDDLE = _ACK_TEMPLATE[28:44]


def encode_ack(txid: bytes, topic: bytes) -> bytes:
    """The ack envelope: the frame's txid and topic, message_type 5, an empty ack table."""
    lt = len(txid)
    lp = len(topic)
    return b"".join((
        _ACK_PREFIX,
        _ack_varying(_ACK_DATA + lt + (-lt & 3) - 24, _ACK_MIDDLE, lt),
        txid, _PAD[lt & 3], _pack_u32(lp), topic, _PAD[lp & 3],
    ))


# A stream envelope, offsets from the buffer start:
#   0 root uoffset -> 20
#   4 envelope vtable: 14 bytes (+2 pad), table 24 bytes;
#     txid @4, topic @8, message_type @20, message @12, message_id @16
#  20 envelope table: soffset 16; txid, topic, message, message_id uoffsets; message_type, pad 3
#  44 stream vtable: 16 bytes, table 32 bytes;
#     created_at @12, sender_id @16, payload @20, device_type @24, device_id @28, delivered @4
#  60 stream table: soffset 16; delivered_at_epoch_ms (uint64, at 64: 8-aligned); created_at;
#     sender_id, payload, device_type, device_id uoffsets
#  92 vectors: txid, topic, message_id, sender_id, payload, device_type, device_id
_STREAM_HEAD = struct.Struct("<I 7H2x i IIII B3x 8H i QI IIII").pack
_STREAM_DATA = 92
# Where each vector's uoffset is stored, in the order the vectors follow the tables.
_STREAM_SLOT_AT = (24, 28, 36, 76, 80, 84, 88)


def encode_stream(
    txid: bytes,
    topic: bytes,
    payload: bytes,
    *,
    created_at: int = 0,
    sender_id: bytes = b"",
    device_type: bytes = b"",
    device_id: bytes = b"",
    message_id: bytes = b"",
    delivered_at_epoch_ms: int = 0,
) -> bytes:
    """A stream envelope (message_type 4), as a vehicle sends one."""
    vectors = (txid, topic, message_id, sender_id, payload, device_type, device_id)
    parts: list[bytes | bytearray | memoryview] = [b""]
    rel: list[int] = []
    at = _STREAM_DATA
    for slot, vec in zip(_STREAM_SLOT_AT, vectors, strict=True):
        size = len(vec)
        rel.append(at - slot)
        parts += (_pack_u32(size), vec, _PAD[size & 3])
        at += 4 + size + (-size & 3)
    try:
        parts[0] = _STREAM_HEAD(
            20,
            14, 24, 4, 8, 20, 12, 16,
            16, rel[0], rel[1], 60 - 32, rel[2], MESSAGE_STREAM,
            16, 32, 12, 16, 20, 24, 28, 4,
            16, delivered_at_epoch_ms, created_at, rel[3], rel[4], rel[5], rel[6],
        )
    except struct.error as exc:
        raise ValueError(f"created_at must fit uint32 and delivered_at_epoch_ms uint64: {exc}") from None
    return b"".join(parts)


def encode_error(txid: bytes, text: bytes = DEFAULT_ERROR_TEXT) -> bytes:
    """The error envelope: txid (empty when unknown), empty topic, a stream carrying `text`."""
    return encode_stream(txid, b"", text)
