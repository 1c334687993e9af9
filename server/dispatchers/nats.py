"""The nats backend: subjects `<namespace>.<VIN>.<data|alerts|errors|connectivity>`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fleetwire.strictjson import Reader


def parse_settings(s: Reader, env: Mapping[str, str], in_use: bool) -> dict[str, Any]:
    """Kept as given until the backend reads its keys."""
    return dict(s.data)
