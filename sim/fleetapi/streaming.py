"""Vehicles that stream: a task per (vehicle, app) with a usable config, up to `max_streaming`;
the others are judged at their reconnects without a socket (`presented_chain`)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from fleetwire.proto.catalog import BY_NAME
from fleetwire.sim.fleetapi.dialer import _ConfiguredCar, _DialError, _Streamer
from fleetwire.sim.fleetapi.slowcars import _is_tls_failure
from fleetwire.sim.fleetapi.state import _FIELD_NAMES
from fleetwire.sim.vehicle import vehicle_payload
from fleetwire.trust import refusal

log = logging.getLogger("fleetwire.sim.fleetapi")  # one logger for the whole simulator


class _Streaming:
    """Mixin of `FleetApiSimulator`: the connections of the vehicles that hold a usable config."""

    def reconnect(self, vins: Iterable[str]) -> int:
        """These vehicles drop their connection and dial again at once, as after a sleep or a
        drive out of coverage: the new handshake checks the server's current certificate
        against the `ca` they hold. Returns how many were connected."""
        connected = 0
        for vin in vins:
            for streamer in self._streamers_of(vin):
                connected += streamer.car is not None and streamer.car.connected
                streamer.wake()
            for client_id in self.apps:
                if (vin, client_id) in self._judged:
                    self._judge_soon(vin, client_id, 0.0)
        return connected

    @property
    def judging(self) -> int:
        """Vehicles without a socket that meet the server at their reconnects (`presented_chain`)."""
        return len(self._judged)

    @property
    def unsimulated(self) -> int:
        """Vehicles holding a usable config that do not stream because of `max_streaming`."""
        return sum(
            1 for state in self._vehicles.values() for cid in (state.apps or ())
            if (state.vin, cid) not in self._streamers and self._usable(state.vin, cid) is not None
        )

    def _usable(self, vin: str, client_id: str) -> dict[str, Any] | None:
        state = self._vehicles.get(vin)
        slot = state.slot(client_id) if state else None
        if slot is None or slot.config is None or slot.error or slot.limit_reached:
            return None
        return slot.config

    def _streamers_of(self, vin: str) -> list[_Streamer]:
        """By lookup per app, not a scan: tests poll this for thousands of vehicles."""
        return [s for cid in self.apps if (s := self._streamers.get((vin, cid))) is not None]

    def _notify(self, vin: str, client_id: str) -> None:
        """A config changed: wake the vehicle's connection, or start one if it now has a use."""
        streamer = self._streamers.get((vin, client_id))
        if streamer is not None:
            streamer.wake()
            return
        if self._closing or self._usable(vin, client_id) is None:
            return
        if self.max_streaming is not None and len(self._streamers) >= self.max_streaming:
            if self.presented_chain is not None:  # it still meets the server: judged, without a socket
                self._judge_soon(vin, client_id, 0.0)
            return  # the first `max_streaming` vehicles to get a usable config are the ones that stream
        streamer = _Streamer(vin, client_id)
        self._streamers[(vin, client_id)] = streamer
        streamer.task = asyncio.get_running_loop().create_task(self._drive(streamer), name=f"vehicle {vin}")

    def _judge_soon(self, vin: str, client_id: str, delay: float) -> None:
        key = (vin, client_id)
        handle = self._judged.pop(key, None)
        if handle is not None:
            handle.cancel()
        self._judged[key] = asyncio.get_running_loop().call_later(delay, self._judge, vin, client_id)

    def _judge(self, vin: str, client_id: str) -> None:
        """A vehicle without a socket meets the server: the handshake's verdict, as the car reaches it."""
        self._judged.pop((vin, client_id), None)
        config = self._usable(vin, client_id)
        if self._closing or config is None or self.presented_chain is None:
            return
        chain = self.presented_chain()
        chain_text = chain.decode() if isinstance(chain, bytes) else chain
        ca = str(config["ca"])
        now = time.time()
        key = (hash(chain_text), hash(ca), int(now // 60))
        if key not in self._judge_cache:
            if len(self._judge_cache) > 256:
                self._judge_cache.clear()
            refused = refusal(chain_text, ca, str(config["hostname"]), dt.datetime.now(dt.UTC))
            self._judge_cache[key] = None if refused is None else f"x509: {refused}"
        verdict = self._judge_cache[key]
        if verdict is not None:
            self.tls.failed(vin, verdict, now)
            self._record_error(vin, client_id, "cloud_manager_error", verdict, config)
            self._judge_soon(vin, client_id, self.reconnect_delay[1])
            return
        self.tls.connected(vin, now)
        if self.reconnect_every is not None:
            self._judge_soon(vin, client_id, self.reconnect_every(vin))

    async def _pause(self, streamer: _Streamer, seconds: float) -> None:
        """Sleep, cut short by `wake()` (a new config must not wait for a backoff)."""
        if streamer.woken:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        streamer.sleeper = future
        handle = loop.call_later(seconds, lambda: future.done() or future.set_result(None))
        try:
            await future
        finally:
            handle.cancel()
            streamer.sleeper = None

    async def _drive(self, streamer: _Streamer) -> None:
        """Connect, stream, reconnect: the life of one vehicle's connection to one server."""
        vin, client_id = streamer.vin, streamer.client_id
        failures = 0
        try:
            while not self._closing:
                streamer.woken = False
                config = self._usable(vin, client_id)
                if config is None:
                    break
                try:
                    assert self._connecting is not None
                    async with self._connecting:  # a burst of applied configs must not time out its own handshakes
                        car = await self._dial(streamer, config)
                except _DialError as exc:
                    self._record_error(vin, client_id, "cloud_manager_error", str(exc), config)
                    if _is_tls_failure(str(exc)):
                        self.tls.failed(vin, str(exc), time.time())
                    failures += 1
                    await self._pause(streamer, self._backoff(failures))
                    continue
                streamer.car = car
                streamer.connects += 1
                self.tls.connected(vin, time.time())
                failures = 0
                drop = (asyncio.get_running_loop().call_later(self.reconnect_every(vin), streamer.wake)
                        if self.reconnect_every is not None else None)
                try:
                    await self._stream(streamer, car, config)
                finally:
                    if drop is not None:
                        drop.cancel()
                    streamer.car = None
                    await car.close()
                if not streamer.woken and not self._closing:  # the server hung up
                    failures += 1
                    await self._pause(streamer, self._backoff(failures))
        except Exception:
            log.exception("simulated vehicle %s failed", vin)
        finally:
            if self._streamers.get((vin, client_id)) is streamer:
                del self._streamers[(vin, client_id)]
                self._past_connects[vin] = self._past_connects.get(vin, 0) + streamer.connects
            if not self._closing and self._usable(vin, client_id) is not None:
                self._notify(vin, client_id)  # a config arrived while this connection wound down

    def _backoff(self, failures: int) -> float:
        low, high = self.reconnect_delay
        return min(high, low * 2 ** (failures - 1))

    async def _stream(self, streamer: _Streamer, car: _ConfiguredCar, config: Mapping[str, Any]) -> None:
        """Send `V` records while connected: each field at its interval (scaled), in one record
        per tick with every field that is due, as vehicles batch them. A field newer than the
        vehicle's firmware (the catalog's minimum) is never sent, as on a real car."""
        intervals: dict[str, float] = {}
        firmware = self._vehicles[streamer.vin].firmware
        for name, settings in (config.get("fields") or {}).items():
            if name in _FIELD_NAMES and BY_NAME[name].available_on(firmware):
                raw = settings.get("interval_seconds", 1) if isinstance(settings, dict) else 1
                intervals[name] = max(1.0, float(raw or 1))
        if not intervals:
            while car.connected and not streamer.woken and not self._closing:
                await self._pause(streamer, 0.5)
            return
        shortest = min(intervals.values())
        every = {name: max(1, round(interval / shortest)) for name, interval in intervals.items()}
        period = max(self.min_record_period, shortest * self.time_scale)
        tick = 0
        while car.connected and not streamer.woken and not self._closing:
            due = [name for name, n in every.items() if tick % n == 0]
            car.send_record("V", vehicle_payload(car.vin, due, car._rng, time.time()))
            latencies = car.stats.ack_latencies
            if len(latencies) > 1000:
                del latencies[:-100]
            tick += 1
            await self._pause(streamer, period)
        if car.connected:
            await car.drain(timeout=1.0)
