"""Which backends this build has: their names, their settings, and building them.

A backend named ``x`` is the module ``fleetwire.server.dispatchers.x``, which declares

- ``parse_settings(section: Reader, env: Mapping[str, str], in_use: bool)``: reads the
  ``"x"`` section of config.json in the reference's shape and returns the backend's
  settings, raising `ConfigError` that names the key; `in_use` says whether a record
  type goes to it (files, credentials and the environment are checked only then);
- ``create(config: ServerConfig) -> Dispatcher``: builds the dispatcher from
  ``config.backend("x")`` (not started yet);
- ``SECTION_REQUIRED = False`` if it works without a section (then it reads an empty one).

Adding a backend is adding that one module (and its test): this file names them only.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from fleetwire.server.dispatch import Dispatcher
from fleetwire.server.dispatch_queue import DispatchQueue, QueueObserver
from fleetwire.strictjson import ConfigError, Reader

if TYPE_CHECKING:
    from fleetwire.server.config import ServerConfig

BACKENDS: tuple[str, ...] = ("logger", "mqtt", "redis", "kafka", "kinesis", "pubsub", "zmq", "nats")
"""Dispatcher names a configuration may use, as the reference names them (plus nats)."""


def _module_name(name: str) -> str:
    return f"{__package__}.{name}"


def _load(name: str) -> ModuleType:
    if name not in BACKENDS:
        raise ConfigError("records", f"unknown dispatcher {name!r}")
    return importlib.import_module(_module_name(name))


def unavailable_reason(name: str) -> str | None:
    """None if dispatcher `name` can be built here, else why not (for the user)."""
    try:
        module = _load(name)
    except ModuleNotFoundError as exc:
        if exc.name == _module_name(name):
            return "no backend module for it is included"
        return f"it needs the Python package {exc.name!r}, which is not installed"
    if not callable(getattr(module, "create", None)):
        return f"module {module.__name__} has no create(config) function"
    return None


def parse_backend_settings(
    root: Reader, users: Mapping[str, Sequence[str]], env: Mapping[str, str]
) -> dict[str, Any]:
    """Each present backend section, read by its own module; `users` maps each backend in
    use to the record types that go to it, whose section must be there unless it needs none."""
    settings: dict[str, Any] = {}
    for name in BACKENDS:
        if name not in root.data and name not in users:
            continue
        try:
            module = _load(name)
        except ModuleNotFoundError:
            continue  # reported by `unavailable_reason` if the backend is used
        if name not in root.data and getattr(module, "SECTION_REQUIRED", True):
            raise ConfigError(name, f"missing: records of type {', '.join(users[name])} go to the "
                              f"'{name}' dispatcher, which needs a \"{name}\" section")
        parse = getattr(module, "parse_settings", None)
        if parse is not None:
            settings[name] = parse(root.section(name, required=False), env, name in users)
    return settings


def build_dispatchers(config: ServerConfig) -> dict[str, Dispatcher]:
    """One dispatcher per name used in `config.records` (not started yet)."""
    dispatchers: dict[str, Dispatcher] = {}
    for name in config.dispatchers_in_use():
        reason = unavailable_reason(name)
        if reason is not None:
            raise ConfigError("records", f"dispatcher {name!r} is not available in this build ({reason})")
        dispatchers[name] = _load(name).create(config)
    return dispatchers


def build_queues(
    config: ServerConfig,
    dispatchers: dict[str, Dispatcher] | None = None,
    observer: QueueObserver | None = None,
) -> dict[str, DispatchQueue]:
    """A `DispatchQueue` per dispatcher, sized and made lossy as `config.dispatch` says."""
    if dispatchers is None:
        dispatchers = build_dispatchers(config)
    settings = config.dispatch
    return {
        name: DispatchQueue(
            dispatcher,
            maxsize=settings.queue_size,
            batch_size=settings.batch_size,
            lossy=name in settings.lossy,
            observer=observer,
        )
        for name, dispatcher in dispatchers.items()
    }
