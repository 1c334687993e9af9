"""The sans-I/O steps of a record's path, one at a time: µs per record each, as JSON.

Each step runs on the benchmark's own `V` records (10 datums, 388-byte frames) with
`timeit`, best of `--repeat` rounds of the process's CPU time (all its threads: libzmq's
included), in one process pinned to one CPU; the session steps
run inside an event loop with a real `DispatchQueue` and ZMQ dispatcher (an XPUB socket
and a SUB socket draining it in another process), so they include what the loop adds per
record (futures, callbacks) but not the TLS and WebSocket layers, which
`profile_server.py` shows.

Usage: python bench/profile_steps.py [--number 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import timeit
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop
from fleetwire.proto.envelope_codec import decode_frame, encode_ack
from fleetwire.server.dispatch_queue import DispatchQueue
from fleetwire.server.dispatchers.zmq import ZmqDispatcher, ZmqSettings
from fleetwire.server.identity import Identity
from fleetwire.server.metrics import ServerMetrics
from fleetwire.server.records import Record, decode_record
from fleetwire.server.runtime import tune_collector
from fleetwire.server.session import Peer, Receipt, Route, Router, Session
from identities import vin
from records import v_record_frames
from system import pin
from targets import DRAIN

IDENTITY = Identity(vin(1), "vehicle_device")


def unmask(frame: bytes) -> bytes:
    """The envelope inside one of the benchmark's masked client frames (as picows hands it over)."""
    length = frame[1] & 0x7F
    at = 2
    if length == 126:
        length, at = int.from_bytes(frame[2:4], "big"), 4
    mask, body = frame[at:at + 4], frame[at + 4:at + 4 + length]
    return bytes(b ^ mask[i & 3] for i, b in enumerate(body))


def best(stmt: Callable[[], object], number: int, repeat: int) -> float:
    """µs of this process's CPU per call, best of `repeat` rounds (CPU, not wall time: the
    machine may be shared)."""
    return 1e6 * min(timeit.repeat(stmt, number=number, repeat=repeat, timer=time.process_time)) / number


class NullLink:
    """A transport that keeps nothing: what the session costs without the socket."""

    def __init__(self) -> None:
        self.sent = 0
        self.wanted = 0
        self.reached = asyncio.Event()

    def send(self, data: bytes) -> None:
        self.sent += 1
        if self.sent == self.wanted:
            self.reached.set()

    def hold(self, queue: DispatchQueue) -> None:
        raise RuntimeError("the queue filled during the measurement")


def sans_io(envelopes: list[bytes], number: int, repeat: int) -> dict[str, float]:
    own = decode_frame(envelopes[0]).payload  # vin(0)'s record
    frame = decode_frame(envelopes[0])
    message, payload = decode_record("V", own, vin(0))
    figures = {
        "decode_frame": best(lambda: decode_frame(envelopes[0]), number, repeat),
        "decode_record, own VIN": best(lambda: decode_record("V", own, vin(0)), number, repeat),
        "decode_record, another VIN (re-encoded)": best(lambda: decode_record("V", own, vin(1)), number, repeat),
        "Record(...)": best(lambda: Record("V", vin(0), "vehicle_device", frame.txid.decode(), "c", payload, message,
                                           1.0, 2.0, "1.0.0"), number, repeat),
        "time.time()": best(time.time, number, repeat),
        "encode_ack": best(lambda: encode_ack(frame.txid, frame.topic), number, repeat),
    }
    return figures


async def drained_zmq() -> tuple[ZmqDispatcher, Callable[[], Awaitable[None]]]:
    """A ZMQ dispatcher with a subscriber draining it in another process (as in run_all)."""
    dispatcher = ZmqDispatcher(ZmqSettings(addr="tcp://127.0.0.1:*"), "bench", confirm_subscribers=True)
    await dispatcher.start()
    assert dispatcher.endpoint is not None
    drain = await asyncio.create_subprocess_exec(sys.executable, "-c", DRAIN, dispatcher.endpoint,
                                                 stdin=subprocess.DEVNULL)
    while not dispatcher.subscriptions.prefixes:
        await asyncio.sleep(0.01)

    async def close() -> None:
        drain.terminate()
        await drain.wait()

    return dispatcher, close


async def session_path(envelopes: list[bytes], number: int, repeat: int) -> dict[str, float]:
    """Session.message per record with reliable acks (acked once zmq took the batch), and its parts."""
    dispatcher, stop_drain = await drained_zmq()
    metrics = ServerMetrics()
    out: dict[str, float] = {}
    try:
        queue = DispatchQueue(dispatcher, maxsize=10 * number + 1, batch_size=256)
        await queue.start()
        records = [decode_record("V", decode_frame(e).payload, vin(0))[1] for e in envelopes]
        messages = [decode_record("V", p, vin(0))[0] for p in records]
        batch = [Record("V", vin(0), "vehicle_device", "t", "c", p, m, 1.0, 2.0) for p, m in zip(records, messages)] * 16
        batch = batch[:256]

        async def publish_batches() -> None:
            for _ in range(number // 256):
                await dispatcher.publish(batch)

        link = NullLink()
        session = Session(IDENTITY, Peer("c"), Router({"V": Route((queue,), queue)}), metrics, link)
        rounds = []
        for _ in range(repeat):
            link.sent, link.wanted = 0, number
            link.reached.clear()
            start, start_thread = time.process_time(), time.thread_time()
            for i in range(number):
                session.message(envelopes[i & 255])
                if i & 255 == 255:
                    await asyncio.sleep(0)  # one loop turn per 256 records: the worker publishes them
            await link.reached.wait()
            rounds.append((time.process_time() - start, time.thread_time() - start_thread))
        whole, loop_thread = min(rounds)
        out["Session.message → DispatchQueue → ZMQ → ack (reliable), whole"] = 1e6 * whole / number
        out["  of which the event loop's thread"] = 1e6 * loop_thread / number
        rounds = []
        for _ in range(repeat):
            start = time.process_time()
            await publish_batches()
            rounds.append(time.process_time() - start)
        out["ZmqDispatcher.publish, batches of 256 (the event loop's thread)"] = 1e6 * min(rounds) / (
            256 * (number // 256))
        idle = DispatchQueue(dispatcher, maxsize=10 ** 8)  # never started: offer only
        out["DispatchQueue.offer"] = best(lambda: idle.offer(batch[0], None), number, repeat)
        txid = decode_frame(envelopes[0]).txid
        out["Receipt + ack (encode_ack, Link.send)"] = best(
            lambda: Receipt(session, txid, b"V").set_result(None), number, repeat)
        await queue.close()
    finally:
        await stop_drain()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cpu", type=int, default=1)
    args = parser.parse_args()
    pin(args.cpu)
    tune_collector()  # as `fleetwire serve` does
    envelopes = [unmask(f) for f in v_record_frames(vin(0), 256)]
    document: dict[str, Any] = {
        "record": {"envelope_bytes": len(envelopes[0]), "payload_bytes": len(decode_frame(envelopes[0]).payload)},
        "us_per_record": sans_io(envelopes, args.number, args.repeat),
    }
    document["us_per_record"].update(uvloop.run(session_path(envelopes, args.number, args.repeat)))
    document["us_per_record"] = {k: round(v, 3) for k, v in document["us_per_record"].items()}
    print(json.dumps(document, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
