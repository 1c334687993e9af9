"""A mounted Secret's files for tests that run the server in-process."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any


class SecretFiles:
    """A TLS Secret's `tls.crt` and `tls.key` as files, rewritten (key first, each atomically)
    whenever the Secret changes, as a kubelet does for a mounted Secret; a server watching
    the files reloads them. `fetch` returns the Secret as the API does (None: absent). For tests
    that run the server in-process; the demo runs the server's pod (`fleetwire.sim.kubelet`)."""

    def __init__(self, fetch: Callable[[], Awaitable[Mapping[str, Any] | None]], directory: Path) -> None:
        self.fetch = fetch
        self.directory = directory
        self.cert, self.key = directory / "tls.crt", directory / "tls.key"
        self.version: str | None = None
        self.ca_pem = ""  # the ca.crt that came with the certificate written last
        self.written_at = 0.0  # time.monotonic() of that write
        self.changes = 0
        self._task: asyncio.Task[None] | None = None

    async def sync(self) -> bool:
        """Write the files if the Secret changed; False while it does not exist."""
        found = await self.fetch()
        if found is None:
            return False
        version = str((found.get("metadata") or {}).get("resourceVersion"))
        if version != self.version:
            data = found.get("data") or {}
            for key, path in (("tls.key", self.key), ("tls.crt", self.cert)):
                tmp = path.with_name(f".{path.name}.tmp")
                tmp.write_bytes(base64.b64decode(data[key]))
                os.replace(tmp, path)
            self.version = version
            self.ca_pem = base64.b64decode(data.get("ca.crt", "")).decode()
            self.written_at = time.monotonic()
            self.changes += 1
        return True

    def follow(self, every: float = 0.1) -> None:
        async def loop() -> None:
            while True:
                await asyncio.sleep(every)
                await self.sync()

        self._task = asyncio.get_running_loop().create_task(loop(), name="secret files")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
