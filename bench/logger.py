"""The logger dispatcher's cost per `V` record, against baselines measured in the same run.

One process, one core, no sockets: each variant takes the same distinct 10-datum `V`
records (388-byte frames, as in `run_all.py`) through what the server does with a frame —
envelope decode, protobuf decode, ack encode — and then through the logger's `publish`
in batches of 256 to /dev/null. Variants:

  decode_ack   decode and ack only (no dispatch): the floor
  sizes_only   + the logger's line without data (the old default)
  default      + the decoded record, fields by name (the default now)
  verbose      + values labelled with their types (`logger.verbose`)
  protojson    + the record as protobuf-JSON (what `transmit_decoded_records` sends)
  walk         + reading each datum's key, value and variant, printing nothing: what any
               rendering pays to protobuf's API

Figures are µs per record, the best of `--passes` passes per variant, the variants taking
turns pass by pass (so that a busy moment of the machine hurts all of them alike, and the
best pass is the one least disturbed); the logger's own cost is the difference to `decode_ack`.

Usage: python bench/logger.py [--records 1000] [--passes 40]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from fleetwire.server.dispatchers.logger import LoggerDispatcher
from fleetwire.proto.envelope_codec import decode_frame, encode_ack, encode_stream
from fleetwire.server.records import Record, decode_record
from fleetwire.sim.vehicle import DEFAULT_FIELDS, vehicle_payload

VIN = "5YJ3E1EA7KF000001"
BATCH = 256


def frames(count: int, seed: int = 0) -> list[bytes]:
    """`count` distinct envelopes of 10-datum `V` records (the bytes a WebSocket frame carries)."""
    rng = random.Random(seed)
    now = time.time()
    out = []
    for n in range(count):
        payload = vehicle_payload(VIN, DEFAULT_FIELDS, rng, now + n)
        out.append(encode_stream(f"tx-{n}".encode(), b"V", payload, created_at=int(now),
                                 device_id=VIN.encode(), device_type=b"vehicle_device"))
    return out


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    """Drive a coroutine that never waits (the logger's publish) without an event loop."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    raise RuntimeError("publish awaited something")


def ingest(data: Sequence[bytes]) -> list[Record]:
    records = []
    for raw in data:
        frame = decode_frame(raw)
        message, payload = decode_record("V", frame.payload, VIN)
        encode_ack(frame.txid, frame.topic)
        now = time.time()
        records.append(Record("V", VIN, "vehicle_device", frame.txid.decode(), "c", payload, message,
                              float(frame.created_at), now))
    return records


def variant(
    logger: LoggerDispatcher | None, protojson: bool = False, walk: bool = False
) -> Callable[[Sequence[bytes]], None]:
    def once(data: Sequence[bytes]) -> None:
        records = ingest(data)
        if protojson:
            for record in records:
                record.json()
        if walk:
            for record in records:
                for datum in record.message.data:
                    datum.key  # noqa: B018 - the read is what is measured
                    value = datum.value
                    getattr(value, value.WhichOneof("value"))
        if logger is not None:
            for start in range(0, len(records), BATCH):
                run(logger.publish(records[start : start + BATCH]))

    return once


def timed(once: Callable[[Sequence[bytes]], None], data: Sequence[bytes]) -> float:
    start = time.perf_counter()
    once(data)
    return (time.perf_counter() - start) / len(data) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--passes", type=int, default=40)
    args = parser.parse_args()
    sink = open(os.devnull, "w")  # noqa: SIM115 - open for the whole run
    variants = {
        "decode_ack": variant(None),
        "sizes_only": variant(LoggerDispatcher(sink, include_data=False)),
        "default": variant(LoggerDispatcher(sink)),
        "verbose": variant(LoggerDispatcher(sink, verbose=True)),
        "protojson": variant(LoggerDispatcher(sink, include_data=False), protojson=True),
        "walk": variant(None, walk=True),
    }
    data = frames(args.records)
    for once in variants.values():  # warm up: plans, caches
        once(data[:200])
    passes: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.passes):
        for name, once in variants.items():
            passes[name].append(timed(once, data))
    us = {name: round(min(values), 2) for name, values in passes.items()}
    medians = {name: round(statistics.median(values), 2) for name, values in passes.items()}
    floor = us["decode_ack"]
    report = {
        "benchmark": "logger dispatcher per V record (10 datums)",
        "python": platform.python_version(),
        "records": args.records,
        "passes": args.passes,
        "load_average": round(os.getloadavg()[0], 2),
        "us_per_record": us,
        "us_per_record_median": medians,
        "logger_us_per_record": {name: round(value - floor, 2) for name, value in us.items() if name != "decode_ack"},
        "vs_decode_ack": {name: round(value / floor, 2) for name, value in us.items() if name != "decode_ack"},
        "default_vs_sizes_only": round(us["default"] / us["sizes_only"], 2),
        "line_bytes": {
            "sizes_only": len(LoggerDispatcher(sink, include_data=False).line(ingest(data[:1])[0])),
            "default": len(LoggerDispatcher(sink).line(ingest(data[:1])[0])),
            "verbose": len(LoggerDispatcher(sink, verbose=True).line(ingest(data[:1])[0])),
        },
    }
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
