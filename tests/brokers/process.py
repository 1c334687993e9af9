"""What every broker wrapper shares: one process on loopback, its log, and how it ends.

A wrapper says how to start its broker and when it is ready; stopping (SIGTERM), killing
(SIGKILL, as a crash), pausing (SIGSTOP: sockets open, nothing answered) and restarting
are the same for all.
"""

from __future__ import annotations

import abc
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Self


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def end_process(proc: subprocess.Popen[bytes] | None, sig: signal.Signals) -> None:
    """Send `sig` (waking a paused process first) and wait; SIGKILL if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGCONT)
    proc.send_signal(sig)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _state(pid: int) -> str | None:
    """The process's state letter from /proc (R, S, T stopped, ...), None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0]


class BrokerProcess(abc.ABC):
    """One broker process with its log in `workdir`; subclasses define `start`."""

    def __init__(self, workdir: Path, log_name: str) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_file = self.workdir / log_name
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @abc.abstractmethod
    def start(self, timeout: float = 20.0) -> Self:
        """Start the broker and return once it answers."""

    def stop(self) -> None:
        """SIGTERM: the broker shuts down cleanly."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: no shutdown at all, as a crash."""
        self._end(signal.SIGKILL)

    def restart(self, *, kill: bool = True) -> Self:
        """Kill (or stop) and start again on the same port with the same storage."""
        self._end(signal.SIGKILL if kill else signal.SIGTERM)
        return self.start()

    def pause(self) -> None:
        """SIGSTOP: the broker keeps its sockets open but answers nothing. Returns once the
        process is stopped: a busy machine may run it a little after the signal is sent."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + 5
        while _state(self.proc.pid) not in ("T", "t", None) and time.monotonic() < deadline:
            time.sleep(0.002)

    def resume(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        """End everything this wrapper started."""
        self.kill()

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def _end(self, sig: signal.Signals) -> None:
        proc, self.proc = self.proc, None
        end_process(proc, sig)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
