"""Services as kube-proxy would serve them: a stable loopback port per Service port, forwarded to
a ready pod's sandbox socket."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from fleetwire.sim.kubelet.decisions import service_endpoints


class _Services:
    """Mixin of `Kubelet`: the Services' loopback ports."""


    def address(self, namespace: str, service: str, port: int | str) -> tuple[str, int]:
        """Where on loopback the Service's port answers (forwarded to its ready pods)."""
        listeners = self._services.get((namespace, service))
        if not listeners:
            raise LookupError(f"no Service {namespace}/{service} seen yet")
        for key, (_server, host_port) in listeners.items():
            if port in key:
                return "127.0.0.1", host_port
        raise LookupError(f"Service {namespace}/{service} has no port {port!r}")


    async def _sync_services(self, services: Sequence[Mapping[str, Any]]) -> None:
        present = set()
        for service in services:
            key = (service["metadata"]["namespace"], service["metadata"]["name"])
            present.add(key)
            self._service_objects[key] = dict(service)
            listeners = self._services.setdefault(key, {})
            for port in (service.get("spec") or {}).get("ports") or []:
                ident = (port.get("port"), port.get("name"))
                if ident not in listeners:
                    server = await asyncio.start_server(
                        functools.partial(self._proxy, key, port.get("port")), "127.0.0.1", 0)
                    listeners[ident] = (server, int(server.sockets[0].getsockname()[1]))
        for key in set(self._services) - present:
            for server, _port in self._services.pop(key).values():
                server.close()
            self._service_objects.pop(key, None)

    async def _proxy(self, key: tuple[str, str], port: int, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        service = self._service_objects.get(key)
        candidates = [] if service is None else service_endpoints(service, port, [
            (p.labels, p.plan.ports if p.plan else {}, p.ready, p) for p in self.pods.values()
            if p.namespace == key[0] and not p.terminating])
        if not candidates:
            writer.close()  # no ready endpoint: the connection is refused, as with no endpoints
            return
        pod, target = secrets.choice(candidates)
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(str(pod.sockets / str(target)))
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    if dst.can_write_eof():
                        dst.write_eof()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            writer.close()
            up_writer.close()
