"""A strict reader of JSON configuration: typed access, errors that name the key.

Every configuration fleetwire reads from a user goes through `Reader`: the server's
`config.json` and each backend's section of it. A wrong value raises `ConfigError`
with the dotted key and the expected form; an unknown key becomes a warning with a
close-match suggestion; a value that may be a secret is described, never echoed.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["ConfigError", "Reader", "looks_secret", "show", "suggest"]


class ConfigError(Exception):
    """A configuration that cannot be used.

    `key` is the dotted path of the offending key ("mqtt.qos", "records.V"), or ""
    for the file as a whole; the message names it and the expected form.
    """

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}" if key else message)



# Keys whose values are credentials: an error names them and their type, never the value.
SECRET_KEY = re.compile(r"passw|secret|token|credential|private|key\.pem|jaas", re.IGNORECASE)
# A value longer than this is never echoed: a pasted token, key or certificate is long.
SHOWN_MAX = 120


def looks_secret(text: str) -> bool:
    return "-----BEGIN" in text or "PRIVATE KEY" in text or "\n" in text


def show(value: Any, key: str = "") -> str:
    """A value as the user wrote it, for one error line, unless it may be a secret.

    A value under a credential's key, text that looks like key material, and anything
    long are described (type and length), never printed: error messages end up in
    terminals, CI logs and issue reports.
    """
    kind = {str: "a string", bool: "a boolean", int: "a number", float: "a number", list: "a list",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)
    if key and SECRET_KEY.search(key):
        return f"{kind} (not shown: {key} holds a secret)"
    if isinstance(value, str):
        if looks_secret(value):
            return f"text of {len(value)} characters that looks like key or certificate material (not shown)"
        if len(value) > SHOWN_MAX:
            return f"a string of {len(value)} characters (not shown)"
        return repr(value)
    text = json.dumps(value, default=str)
    if len(text) > SHOWN_MAX or looks_secret(text):
        return f"{kind} of {len(text)} characters as JSON (not shown)"
    return text


def suggest(word: str, candidates: Iterable[str]) -> str:
    """ " (did you mean 'x'?)" for a close match, else "". Case differences count as close."""
    candidates = list(candidates)
    for c in candidates:
        if c.lower() == word.lower():
            return f" (did you mean {c!r}?)"
    lowered = {c.lower(): c for c in candidates}
    match = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean {lowered[match[0]]!r}?)" if match else ""


class Reader:
    """Typed access to one JSON object of the configuration, with dotted-path errors."""

    __slots__ = ("data", "path", "warnings", "base_dir", "env")

    def __init__(
        self, data: Any, path: str, warnings: list[str], base_dir: Path, env: Mapping[str, str] | None = None
    ) -> None:
        if not isinstance(data, dict):
            raise ConfigError(path, f"expected an object {{...}}, got {show(data)}")
        self.data: dict[str, Any] = data
        self.path = path
        self.warnings = warnings
        self.base_dir = base_dir
        self.env: Mapping[str, str] = os.environ if env is None else env

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def known(self, names: Iterable[str]) -> None:
        names = tuple(names)
        for name in self.data:
            if name not in names:
                self.warnings.append(f"{self.key(name)}: unknown key, ignored" + suggest(name, names))

    def section(self, name: str, required: bool = True) -> Reader:
        value = self.data.get(name)
        if value is None:
            if required:
                raise ConfigError(self.key(name), "missing: expected an object {...}")
            value = {}
        return Reader(value, self.key(name), self.warnings, self.base_dir, self.env)

    def string(self, name: str, default: str) -> str:
        value = self.data.get(name, default)
        if not isinstance(value, str):
            raise ConfigError(self.key(name), f"expected a string, got {show(value, self.key(name))}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.data.get(name, default)
        if not isinstance(value, bool):
            raise ConfigError(self.key(name), f"expected true or false, got {show(value, self.key(name))}")
        return value

    def integer(
        self, name: str, default: Any, minimum: int | None = None, maximum: int | None = None
    ) -> Any:
        value = self.data.get(name, default)
        if value is None and default is None:
            return None
        bounds = ""
        if minimum is not None and maximum is not None:
            bounds = f" from {minimum} to {maximum}"
        elif minimum is not None:
            bounds = f" of at least {minimum}"
        if type(value) is not int or (minimum is not None and value < minimum) or (
            maximum is not None and value > maximum
        ):
            raise ConfigError(self.key(name), f"expected an integer{bounds}, got {show(value, self.key(name))}")
        return value

    def number(self, name: str, default: float, minimum: float | None = None, exclusive: bool = False) -> float:
        value = self.data.get(name, default)
        ok = type(value) in (int, float) and math.isfinite(value)
        if ok and minimum is not None:
            ok = value > minimum if exclusive else value >= minimum
        if not ok:
            bound = "" if minimum is None else f" {'greater than' if exclusive else 'of at least'} {minimum:g}"
            raise ConfigError(self.key(name), f"expected a number{bound}, got {show(value, self.key(name))}")
        return float(value)

    def port(self, name: str, default: int | None, zero_is_off: bool = False) -> int | None:
        value = self.data.get(name, default)
        if value is None:
            return None
        if zero_is_off and value == 0 and type(value) is int:
            return None
        if type(value) is not int or not 0 < value < 65536:
            off = " (0 turns it off)" if zero_is_off else ""
            raise ConfigError(self.key(name), f"expected a port number from 1 to 65535{off}, got {show(value, self.key(name))}")
        return value

    def string_list(self, name: str) -> list[str]:
        value = self.data.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(self.key(name), f"expected a list of strings [\"...\"], got {show(value, self.key(name))}")
        return value

    def secret(self, name: str, default: str = "") -> str:
        """A credential: written in place (as the reference has it), or kept out of the file
        as `{"file": "<path>"}` (a mounted Kubernetes Secret; one trailing newline dropped)
        or `{"env": "<VARIABLE>"}`. Never echoed in an error."""
        value = self.data.get(name, default)
        if isinstance(value, str):
            return value
        key = self.key(name)
        source = Reader(value, key, self.warnings, self.base_dir, self.env) if isinstance(value, dict) else None
        if source is None or len(source.data) != 1 or not source.data.keys() <= {"file", "env"}:
            raise ConfigError(key, 'expected a string, {"file": "<path>"} or {"env": "<VARIABLE>"}, '
                              f"got {show(value, key)}")
        if "env" in source.data:
            variable = source.string("env", "")
            if variable not in self.env:
                raise ConfigError(key, f"the environment variable {variable!r} it names is not set")
            return self.env[variable]
        path = source.existing_file("file", required=True)
        assert path is not None
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(key, f"cannot read {path}: {getattr(exc, 'strerror', None) or 'not UTF-8 text'}") from None
        return text[:-1] if text.endswith("\n") else text

    def file_path(self, name: str, required: bool) -> Path | None:
        """A path, relative to the file's folder; `{"file": "<path>"}` means the same."""
        value = self.data.get(name, "")
        if isinstance(value, dict) and set(value) == {"file"}:
            return Reader(value, self.key(name), self.warnings, self.base_dir, self.env).file_path("file", required)
        value = self.string(name, "")
        if not value:
            if required:
                raise ConfigError(self.key(name), "missing: expected the path of a file")
            return None
        if looks_secret(value) or len(value) > SHOWN_MAX or "\0" in value:
            # The content of a key or certificate pasted where its path belongs.
            raise ConfigError(self.key(name), f"expected the path of a file, got {show(value)}")
        # Absolute, but symlinks kept: a mounted Secret's `tls.crt` is a link through `..data`,
        # which the kubelet swaps on update; the resolved target is deleted right after.
        return Path(os.path.abspath(self.base_dir / Path(value).expanduser()))

    def existing_file(self, name: str, required: bool) -> Path | None:
        path = self.file_path(name, required)
        if path is None:
            return None
        try:
            is_file, exists = path.is_file(), path.exists()
        except OSError as exc:  # a name too long for the file system, a loop of links
            raise ConfigError(self.key(name), f"cannot read {path}: {exc.strerror}") from None
        if not is_file:
            raise ConfigError(self.key(name), f"{'is not a file' if exists else 'file not found'}: {path}")
        return path

    def required_file(self, name: str) -> Path:
        path = self.existing_file(name, required=True)
        if path is None:  # `path` raised already; this keeps the type exact
            raise ConfigError(self.key(name), "missing: expected the path of a file")
        return path
