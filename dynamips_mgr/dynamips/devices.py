"""Ethernet switch, Ethernet hub, ATM switch and Frame Relay switch on one Device base."""

from __future__ import annotations

import contextlib
import logging
import re
from typing import Any

from ..errors import BadRequest, Conflict
from .hypervisor.errors import DynamipsError, HypervisorUnavailable
from .nios import NIO
from .node import Node

log = logging.getLogger(__name__)
DEFAULT_ETHERTYPE = "0x8100"
DEFAULT_PORT = {"type": "access", "vlan": 1}  # what dynamips gives a port on add_nio
QINQ_ETHERTYPE_VERSION = (0, 2, 16)


class Device(Node):
    """A device is one dynamips object (``module``) whose ports are plain integers."""

    kind = "Device"
    port_missing = "is not allocated"
    device_type = ""
    module = ""
    link_type = "DLT_EN10MB"

    def port_link_type(self, port: int) -> str:
        """Default pcap link type of this device's ports."""
        return self.link_type

    async def create(self) -> None:
        self.hypervisor = await self.manager.acquire_hypervisor(self)
        await self.send(f"{self.module} create", self.name)

    async def rename(self, new_name: str) -> None:
        await self.send(f"{self.module} rename", self.name, new_name)
        self.name = new_name

    def json(self) -> dict[str, Any]:
        return {"device_id": self.id, "project_id": self.project.id, "name": self.name}

    def check_nio_extras(self, port_settings: Any, mappings: Any) -> None:
        """Refuse settings this device type does not have, before anything is created."""
        if port_settings:
            raise BadRequest(
                f"port_settings are only for Ethernet switches, not {self.device_type}"
            )
        if mappings:
            raise BadRequest(
                f"mappings are only for ATM and Frame Relay switches, not {self.device_type}"
            )

    async def add_nio(
        self, port: int, spec: dict[str, Any], port_settings: Any = None, mappings: Any = None
    ) -> NIO:
        self.check_nio_extras(port_settings, mappings)
        return await self.attach_nio(port, spec, self._bind)

    async def _bind(self, nio: NIO) -> None:
        await self.send(f"{self.module} add_nio", self.name, nio.name)

    async def _unbind(self, nio: NIO) -> None:
        await self.send(f"{self.module} remove_nio", self.name, nio.name)

    async def remove_nio(self, port: int) -> None:
        self.nio_at(port)
        await self.detach_nio(port, self._unbind)

    async def close(self) -> None:
        """Delete the dynamips object, free the ports and the hypervisor."""
        if self.closed:
            return
        try:
            if self.hypervisor is not None and self.hypervisor.alive:
                try:
                    if len(self.hypervisor.nodes) > 1:  # shared process: clean up our NIOs
                        for port in list(self.nios):
                            await self.remove_nio(port)
                    await self.send(f"{self.module} delete", self.name)
                except (DynamipsError, HypervisorUnavailable) as err:
                    log.warning("deleting %s %s: %s", self.device_type, self.name, err)
        finally:
            self.closed = True
            await self.release()

    def hypervisor_died(self, returncode: int) -> None:
        """Devices have no running state to report."""


class EthernetHub(Device):
    device_type = "ethernet_hub"
    module = "nio_bridge"


