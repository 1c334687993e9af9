"""The spec parser's reader: typed getters that collect every problem instead of stopping.

Values and suggestions are worded by `fleetwire.strictjson` (`show` never echoes a secret,
key material or a long value), as in the server's and the stack's config errors.

Each getter takes the mapping, the key and the dotted path, and on a wrong value records
(path, message) with the expected form and returns None (or the default), so one pass over
a spec reports everything to fix (`SpecError.problems`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fleetwire.operator.resource.spec import SecretKeyRef
from fleetwire.strictjson import show, suggest

__all__ = ["SpecReader"]


class SpecReader:
    """Walks the spec, collecting every problem instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []
        self.warnings: list[tuple[str, str]] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append((path, message))

    def warn(self, path: str, message: str) -> None:
        """Something the operator acts on but the user should know (not an error)."""
        self.warnings.append((path, message))

    def mapping(self, value: Any, path: str) -> Mapping[str, Any] | None:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            self.fail(path, f"must be an object, not {show(value)}")
            return None
        return value

    def known(self, data: Mapping[str, Any], path: str, keys: Iterable[str]) -> None:
        keys = list(keys)
        for key in data:
            if key not in keys:
                self.fail(f"{path}.{key}", "unknown key" + suggest(str(key), keys))

    def string(self, data: Mapping[str, Any], key: str, path: str, *, required: bool = False,
               default: str | None = None, choices: Sequence[str] | None = None,
               pattern: re.Pattern[str] | None = None, form: str = "") -> str | None:
        where = f"{path}.{key}"
        value = data.get(key)
        if value is None:
            if required:
                self.fail(where, "required" + (f": {form}" if form else ""))
            return default
        if not isinstance(value, str) or not value:
            self.fail(where, f"must be a non-empty string, not {show(value)}")
            return default
        if choices is not None and value not in choices:
            self.fail(where, f"must be one of {', '.join(choices)}, not {value!r}" + suggest(value, choices))
            return default
        if pattern is not None and not pattern.match(value):
            self.fail(where, f"{value!r} is not {form or 'of the expected form'}")
            return default
        return value

    def integer(self, data: Mapping[str, Any], key: str, path: str, *, required: bool = False,
                default: int | None = None, minimum: int | None = None, maximum: int | None = None,
                unit: str = "") -> int | None:
        where = f"{path}.{key}"
        value = data.get(key)
        if value is None:
            if required:
                self.fail(where, "required" + (f": a whole number of {unit}" if unit else ""))
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                self.fail(where, f"must be a whole number{' of ' + unit if unit else ''}, written without "
                          f"a decimal point (got {value!r})")
            else:
                self.fail(where, f"must be an integer{' number of ' + unit if unit else ''}, not {show(value)}")
            return default
        if minimum is not None and value < minimum or maximum is not None and value > maximum:
            bounds = (f"between {minimum} and {maximum}" if minimum is not None and maximum is not None
                      else f"at least {minimum}" if minimum is not None else f"at most {maximum}")
            self.fail(where, f"must be {bounds}, not {value}")
            return default
        return value

    def number(self, data: Mapping[str, Any], key: str, path: str, *, minimum: float,
               exclusive: bool = False) -> int | float | None:
        where = f"{path}.{key}"
        value = data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(where, f"must be a number, not {show(value)}")
            return None
        if value < minimum or exclusive and value == minimum:
            self.fail(where, f"must be {'greater than' if exclusive else 'at least'} {minimum}, not {value}")
            return None
        return value

    def boolean(self, data: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        value = data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(f"{path}.{key}", f"must be true or false, not {show(value)}")
            return default
        return value

    def string_list(self, data: Mapping[str, Any], key: str, path: str, *,
                    pattern: re.Pattern[str] | None = None, form: str = "") -> tuple[str, ...]:
        where = f"{path}.{key}"
        value = data.get(key)
        if value is None:
            return ()
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            self.fail(where, f"must be a list, not {show(value)}")
            return ()
        items: list[str] = []
        for index, item in enumerate(value):
            item_path = f"{where}[{index}]"
            if not isinstance(item, str) or not item:
                self.fail(item_path, f"must be a non-empty string, not {show(item)}")
            elif pattern is not None and not pattern.match(item):
                hint = " (upper-case)" if pattern.match(item.upper()) else ""
                self.fail(item_path, f"{item!r} is not {form}{hint}")
            elif item in items:
                self.fail(item_path, f"{item!r} is listed twice")
            else:
                items.append(item)
        return tuple(items)

    def secret_ref(self, value: Any, path: str, default_key: str | None) -> SecretKeyRef | None:
        data = self.mapping(value, path)
        if data is None:
            return None
        self.known(data, path, ["name", "key"] if default_key is not None else ["name"])
        name = self.string(data, "name", path, required=True, form="the Secret's name")
        key = self.string(data, "key", path, default=default_key) if default_key is not None else ""
        return SecretKeyRef(name, key or "") if name else None

    # -- sections --------------------------------------------------------------------

