"""The server's log format, shared by `fleetwire serve` and its worker processes."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str = "info", json_logs: bool = False, worker: int | None = None) -> None:
    """Log to stderr at `level`; a worker's lines name it, so one process's story can be read."""
    who = "" if worker is None else f"[worker {worker}] "
    fmt = (
        '{"time":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s",'
        + ("" if worker is None else f'"worker":{worker},')
        + '"msg":"%(message)s"}'
        if json_logs
        else f"%(asctime)s %(levelname)s %(name)s: {who}%(message)s"
    )
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), format=fmt, stream=sys.stderr)
