"""Process-wide settings of the Python runtime for a server process.

The cyclic garbage collector, tuned for the ingest path's allocation pattern: every record
allocates a handful of short-lived container objects (its frame, record, receipt, queue
item), which reference counting frees as soon as the record is acked. At the default
threshold (700 allocations) a young-generation collection ran every hundred records or so,
about 1 µs per record (`bench/profile_steps.py`). Cycles still get collected, only in
fewer, larger passes; what the process built at startup (modules, configuration) is
frozen out of the collector's sight, so the rarer full collections do not walk it again.
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_THRESHOLD", "tune_collector"]

YOUNG_THRESHOLD = 10_000
"""Net container allocations between young-generation collections (the default is 700)."""


def tune_collector() -> None:
    """Call once, after startup: freeze what exists, then collect less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
