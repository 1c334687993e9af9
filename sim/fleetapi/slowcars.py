"""Cars as slow as real ones: when a pushed config takes effect, when a connected car redials on
its own, and the log of refused handshakes with the outages they make."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field


class LongTailSync:
    """A vehicle's delay from a push to the config taking effect, drawn per push (seconds).

    Awake cars (`awake_share` of them) sync in seconds to minutes (log-normal, median 30 s);
    parked ones when they next wake, hours later (log-normal, median 4 h, up to a day), as
    owners report "a few hours to almost a full day". `time_factor` scales every draw
    (1/3600: an hour takes a second), so tests and benchmarks keep the shape in seconds.
    """

    def __init__(self, time_factor: float = 1.0, *, awake_share: float = 0.6, seed: int = 0) -> None:
        self.time_factor, self.awake_share = time_factor, awake_share
        self._rng = random.Random(seed)

    def __call__(self, vin: str) -> float:
        rng = self._rng
        if rng.random() < self.awake_share:
            seconds = min(600.0, max(2.0, rng.lognormvariate(math.log(30.0), 1.0)))
        else:
            seconds = min(86_400.0, max(1800.0, rng.lognormvariate(math.log(4 * 3600.0), 0.8)))
        return seconds * self.time_factor


class Reconnects:
    """When a connected vehicle drops and dials again on its own (radio drops, sleep and
    wake-ups): exponential gaps with mean `mean` seconds (2 h by default), scaled by `time_factor`."""

    def __init__(self, time_factor: float = 1.0, *, mean: float = 7200.0, seed: int = 1) -> None:
        self.time_factor, self.mean = time_factor, mean
        self._rng = random.Random(seed)

    def __call__(self, vin: str) -> float:
        return self._rng.expovariate(1.0 / self.mean) * self.time_factor


@dataclass
class TlsLog:
    """Every TLS failure of every vehicle, with its time, and the outages they make: from a
    vehicle's first refused handshake to its next accepted one (it streams nothing meanwhile)."""

    failures: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    outages: dict[str, list[list[float | None]]] = field(default_factory=dict)

    def failed(self, vin: str, text: str, at: float) -> None:
        self.failures.setdefault(vin, []).append((at, text))
        spans = self.outages.setdefault(vin, [])
        if not spans or spans[-1][1] is not None:
            spans.append([at, None])

    def connected(self, vin: str, at: float) -> None:
        spans = self.outages.get(vin)
        if spans and spans[-1][1] is None:
            spans[-1][1] = at

    @property
    def count(self) -> int:
        return sum(len(f) for f in self.failures.values())

    @property
    def vehicles(self) -> set[str]:
        return set(self.failures)

    def lost_seconds(self, now: float, *, since: float = 0.0) -> float:
        """Vehicle-seconds without streaming because of TLS failures after `since` (open outages end at `now`)."""
        total = 0.0
        for spans in self.outages.values():
            for start, end in spans:
                assert start is not None
                total += max(0.0, (end if end is not None else now) - max(start, since))
        return total

    def cut_off(self) -> set[str]:
        """Vehicles whose last handshake was refused (still not streaming)."""
        return {vin for vin, spans in self.outages.items() if spans and spans[-1][1] is None}


def _is_tls_failure(text: str) -> bool:
    return text.startswith(("x509:", "remote error: tls", "tls:"))