class EthernetSwitch(Device):
    device_type = "ethernet_switch"
    module = "ethsw"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.port_settings: dict[int, dict[str, Any]] = {}

    def json(self) -> dict[str, Any]:
        ports = [{"port": port, **settings} for port, settings in self.port_settings.items()]
        return {**super().json(), "ports": ports}

    def check_nio_extras(self, port_settings: Any, mappings: Any) -> None:
        if mappings:
            raise BadRequest("mappings are only for ATM and Frame Relay switches")
        if port_settings:
            self._command_for(port_settings)

    def _command_for(self, settings: dict[str, Any]) -> tuple[str, tuple, dict[str, Any]]:
        """The command, its arguments after the NIO, and the settings as stored."""
        kind, vlan = settings["type"], settings["vlan"]
        if kind == "access":
            return "ethsw set_access_port", (vlan,), {"type": kind, "vlan": vlan, "ethertype": ""}
        if kind == "dot1q":
            return "ethsw set_dot1q_port", (vlan,), {"type": kind, "vlan": vlan, "ethertype": ""}
        ethertype = settings.get("ethertype") or DEFAULT_ETHERTYPE
        stored = {"type": kind, "vlan": vlan, "ethertype": ethertype}
        if ethertype.lower() == DEFAULT_ETHERTYPE:
            return "ethsw set_qinq_port", (vlan,), stored
        version = self.hypervisor.version_tuple if self.hypervisor else ()
        if version < QINQ_ETHERTYPE_VERSION:
            raise Conflict(
                "Dynamips version required is >= 0.2.16 to change the default QinQ Ethernet "
                f"type, detected version is {self.hypervisor.version if self.hypervisor else '?'}"
            )
        return "ethsw set_qinq_port", (vlan, ethertype), stored

    async def _apply_port(self, port: int, nio: NIO, settings: dict[str, Any]) -> None:
        command, args, stored = self._command_for(settings)
        await self.send(command, self.name, nio.name, *args)
        self.port_settings[port] = stored

    async def add_nio(
        self, port: int, spec: dict[str, Any], port_settings: Any = None, mappings: Any = None
    ) -> NIO:
        self.check_nio_extras(port_settings, mappings)

        async def bind(nio: NIO) -> None:
            await self._bind(nio)
            if port_settings:
                try:
                    await self._apply_port(port, nio, port_settings)
                except BaseException:
                    with contextlib.suppress(Exception):
                        await self._unbind(nio)
                    raise

        return await self.attach_nio(port, spec, bind)

    async def remove_nio(self, port: int) -> None:
        await super().remove_nio(port)
        self.port_settings.pop(port, None)

    def check_ports(self, ports: list[dict[str, Any]]) -> None:
        """Refuse a ``ports`` list (C04) before anything is sent if any item cannot apply."""
        for item in ports:
            if item["port"] not in self.nios:
                raise Conflict(
                    f"Port {item['port']} is not allocated: connect it before changing its settings"
                )
            self._command_for(item)

    async def update_ports(self, ports: list[dict[str, Any]]) -> None:
        """All or nothing: every port is checked before the first command is sent, and the
        ports already changed get their previous settings back if dynamips refuses one."""
        self.check_ports(ports)
        previous = dict(self.port_settings)
        done: list[int] = []
        try:
            for item in ports:
                await self._apply_port(item["port"], self.nios[item["port"]], item)
                done.append(item["port"])
        except BaseException:
            for port in reversed(done):
                old = previous.get(port, DEFAULT_PORT)
                with contextlib.suppress(Exception):
                    await self._apply_port(port, self.nios[port], old)
                if port not in previous:
                    self.port_settings.pop(port, None)
            raise


_VC = re.compile(r"^(\d+):(\d+):(\d+)$")
_VP = re.compile(r"^(\d+):(\d+)$")


