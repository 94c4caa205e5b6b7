"""One Router class for the seven platforms; their differences come from ``platforms``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from ..errors import BadRequest, Conflict
from ..projects import Project
from . import configs
from .hypervisor.errors import DynamipsError, HypervisorUnavailable
from .hypervisor.protocol import check_text
from .images import Images
from .nios import NIO
from .node import Node
from .platforms import (
    ADAPTERS,
    C7200_IO_CARDS,
    PLATFORM_KEYS,
    PLATFORMS,
    WIC_PORT_BASE,
    WICS,
    Card,
)

if TYPE_CHECKING:
    from .manager import DynamipsManager

log = logging.getLogger(__name__)

INACTIVE, SHUTTING_DOWN, RUNNING, SUSPENDED = 0, 1, 2, 3
# Settings sent as "<command> <name> <value>" (booleans as 0/1).
VM_SETTERS = {
    "ram": "vm set_ram",
    "nvram": "vm set_nvram",
    "mmap": "vm set_ram_mmap",
    "sparsemem": "vm set_sparse_mem",
    "clock_divisor": "vm set_clock_divisor",
    "exec_area": "vm set_exec_area",
    "disk0": "vm set_disk0",
    "disk1": "vm set_disk1",
}
PLATFORM_SETTERS = {
    "mac_addr": "set_mac_addr",
    "system_id": "set_system_id",
    "iomem": "set_iomem",
    "npe": "set_npe",
    "midplane": "set_midplane",
}
# The fixed order settings are applied in (the original used the body's key order).
ORDER = (
    "name",
    "chassis",
    "npe",
    "midplane",
    "image",
    "ram",
    "nvram",
    "mmap",
    "sparsemem",
    "clock_divisor",
    "exec_area",
    "disk0",
    "disk1",
    "iomem",
    "mac_addr",
    "system_id",
    "console",
    "aux",
    "idlepc",
    "idlemax",
    "idlesleep",
    "sensors",
    "power_supplies",
    *(f"slot{i}" for i in range(7)),
    *(f"wic{i}" for i in range(3)),
    "auto_delete_disks",
)
RUNNING_OK = {"idlepc", "idlemax", "idlesleep", "sensors", "power_supplies", "auto_delete_disks"}
# Dynamips' own defaults for what GNS3 models differently (sent when they differ).
DYNAMIPS_IDLE_MAX, DYNAMIPS_IDLE_SLEEP_MS = 500, 30
DISK_FILES = (
    "disk0",
    "disk1",
    "slot0",
    "slot1",
    "nvram",
    "flash0",
    "flash1",
    "rom",
    "bootflash",
    "ssa",
)
IDLEPC_LINE = re.compile(r"^(0x[0-9a-fA-F]{1,8}) \[(\d+)\]$")
# dynamips 0.2.14 may leave the console port closed when a VM is started again less than
# ~50 ms after it stopped (synthetic-image.md L3): a start keeps this gap after a stop.
RESTART_GAP = 0.1


class Router(Node):
    kind = "Router"

    def __init__(
        self,
        manager: DynamipsManager,
        project: Project,
        vm_id: str,
        name: str,
        platform: str,
        dynamips_id: int,
        chassis: str | None,
    ) -> None:
        super().__init__(manager, project, vm_id, name)
        self.platform = platform
        self.spec = PLATFORMS[platform]
        self.dynamips_id = dynamips_id
        self.chassis = chassis or self.spec.default_chassis
        self.settings: dict[str, Any] = {
            k: (list(v) if isinstance(v, list) else v) for k, v in self.spec.defaults.items()
        }
        self.image = ""
        self.startup_config = ""
        self.private_config = ""
        self.console: int | None = None
        self.aux: int | None = None
        self.mac_addr = ""
        self.status = "stopped"  # notification status: started / stopped
        self.ever_started = False
        self.start_sent = False  # "vm start" was sent once: the VM may be running
        self.stopped_at = 0.0  # monotonic time of the last ``vm stop``
        self.ghost_file = ""
        self.io_card = "C7200-IO-FE"
        self.slots: list[Card | None] = []
        self.wics: list[Card | None] = []
        self.build_slots()

    # -- model -------------------------------------------------------------------------
    def build_slots(self) -> None:
        self.slots, self.wics = self._layout(self.chassis)

    def _layout(self, chassis: str | None) -> tuple[list[Card | None], list[Card | None]]:
        """Slots and WIC sub-slots of a fresh VM of ``chassis`` (built-in cards only)."""
        spec = self.spec.chassis[chassis or ""]
        slots: list[Card | None] = [None] * spec.slots
        if spec.slot0:
            slots[0] = ADAPTERS[spec.slot0]
        if spec.slot1:
            slots[1] = ADAPTERS[spec.slot1]
        return slots, [None] * (slots[0].wic_slots if slots[0] else 0)

    def port_card(self, slot: int, port: int) -> Card:
        """The card that owns ``slot``/``port`` (a WIC for slot-0 ports 16 and up)."""
        if not 0 <= slot < len(self.slots):
            raise Conflict(f'Slot {slot} does not exist on router "{self.name}"')
        card = self.slots[slot]
        if card is None:
            raise Conflict(f"Adapter is missing in slot {slot}")
        if slot == 0 and port >= WIC_PORT_BASE:
            index = port // WIC_PORT_BASE - 1
            wic = self.wics[index] if index < len(self.wics) else None
            if wic is not None and port % WIC_PORT_BASE < wic.ports:
                return wic
        elif 0 <= port < card.ports:
            return card
        raise Conflict(f"Port {port} does not exist in adapter {card.name}")

    @property
    def module_dir(self) -> Path:
        return self.project.module_dir

    def json(self) -> dict[str, Any]:
        images: Images = self.manager.images
        data: dict[str, Any] = {
            "vm_id": self.id,
            "project_id": self.project.id,
            "name": self.name,
            "dynamips_id": self.dynamips_id,
            "vm_directory": str(self.module_dir),
            "platform": self.platform,
            "image": images.relative(self.image),
            "image_md5sum": images.md5_cached(self.image) if self.image else None,
            "startup_config": self.startup_config,
            "private_config": self.private_config,
            "console": self.console,
            "aux": self.aux,
            "mac_addr": self.mac_addr,
        }
        for key, value in self.settings.items():
            data[key] = list(value) if isinstance(value, list) else value
        if "chassis" in PLATFORM_KEYS[self.platform]:
            data["chassis"] = self.chassis
        for index, card in enumerate(self.slots):
            data[f"slot{index}"] = card.name if card else None
        for index, wic in enumerate(self.wics):
            data[f"wic{index}"] = wic.name if wic else None
        return data

    # -- state -------------------------------------------------------------------------
    async def get_status(self) -> int:
        lines = await self.send("vm get_status", self.name)
        if not lines or not lines[0].strip().isdigit():
            raise Conflict(f"Can't get vm {self.name} status")
        return int(lines[0])

    async def is_running(self) -> bool:
        if self.hypervisor is None or not self.hypervisor.alive:
            return False
        return await self.get_status() == RUNNING

    async def may_be_running(self) -> bool:
        """:meth:`is_running`, without asking dynamips about a VM never started."""
        return self.start_sent and await self.is_running()

    def set_status(self, status: str) -> None:
        if status != self.status:
            self.status = status
            self.emit(f"vm.{status}", self.json())

    # -- creation ----------------------------------------------------------------------
    async def create(self, body: dict[str, Any]) -> None:
        """Spawn the hypervisor, create the VM, then apply the rest of the body."""
        if body.get("slot0") in C7200_IO_CARDS and self.platform == "c7200":
            self.io_card = body["slot0"]
        if self.hypervisor is None:
            self.hypervisor = await self.manager.acquire_hypervisor(self)
        await self._create_vm()
        await self.apply(body, creating=True)

    async def _create_vm(self) -> None:
        """The original's creation commands (router.md §6), then sparse memory (C5)."""
        await self.send("vm create", self.name, self.dynamips_id, self.platform)
        await self.send("vm set_con_tcp_port", self.name, self.manager.console_target(self))
        if self.aux is not None:
            await self.send(
                "vm set_aux_tcp_port", self.name, self.manager.console_target(self, aux=True)
            )
        if not self.mac_addr:  # a rebuilt VM gets its known MAC back with set_mac_addr
            lines = await self.send(f"{self.platform} get_mac_addr", self.name)
            self.mac_addr = lines[0] if lines else ""
        if self.chassis != self.spec.default_chassis:
            await self.send(f"{self.platform} set_chassis", self.name, self.chassis)
        if self.platform == "c7200":
            await self.send("vm slot_add_binding", self.name, 0, 0, self.io_card)
            self.slots[0] = ADAPTERS[self.io_card]
        # dynamips defaults sparse memory to off whatever the platform's model says (C5)
        if self.settings["sparsemem"]:
            await self.send("vm set_sparse_mem", self.name, 1)

    async def rebuild(self) -> None:
        """Recreate the VM and its NIOs in a new hypervisor after the old one died."""
        self.hypervisor = await self.manager.acquire_hypervisor(self)
        self.ghost_file = ""  # the new VM knows no ghost file yet
        slots, wics, nios = list(self.slots), list(self.wics), dict(self.nios)
        if self.platform == "c7200" and slots[0] is not None:
            self.io_card = slots[0].name
        self.build_slots()
        await self._create_vm()
        if self.mac_addr:
            await self.send(f"{self.platform} set_mac_addr", self.name, self.mac_addr)
        defaults = self.spec.defaults
        for key in ORDER:
            if key in self.settings and key in VM_SETTERS | PLATFORM_SETTERS:
                if self.settings[key] != defaults.get(key) and key != "sparsemem":
                    await self._send_setting(key, self.settings[key])
        if self.image:
            await self.send("vm set_ios", self.name, self.image)
        if self.settings["idlepc"]:
            await self.send("vm set_idle_pc", self.name, self.settings["idlepc"])
        for index, card in enumerate(slots):
            if card and not card.builtin and self.slots[index] != card:
                await self.send("vm slot_add_binding", self.name, index, 0, card.name)
                self.slots[index] = card
        self.wics = [None] * (self.slots[0].wic_slots if self.slots[0] else 0)
        for index, wic in enumerate(wics):
            if wic is not None:
                await self.send("vm slot_add_binding", self.name, 0, self._wic_id(index), wic.name)
                self.wics[index] = wic
        if self.startup_config or self.private_config:
            await self.send("vm set_config", self.name, self.startup_config, self.private_config)
        self.nios.clear()
        for key, old in nios.items():
            await self.add_nio(
                key[0],
                key[1],
                {
                    "type": old.type,
                    **old.fields,
                    **({"filters": old.options} if old.options else {}),
                },
            )

    # -- settings ----------------------------------------------------------------------
    async def apply(self, body: dict[str, Any], *, creating: bool = False) -> None:
        """Apply a create remainder or an update body: checks first, then commands."""
        if not creating and (self.hypervisor is None or not self.hypervisor.alive):
            await self.rebuild()  # its dynamips died: recreate it, then change it
        slots, wics = self.slots, self.wics
        chassis = body.get("chassis")
        if "chassis" in PLATFORM_KEYS[self.platform] and chassis not in (None, self.chassis):
            self._check_chassis(chassis)
            slots, wics = self._layout(chassis)  # slotN/wicN of the body apply to the new one
        changes = {
            key: body[key]
            for key in ORDER
            if key in body and self._differs(key, body[key], slots, wics)
        }
        for key in [k for k in changes if k.startswith(("slot", "wic"))]:
            if not self._check_card_key(key, changes[key], slots, wics):
                del changes[key]
        if "name" in changes:
            check_text("name", changes["name"])
        if "system_id" in changes:
            check_text("system_id", changes["system_id"])
        if "image" in changes:
            resolved = self.manager.images.resolve(changes["image"])
            if resolved == self.image:
                del changes["image"]
            else:
                check_text("image", resolved, allow_empty=True)
                changes["image"] = resolved
        needs_stop = [k for k in changes if k not in RUNNING_OK and not self._hot_plug(k, changes)]
        running = False  # "has CPUs": running, suspended or shutting down
        if changes and not creating and self.hypervisor is not None and self.hypervisor.alive:
            running = await self.get_status() != INACTIVE
        if running and needs_stop:
            raise Conflict(
                f'Router "{self.name}" is running: stop it before changing {", ".join(needs_stop)}'
            )
        for key, value in changes.items():
            await self._apply_one(key, value, running)
        await self._forced_settings(creating)
        await self._apply_configs(body, creating)

    def _differs(
        self, key: str, value: Any, slots: list[Card | None], wics: list[Card | None]
    ) -> bool:
        if key == "name":
            return value != self.name
        if key == "chassis":
            return "chassis" in PLATFORM_KEYS[self.platform] and value != self.chassis
        if key in ("console", "aux", "mac_addr"):
            return value != getattr(self, key)
        if key == "image":
            return True  # compared after resolution
        if key.startswith("slot"):
            index = int(key[4:])
            current = slots[index] if index < len(slots) else None
            return (current.name if current else None) != value
        if key.startswith("wic"):
            index = int(key[3:])
            current = wics[index] if index < len(wics) else None
            return (current.name if current else None) != value
        if key == "idlepc":  # "" means 0x0
            return (value or "0x0") != (self.settings["idlepc"] or "0x0")
        if key not in self.settings:
            return False  # a key this platform does not have: ignored
        return self.settings[key] != value

    def _check_card_key(
        self, key: str, value: str | None, slots: list[Card | None], wics: list[Card | None]
    ) -> bool:
        """Refuse (409) a slotN/wicN change that cannot be made; False = ignore the key."""
        if key.startswith("slot"):
            index = int(key[4:])
            if index >= len(slots):
                raise Conflict(f"Slot {index} doesn't exist on this router")
            if value is not None and (value not in ADAPTERS or ADAPTERS[value].builtin):
                # unknown and built-in names are accepted and ignored, as by the original (C21)
                log.warning("%s: ignoring adapter %r for %s", self.name, value, key)
                return False
            current = slots[index]
            if current is not None and current.builtin:
                raise Conflict(
                    f"Slot {index} holds the built-in {current.name}, which cannot be changed"
                )
            if self.platform == "c7200" and index == 0:
                if value not in C7200_IO_CARDS:
                    raise Conflict(
                        f"Slot 0 of a c7200 takes an I/O card: {', '.join(C7200_IO_CARDS)}"
                    )
            elif value is not None and value not in self.spec.adapters:
                raise Conflict(
                    f"Adapter {value} is not supported in slot {index} of a {self.platform} "
                    f"router (supported: {', '.join(sorted(self.spec.adapters))})"
                )
            return True
        index = int(key[3:])
        if index >= len(wics):
            if value is None and not wics:
                return False  # no WIC sub-slots at all (c7200, c3600): ignored
            raise Conflict(f"WIC slot {index} doesn't exist on this router")
        if value is not None and value not in WICS:
            log.warning("%s: ignoring WIC %r for %s", self.name, value, key)
            return False
        if value is not None and value not in self.spec.wics:
            raise Conflict(
                f"WIC {value} is not supported on a {self.platform} router "
                f"(supported: {', '.join(sorted(self.spec.wics))})"
            )
        return True

    def _hot_plug(self, key: str, changes: dict[str, Any]) -> bool:
        """OIR: adapters dynamips and the chassis can add/remove while running (C4)."""
        if not key.startswith("slot") or "chassis" in changes:
            return False
        index = int(key[4:])
        names = {changes[key], self.slots[index].name if self.slots[index] else None} - {None}
        allowed = self.spec.chassis[self.chassis or ""].hot_plug
        return index > 0 and all(n in allowed for n in names)

    async def _apply_one(self, key: str, value: Any, running: bool) -> None:
        if key == "name":
            await self.rename(value)
        elif key == "chassis":
            await self._set_chassis(value)
        elif key == "image":
            await self.send("vm set_ios", self.name, value)
            self.image = value
        elif key in ("console", "aux"):
            await self.manager.change_console(self, value, aux=(key == "aux"))
        elif key == "idlepc":
            await self.set_idlepc(value or "0x0", running)
        elif key in ("idlemax", "idlesleep", "sensors", "power_supplies"):
            if running:
                await self._send_running_setting(key, value)
            self.settings[key] = value
        elif key.startswith("slot"):
            await self._set_slot(int(key[4:]), value, running)
        elif key.startswith("wic"):
            await self._set_wic(int(key[3:]), value)
        elif key == "auto_delete_disks":
            self.settings[key] = value
        else:
            await self._send_setting(key, value)
            self.settings[key] = value

    async def _send_setting(self, key: str, value: Any) -> None:
        if key in VM_SETTERS:
            await self.send(VM_SETTERS[key], self.name, int(value))
        else:
            await self.send(f"{self.platform} {PLATFORM_SETTERS[key]}", self.name, value)
            if key == "mac_addr":
                self.mac_addr = value

    async def _send_running_setting(self, key: str, value: Any) -> None:
        if key == "idlemax":
            await self.send("vm set_idle_max", self.name, 0, value)
        elif key == "idlesleep":  # the field is in ms, dynamips takes microseconds
            await self.send("vm set_idle_sleep_time", self.name, 0, int(value) * 1000)
        elif key == "sensors":
            for index, celsius in enumerate(value):
                await self.send("c7200 set_temp_sensor", self.name, index, int(celsius))
        elif key == "power_supplies":
            for index, state in enumerate(value):
                await self.send("c7200 set_power_supply", self.name, index, int(state))

    async def set_idlepc(self, value: str, running: bool | None = None) -> None:
        if running is None:
            running = await self.is_running()
        # ``set_idle_pc_online`` only changes the running CPU, which the next start
        # recreates from the VM's value: so the VM's value is always set as well.
        await self.send("vm set_idle_pc", self.name, value)
        if running:
            await self.send("vm set_idle_pc_online", self.name, 0, value)
        self.settings["idlepc"] = value

    async def _forced_settings(self, creating: bool) -> None:
        """``mmap_support``/``sparse_memory_support`` off force the setting off."""
        for key, option in (("mmap", "mmap_support"), ("sparsemem", "sparse_memory_support")):
            if not self.manager.config.dynamips(option) and (creating or self.settings[key]):
                await self.send(VM_SETTERS[key], self.name, 0)
                self.settings[key] = False

    async def rename(self, new_name: str) -> None:
        check_text("name", new_name)
        old = self.name
        await self.send("vm rename", old, new_name)
        self.name = new_name
        for relative in (self.startup_config, self.private_config):
            if relative:
                await asyncio.to_thread(self._rename_in_config, relative, old, new_name)

    def _rename_in_config(self, relative: str, old: str, new: str) -> None:
        path = self.module_dir / relative
        try:
            path = configs.confined(self.module_dir, relative)
            text = configs.read_text(path)
            if text is not None:
                updated = configs.rename_hostname(text, old, new)
                if updated != text:
                    configs.write_text(path, updated)
        except (OSError, ValueError) as err:
            raise Conflict(f"Could not amend the configuration {path}: {err}") from None

    def _check_chassis(self, chassis: str) -> None:
        """The original rebuilt the slot model and forgot what dynamips still had (C13)."""
        if chassis not in self.spec.chassis:
            raise Conflict(f"Unknown chassis {chassis} for platform {self.platform}")
        if self.nios or any(c and not c.builtin for c in self.slots) or any(self.wics):
            raise Conflict("Remove the links, adapters and WICs before changing the chassis")

    async def _set_chassis(self, chassis: str) -> None:
        self._check_chassis(chassis)
        await self.send(f"{self.platform} set_chassis", self.name, chassis)
        self.chassis = chassis
        self.build_slots()

    # -- slots and WICs ----------------------------------------------------------------
    async def _drop_nios(self, keys: list[tuple[int, int]]) -> None:
        for key in keys:
            await self.remove_nio(*key)

    async def _set_slot(self, slot: int, name: str | None, running: bool) -> None:
        current = self.slots[slot]
        if current is not None:
            await self._drop_nios([k for k in self.nios if k[0] == slot])
            if running:
                await self.send("vm slot_oir_stop", self.name, slot, 0)
            await self.send("vm slot_remove_binding", self.name, slot, 0)
            self.slots[slot] = None
            if slot == 0:
                self.wics = []
        if name is not None:
            await self.send("vm slot_add_binding", self.name, slot, 0, name)
            self.slots[slot] = ADAPTERS[name]
            if running:
                await self.send("vm slot_oir_start", self.name, slot, 0)
            if slot == 0:
                self.wics = [None] * ADAPTERS[name].wic_slots

    @staticmethod
    def _wic_id(index: int) -> int:
        return WIC_PORT_BASE * (index + 1)

    async def _set_wic(self, index: int, name: str | None) -> None:
        base = self._wic_id(index)
        if self.wics[index] is not None:
            await self._drop_nios([k for k in self.nios if k[0] == 0 and base <= k[1] < base + 16])
            await self.send("vm slot_remove_binding", self.name, 0, base)
            self.wics[index] = None
            # dynamips drops every slot-0 NIO binding with a slot-0 card: bind them again
            for (slot, port), nio in self.nios.items():
                if slot == 0:
                    await self.send("vm slot_add_nio_binding", self.name, 0, port, nio.name)
        if name is not None:
            await self.send("vm slot_add_binding", self.name, 0, base, name)
            self.wics[index] = WICS[name]

    # -- configs -----------------------------------------------------------------------
    async def _apply_configs(self, body: dict[str, Any], creating: bool) -> None:
        startup, private = self.startup_config, self.private_config
        default_startup, default_private = configs.default_paths(self.dynamips_id)
        if creating and body.get("startup_config"):
            startup = self._config_path("startup_config", body["startup_config"])
        elif body.get("startup_config_content"):
            await self._write_config(default_startup, body["startup_config_content"])
            startup = default_startup
        elif startup == default_startup or not startup:
            path = self.module_dir / default_startup
            if path.exists() and path.stat().st_size == 0:  # an empty NVRAM crashes dynamips
                await asyncio.to_thread(configs.write_text, path, "!\n")
                startup = default_startup
        if creating and body.get("private_config"):
            private = self._config_path("private_config", body["private_config"])
        elif body.get("private_config_content"):
            await self._write_config(default_private, body["private_config_content"])
            private = default_private
        if (startup, private) != (self.startup_config, self.private_config):
            await self._set_config(startup, private)

    def _config_path(self, field_name: str, relative: str) -> str:
        check_text(field_name, relative)
        try:
            path = configs.confined(self.module_dir, relative.replace("\\", "/"))
        except ValueError as err:
            raise BadRequest(f"{field_name}: {err}") from None
        if not path.is_file():
            raise Conflict(f"Cannot access the {field_name.replace('_', '-')} {relative}")
        return str(path.relative_to(self.module_dir.resolve()))

    async def _write_config(self, relative: str, content: str) -> None:
        path = self.module_dir / relative
        try:
            await asyncio.to_thread(configs.write_text, path, configs.render(content, self.name))
        except OSError as err:
            raise Conflict(f"Could not create config file {path}: {err}") from None

    async def _set_config(self, startup: str, private: str) -> None:
        sent_private = private
        if private:
            try:
                if (self.module_dir / private).stat().st_size == 0:
                    sent_private = ""
            except OSError as err:
                raise Conflict(f"Cannot access the private-config {private}: {err}") from None
        await self.send("vm set_config", self.name, startup, sent_private)
        self.startup_config, self.private_config = startup, private

    async def save_configs(self) -> None:
        """Copy NVRAM configs to the config files (only for a router that has run)."""
        if self.startup_config or self.private_config:  # recreate a deleted folder (C14)
            folder = self.module_dir / "configs"
            try:
                await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
            except OSError as err:
                raise Conflict(f"Could not create the configs directory {folder}: {err}") from None
        if not self.ever_started or self.hypervisor is None or not self.hypervisor.alive:
            return
        try:
            lines = await self.send("vm extract_config", self.name)
        except DynamipsError:
            return  # nothing in NVRAM (never pushed): the files stay as they are
        startup, private = configs.parse_extract(lines)
        default_startup, default_private = configs.default_paths(self.dynamips_id)
        if startup:
            relative = self.startup_config or default_startup
            await self._save_file("startup", relative, configs.startup_from_nvram(startup))
            self.startup_config = relative
        private_text = configs.private_from_nvram(private)
        if private_text is not None:
            relative = self.private_config or default_private
            await self._save_file("private", relative, private_text)
            self.private_config = relative

    async def _save_file(self, kind: str, relative: str, text: str) -> None:
        path = self.module_dir / relative
        try:
            await asyncio.to_thread(configs.write_text, path, text)
        except OSError as err:
            raise Conflict(f"Could not save the {kind} configuration {path}: {err}") from None

    async def get_configs(self) -> dict[str, str]:
        """NVRAM content when the router has run, else the files; absent keys omitted."""
        startup = private = None
        if self.ever_started and self.hypervisor is not None and self.hypervisor.alive:
            with contextlib.suppress(DynamipsError):
                data = configs.parse_extract(await self.send("vm extract_config", self.name))
                startup = data[0].decode("utf-8", "replace") or None
                private = configs.private_from_nvram(data[1])
        result = {}
        for key, text, relative in (
            ("startup_config_content", startup, self.startup_config),
            ("private_config_content", private, self.private_config),
        ):
            if text is None and relative:
                try:
                    text = await asyncio.to_thread(configs.read_text, self.module_dir / relative)
                except OSError as err:
                    raise Conflict(f"Could not read the {key[:-8]} {relative}: {err}") from None
            if text:
                result[key] = text
        return result

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        if self.hypervisor is None or not self.hypervisor.alive:
            await self.rebuild()
        status = await self.get_status()
        if status == SUSPENDED:
            await self.send("vm resume", self.name)
            return
        if status != INACTIVE:
            return
        await asyncio.to_thread(Images.check_bootable, self.image)
        self._warn_memory()
        await self.manager.prepare_ghost(self)
        gap = self.stopped_at + RESTART_GAP - time.monotonic()
        if gap > 0:
            await asyncio.sleep(gap)
        await self._vm_start()
        self.ever_started = True
        if self.settings["idlemax"] != DYNAMIPS_IDLE_MAX:
            await self._send_running_setting("idlemax", self.settings["idlemax"])
        if self.settings["idlesleep"] != DYNAMIPS_IDLE_SLEEP_MS:
            await self._send_running_setting("idlesleep", self.settings["idlesleep"])
        if self.platform == "c7200":
            for key, default in (("sensors", [22] * 4), ("power_supplies", [1, 1])):
                if self.settings[key] != default:
                    await self._send_running_setting(key, self.settings[key])
        self.set_status("started")

    async def _vm_start(self) -> None:
        """``vm start``; a refusal is explained with what dynamips printed meanwhile."""
        assert self.hypervisor is not None
        output = self.hypervisor.stdout_file
        offset = await asyncio.to_thread(_size, output)
        try:
            self.start_sent = True
            await self.send("vm start", self.name)
        except DynamipsError as err:
            printed = await asyncio.to_thread(_read_from, output, offset)
            lines = [line.strip() for line in printed.splitlines() if ":" in line]
            reason = f" ({'; '.join(lines[-3:])})" if lines else ""
            raise Conflict(f'Router "{self.name}" could not start: {err.text}{reason}') from None

    def _warn_memory(self) -> None:
        available = psutil.virtual_memory().available // (1024 * 1024)
        if self.settings["ram"] > available:
            self.emit(
                "log.warning",
                {
                    "message": (
                        f'"{self.name}" requires {self.settings["ram"]}MB of RAM to run but '
                        f"there is only {available}MB of RAM available on "
                        f'"{socket.gethostname()}"'
                    )
                },
            )

    async def stop(self) -> None:
        if self.hypervisor is None or not self.hypervisor.alive:
            self.set_status("stopped")
            return
        if await self.get_status() != INACTIVE:
            await self.send("vm stop", self.name)
            self.stopped_at = time.monotonic()
            self.set_status("stopped")
            await self.save_configs()
        else:
            self.set_status("stopped")

    async def suspend(self) -> None:
        if await self.get_status() == RUNNING:
            await self.send("vm suspend", self.name)

    async def resume(self) -> None:
        if await self.get_status() == SUSPENDED:
            await self.send("vm resume", self.name)

    async def reload(self) -> None:
        await self.stop()
        await self.start()

    def hypervisor_died(self, returncode: int) -> None:
        if self.status == "started":
            self.set_status("stopped")

    # -- NIOs --------------------------------------------------------------------------
    async def add_nio(self, slot: int, port: int, spec: dict[str, Any]) -> NIO:
        self.port_card(slot, port)

        async def bind(nio: NIO) -> None:
            try:
                await self.send("vm slot_add_nio_binding", self.name, slot, port, nio.name)
            except DynamipsError as refused:  # a stale binding dynamips kept: clear, retry once
                try:
                    await self.send("vm slot_remove_nio_binding", self.name, slot, port)
                except DynamipsError:
                    raise refused from None  # there was none: the first refusal is the answer
                await self.send("vm slot_add_nio_binding", self.name, slot, port, nio.name)
            try:
                if await self.may_be_running():
                    await self.send("vm slot_enable_nio", self.name, slot, port)
            except BaseException:  # leave no binding to the NIO that is deleted next
                with contextlib.suppress(Exception):
                    await self.send("vm slot_remove_nio_binding", self.name, slot, port)
                raise

        return await self.attach_nio((slot, port), spec, bind)

    async def remove_nio(self, slot: int, port: int) -> None:
        self.port_card(slot, port)

        async def unbind(nio: NIO) -> None:
            if await self.may_be_running():
                await self.send("vm slot_disable_nio", self.name, slot, port)
            await self.send("vm slot_remove_nio_binding", self.name, slot, port)

        self.nio_at((slot, port))
        await self.detach_nio((slot, port), unbind)

    def port_link_type(self, key: tuple[int, int]) -> str:
        """Default pcap link type of a port; refuses a slot or port the router lacks."""
        return self.port_card(*key).link_type

    # -- idle-PC -----------------------------------------------------------------------
    async def idlepc_proposals(self) -> list[str]:
        """Sampled idle-PC candidates; only 32-bit values are kept."""
        if not await self.is_running():
            raise Conflict(f'Router "{self.name}" is not running')
        await self.set_idlepc("0x0", True)
        lines = await self.send("vm get_idle_pc_prop", self.name, 0)
        return [line for line in lines if IDLEPC_LINE.match(line.strip())]

    # -- close -------------------------------------------------------------------------
    async def close(self) -> None:
        """Stop, delete the VM, free ports and the hypervisor; safe to call twice."""
        if self.closed:
            return
        try:
            if self.hypervisor is not None and self.hypervisor.alive:
                try:
                    await self.stop()
                    await self.send("vm delete", self.name)
                    if len(self.hypervisor.nodes) > 1:  # a shared process keeps none of ours
                        await self.delete_nios()
                except (DynamipsError, HypervisorUnavailable, Conflict) as err:
                    log.warning("closing router %s: %s", self.name, err)
        finally:
            self.closed = True
            self.manager.release_consoles(self)
            await self.release()
            if self.settings["auto_delete_disks"]:
                await asyncio.to_thread(self._delete_files, DISK_FILES)

    def _delete_files(self, suffixes: tuple[str, ...] | None) -> None:
        """Delete ``<platform>_i<id>_<suffix>`` files (all of them when ``suffixes`` is None)."""
        prefix = f"{self.platform}_i{self.dynamips_id}_"
        try:
            entries = os.listdir(self.module_dir)
        except OSError:
            return
        for entry in entries:
            if entry.startswith(prefix) and (suffixes is None or entry[len(prefix) :] in suffixes):
                with contextlib.suppress(OSError):
                    os.remove(self.module_dir / entry)

    def own_files(self) -> set[str]:
        """Names (relative to the module folder) of this router's files now on disk:
        ``<platform>_i<id>_*`` and the default config files. Blocking: use a thread."""
        prefix = f"{self.platform}_i{self.dynamips_id}_"
        try:
            found = {e for e in os.listdir(self.module_dir) if e.startswith(prefix)}
        except OSError:
            found = set()
        defaults = configs.default_paths(self.dynamips_id)
        return found | {r for r in defaults if (self.module_dir / r).is_file()}

    def remove_files(self, names: set[str]) -> None:
        for name in names:
            with contextlib.suppress(OSError):
                os.remove(self.module_dir / name)

    async def destroy_files(self) -> None:
        """Remove every file of this router (after a delete, at commit or close)."""
        await asyncio.to_thread(self._delete_files, None)
        for relative in configs.default_paths(self.dynamips_id):
            with contextlib.suppress(OSError):
                await asyncio.to_thread(os.remove, self.module_dir / relative)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(4096).decode("utf-8", "replace")
    except OSError:
        return ""
