"""The Pulumi stack's config read through `fleetwire.strictjson`, every problem collected.

Pulumi hands every value over as text (objects as JSON text). Each key is decoded into
the kind its reader asks for, then read by the same `Reader` the server's config.json
goes through, so an error names the key and the expected form in the same words, and a
value that may be a secret is described, never echoed (`show`). Problems are collected
instead of raised at the first, so one `pulumi preview` lists everything to fix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pulumi

from fleetwire.strictjson import ConfigError, Reader, show, suggest

__all__ = ["StackConfig", "alternatives"]

T = TypeVar("T")


def alternatives(choices: Sequence[str]) -> str:
    """'a, b or c'."""
    return choices[0] if len(choices) == 1 else f"{', '.join(choices[:-1])} or {choices[-1]}"


class StackConfig:
    """One namespace of the stack's config (`fleetwire`): typed reads, problems as (key, message)."""

    def __init__(self, config: pulumi.Config) -> None:
        self.config = config
        self.problems: list[tuple[str, str]] = []
        # The values read so far, decoded; `reader` reads them (it holds this very dict).
        self._values: dict[str, Any] = {}
        self.reader = Reader(self._values, "", [], Path.cwd(), env={})

    def key(self, name: str) -> str:
        """The key as `pulumi config` names it: `fleetwire:hostname`, `fleetwire:fields.Odometer`."""
        return self.config.full_key(name)

    def fail(self, name: str, message: str) -> None:
        self.problems.append((self.key(name), message))

    def check(self, read: Callable[[], T], default: T) -> T:
        """`read()`, or `default` with the ConfigError it raised recorded as a problem."""
        try:
            return read()
        except ConfigError as exc:
            self.fail(exc.key, exc.message)
            return default

    def _raw(self, name: str) -> str | None:
        value = self.config.get(name)
        return None if value is None or value == "" else value

    def text(self, name: str, default: str | None = None, *, required: bool = False,
             choices: Sequence[str] = (), pattern: Any = None, hint: str = "") -> str | None:
        """A string; `choices` or `pattern` (a compiled regex, described by `hint`) constrain it."""
        raw = self._raw(name)
        if raw is None:
            if required:
                expected = hint or (alternatives(choices) if choices else "a value")
                how = "" if "pulumi config set" in expected else f" (pulumi config set {name} …)"
                self.fail(name, f"missing: expected {expected}{how}")
            return default
        self._values[name] = raw
        value = self.check(lambda: self.reader.string(name, ""), None)
        if value is None:
            return default
        if choices and value not in choices:
            self.fail(name, f"expected {alternatives(choices)}, got {show(value, name)}{suggest(value, choices)}")
            return default
        if pattern is not None and not pattern.match(value):
            self.fail(name, f"expected {hint}, got {show(value, name)}")
            return default
        return value

    def integer(self, name: str, default: int, minimum: int = 0) -> int:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            self._values[name] = int(raw)
        except ValueError:
            self._values[name] = raw  # refused by the reader, named and shown as written
        return int(self.check(lambda: self.reader.integer(name, default, minimum=minimum), default))

    def boolean(self, name: str, default: bool) -> bool:
        raw = self._raw(name)
        if raw is None:
            return default
        self._values[name] = {"true": True, "false": False}.get(raw.lower(), raw)
        return self.check(lambda: self.reader.boolean(name, default), default)

    def obj(self, name: str, default: Any) -> Any:
        """A JSON value (`pulumi config set --path`, or JSON text); `default` when unset."""
        try:
            value = self.config.get_object(name)
        except pulumi.ConfigTypeError:
            self.fail(name, "expected JSON (pulumi config set --path, or a JSON value), got text that is not")
            return default
        if value is None:
            return default
        self._values[name] = value
        return value

    def section(self, name: str) -> Reader | None:
        """An object's `Reader` (its keys `name.x`), None when unset or not an object (a problem)."""
        if self.obj(name, None) is None:
            return None
        return self.check(lambda: self.reader.section(name), None)

    def secret(self, name: str, *, required: bool, hint: str) -> pulumi.Output[str] | None:
        """A credential set with `pulumi config set --secret`: Pulumi keeps it encrypted in the
        stack file and out of logs; one in plain text is refused, and never echoed."""
        if self._raw(name) is None:
            if required:
                self.fail(name, f"missing: expected {hint} (pulumi config set --secret {name} …)")
            return None
        if not pulumi.runtime.is_config_secret(self.key(name)):
            self.fail(name, "expected a secret, got a value stored in plain text in the stack file: "
                            f"set it again with `pulumi config set --secret {name} …`")
            return None
        return self.config.require_secret(name)
