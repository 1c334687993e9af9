"""What the demo prints: a readable line per record, the logger that echoes them, the timeline."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, TextIO

from fleetwire.server.records import Record
from fleetwire.server.dispatchers.logger import LoggerDispatcher
from fleetwire.server.records import to_dict

def _short(value: Any) -> str:
    if isinstance(value, dict):
        if "latitude" in value:
            return f"{value['latitude']:.4f},{value['longitude']:.4f}"
        return ",".join(f"{k}={_short(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def describe(record: Record) -> str:
    """One readable line per record: what a person wants to see scroll by."""
    data = to_dict(record.message)
    if record.record_type == "V":
        parts = []
        for datum in data.get("data", []):
            value = datum.get("value", {})
            shown = _short(next(iter(value.values()))) if value else "-"
            parts.append(f"{datum.get('key')}={shown}")
        body = " ".join(parts)
    elif record.record_type == "alerts":
        body = " ".join(a.get("name", "?") for a in data.get("alerts", []))
    elif record.record_type == "errors":
        body = " ".join(f"{e.get('name')}: {e.get('body', '')}" for e in data.get("errors", []))
    else:
        body = f"{data.get('status')} via {data.get('networkInterface') or '?'} ({data.get('connectionId')})"
    return f"  {record.record_type:<12} {record.vin}  {body}"


class DemoLogger(LoggerDispatcher):
    """The real logger dispatcher (JSON lines to a file), echoing a readable line per record."""

    def __init__(self, stream: TextIO, console: TextIO, limit: int) -> None:
        super().__init__(stream, include_data=True)
        self._console = console
        self._limit = limit
        self.shown = 0
        self.by_type: dict[str, int] = {}

    async def publish(self, batch: Sequence[Record]) -> None:
        await super().publish(batch)
        for record in batch:
            self.by_type[record.record_type] = self.by_type.get(record.record_type, 0) + 1
            if self.shown < self._limit:
                line = describe(record)
                print(line if len(line) <= 160 else line[:157] + "...", file=self._console)
                self.shown += 1
                if self.shown == self._limit:
                    print("  ... (the rest goes to the log file only)", file=self._console)


class Timeline:
    """Each step with the seconds since the demo started."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:5.1f} s] {text}", file=self.out, flush=True)
