"""Pre-encoded `V` records: envelopes wrapped in masked client WebSocket frames."""

from __future__ import annotations

import random
import struct
import time
import uuid

from fleetwire.proto.envelope_codec import encode_stream
from fleetwire.sim.vehicle import DEFAULT_FIELDS, vehicle_payload


def client_frame(payload: bytes, mask: bytes) -> bytes:
    """One final binary WebSocket frame as a client sends it (masked, RFC 6455 §5.2)."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x82, 0x80 | n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", 0x82, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x82, 0x80 | 127, n)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    masked = (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big") if n else b""
    return header + mask + masked


def v_record_frames(vin: str, count: int, seed: int = 0) -> list[bytes]:
    """`count` distinct `V` records of 10 datums each, ready to write to a connection."""
    rng = random.Random(seed)
    now = time.time()
    frames = []
    for _ in range(count):
        txid = str(uuid.UUID(int=rng.getrandbits(128), version=4)).encode()
        payload = vehicle_payload(vin, DEFAULT_FIELDS, rng, now)
        envelope = encode_stream(
            txid, b"V", payload, created_at=int(now), device_id=vin.encode(), device_type=b"vehicle_device"
        )
        frames.append(client_frame(envelope, rng.randbytes(4)))
    return frames
