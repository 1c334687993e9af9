"""Debian's redis-server on loopback: one server, or a 3-node Redis Cluster.

`RedisServer(workdir)` picks a free port; `start()` returns once it answers PING;
`stop()` ends it with SIGTERM, `kill()` with SIGKILL; `restart()` brings it back on the
same port. `password` requires AUTH; `tls` = (cert, key, ca) serves TLS only and
verifies client certificates against `ca`. `RedisCluster(workdir)` runs three masters
(`--cluster-enabled yes`) joined with ``redis-cli --cluster create``. Usable from tests
and from bench scripts (no pytest here).
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Self

from brokers.process import BrokerProcess, free_port


def redis_server_binary() -> str | None:
    """The redis-server executable, or None when it is not installed."""
    return shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/sbin/redis-server") if os.access(p, os.X_OK)), None
    )


def _cluster_port() -> int:
    """A free port P with P + 10000 free too (the cluster bus), P below 55536."""
    while True:
        port = random.randint(20000, 45000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
            return reply.startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


class RedisServer(BrokerProcess):
    """One redis-server process on 127.0.0.1:`port`, no persistence."""

    def __init__(
        self,
        workdir: Path,
        *,
        password: str | None = None,
        tls: tuple[Path, Path, Path] | None = None,
        cluster: bool = False,
        port: int | None = None,
        binary: str | None = None,
    ) -> None:
        found = binary or redis_server_binary()
        if found is None:
            raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
        super().__init__(workdir, "redis.log")
        self.binary = found
        self.port = port or (_cluster_port() if cluster else free_port())
        self.tls = tls
        args = [self.binary, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.workdir), "--logfile", str(self.log_file), "--daemonize", "no"]
        if tls is not None:
            cert, key, ca = tls
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert),
                     "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "yes"]
        else:
            args += ["--port", str(self.port)]
        if password is not None:
            args += ["--requirepass", password]
        if cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", str(self.workdir / "nodes.conf"),
                     "--cluster-node-timeout", "2000"]
        self.args = args

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> RedisServer:
        assert not self.running, "already running"
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                raise RuntimeError(f"redis-server exited at start; log:\n{self.log_tail()}")
            if self.tls is not None:
                if "Ready to accept connections" in self.log_tail(100_000):
                    return self
            elif _answers_ping(self.port):
                return self
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server not ready within {timeout:.0f} s; log:\n{self.log_tail()}")


class RedisCluster:
    """Three cluster-enabled masters on loopback, slots spread by ``redis-cli --cluster create``."""

    def __init__(self, workdir: Path, nodes: int = 3) -> None:
        self.workdir = Path(workdir)
        self.nodes = [RedisServer(self.workdir / f"node-{i}", cluster=True) for i in range(nodes)]

    @property
    def addrs(self) -> list[str]:
        return [node.addr for node in self.nodes]

    def start(self, timeout: float = 30.0) -> RedisCluster:
        cli = shutil.which("redis-cli") or "redis-cli"
        try:
            for node in self.nodes:
                node.start()
            subprocess.run([cli, "--cluster", "create", *self.addrs, "--cluster-yes"], check=True,
                           capture_output=True, timeout=timeout)
        except BaseException:
            self.close()  # no node outlives a failed start
            raise
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = [subprocess.run([cli, "-p", str(n.port), "cluster", "info"], capture_output=True, text=True,
                                     timeout=5, check=False).stdout for n in self.nodes]
            if all("cluster_state:ok" in s for s in states):
                return self
            time.sleep(0.1)
        self.close()
        raise RuntimeError("the Redis cluster did not reach cluster_state:ok")

    def close(self) -> None:
        for node in self.nodes:
            node.kill()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
