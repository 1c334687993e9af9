"""The pubsub backend (Google Cloud Pub/Sub): topic `<namespace>_<record_type>`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fleetwire.strictjson import Reader


@dataclass(frozen=True, slots=True)
class PubsubSettings:
    gcp_project_id: str = ""


def parse_settings(s: Reader, env: Mapping[str, str], in_use: bool) -> PubsubSettings:
    s.known(("gcp_project_id",))
    return PubsubSettings(gcp_project_id=s.string("gcp_project_id", ""))
