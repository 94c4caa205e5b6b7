"""What routers and devices share: their hypervisor, NIOs, captures and release."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BadRequest, Conflict
from ..projects import Project
from . import nios as nio_ops
from .hypervisor.errors import HypervisorUnavailable
from .hypervisor.process import Hypervisor
from .hypervisor.protocol import check_text
from .nios import NIO

if TYPE_CHECKING:
    from .manager import DynamipsManager

log = logging.getLogger(__name__)


class Node:
    """A router or a device living in one hypervisor process of one project."""

    kind = "node"
    port_missing = "is not connected"  # end of the 409 text for a port without a NIO

    def __init__(self, manager: DynamipsManager, project: Project, node_id: str, name: str):
        check_text("name", name)
        self.manager = manager
        self.project = project
        self.id = node_id
        self.name = name
        self.hypervisor: Hypervisor | None = None
        self.nios: dict[Hashable, NIO] = {}
        self.closed = False

    async def send(self, command: str, *args: object) -> list[str]:
        if self.closed or self.hypervisor is None:
            raise Conflict(f"{self.kind} {self.name} is closed")
        return await self.hypervisor.send(command, *args)

    def emit(self, action: str, event: dict[str, Any]) -> None:
        self.project.emit(action, event)

    # -- NIOs --------------------------------------------------------------------------
    async def attach_nio(
        self, key: Hashable, spec: dict[str, Any], bind: Callable[[NIO], Awaitable[None]]
    ) -> NIO:
        """Create a NIO and ``bind`` it; on any failure delete it and free its UDP port."""
        if key in self.nios:
            raise Conflict(f"Port {_label(key)} isn't free")
        self._check_udp_unused(spec)
        assert self.hypervisor is not None
        try:
            nio = await nio_ops.create(self.hypervisor, spec)
        except BaseException:
            self._release_udp(spec.get("lport") if spec.get("type") == "nio_udp" else None)
            raise
        try:
            await bind(nio)
        except BaseException:
            with contextlib.suppress(Exception):
                await nio_ops.delete(self.hypervisor, nio)
            self._release_udp(nio.lport)
            raise
        self.nios[key] = nio
        return nio

    async def detach_nio(self, key: Hashable, unbind: Callable[[NIO], Awaitable[None]]) -> None:
        """Unbind, free the UDP port and delete the NIO in dynamips.

        When the hypervisor process has died the NIO died with it: it is only forgotten."""
        nio = self.nio_at(key)
        if self._hypervisor_alive():
            try:
                await unbind(nio)
            except HypervisorUnavailable:
                if self._hypervisor_alive():
                    raise
        del self.nios[key]
        self._release_udp(nio.lport)
        if self._hypervisor_alive():
            assert self.hypervisor is not None
            await nio_ops.delete(self.hypervisor, nio)

    def _hypervisor_alive(self) -> bool:
        return self.hypervisor is not None and self.hypervisor.alive

    def nio_at(self, key: Hashable) -> NIO:
        try:
            return self.nios[key]
        except KeyError:
            raise Conflict(f"Port {_label(key)} {self.port_missing}") from None

    def _check_udp_unused(self, spec: dict[str, Any]) -> None:
        """A UDP lport already carried by a NIO here is refused before dynamips sees it (and
        so never released by this request's failure while the other link still uses it)."""
        if spec.get("type") != "nio_udp":
            return
        nodes = (*self.manager.routers.values(), *self.manager.devices.values())
        for node in nodes:
            for key, nio in node.nios.items():
                if nio.lport == spec.get("lport"):
                    raise Conflict(
                        f"UDP port {nio.lport} is already used by port {_label(key)} of {node.name}"
                    )

    def _release_udp(self, port: int | None) -> None:
        if port is not None:
            self.manager.ports.release("udp", port)

    async def update_nio_filters(self, key: Hashable, options: dict[str, Any]) -> NIO:
        nio = self.nio_at(key)
        assert self.hypervisor is not None
        await nio_ops.set_options(self.hypervisor, nio, options)
        return nio

    async def nio_stats(self, key: Hashable) -> dict[str, int]:
        assert self.hypervisor is not None
        return await nio_ops.stats(self.hypervisor, self.nio_at(key))

    # -- captures ----------------------------------------------------------------------
    def capture_path(self, file_name: str) -> Path:
        """The pcap path inside the project's captures folder; never anywhere else."""
        check_text("capture_file_name", file_name)
        if "/" in file_name or "\\" in file_name or file_name.startswith(".") or not file_name:
            raise BadRequest(
                f"Invalid capture_file_name {file_name!r}: use a plain file name (no folders)"
            )
        return self.project.captures_dir / file_name

    async def start_capture(self, key: Hashable, file_name: str, link_type: str) -> str:
        nio = self.nio_at(key)
        if nio.capturing:
            raise Conflict(f"Port {_label(key)} has already a filter applied")
        path = self.capture_path(file_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        assert self.hypervisor is not None
        await nio_ops.start_capture(self.hypervisor, nio, str(path), link_type)
        return str(path)

    async def stop_capture(self, key: Hashable) -> None:
        nio = self.nio_at(key)
        assert self.hypervisor is not None
        await nio_ops.stop_capture(self.hypervisor, nio)

    async def delete_nios(self) -> None:
        """Delete every NIO in dynamips once nothing binds it (e.g. after ``vm delete``)."""
        assert self.hypervisor is not None
        for nio in self.nios.values():
            await nio_ops.delete(self.hypervisor, nio)

    # -- release -----------------------------------------------------------------------
    async def release(self) -> None:
        """Free the UDP ports of every NIO and give the hypervisor back (stops it if last)."""
        for nio in self.nios.values():
            self._release_udp(nio.lport)
        self.nios.clear()
        await self.manager.release_hypervisor(self)


def _label(key: Hashable) -> str:
    return "/".join(str(k) for k in key) if isinstance(key, tuple) else str(key)
