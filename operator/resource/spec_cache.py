"""The spec parsed once per generation, shared by every handler of the resource.

The resource handlers, the vehicles' daemon (every few seconds) and the conditions all need
the parsed spec; a generation's spec never changes, so it is parsed once and handed on.
Keyed by (uid, generation); where an API server reports no generation (an emulator), by
the spec's own canonical JSON, so an edit is never served a stale parse. A spec is valid
when it parses and the server's own parser accepts the config.json built from it
(`server_check`): a config the server would refuse is a spec error, with the server's words.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from typing import Any

from fleetwire.operator.resource.server_check import server_refusal
from fleetwire.operator.resource.spec import FleetTelemetrySpec, SpecError
from fleetwire.operator.resource.spec_parse import parse_spec

__all__ = ["checked", "parse_once"]

_LIMIT = 256  # resources × generations in flight: a handful per resource
_parsed: OrderedDict[Hashable, FleetTelemetrySpec | SpecError] = OrderedDict()


def _key(uid: str, generation: int | None, spec: Mapping[str, Any]) -> Hashable:
    if generation is not None:
        return (uid, generation)
    return (uid, json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str))


def checked(spec: Mapping[str, Any]) -> FleetTelemetrySpec:
    """`parse_spec(spec)`, and the server's parser on the config.json built from it; `SpecError`."""
    parsed = parse_spec(spec)
    refusal = server_refusal(parsed)
    if refusal is not None:
        raise SpecError("spec.server", f"the server refuses the config.json built from it: {refusal}")
    return parsed


def parse_once(uid: str | None, generation: int | None, spec: Mapping[str, Any]) -> FleetTelemetrySpec:
    """`checked(spec)`, remembered for (`uid`, `generation`); raises the same `SpecError`.
    Without a `uid` nothing is remembered."""
    if uid is None:
        return checked(spec)
    key = _key(uid, generation, spec)
    found = _parsed.get(key)
    if found is None:
        try:
            found = checked(spec)
        except SpecError as exc:
            found = exc
        _parsed[key] = found
        while len(_parsed) > _LIMIT:
            _parsed.popitem(last=False)
    else:
        _parsed.move_to_end(key)
    if isinstance(found, SpecError):
        raise found.with_traceback(None)
    return found
