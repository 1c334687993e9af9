"""Simulated vehicles: mTLS WebSocket clients that stream as cars do.

Each vehicle presents its own client certificate, sends `V` / `alerts` / `errors`
records in the FlatBuffers envelope at a chosen rate, and keeps count of acks and
error replies per transaction id, so a test can prove acked = delivered. As a car does,
a vehicle given `urls` reconnects when its server goes away (1001 on a rolling restart,
or a dropped socket) to the next URL, and resends every record not acked yet.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp
from picows import WSError, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from fleetwire.proto import vehicle_alert_pb2, vehicle_data_pb2, vehicle_error_pb2
from fleetwire.proto.envelope_codec import FrameError, decode_reply, encode_stream

DEFAULT_FIELDS = (
    "VehicleSpeed", "Odometer", "Location", "Gear", "Soc", "BatteryLevel",
    "EstBatteryRange", "ChargeState", "InsideTemp", "OutsideTemp",
)


def field_value(name: str, rng: random.Random, legacy_strings: bool = False) -> vehicle_data_pb2.Value:
    """A plausible value for a field, in the variant a vehicle uses for it."""
    value = vehicle_data_pb2.Value()
    if name in ("Location", "OriginLocation", "DestinationLocation"):
        lat, lon = 37.0 + rng.random(), -122.0 - rng.random()
        if legacy_strings:
            value.string_value = f"({abs(lat):.6f} N, {abs(lon):.6f} W)"
        else:
            value.location_value.latitude = lat
            value.location_value.longitude = lon
    elif name == "Gear":
        value.shift_state_value = rng.choice((2, 3, 4, 5))  # P R N D
    elif name in ("ChargeState", "DetailedChargeState"):
        value.detailed_charge_state_value = rng.choice((1, 3, 4, 5))
    elif name in ("Locked", "SentryMode", "FastChargerPresent", "ChargeEnableRequest"):
        value.boolean_value = rng.random() < 0.5
    elif name in ("Odometer",):
        value.double_value = 12000 + rng.random() * 100
    else:
        value.double_value = round(rng.random() * 100, 3)
    return value


def vehicle_payload(vin: str, fields: Sequence[str], rng: random.Random, now: float) -> bytes:
    """One `V` record with a datum per field."""
    payload = vehicle_data_pb2.Payload(vin=vin)
    payload.created_at.FromNanoseconds(int(now * 1e9))
    for name in fields:
        payload.data.add(key=vehicle_data_pb2.Field.Value(name), value=field_value(name, rng))
    return payload.SerializeToString()


def alerts_payload(vin: str, now: float) -> bytes:
    alert = vehicle_alert_pb2.VehicleAlert(name="ChargePort_a001_doorOpen", audiences=[1, 2])
    alert.started_at.FromNanoseconds(int(now * 1e9))
    msg = vehicle_alert_pb2.VehicleAlerts(alerts=[alert], vin=vin)
    msg.created_at.CopyFrom(alert.started_at)
    return msg.SerializeToString()


def errors_payload(vin: str, now: float) -> bytes:
    ts = Timestamp()
    ts.FromNanoseconds(int(now * 1e9))
    error = vehicle_error_pb2.VehicleError(name="telemetry_buffer_full", body="dropped 3 samples", created_at=ts)
    error.tags["component"] = "telemetry"
    return vehicle_error_pb2.VehicleErrors(errors=[error], created_at=ts, vin=vin).SerializeToString()


@dataclass
class VehicleStats:
    """What one vehicle saw: every sent txid ends acked, errored, or still pending."""

    sent: int = 0
    acked: int = 0
    errors: int = 0
    error_texts: dict[str, int] = field(default_factory=dict)
    ack_latencies: list[float] = field(default_factory=list)
    reconnects: int = 0
    resent: int = 0  # sends of a record again after a reconnect (also counted in `sent`)
    close_codes: dict[int, int] = field(default_factory=dict)  # the server's close codes seen


class _Client(WSListener):
    def __init__(self, vehicle: SimulatedVehicle) -> None:
        super().__init__()
        self.vehicle = vehicle

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.BINARY:
            self.vehicle._reply(frame.get_payload_as_bytes())
        elif frame.msg_type is WSMsgType.CLOSE:
            vehicle = self.vehicle
            code = int(frame.get_close_code().value)
            vehicle.close_code = code
            vehicle.stats.close_codes[code] = vehicle.stats.close_codes.get(code, 0) + 1
            vehicle.close_reason = frame.get_close_message().decode("utf-8", "replace")
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.vehicle._disconnected.set()


class SimulatedVehicle:
    """One car: connect, stream records, count replies."""

    def __init__(
        self,
        vin: str,
        url: str,
        ssl_context: ssl.SSLContext,
        *,
        fields: Sequence[str] = DEFAULT_FIELDS,
        network_interface: str = "wifi",
        seed: int | None = None,
        urls: Sequence[str] = (),
        keep_acked: bool = False,
    ) -> None:
        self.vin = vin
        self.url = url
        self.urls = tuple(urls) or (url,)
        """Where to reconnect, in turn, when the server goes away (`reconnect`)."""
        self.ssl_context = ssl_context
        self.fields = tuple(fields)
        self.network_interface = network_interface
        self.stats = VehicleStats()
        self.pending: dict[bytes, float] = {}
        self.unacked: dict[bytes, bytes] = {}  # txid -> the frame, resent after a reconnect
        self.acked_txids: set[bytes] | None = set() if keep_acked else None
        self.close_reason = ""
        self.close_code: int | None = None
        self._rng = random.Random(seed if seed is not None else vin)
        self._seq = 0
        self._transport: WSTransport | None = None
        self._disconnected = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()

    async def connect(self) -> None:
        self._disconnected.clear()
        self.close_code = None
        try:
            self._transport, _ = await ws_connect(
                lambda: _Client(self),
                self.url,
                ssl_context=self.ssl_context,
                extra_headers={"X-Network-Interface": self.network_interface, "Version": "1.0.0"},
                read_buffer_init_size=4096,
            )
        except BaseException:
            self._disconnected.set()  # still not connected: nothing for close() to wait for
            raise

    @property
    def connected(self) -> bool:
        return self._transport is not None and not self._disconnected.is_set()

    def send_frame(self, frame: bytes, txid: bytes) -> None:
        assert self._transport is not None, "connect() first"
        self.pending[txid] = time.perf_counter()
        self.unacked[txid] = frame
        self._drained.clear()
        self.stats.sent += 1
        self._transport.send(WSMsgType.BINARY, frame)

    def next_txid(self) -> bytes:
        self._seq += 1
        return f"{self.vin}-{self._seq}".encode()

    def send_record(self, record_type: str = "V", payload: bytes | None = None) -> bytes:
        now = time.time()
        if payload is None:
            if record_type == "V":
                payload = vehicle_payload(self.vin, self.fields, self._rng, now)
            elif record_type == "alerts":
                payload = alerts_payload(self.vin, now)
            elif record_type == "errors":
                payload = errors_payload(self.vin, now)
            else:
                raise ValueError(f"no generator for record type {record_type!r}")
        txid = self.next_txid()
        frame = encode_stream(
            txid, record_type.encode(), payload,
            created_at=int(now), device_id=self.vin.encode(), device_type=b"vehicle_device",
        )
        self.send_frame(frame, txid)
        return txid

    def _reply(self, data: bytes) -> None:
        try:
            reply = decode_reply(data)
        except FrameError:
            self.stats.errors += 1
            self.stats.error_texts["undecodable reply"] = self.stats.error_texts.get("undecodable reply", 0) + 1
            return
        started = self.pending.pop(reply.txid, None)
        self.unacked.pop(reply.txid, None)
        if reply.kind == "ack":
            self.stats.acked += 1
            if self.acked_txids is not None:
                self.acked_txids.add(reply.txid)
            if started is not None:
                self.stats.ack_latencies.append(time.perf_counter() - started)
        else:
            self.stats.errors += 1
            text = reply.text.decode("utf-8", "replace")
            self.stats.error_texts[text] = self.stats.error_texts.get(text, 0) + 1
        if not self.pending:
            self._drained.set()

    async def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every sent record got a reply; False on timeout or disconnect."""
        if not self.pending:
            return True
        done = asyncio.ensure_future(self._drained.wait())
        gone = asyncio.ensure_future(self._disconnected.wait())
        try:
            await asyncio.wait({done, gone}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            done.cancel()
            gone.cancel()
        return not self.pending

    async def reconnect(self, timeout: float = 30.0) -> bool:
        """Connect to the next of `urls` (cycling, with backoff) and resend every record not
        acked: what a car does when its server goes away. False if none took it in time."""
        deadline = time.monotonic() + timeout
        index = self.urls.index(self.url) if self.url in self.urls else -1
        delay = 0.05
        while True:
            index = (index + 1) % len(self.urls)
            self.url = self.urls[index]
            try:
                await self.connect()
            except (OSError, TimeoutError, WSError):  # refused, reset, a handshake cut short: the next
                if time.monotonic() + delay >= deadline:
                    return False
                await asyncio.sleep(delay * (0.5 + self._rng.random()))
                delay = min(delay * 2, 1.0)
                continue
            self.stats.reconnects += 1
            for txid, frame in list(self.unacked.items()):
                self.stats.resent += 1
                self.send_frame(frame, txid)
            return True

    async def stream(
        self, *, rate: float, duration: float, record_types: Sequence[str] = ("V",), reconnect: bool = False,
    ) -> None:
        """Send records at `rate` per second for `duration` seconds, cycling record types;
        with `reconnect`, a lost server is replaced by the next of `urls` (see `reconnect`)."""
        interval = 1.0 / rate
        deadline = time.monotonic() + duration
        # Spread vehicles over the first interval like a real fleet.
        await asyncio.sleep(self._rng.random() * interval)
        i = 0
        while time.monotonic() < deadline:
            if not self.connected:
                if not reconnect or not await self.reconnect(max(0.1, deadline - time.monotonic())):
                    return
                continue
            self.send_record(record_types[i % len(record_types)])
            i += 1
            await asyncio.sleep(interval)

    async def close(self) -> None:
        if self._transport is not None and not self._disconnected.is_set():
            self._transport.send_close()
            self._transport.disconnect()
            try:
                await asyncio.wait_for(self._disconnected.wait(), 5)
            except TimeoutError:
                pass


def client_context(cert_file: Path, key_file: Path, server_ca_file: Path) -> ssl.SSLContext:
    """What a vehicle does: trust only the `ca` it was configured with, present its cert."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cafile=str(server_ca_file))
    ctx.load_cert_chain(str(cert_file), str(key_file))
    return ctx
