"""Label and field selectors (equality, inequality, existence, in/notin; field selectors on any
dotted path), applied to lists and watches as the API server does."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kmock._internal import k8s  # the emulator's extension points


def _split_requirements(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += char == "("
        depth -= char == ")"
        current += char
    parts.append(current)
    return [part.strip() for part in parts if part.strip()]


_REQUIREMENT = re.compile(
    r"^(?P<neg>!)?\s*(?P<key>[A-Za-z0-9./_-]+)\s*"
    r"(?:(?P<op>==|=|!=)\s*(?P<value>[A-Za-z0-9._-]*)|\s+(?P<set>in|notin)\s*\((?P<values>[^)]*)\))?$"
)


@dataclass(frozen=True)
class Selector:
    """A label or field selector as the API server parses it."""

    requirements: tuple[tuple[str, str, tuple[str, ...]], ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> Selector:
        requirements = []
        for part in _split_requirements(text or ""):
            match = _REQUIREMENT.match(part)
            if match is None:
                raise k8s.KubernetesError(400, "BadRequest", f"unable to parse requirement: {part!r}")
            key = match["key"]
            if match["neg"]:
                requirements.append((key, "!exists", ()))
            elif match["op"]:
                requirements.append((key, "!=" if match["op"] == "!=" else "=", (match["value"],)))
            elif match["set"]:
                values = tuple(v.strip() for v in match["values"].split(",") if v.strip())
                requirements.append((key, match["set"], values))
            else:
                requirements.append((key, "exists", ()))
        return cls(tuple(requirements))

    def matches(self, values: Callable[[str], str | None]) -> bool:
        for key, op, operands in self.requirements:
            value = values(key)
            if op == "exists" and value is None or op == "!exists" and value is not None:
                return False
            if op == "=" and value != operands[0] or op == "!=" and value == operands[0]:
                return False
            if op == "in" and value not in operands or op == "notin" and value in operands:
                return False
        return True


def _labels_of(obj: Mapping[str, Any]) -> Callable[[str], str | None]:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return lambda key: labels.get(key)


def _fields_of(obj: Mapping[str, Any]) -> Callable[[str], str | None]:
    def value(path: str) -> str | None:
        node: Any = obj
        for part in path.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return None
            node = node[part]
        return None if node is None else str(node)
    return value
