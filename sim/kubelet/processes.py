"""Pods as processes: the container started in its sandbox, restarted with back-off, probed,
terminated with its grace period."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetwire.sim.kubelet.decisions import PodView, ProbeState, restart_delay
from fleetwire.sim.kubelet.model import PodPlan, Probe, Waiting, _now
from fleetwire.sim.kubelet.sandbox import SOCKET_DIR, sandbox_args
from fleetwire.sim.kubelet.volumes import write_volume


@dataclass
class Pod:
    """One running (or waiting) pod of a Deployment."""

    name: str
    namespace: str
    deployment: str
    template_hash: str
    labels: dict[str, str]
    directory: Path
    template: dict[str, Any]
    plan: PodPlan | None = None
    waiting: Waiting | None = None
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    ready: bool = False
    live: ProbeState = field(default_factory=lambda: ProbeState(True))
    readiness: ProbeState = field(default_factory=lambda: ProbeState(False))
    started_at: float | None = None
    ready_at: float | None = None
    created_at: float = field(default_factory=time.monotonic)
    terminating: bool = False
    last_exit: int | None = None
    last_reason: str = ""
    volume_updates: int = 0
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    sockets: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pod-")))
    """The sandbox's port sockets: a short path, as a Unix socket's path is at most 107 bytes."""

    @property
    def log(self) -> Path:
        return self.directory / "container.log"

    @property
    def pid(self) -> int | None:
        return None if self.process is None or self.process.returncode is not None else self.process.pid

    def view(self) -> PodView:
        return PodView(self.name, self.template_hash, self.ready, self.terminating)


class _Processes:
    """Mixin of `Kubelet`: the life of one pod's process."""


    async def _supervise(self, pod: Pod) -> None:
        """Start the container; restart it with back-off when it exits or fails liveness."""
        assert pod.plan is not None
        plan = pod.plan
        volume_dirs: dict[str, Path] = {}
        for volume, files in plan.volumes.items():
            directory = pod.directory / "volumes" / volume
            directory.mkdir(parents=True, exist_ok=True)
            if files is not None:
                write_volume(directory, files)
            volume_dirs[volume] = directory
        args = sandbox_args(plan, volume_dirs, pod.sockets, pod.name[:63])
        sandbox = [sys.executable, "-P", "-m", "fleetwire.sim.podsandbox", SOCKET_DIR,
                   ",".join(map(str, plan.listened_ports)), "--", *plan.argv]
        while not pod.terminating:
            delay = restart_delay(pod.restarts, *self.backoff)
            if delay:
                pod.waiting = Waiting("CrashLoopBackOff", f"back-off {delay:g}s restarting failed container="
                                                          f"{plan.container} pod={pod.name}")
                await asyncio.sleep(delay)
                if pod.terminating:
                    return
            with pod.log.open("ab") as log:
                log.write(f"--- {_now()} start {pod.restarts} ---\n".encode())
                log.flush()
                pod.process = await asyncio.create_subprocess_exec(
                    self._bwrap or "bwrap", *args, "--", *sandbox, stdin=asyncio.subprocess.DEVNULL,
                    stdout=log, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
            pod.waiting, pod.started_at = None, time.monotonic()
            pod.live, pod.readiness, pod.ready = ProbeState(True), ProbeState(plan.readiness is None), \
                plan.readiness is None
            probes = [asyncio.get_running_loop().create_task(self._probe_loop(pod, kind, probe))
                      for kind, probe in (("liveness", plan.liveness), ("readiness", plan.readiness)) if probe]
            code = await pod.process.wait()
            for task in probes:
                task.cancel()
            await asyncio.gather(*probes, return_exceptions=True)
            pod.ready, pod.last_exit = False, code
            if pod.terminating:
                return
            pod.last_reason = pod.last_reason if pod.last_reason == "Unhealthy" else (
                "Completed" if code == 0 else "Error")
            pod.restarts += 1

    async def _probe_loop(self, pod: Pod, kind: str, probe: Probe) -> None:
        scale = self.probe_scale
        await asyncio.sleep(probe.initial_delay * scale)
        while True:
            ok = await self._probe(pod, probe)
            if kind == "readiness":
                pod.readiness = pod.readiness.observe(ok, probe)
                if pod.readiness.passing and not pod.ready:
                    pod.ready_at = time.monotonic()
                pod.ready = pod.readiness.passing
            else:
                pod.live = pod.live.observe(ok, probe)
                if not pod.live.passing and pod.process is not None and pod.process.returncode is None:
                    pod.last_reason = "Unhealthy"
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pod.process.pid, signal.SIGKILL)
                    return
            await asyncio.sleep(max(0.05, probe.period * scale))

    async def _probe(self, pod: Pod, probe: Probe) -> bool:
        """One probe: through the pod sandbox's socket for the port, as to the pod's IP."""
        try:
            if probe.action == "exec" or probe.port is None:
                return False  # exec probes are not emulated; an unknown port name fails as on a node
            path = pod.sockets / str(probe.port)
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), probe.timeout)
            try:
                if probe.action == "tcp":
                    # The sandbox accepts, then connects inside: a closed port shows as EOF at once.
                    try:
                        return await asyncio.wait_for(reader.read(1), min(0.2, probe.timeout)) != b""
                    except TimeoutError:
                        return True
                writer.write(f"GET {probe.path} HTTP/1.1\r\nHost: 127.0.0.1:{probe.port}\r\n"
                             "User-Agent: kube-probe/1.32\r\nConnection: close\r\n\r\n".encode())
                await writer.drain()
                line = await asyncio.wait_for(reader.readline(), probe.timeout)
                parts = line.split()
                return len(parts) >= 2 and parts[1].isdigit() and 200 <= int(parts[1]) < 400
            finally:
                writer.close()
        except (TimeoutError, OSError, ValueError):
            return False

    async def _terminate(self, pod: Pod) -> None:
        pod.terminating = True
        asyncio.get_running_loop().create_task(self._finish(pod), name=f"terminate {pod.name}")

    async def _finish(self, pod: Pod) -> None:
        await self._kill(pod, grace=min(pod.plan.grace_seconds if pod.plan else 2.0, 5.0))
        self.pods.pop(pod.name, None)
        self._written.pop((pod.namespace, pod.name), None)
        with contextlib.suppress(Exception):
            await self._request("DELETE", self._path("/api/v1", "pods", pod.namespace, pod.name))
        shutil.rmtree(pod.directory / "volumes", ignore_errors=True)
        shutil.rmtree(pod.sockets, ignore_errors=True)

    async def _kill(self, pod: Pod, grace: float) -> None:
        pod.terminating = True
        process = pod.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        for task in pod.tasks:
            task.cancel()
        await asyncio.gather(*pod.tasks, return_exceptions=True)
