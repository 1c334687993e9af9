"""The kinesis backend: a stream per record type, partition key VIN."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from fleetwire.server.records import RECORD_TYPES
from fleetwire.strictjson import Reader, suggest


@dataclass(frozen=True, slots=True)
class KinesisSettings:
    max_retries: int | None = None
    override_host: str = ""
    streams: Mapping[str, str] = field(default_factory=dict)


def parse_settings(s: Reader, env: Mapping[str, str], in_use: bool) -> KinesisSettings:
    s.known(("max_retries", "override_host", "streams"))
    streams: dict[str, str] = {}
    if "streams" in s.data:
        st = s.section("streams")
        for record_type in st.data:
            if record_type not in RECORD_TYPES:
                s.warnings.append(f"{st.key(record_type)}: not a record type (expected one of "
                                  f"{', '.join(RECORD_TYPES)}){suggest(record_type, RECORD_TYPES)}")
            streams[record_type] = st.string(record_type, "")
    return KinesisSettings(
        max_retries=s.integer("max_retries", None, minimum=0),
        override_host=s.string("override_host", ""),
        streams=streams,
    )
