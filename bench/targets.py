"""The servers under test, each started the way an operator would start it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Self

from identities import BenchPki
from system import Server, free_port

BENCH = Path(__file__).resolve().parent
TARGETS = ("websockets", "picows", "go", "nginx", "openssl", "fleetwire", "fleetwire-zmq", "fleetwire-unrouted")
"""`fleetwire` routes `V` to the logger printing decoded records; `fleetwire-zmq` is the
production path: `V` forwarded as protobuf to a ZMQ socket with reliable acks (each ack
waits for the socket to accept the record for its subscriber, a SUB socket draining in a
process of its own); `fleetwire-unrouted` routes no record type: records are decoded and
acked, not dispatched.
`go` is the reference server's transport (crypto/tls + gorilla/websocket) with nothing
behind it; `nginx` (`ssl_verify_client on`) and `openssl` (in-process handshakes, see
tls_floor.py) speak TLS but no WebSocket, so they are measured only where TLS is the cost."""
TLS_ONLY = {"nginx": ("idle", "handshakes"), "openssl": ("handshakes",)}
"""The phases a target without WebSocket takes part in."""
GO_PATH = "/usr/share/gocode"  # Debian's golang-github-gorilla-websocket-dev installs here


def fleetwire_command() -> list[str]:
    """`fleetwire` as installed beside this interpreter (else run as a module)."""
    script = shutil.which("fleetwire", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "fleetwire.cli"]


def fleetwire_config(pki: BenchPki, port: int, directory: Path, *, routed: bool = True,
                     zmq_port: int | None = None) -> Path:
    """A reference-format config: `V` records to the logger, whose output goes to the server
    log, or with `zmq_port` to a ZMQ socket bound there, reliable acks waiting for it."""
    config: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "status_port": free_port(),
        "namespace": "bench",
        "tls": {"server_cert": str(pki.fleet.server_cert), "server_key": str(pki.fleet.server_key), "ca_file": str(pki.fleet.ca_file)},
        "records": {"V": ["logger"]} if routed else {},
        "logger": {"verbose": False},
        "monitoring": {"prometheus_metrics_port": free_port()},
    }
    if zmq_port is not None:
        config["records"] = {"V": ["zmq"]}
        config["reliable_ack_sources"] = {"V": "zmq"}
        config["zmq"] = {"addr": f"tcp://127.0.0.1:{zmq_port}"}
        del config["logger"]
    path = directory / f"fleetwire-{port}.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def unavailable(name: str, directory: Path) -> str | None:
    """Why target `name` cannot run on this machine (a missing package), or None.

    The Go sink is built here, from Debian's packages only (GO111MODULE=off: no module
    download), into `directory`."""
    if name == "go":
        go = shutil.which("go")
        if go is None or not (Path(GO_PATH) / "src/github.com/gorilla/websocket").is_dir():
            return "needs Debian's golang-go and golang-github-gorilla-websocket-dev (make bench-deps)"
        env = {**os.environ, "GO111MODULE": "off", "GOPATH": GO_PATH, "GOCACHE": str(directory / "gocache")}
        build = subprocess.run([go, "build", "-o", str(directory / "gosink"), str(BENCH / "gosink" / "main.go")],
                               env=env, capture_output=True, text=True, check=False)
        return None if build.returncode == 0 else f"go build failed: {build.stderr.strip()[-300:]}"
    if name == "nginx" and nginx_binary() is None:
        return "needs Debian's nginx (make bench-deps)"
    return None


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


def nginx_config(pki: BenchPki, port: int, directory: Path) -> Path:
    """One process (no master, no daemon) so that /proc of its pid is the whole server; mTLS
    required; every request answered with a tiny 200 and the connection kept open."""
    work = directory / f"nginx-{port}"
    work.mkdir(parents=True, exist_ok=True)
    temp = " ".join(f"{kind}_temp_path {work}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    config = f"""
daemon off; master_process off; worker_processes 1; pid {work}/nginx.pid; error_log {work}/error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off; {temp}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {pki.fleet.server_cert}; ssl_certificate_key {pki.fleet.server_key};
        ssl_client_certificate {pki.fleet.ca_file}; ssl_verify_client on;
        ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache off; ssl_session_tickets off;
        keepalive_timeout 3600s; keepalive_requests 1000000;
        location / {{ return 200 "ok\n"; }}
    }}
}}
"""
    path = work / "nginx.conf"
    path.write_text(config)
    return path


class DrainedServer(Server):
    """A server publishing on ZMQ, with a subscriber taking everything it publishes.

    The subscriber is a process of its own (on the load generator's CPU): `zmq.proxy`
    forwards each message, in libzmq's C loop, to a PUB socket no one listens to, which
    drops it, so draining costs no Python per message."""

    def __init__(self, argv: list[str], port: int, cpu: int, log_file: Path, zmq_port: int) -> None:
        super().__init__(argv, port, cpu, log_file)
        self.zmq_port = zmq_port
        self.drain: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> Self:
        self.drain = subprocess.Popen([sys.executable, "-c", DRAIN, f"tcp://127.0.0.1:{self.zmq_port}"],
                                      stdin=subprocess.DEVNULL)
        try:
            return super().start(timeout)
        except BaseException:
            self.stop()  # no __exit__ follows a failed __enter__
            raise

    def stop(self) -> None:
        super().stop()
        if self.drain is not None:
            self.drain.terminate()
            self.drain.wait(5)
            self.drain = None


DRAIN = """
import sys, zmq
context = zmq.Context()
sub = context.socket(zmq.SUB)
sub.setsockopt(zmq.SUBSCRIBE, b"")
sub.connect(sys.argv[1])
void = context.socket(zmq.PUB)
void.bind("inproc://void")
try:
    zmq.proxy(sub, void)
except KeyboardInterrupt:
    pass
"""


def server(name: str, pki: BenchPki, directory: Path, cpu: int) -> Server:
    """A not yet started server for target `name` on a free port, pinned to `cpu`."""
    port = free_port()
    if name == "fleetwire-zmq":
        zmq_port = free_port()
        config = fleetwire_config(pki, port, directory, zmq_port=zmq_port)
        argv = [*fleetwire_command(), "serve", "--config", str(config)]
        return DrainedServer(argv, port, cpu, directory / f"{name}.log", zmq_port)
    if name.startswith("fleetwire"):
        config = fleetwire_config(pki, port, directory, routed=name == "fleetwire")
        argv = [*fleetwire_command(), "serve", "--config", str(config)]
    elif name in ("websockets", "picows"):
        argv = [
            sys.executable, str(BENCH / "sinks.py"), "--mode", name, "--port", str(port),
            "--cert", str(pki.fleet.server_cert), "--key", str(pki.fleet.server_key), "--ca", str(pki.fleet.ca_file),
        ]
    elif name == "go":
        # one OS thread for Go code, as the other servers get one core
        argv = ["env", "GOMAXPROCS=1", str(directory / "gosink"), "-addr", f"127.0.0.1:{port}",
                "-cert", str(pki.fleet.server_cert), "-key", str(pki.fleet.server_key), "-ca", str(pki.fleet.ca_file)]
    elif name == "nginx":
        nginx = nginx_binary()
        assert nginx is not None
        config = nginx_config(pki, port, directory)
        argv = [nginx, "-c", str(config), "-p", str(config.parent), "-e", str(config.parent / "error.log")]
    else:
        raise ValueError(f"unknown target {name!r}; choose from {', '.join(TARGETS)}")
    return Server(argv, port, cpu, directory / f"{name}.log")
