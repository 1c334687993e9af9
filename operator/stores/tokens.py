"""Token stores of the user's Fleet API token pair, behind the client's `TokenStore` protocol.

A refresh token is single-use: each refresh replaces it, so a store's `save()` must have made
the new pair durable when it returns (`fleetwire.operator.clients.fleetapi_types` defines the
protocol and uses a new access token only after that). `MemoryTokenStore` is for tests and
short-lived tools, `JsonFileTokenStore` for a process with a disk; the operator's own is a
Secret (`fleetwire.operator.stores.secret_tokens`).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path

from fleetwire.operator.clients.fleetapi_errors import TokenStoreError
from fleetwire.operator.clients.fleetapi_types import Tokens

__all__ = ["JsonFileTokenStore", "MemoryTokenStore"]


class MemoryTokenStore:
    """A store for tests and short-lived tools: gone with the process."""

    def __init__(self, tokens: Tokens) -> None:
        self.tokens = tokens
        self.saves = 0

    async def load(self) -> Tokens:
        return self.tokens

    async def save(self, tokens: Tokens) -> None:
        self.tokens = tokens
        self.saves += 1


class JsonFileTokenStore:
    """A JSON file, replaced atomically (write, fsync, rename) and readable by the owner only,
    so a crash mid-save leaves either the old or the new pair, never a torn file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    async def load(self) -> Tokens:
        return await asyncio.to_thread(self._load)

    async def save(self, tokens: Tokens) -> None:
        await asyncio.to_thread(self._save, tokens)

    def _load(self) -> Tokens:
        try:
            return Tokens.from_dict(json.loads(self.path.read_text()))
        except (OSError, json.JSONDecodeError, ValueError) as exc:
            raise TokenStoreError(f"cannot read the token file {self.path}: {type(exc).__name__}: {exc}") from None

    def _save(self, tokens: Tokens) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump(tokens.as_dict(), handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
