"""TCP (console) and UDP (link) port reservation, per owner (a project)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Hashable

from .errors import Conflict

BANNED_PORTS = frozenset(
    {
        1,
        7,
        9,
        11,
        13,
        15,
        17,
        19,
        20,
        21,
        22,
        23,
        25,
        37,
        42,
        43,
        53,
        77,
        79,
        87,
        95,
        101,
        102,
        103,
        104,
        109,
        110,
        111,
        113,
        115,
        117,
        119,
        123,
        135,
        139,
        143,
        179,
        389,
        465,
        512,
        513,
        514,
        515,
        526,
        530,
        531,
        532,
        540,
        556,
        563,
        587,
        601,
        636,
        993,
        995,
        2049,
        3659,
        4045,
        6000,
        6665,
        6666,
        6667,
        6668,
        6669,
    }
)


def can_bind(host: str, port: int, kind: int) -> str | None:
    """None when ``port`` can be bound on every address of ``host``, else the error text."""
    try:
        infos = socket.getaddrinfo(host, port, type=kind, flags=socket.AI_PASSIVE)
    except OSError as err:
        return str(err)
    for family, socktype, proto, _name, address in infos:
        try:
            with socket.socket(family, socktype, proto) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(address)
        except OSError as err:
            return str(err)
    return None


class PortManager:
    """Hands out free ports from the configured ranges and remembers who holds them."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        console_range: tuple[int, int] = (5000, 10000),
        udp_range: tuple[int, int] = (10000, 20000),
        remote_console: bool = False,
    ) -> None:
        self.host = host
        self.console_host = _any_address(host) if remote_console else host
        self.ranges = {"tcp": console_range, "udp": udp_range}
        self._hosts = {"tcp": self.console_host, "udp": "0.0.0.0"}
        self._kinds = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM}
        self._owner: dict[tuple[str, int], Hashable] = {}
        # proto -> (range start, port): every port from start to port - 1 is held or banned
        self._held_below: dict[str, tuple[int, int]] = {}

    def in_use(self, proto: str, port: int) -> bool:
        return (proto, port) in self._owner

    def owned(self, owner: Hashable, proto: str) -> set[int]:
        return {p for (kind, p), who in self._owner.items() if who == owner and kind == proto}

    def _probe(self, proto: str, port: int, host: str | None = None) -> str | None:
        host = host or self._hosts[proto]
        error = can_bind(host, port, self._kinds[proto])
        if error is None and host not in ("0.0.0.0", "::") and proto == "udp":
            error = can_bind("0.0.0.0", port, self._kinds[proto])
        return error

    def allocate(self, proto: str, owner: Hashable, *, host: str | None = None) -> int:
        """The lowest free port of the range (scanned from the lowest port not held)."""
        start, end = self.ranges[proto]
        last = "none tried"
        known_start, first = self._held_below.get(proto, (start, start))
        first = first if known_start == start else start
        for port in range(first, end + 1):
            if port in BANNED_PORTS or (proto, port) in self._owner:
                if port == first:
                    first += 1
                    self._held_below[proto] = (start, first)
                continue
            error = self._probe(proto, port, host)
            if error is None:
                self._owner[(proto, port)] = owner
                return port
            last = error
        raise Conflict(
            f"Could not find a free port between {start} and {end} on host "
            f"{host or self._hosts[proto]}, last exception: {last}"
        )

    def reserve(self, proto: str, port: int, owner: Hashable, *, host: str | None = None) -> int:
        """Take exactly ``port`` or raise a 409 saying why it is not available."""
        start, end = self.ranges[proto]
        if (proto, port) in self._owner:
            raise Conflict(f"{proto.upper()} port {port} is already in use on this server")
        if not start <= port <= end:
            raise Conflict(f"{proto.upper()} port {port} is outside the range {start}-{end}")
        if port in BANNED_PORTS:
            raise Conflict(f"{proto.upper()} port {port} is a port browsers refuse")
        error = self._probe(proto, port, host)
        if error is not None:
            raise Conflict(f"{proto.upper()} port {port} cannot be used: {error}")
        self._owner[(proto, port)] = owner
        return port

    def release(self, proto: str, port: int | None) -> None:
        if port is not None:
            self._owner.pop((proto, port), None)
            start, first = self._held_below.get(proto, (0, 0))
            if port < first:
                self._held_below[proto] = (start, port)

    def release_owner(self, owner: Hashable) -> list[tuple[str, int]]:
        """Release everything ``owner`` still holds; returns what was released."""
        held = [key for key, who in self._owner.items() if who == owner]
        for key in held:
            del self._owner[key]
        if held:
            self._held_below.clear()
        return held


def _any_address(host: str) -> str:
    try:
        return "::" if ipaddress.ip_address(host).version == 6 else "0.0.0.0"
    except ValueError:
        return "0.0.0.0"
