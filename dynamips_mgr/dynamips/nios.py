"""NIOs: validation, creation, filters and deletion, shared by routers and devices."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..errors import Conflict
from .hypervisor.process import Hypervisor
from .hypervisor.protocol import check_text

# type -> (name prefix, create command, JSON fields in command order)
KINDS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "nio_udp": ("udp", "nio create_udp", ("lport", "rhost", "rport")),
    "nio_unix": ("unix", "nio create_unix", ("local_file", "remote_file")),
    "nio_vde": ("vde", "nio create_vde", ("control_file", "local_file")),
    "nio_tap": ("tap", "nio create_tap", ("tap_device",)),
    "nio_generic_ethernet": ("generic_ethernet", "nio create_gen_eth", ("ethernet_device",)),
    "nio_linux_ethernet": ("linux_ethernet", "nio create_linux_eth", ("ethernet_device",)),
    "nio_null": ("null", "nio create_null", ()),
}
DIRECTIONS = {"in": 0, "out": 1, "both": 2}
IFF_UP = 0x1


@dataclass
class NIO:
    name: str
    type: str
    fields: dict[str, Any]
    filters: dict[int, str] = field(default_factory=dict)  # direction -> filter name
    options: dict[str, Any] = field(default_factory=dict)  # the optional "filters" object

    @property
    def lport(self) -> int | None:
        return self.fields.get("lport") if self.type == "nio_udp" else None

    def json(self) -> dict[str, Any]:
        data = {"type": self.type, **self.fields}
        if self.options:
            data["filters"] = dict(self.options)
        return data

    @property
    def capturing(self) -> bool:
        return self.filters.get(2) == "capture"


def _interface_flags(device: str) -> int | None:
    try:
        with open(f"/sys/class/net/{device}/flags") as handle:
            return int(handle.read().strip(), 16)
    except (OSError, ValueError):
        return None


async def validate(spec: dict[str, Any]) -> dict[str, Any]:
    """Check a NIO body before anything is created; returns the fields to store."""
    kind = spec.get("type")
    if kind not in KINDS:
        raise Conflict(f"NIO of type {kind} is not supported")
    fields = {name: spec[name] for name in KINDS[kind][2]}
    for name, value in fields.items():
        if isinstance(value, str):
            check_text(name, value)
    if kind == "nio_udp":
        await _check_udp(fields["rhost"], fields["rport"])
    elif kind in ("nio_generic_ethernet", "nio_linux_ethernet"):
        await _check_interface(fields["ethernet_device"], "Ethernet interface")
    return fields


async def _check_interface(device: str, label: str) -> None:
    flags = await asyncio.to_thread(_interface_flags, device)
    if flags is None:
        raise Conflict(f"{label} {device} does not exist")
    if not flags & IFF_UP:
        raise Conflict(f"{label} {device} is down")


async def _check_udp(rhost: str, rport: int) -> None:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(rhost, rport, type=socket.SOCK_DGRAM)
    except OSError as err:
        raise Conflict(f"Could not create an UDP connection to {rhost}:{rport}: {err}") from None
    if not infos:
        raise Conflict(f"getaddrinfo returns an empty list on {rhost}:{rport}")
    for family, socktype, proto, _name, address in infos:
        try:
            with socket.socket(family, socktype, proto) as sock:
                sock.connect(address)
        except OSError as err:
            raise Conflict(
                f"Could not create an UDP connection to {rhost}:{rport}: {err}"
            ) from None


async def create(hypervisor: Hypervisor, spec: dict[str, Any]) -> NIO:
    """Validate, then create the NIO in ``hypervisor`` under a fresh unique name."""
    fields = await validate(spec)
    prefix, command, order = KINDS[spec["type"]]
    nio = NIO(f"{prefix}-{uuid.uuid4()}", spec["type"], fields)
    await hypervisor.send(command, nio.name, *(fields[name] for name in order))
    options = spec.get("filters") or {}
    try:
        if nio.type == "nio_tap":  # dynamips creates a missing TAP device: check it now
            await _check_interface(fields["tap_device"], "TAP interface")
        if options:
            await set_options(hypervisor, nio, options)
    except BaseException:
        with contextlib.suppress(Exception):
            await delete(hypervisor, nio)
        raise
    return nio


async def set_options(hypervisor: Hypervisor, nio: NIO, options: dict[str, Any]) -> None:
    """Apply the optional ``filters`` object: ``{"frequency_drop": N}`` on received frames.

    N > 0 drops every N-th frame, -1 drops everything, 0 removes the filter.
    The receive-direction slot is dynamips' own (a capture uses the "both" slot), so the two
    coexist; re-binding a bound slot would leak its data in dynamips, so a bound filter is
    only set up again.
    """
    drop = int(options.get("frequency_drop", 0))
    direction = DIRECTIONS["in"]
    if drop:
        if nio.filters.get(direction) != "freq_drop":
            await hypervisor.send("nio bind_filter", nio.name, direction, "freq_drop")
            nio.filters[direction] = "freq_drop"
        await hypervisor.send("nio setup_filter", nio.name, direction, drop)
    elif nio.filters.get(direction) == "freq_drop":
        await hypervisor.send("nio unbind_filter", nio.name, direction)
        nio.filters.pop(direction, None)
    nio.options = {"frequency_drop": drop} if drop else {}


async def delete(hypervisor: Hypervisor, nio: NIO) -> None:
    """Unbind any filter, then delete the NIO in dynamips."""
    if nio.filters:
        for direction in sorted(set(nio.filters)):
            await hypervisor.send("nio unbind_filter", nio.name, direction)
        nio.filters.clear()
    await hypervisor.send("nio delete", nio.name)


async def start_capture(hypervisor: Hypervisor, nio: NIO, path: str, link_type: str) -> None:
    dlt = link_type.lower()
    dlt = dlt[4:] if dlt.startswith("dlt_") else dlt
    check_text("data_link_type", dlt)
    await hypervisor.send("nio bind_filter", nio.name, DIRECTIONS["both"], "capture")
    try:
        await hypervisor.send("nio setup_filter", nio.name, DIRECTIONS["both"], dlt, path)
    except BaseException:
        await hypervisor.send("nio unbind_filter", nio.name, DIRECTIONS["both"])
        raise
    nio.filters[DIRECTIONS["both"]] = "capture"


async def stop_capture(hypervisor: Hypervisor, nio: NIO) -> None:
    await hypervisor.send("nio unbind_filter", nio.name, DIRECTIONS["both"])
    nio.filters.pop(DIRECTIONS["both"], None)


async def stats(hypervisor: Hypervisor, nio: NIO) -> dict[str, int]:
    lines = await hypervisor.send("nio get_stats", nio.name)
    values = [int(v) for v in (lines[0].split() if lines else [])] + [0, 0, 0, 0]
    return dict(zip(("packets_in", "packets_out", "bytes_in", "bytes_out"), values, strict=False))
