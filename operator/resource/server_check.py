"""The server's own verdict on the config.json the operator builds for a spec.

The spec parser checks what it knows, but the server's parser (`fleetwire.server.config`)
is the one that decides whether a pod starts: a backend setting it refuses (an MQTT `qos`
of 7, a librdkafka property that does not exist) would otherwise be found only in a
crash-looping pod. So the built config.json is parsed by the server's parser here, in a
stand-in of the pod's filesystem (the mounted files are empty placeholders, whose contents
only exist in the pod) with the pod's environment as the spec sets it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fleetwire.operator.resource import builders
from fleetwire.operator.resource.spec import FleetTelemetrySpec
from fleetwire.server.config import ConfigError, parse_config

__all__ = ["server_refusal"]

_POD_ROOT = "/etc/fleetwire/"  # every file the pod mounts (config, tls, vehicle CAs, Secrets) is below it
_PLACEHOLDER = "placeholder"


def _relocated(value: Any, root: Path) -> Any:
    """`value` with each path into the pod's mounts moved under `root`, where an empty
    placeholder file is created for it."""
    if isinstance(value, Mapping):
        return {key: _relocated(item, root) for key, item in value.items()}
    if isinstance(value, list):
        return [_relocated(item, root) for item in value]
    if isinstance(value, str) and value.startswith(_POD_ROOT):
        path = root / value.removeprefix("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_text(_PLACEHOLDER + "\n")
        return str(path)
    return value


def server_refusal(spec: FleetTelemetrySpec) -> str | None:
    """None when the server would start with the config.json built for `spec`, else the
    server's message (the key and the expected form)."""
    config = builders.server_config(spec)
    env = {var.name: var.value if var.secret is None else _PLACEHOLDER for var in spec.server.env}
    with tempfile.TemporaryDirectory(prefix="fleetwire-config-") as root:
        try:
            parse_config(_relocated(config, Path(root)), Path(root), env)
        except ConfigError as exc:
            return str(exc)
    return None
