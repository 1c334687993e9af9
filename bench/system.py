"""Process plumbing for the benchmarks: CPU pinning, fd limits, /proc readings, servers."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Self

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def pin(cpu: int | set[int], pid: int = 0) -> bool:
    """Run a process (by default this one) and the threads it starts later on one CPU (or a set).

    False if there is no such CPU here.
    """
    try:
        os.sched_setaffinity(pid, {cpu} if isinstance(cpu, int) else cpu)
    except OSError:
        return False
    return True


def raise_nofile(wanted: int = 65536, pid: int = 0) -> int:
    """Raise a process's open-file limit as far as its hard limit allows; returns the soft limit."""
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (target, hard))
    return max(soft, target)


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU time of a process (all its threads), from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def core_busy(cpus: set[int]) -> tuple[int, int]:
    """(busy, total) clock ticks of these CPUs since boot, whoever kept them busy (/proc/stat)."""
    busy = total = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *ticks = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            values = [int(t) for t in ticks[:8]]  # user nice system idle iowait irq softirq steal
            total += sum(values)
            busy += sum(values) - values[3] - values[4]
    return busy, total


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process, from /proc/<pid>/statm."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE


def vm_hwm_bytes(pid: int | str = "self") -> int:
    """Peak resident set size of a process (VmHWM in /proc/<pid>/status); 0 once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    line = next((ln for ln in status.splitlines() if ln.startswith("VmHWM:")), "VmHWM: 0 kB")
    return int(line.split()[1]) * 1024


def process_tree(pid: int) -> list[int]:
    """A process and its descendants (a server's workers), from /proc/<pid>/task/*/children."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for children in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                todo += [int(c) for c in children.read_text().split()]
            except OSError:
                pass
    return out


def listening(port: int) -> bool:
    """Whether some socket listens on TCP `port` (read from /proc: no probe connection to log)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                return True
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A server under test in a subprocess pinned to one CPU; a context manager."""

    def __init__(self, argv: Sequence[str], port: int, cpu: int | set[int], log_file: Path) -> None:
        self.argv = list(argv)
        self.port = port
        self.cpu = cpu
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 20.0) -> Self:
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        # Popen returns once the child has exec'd: still one thread, which later ones inherit from.
        pin(self.cpu, self.proc.pid)
        raise_nofile(pid=self.proc.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.argv[:3]} exited with {self.proc.returncode}; see {self.log_file}")
            if listening(self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.argv[:3]} did not listen on {self.port} within {timeout} s")

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
