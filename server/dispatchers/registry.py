"""Which dispatchers this build has, and building the ones a configuration uses.

A dispatcher named ``x`` is the module ``fleetwire.server.dispatchers.x`` with a
``create(config: ServerConfig) -> Dispatcher`` function: adding a backend is adding
that one module (and its test), nothing here.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from fleetwire.server.config import KNOWN_DISPATCHERS, ConfigError, ServerConfig
from fleetwire.server.dispatchers.base import Dispatcher, DispatchQueue, QueueObserver


def _module_name(name: str) -> str:
    return f"{__package__}.{name}"


def _load(name: str) -> ModuleType:
    if name not in KNOWN_DISPATCHERS:
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