class _VirtualCircuitSwitch(Device):
    """ATM and Frame Relay switches: circuits between ports, both directions."""

    create_commands: dict[int, str] = {}  # tuple length -> create command
    delete_commands: dict[int, str] = {}
    invalid_text = ""
    patterns: tuple[re.Pattern, ...] = ()
    form = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mappings: dict[tuple[int, ...], tuple[int, ...]] = {}

    def json(self) -> dict[str, Any]:
        return {
            **super().json(),
            "mappings": {str(src): str(dst) for src, dst in self.mappings.items()},
        }

    def check_nio_extras(self, port_settings: Any, mappings: Any) -> None:
        if port_settings:
            raise BadRequest(
                f"port_settings are only for Ethernet switches, not {self.device_type}"
            )
        if mappings:
            self.parse(mappings)

    async def _bind(self, nio: NIO) -> None:
        """ATM and Frame Relay ports need no command until a circuit uses them."""

    async def add_nio(
        self, port: int, spec: dict[str, Any], port_settings: Any = None, mappings: Any = None
    ) -> NIO:
        """Attach the NIO, then create every circuit of ``mappings`` whose two ends have a
        NIO and that does not exist yet; a refused circuit undoes this request's circuits
        and the NIO itself."""
        self.check_nio_extras(port_settings, mappings)
        circuits = self.parse(mappings or {})

        async def bind(nio: NIO) -> None:
            nios = {**self.nios, port: nio}
            created: list[tuple[int, ...]] = []
            try:
                for source, destination in circuits:
                    if (
                        source[0] in nios
                        and destination[0] in nios
                        and source not in self.mappings
                        and destination not in self.mappings
                    ):
                        await self._connect(source, destination, nios)
                        created.append(source)
            except BaseException:
                for source in reversed(created):
                    with contextlib.suppress(Exception):
                        await self._disconnect(source, nios)
                raise

        return await self.attach_nio(port, spec, bind)

    def _args(
        self, source: tuple[int, ...], destination: tuple[int, ...], nios: dict[int, NIO]
    ) -> tuple:
        return (
            self.name,
            nios[source[0]].name,
            *source[1:],
            nios[destination[0]].name,
            *destination[1:],
        )

    async def _connect(
        self, source: tuple[int, ...], destination: tuple[int, ...], nios: dict[int, NIO]
    ) -> None:
        command = self.create_commands[len(source)]
        await self.send(command, *self._args(source, destination, nios))
        try:
            await self.send(command, *self._args(destination, source, nios))
        except BaseException:
            with contextlib.suppress(Exception):
                await self.send(
                    self.delete_commands[len(source)], *self._args(source, destination, nios)
                )
            raise
        self.mappings[source] = destination
        self.mappings[destination] = source

    async def _disconnect(self, source: tuple[int, ...], nios: dict[int, NIO]) -> None:
        """Delete a circuit in both directions, then forget it."""
        destination = self.mappings[source]
        command = self.delete_commands[len(source)]
        await self.send(command, *self._args(source, destination, nios))
        await self.send(command, *self._args(destination, source, nios))
        del self.mappings[source], self.mappings[destination]

    async def _unbind(self, nio: NIO) -> None:
        """Every circuit touching this port goes before the NIO does."""
        port = next(p for p, n in self.nios.items() if n is nio)
        for source in [s for s in self.mappings if s[0] == port]:
            if source in self.mappings:  # a circuit from the port to itself goes once
                await self._disconnect(source, self.nios)

    def parse(self, mappings: Any) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
        """Client mappings as (source, destination) tuples; 400 naming a bad entry."""
        if not isinstance(mappings, dict):
            raise BadRequest(self.invalid_text)
        result = []
        for key, value in mappings.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise BadRequest(f"{self.invalid_text}: {key!r}: {value!r} must be strings")
            for pattern in self.patterns:
                source, destination = pattern.match(key), pattern.match(value)
                if source and destination:
                    result.append(
                        (tuple(map(int, source.groups())), tuple(map(int, destination.groups())))
                    )
                    break
            else:
                raise BadRequest(
                    f"{self.invalid_text}: '{key}': '{value}' is not of the form {self.form}"
                )
        return result


class ATMSwitch(_VirtualCircuitSwitch):
    device_type = "atm_switch"
    module = "atmsw"
    link_type = "DLT_ATM_RFC1483"
    create_commands = {3: "atmsw create_vcc", 2: "atmsw create_vpc"}
    delete_commands = {3: "atmsw delete_vcc", 2: "atmsw delete_vpc"}
    invalid_text = "Invalid ATM mappings"
    patterns = (_VC, _VP)
    form = "port:vpi:vci or port:vpi"


class FrameRelaySwitch(_VirtualCircuitSwitch):
    device_type = "frame_relay_switch"
    module = "frsw"
    link_type = "DLT_FRELAY"
    create_commands = {2: "frsw create_vc"}
    delete_commands = {2: "frsw delete_vc"}
    invalid_text = "Invalid Frame-Relay mappings"
    patterns = (_VP,)
    form = "port:dlci"


DEVICE_TYPES: dict[str, type[Device]] = {
    cls.device_type: cls for cls in (EthernetSwitch, EthernetHub, ATMSwitch, FrameRelaySwitch)
}
