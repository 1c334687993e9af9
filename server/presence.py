"""Which VINs are online, free of I/O: VIN → the number of sockets it holds open.

A vehicle may hold several sockets at once (Wi-Fi and cellular, or a reconnect that
overlaps the old socket), so "a socket closed" does not mean "the vehicle went away".
The transport reports every socket it accepted and every one that closed; the tracker
answers how many the VIN holds afterwards, which is what marks the VIN's first socket
(online) and its last (offline) in the connectivity records.

Sockets are told apart by the server's own connection id, so the tracker needs only a
count per VIN: idle vehicles dominate, and a set per VIN would cost more than the count.
"""

from __future__ import annotations

__all__ = ["Presence"]


class Presence:
    """Open sockets per VIN; `len()` is the number of VINs online."""

    __slots__ = ("_sockets", "_total")

    def __init__(self) -> None:
        self._sockets: dict[str, int] = {}
        self._total = 0

    def opened(self, vin: str) -> int:
        """A socket of `vin` was accepted; the sockets it holds now (1: it came online)."""
        count = self._sockets.get(vin, 0) + 1
        self._sockets[vin] = count
        self._total += 1
        return count

    def closed(self, vin: str) -> int:
        """A socket of `vin` closed; the sockets it still holds (0: it went offline).

        A close without an open (a transport bug) changes nothing rather than go negative.
        """
        count = self._sockets.get(vin, 0)
        if count == 0:
            return 0
        self._total -= 1
        if count == 1:
            del self._sockets[vin]
            return 0
        self._sockets[vin] = count - 1
        return count - 1

    def sockets(self, vin: str) -> int:
        """The sockets `vin` holds open."""
        return self._sockets.get(vin, 0)

    @property
    def total(self) -> int:
        """Every open socket of every VIN."""
        return self._total

    def __len__(self) -> int:
        return len(self._sockets)
