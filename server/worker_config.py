"""What each worker of `fleetwire serve --workers N` is configured with, and what cannot be split.

The configuration is read once, by the supervisor; a worker gets a copy with its own
share of what must be unique per process, and no metrics port (the supervisor serves
one endpoint for all). Settings that only one process can hold are refused up front,
with the key named, rather than failing in all workers but one.
"""

from __future__ import annotations

import dataclasses

from fleetwire.server.config import ServerConfig
from fleetwire.strictjson import ConfigError


def single_process(config: ServerConfig) -> str | None:
    """Why `config` can run in one process only, or None."""
    if "zmq" in config.dispatchers_in_use():
        return "a ZMQ PUB socket binds one address (zmq.addr), which only one worker process could hold"
    return None


def refusal(config: ServerConfig, workers: int) -> ConfigError | None:
    """Why `config` cannot run in `workers` processes, or None."""
    if workers > 1 and single_process(config) is not None:
        return ConfigError(
            "zmq.addr",
            f"a ZMQ PUB socket binds one address, which only one of {workers} worker processes could hold; "
            "run with --workers 1 (subscribers would otherwise reach a single worker's records)",
        )
    return None


def auto_workers(config: ServerConfig, cpus: int) -> tuple[int, str | None]:
    """`--workers auto`: the CPUs it may use, or 1 (and why) for a config one process must run."""
    reason = single_process(config) if cpus > 1 else None
    return (1, reason) if reason else (cpus, None)


def worker_config(config: ServerConfig, index: int, workers: int) -> ServerConfig:
    """Worker `index`'s copy: no metrics port, an MQTT client id of its own."""
    monitoring = dataclasses.replace(config.monitoring, prometheus_metrics_port=None)
    backends = dict(config.backends)
    mqtt = backends.get("mqtt")
    # Two MQTT clients with one id take the session from each other, over and over.
    if workers > 1 and mqtt is not None and getattr(mqtt, "client_id", ""):
        backends["mqtt"] = dataclasses.replace(mqtt, client_id=f"{mqtt.client_id}-{index}")
    return dataclasses.replace(config, monitoring=monitoring, backends=backends)
