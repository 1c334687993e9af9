"""A hand-made vehicle for the end-to-end tests: a `websockets` client over mTLS that sends
frames built byte by byte and reads the server's replies.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningServer
from fleetwire.proto import vehicle_data_pb2
from fleetwire.proto.envelope_codec import Reply, decode_reply, encode_stream
from fleetwire.sim.vehicle import client_context
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed


VIN = "5YJ3E1EA7KF000001"
OTHER_VIN = "5YJ3E1EA7KF000002"
INCORRECT_FORMAT = b"incorrect message format"
REPLY_TIMEOUT = 5.0


def v_payload(vin: str = VIN, speed: float = 42.5) -> bytes:
    payload = vehicle_data_pb2.Payload(vin=vin)
    payload.created_at.FromSeconds(int(time.time()))
    payload.data.add(key=vehicle_data_pb2.VehicleSpeed).value.double_value = speed
    return payload.SerializeToString()


class Car:
    """A vehicle on a `websockets` connection that sends any frame and reads replies."""

    def __init__(self, ws: ClientConnection, vin: str) -> None:
        self.ws = ws
        self.vin = vin
        self._seq = 0

    @classmethod
    async def connect(
        cls, srv: RunningServer, vin: str = VIN, *, cert: tuple[Path, Path] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Car:
        cert_file, key_file = cert or srv.vehicle_cert(vin)
        ws = await connect(
            srv.url, ssl=client_context(cert_file, key_file, srv.pki.server_ca_cert), compression=None,
            additional_headers=dict(headers or {}), proxy=None, max_size=None, ping_interval=None,
            open_timeout=REPLY_TIMEOUT, close_timeout=1,
        )
        return cls(ws, vin)

    def txid(self) -> bytes:
        self._seq += 1
        return f"{self.vin}-{self._seq}".encode()

    def frame(
        self, topic: str = "V", payload: bytes | None = None, *, txid: bytes | None = None, sender_id: bytes = b""
    ) -> tuple[bytes, bytes]:
        """A stream envelope as vehicles send it, and its txid."""
        txid = txid or self.txid()
        data = encode_stream(
            txid, topic.encode(), v_payload(self.vin) if payload is None else payload,
            created_at=int(time.time()), sender_id=sender_id, device_type=b"vehicle_device",
        )
        return data, txid

    async def send(self, data: bytes | str) -> None:
        await self.ws.send(data)

    async def reply(self, timeout: float = REPLY_TIMEOUT) -> Reply:
        data = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(data, bytes), f"text reply {data!r}"
        return decode_reply(data)

    async def exchange(self, data: bytes) -> Reply:
        await self.send(data)
        return await self.reply()

    async def record(self, topic: str = "V", payload: bytes | None = None, **kwargs: Any) -> tuple[Reply, bytes]:
        data, txid = self.frame(topic, payload, **kwargs)
        return await self.exchange(data), txid

    async def assert_alive(self) -> None:
        """A valid record still gets its ack on this connection."""
        reply, txid = await self.record()
        assert (reply.kind, reply.txid, reply.topic) == ("ack", txid, b"V")

    async def assert_silent(self, wait: float = 0.3) -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(self.ws.recv(), wait)

    async def closed_with(self) -> tuple[int, str]:
        """Wait for the server to end the connection; its close code and reason."""
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(self.ws.recv(), REPLY_TIMEOUT)
        rcvd = closed.value.rcvd
        assert rcvd is not None, "the server closed without a close frame"
        return rcvd.code, rcvd.reason

    async def close(self) -> None:
        await self.ws.close()
