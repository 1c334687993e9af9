"""The zmq backend: a bound PUB socket sending `[<namespace>_<record_type>, payload]`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fleetwire.strictjson import Reader


@dataclass(frozen=True, slots=True)
class ZmqSettings:
    addr: str = ""
    server_key_json_path: Path | None = None
    allowed_public_keys_json_path: Path | None = None
    verbose: bool = False


def parse_settings(s: Reader, env: Mapping[str, str], in_use: bool) -> ZmqSettings:
    s.known(("addr", "server_key_json_path", "allowed_public_keys_json_path", "verbose"))
    read = s.existing_file if in_use else s.file_path
    return ZmqSettings(
        addr=s.string("addr", ""),
        server_key_json_path=read("server_key_json_path", required=False),
        allowed_public_keys_json_path=read("allowed_public_keys_json_path", required=False),
        verbose=s.boolean("verbose", False),
    )
