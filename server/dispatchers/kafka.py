"""The kafka backend: records produced to `<namespace>_<record_type>`, keyed by VIN.

Settings are librdkafka producer properties, passed through as the reference does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fleetwire.strictjson import ConfigError, Reader, show


def parse_settings(s: Reader, env: Mapping[str, str], in_use: bool) -> dict[str, Any]:
    """librdkafka properties, passed through; only their values' JSON types are checked."""
    for name, value in s.data.items():
        if not isinstance(value, (str, int, float, bool)):
            raise ConfigError(s.key(name), "expected a string, number or boolean librdkafka property value, "
                              f"got {show(value, s.key(name))}")
    return dict(s.data)
