"""libzmq's I/O threads, run below the event loop's priority.

libzmq writes to the subscribers from an I/O thread of its own. Woken by every small batch
the dispatcher sends, that thread preempts the event loop on a shared core and writes a few
messages per system call: at saturation on one core it cost 7.6 µs of CPU per record, a
third of the whole server's cost (BENCHMARKS.md, "Where a record's time goes"). At the
lowest priority (nice 19) it runs when the loop waits, or on a core that is free, and
writes what piled up meanwhile in one go. It is never starved: the kernel's fair scheduler
gives every runnable thread a share, and should a subscriber's queue fill, the dispatcher
pushes back as it always does.

Linux only (threads are listed in /proc and reniced one by one); elsewhere nothing changes.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["IO_THREAD_PREFIX", "io_threads", "lower_priority", "thread_ids"]

IO_THREAD_PREFIX = "ZMQbg/IO/"
"""How libzmq names its I/O threads (`ZMQbg/IO/0`, ...)."""
LOWEST = 19

_TASKS = Path("/proc/self/task")


def thread_ids() -> set[int]:
    """This process's threads (empty where /proc does not list them)."""
    try:
        return {int(name) for name in os.listdir(_TASKS)}
    except OSError:
        return set()


def io_threads(excluding: set[int]) -> list[int]:
    """The libzmq I/O threads of this process that are not in `excluding` (those that
    existed before the context started, such as another context's)."""
    found = []
    for tid in sorted(thread_ids() - excluding):
        try:
            name = (_TASKS / str(tid) / "comm").read_text().strip()
        except OSError:  # the thread ended meanwhile
            continue
        if name.startswith(IO_THREAD_PREFIX):
            found.append(tid)
    return found


def lower_priority(tids: list[int], niceness: int = LOWEST) -> int:
    """Renice each thread (on Linux a thread id is a valid PRIO_PROCESS target; lowering
    a priority needs no privilege); returns how many were reniced."""
    done = 0
    for tid in tids:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, niceness)
        except OSError:
            continue
        done += 1
    return done
