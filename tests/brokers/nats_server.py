"""Debian's nats-server on loopback, with JetStream on file storage.

`NatsServer(workdir)` picks a free port; `start()` runs ``nats-server -js -p PORT -sd DIR``
and returns once the server says it is ready (JetStream has recovered its streams by
then); `stop()` ends it with SIGTERM, `kill()` with SIGKILL; `restart()` brings it back on
the same port with the same store, so a stream and the messages it acknowledged survive.
Usable from tests and from bench scripts (no pytest here).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from brokers.process import BrokerProcess, free_port


def nats_server_binary() -> str | None:
    """The nats-server executable, or None when it is not installed."""
    return shutil.which("nats-server") or next(
        (p for p in ("/usr/sbin/nats-server", "/usr/bin/nats-server") if os.access(p, os.X_OK)), None
    )


class NatsServer(BrokerProcess):
    """One nats-server process on 127.0.0.1:`port`.

    `jetstream=False` runs core NATS only. `user`/`password` or `token` require them of
    clients; `tls` = (cert, key) serves TLS, `client_ca` also verifies client certificates.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        jetstream: bool = True,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        tls: tuple[Path, Path] | None = None,
        client_ca: Path | None = None,
        binary: str | None = None,
    ) -> None:
        found = binary or nats_server_binary()
        if found is None:
            raise FileNotFoundError("nats-server is not installed (apt-get install nats-server)")
        super().__init__(workdir, "nats-server.log")
        self.binary = found
        self.store_dir = self.workdir / "jetstream"
        self.port = free_port()
        args = [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-l", str(self.log_file)]
        if jetstream:
            args += ["-js", "-sd", str(self.store_dir)]
        if user is not None:
            args += ["--user", user, "--pass", password or ""]
        if token is not None:
            args += ["--auth", token]
        if tls is not None:
            args += ["--tls", "--tlscert", str(tls[0]), "--tlskey", str(tls[1])]
            if client_ca is not None:
                args += ["--tlsverify", "--tlscacert", str(client_ca)]
        self.args = args
        self.scheme = "tls" if tls is not None else "nats"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> NatsServer:
        assert not self.running, "already running"
        offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                raise RuntimeError(f"nats-server exited at start; log:\n{self.log_tail()}")
            if self.log_file.exists():
                with self.log_file.open("rb") as log:
                    log.seek(offset)
                    if b"Server is ready" in log.read():
                        return self
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"nats-server not ready within {timeout:.0f} s; log:\n{self.log_tail()}")
