"""The FlatBuffers library as the envelope codec's reference: envelopes built with
`flatbuffers.Builder` from hypothesis specs, read back with its `Table`, and the alignment
any verifying reader demands.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass
from typing import Any

import flatbuffers
from flatbuffers import encode, number_types, packer
from flatbuffers.table import Table
from fleetwire.proto.envelope_codec import (
    Frame,
)
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
