"""The server process's collector settings."""

from __future__ import annotations

import gc

from fleetwire.server.runtime import YOUNG_THRESHOLD, tune_collector


def test_collector_is_tuned_and_startup_objects_frozen() -> None:
    saved = gc.get_threshold()
    try:
        tune_collector()
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *saved[1:])
        assert gc.get_freeze_count() > 0
        assert gc.isenabled()  # cycles are still collected
    finally:
        gc.unfreeze()
        gc.set_threshold(*saved)
