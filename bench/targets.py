"""The servers under test, each started the way an operator would start it."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from identities import BenchPki
from system import Server, free_port

BENCH = Path(__file__).resolve().parent
TARGETS = ("websockets", "picows", "fleetwire", "fleetwire-unrouted")
"""`fleetwire-unrouted` routes no record type: records are decoded and acked, not dispatched."""


def fleetwire_command() -> list[str]:
    """`fleetwire` as installed beside this interpreter (else run as a module)."""
    script = shutil.which("fleetwire", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "fleetwire.cli"]


def fleetwire_config(pki: BenchPki, port: int, directory: Path, *, routed: bool = True) -> Path:
    """A reference-format config: `V` records to the logger, whose output goes to the server log."""
    config = {
        "host": "127.0.0.1",
        "port": port,
        "status_port": free_port(),
        "namespace": "bench",
        "tls": {"server_cert": str(pki.fleet.server_cert), "server_key": str(pki.fleet.server_key), "ca_file": str(pki.fleet.ca_file)},
        "records": {"V": ["logger"]} if routed else {},
        "logger": {"verbose": False},
        "monitoring": {"prometheus_metrics_port": free_port()},
    }
    path = directory / f"fleetwire-{port}.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def server(name: str, pki: BenchPki, directory: Path, cpu: int) -> Server:
    """A not yet started server for target `name` on a free port, pinned to `cpu`."""
    port = free_port()
    if name.startswith("fleetwire"):
        config = fleetwire_config(pki, port, directory, routed=name == "fleetwire")
        argv = [*fleetwire_command(), "serve", "--config", str(config)]
    elif name in ("websockets", "picows"):
        argv = [
            sys.executable, str(BENCH / "sinks.py"), "--mode", name, "--port", str(port),
            "--cert", str(pki.fleet.server_cert), "--key", str(pki.fleet.server_key), "--ca", str(pki.fleet.ca_file),
        ]
    else:
        raise ValueError(f"unknown target {name!r}; choose from {', '.join(TARGETS)}")
    return Server(argv, port, cpu, directory / f"{name}.log")
