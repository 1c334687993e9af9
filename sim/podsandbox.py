"""The pod sandbox of the kubelet stand-in: the process that holds a pod's network.

`python -P -m fleetwire.sim.podsandbox SOCKET_DIR PORT[,PORT...] -- COMMAND...` runs
inside the pod's bubblewrap sandbox (its own network namespace, only loopback). It starts
the container's COMMAND and, for each PORT, listens on the Unix socket `SOCKET_DIR/PORT`
and forwards every connection to 127.0.0.1:PORT inside the pod. Unix sockets cross
network namespaces through the filesystem, so the kubelet stand-in reaches a pod's ports
(for probes and for Services) the way a node reaches a pod's IP, while every pod listens
on the very ports its spec names without colliding with another pod or with the host.

It exits with the container's exit status; SIGTERM and SIGINT are passed on to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path

__all__ = ["main"]


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()


async def _forward(port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        writer.close()  # nothing listens there: the caller sees the connection closed, as a refused one
        return
    try:
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
    finally:
        for w in (writer, upstream_writer):
            w.close()


async def _run(socket_dir: Path, ports: list[int], command: list[str]) -> int:
    servers = []
    for port in ports:
        path = socket_dir / str(port)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        servers.append(await asyncio.start_unix_server(
            lambda r, w, port=port: _forward(port, r, w), path=str(path)))
    process = await asyncio.create_subprocess_exec(*command)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda sig=sig: process.returncode is None and process.send_signal(sig))
    code = await process.wait()
    for server in servers:
        server.close()
    return code if code >= 0 else 128 - code


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        print("usage: podsandbox SOCKET_DIR PORT[,PORT...] -- COMMAND...", file=sys.stderr)
        return 2
    ports = [int(p) for p in argv[1].split(",") if p]
    return asyncio.run(_run(Path(argv[0]), ports, argv[3:]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
