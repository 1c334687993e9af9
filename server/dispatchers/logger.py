"""The logger dispatcher: one JSON line per record on a text stream (stdout by default).

It stores nothing, so it can never confirm a record for a reliable ack; it exists to see
what vehicles send. A batch is written with one `write` and one `flush`, so logging a
busy fleet costs one system call per batch, not per record.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from typing import TextIO

import orjson

from fleetwire.server.config import ServerConfig
from fleetwire.server.dispatchers.base import DispatchError, Record



class LoggerDispatcher:
    """Writes {"record_type","vin","txid","client_type","created_at","received_at","size"}
    per record, plus "data" (the record as protobuf-JSON) when `include_data`."""

    name = "logger"

    def __init__(self, stream: TextIO | None = None, include_data: bool = False) -> None:
        self._stream = stream if stream is not None else sys.stdout
        self.include_data = include_data

    async def start(self) -> None:
        return None

    async def publish(self, batch: Sequence[Record]) -> None:
        include_data = self.include_data
        lines: list[bytes] = []
        append = lines.append
        dumps = orjson.dumps
        for record in batch:
            head = dumps({
                "record_type": record.record_type,
                "vin": record.vin,
                "txid": record.txid,
                "client_type": record.client_type,
                "created_at": record.created_at,
                "received_at": record.received_at,
                "size": len(record.payload),
            })
            if include_data:
                # Record.json() is compact single-line JSON: splice it instead of re-encoding.
                append(b'%s,"data":%s}\n' % (head[:-1], record.json()))
            else:
                append(head + b"\n")
        try:
            self._stream.write(b"".join(lines).decode())
            self._stream.flush()
        except (OSError, ValueError) as exc:  # ValueError: the stream was closed
            raise DispatchError(f"cannot write the log: {exc}") from exc

    async def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()


def create(config: ServerConfig) -> LoggerDispatcher:
    """Data goes in the lines when `logger.verbose` or `transmit_decoded_records` is set."""
    return LoggerDispatcher(include_data=config.logger.verbose or config.transmit_decoded_records)
