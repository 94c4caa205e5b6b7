"""A protocol-level fake of the dynamips 0.2.14 hypervisor, for tests.

It keeps the state of every object the server creates (VMs, NIOs, switches, hubs, ATM and
Frame Relay switches), answers with the exact reply lines the real 0.2.14 gives, records every
command line it received, and injects faults on demand.

Two ways to run it:

* in-process: ``server = await FakeHypervisorServer.start()``; ``server.port``,
  ``server.state.commands``, ``server.faults.append(Fault(...))``, ``await server.close()``;
* as an executable with dynamips' command line (``-N1 -l FILE -H [host:]port``), e.g. through
  ``python -m dynamips_mgr.testing.fake_hypervisor``. ``--record-dir DIR`` appends each command
  line to DIR/<port>.log; ``--faults FILE`` names a JSON list of faults, re-read when it changes;
  ``--version`` sets the version string. ``hypervisor stop`` makes the process exit.

Only the standard library is used; nothing here shares code with the server's client.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

COMMANDS: dict[str, dict[str, list[int]]] = json.loads(
    (Path(__file__).with_name("dynamips_0_2_14_commands.json")).read_text()
)
PLATFORMS = ("c1700", "c2600", "c2691", "c3600", "c3725", "c3745", "c7200")
MAC_PREFIX = {
    "c7200": "ca",
    "c3745": "c4",
    "c3725": "c2",
    "c3600": "cc",
    "c2691": "c0",
    "c2600": "c8",
    "c1700": "d0",
}

# Cards dynamips has a driver for, per platform (slot 0 built-ins included), and their ports.
_NM = {"NM-1E": 1, "NM-4E": 4, "NM-1FE-TX": 1, "NM-16ESW": 16, "NM-4T": 4}
_PA = {
    "PA-FE-TX": 1,
    "PA-2FE-TX": 2,
    "PA-GE": 1,
    "PA-4E": 4,
    "PA-8E": 8,
    "PA-4T+": 4,
    "PA-8T": 8,
    "PA-A1": 1,
    "PA-POS-OC3": 1,
}
CARDS: dict[str, dict[str, int]] = {
    "c7200": {"C7200-IO-FE": 1, "C7200-IO-2FE": 2, "C7200-IO-GE-E": 1, **_PA},
    "c3600": {**_NM, "Leopard-2FE": 2},
    "c2600": {k: v for k, v in _NM.items() if k != "NM-4T"},
    "c2691": {k: v for k, v in _NM.items() if k in ("NM-1FE-TX", "NM-16ESW", "NM-4T")},
    "c1700": {},
}
CARDS["c3725"] = CARDS["c3745"] = CARDS["c2691"]
WICS = {"c1700": {"WIC-1T": 1, "WIC-2T": 2, "WIC-1ENET": 1}}
for _p in ("c2600", "c2691", "c3725", "c3745"):
    WICS[_p] = {"WIC-1T": 1, "WIC-2T": 2}
BUILTIN = {
    "c1700": ("C1700-MB-1ETH", 1),
    "c2691": ("GT96100-FE", 2),
    "c3725": ("GT96100-FE", 2),
    "c3745": ("GT96100-FE", 2),
}
C2600_MB = {
    "2610": ("CISCO2600-MB-1E", 1),
    "2611": ("CISCO2600-MB-2E", 2),
    "2620": ("CISCO2600-MB-1FE", 1),
    "2621": ("CISCO2600-MB-2FE", 2),
}
CHASSIS = {
    "c1700": ("1710", "1720", "1721", "1750", "1751", "1760"),
    "c2600": (
        "2610",
        "2611",
        "2620",
        "2621",
        "2610XM",
        "2611XM",
        "2620XM",
        "2621XM",
        "2650XM",
        "2651XM",
    ),
    "c3600": ("3620", "3640", "3660"),
}
NPES = ("npe-100", "npe-150", "npe-175", "npe-200", "npe-225", "npe-300", "npe-400", "npe-g2")
FILTERS = ("capture", "freq_drop")
PCAP_HEADER = bytes.fromhex("d4c3b2a1020004000000000000000000ffff000001000000")


class ParseError(Exception):
    pass


class Reply(Exception):
    """Raised by a handler to answer with one error line."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.line = f"{code}-{text}"


def tokenize(line: str) -> list[str]:
    """Split a command line the way dynamips' parser does."""
    tokens: list[str] = []
    i, n = 0, len(line)
    while i < n:
        if line[i] in " \t":
            i += 1
            continue
        if line[i] == '"':
            end = line.find('"', i + 1)
            if end < 0:
                raise ParseError("unexpected end of line")
            if end + 1 < n and line[end + 1] not in " \t":
                raise ParseError("unexpected quote")
            tokens.append(line[i + 1 : end])
            i = end + 1
            continue
        j = i
        while j < n and line[j] not in " \t":
            if line[j] == '"':
                raise ParseError("unexpected quote")
            j += 1
        tokens.append(line[i:j])
        i = j
    return tokens


@dataclass
class VM:
    name: str
    instance_id: int
    platform: str
    status: int = 0
    chassis: str = ""
    ios: str = ""
    config: tuple[str, str] = ("", "")
    nvram: tuple[bytes, bytes] | None = None
    console: int = 0
    aux: int = 0
    idle_pc: str = "0x0"
    ghost: tuple[int, str] = (0, "")
    cards: dict[int, tuple[str, int]] = field(default_factory=dict)
    wics: dict[int, tuple[str, int]] = field(default_factory=dict)
    bindings: dict[tuple[int, int], str] = field(default_factory=dict)
    enabled: set[tuple[int, int]] = field(default_factory=set)
    settings: dict[str, str] = field(default_factory=dict)
    started_once: bool = False


@dataclass
class NIO:
    name: str
    kind: str
    args: tuple[str, ...]
    sock: socket.socket | None = None
    filters: dict[int, str] = field(default_factory=dict)


@dataclass
class Switch:
    name: str
    module: str
    nios: dict[str, tuple] = field(default_factory=dict)
    vcs: set[tuple] = field(default_factory=set)


_SWITCH_TEXT = {
    "ethsw": ("ETHSW", "Ethernet switch"),
    "nio_bridge": ("NIO bridge", "NIO bridge"),
    "atmsw": ("ATMSW", "ATM switch"),
    "frsw": ("FRSW", "Frame-Relay switch"),
}
_NIO_KINDS = {
    "create_udp": "UDP",
    "create_unix": "UNIX",
    "create_vde": "VDE",
    "create_tap": "TAP",
    "create_gen_eth": "generic ethernet",
    "create_linux_eth": "Linux raw ethernet",
    "create_null": "Null",
}


class FakeDynamips:
    """The command interpreter: a line in, the reply lines out (with codes, no CRLF)."""

    def __init__(self, version: str = "0.2.14-amd64", working_dir: str | None = None) -> None:
        self.version = version
        self.working_dir = working_dir or os.getcwd()
        self.commands: list[str] = []
        self.vms: dict[str, VM] = {}
        self.nios: dict[str, NIO] = {}
        self.switches: dict[str, dict[str, Switch]] = {m: {} for m in _SWITCH_TEXT}
        self.stopped = False
        self.pid_bits = os.getpid() & 0xFFFF

    # -- dispatch ----------------------------------------------------------------------
    def handle(self, line: str) -> list[str]:
        self.commands.append(line)
        try:
            tokens = tokenize(line)
        except ParseError as err:
            return [f"200-Parse error: {err}"]
        if len(tokens) < 2:
            return ["200-Parse error: unexpected end of line"] if tokens else []
        module, verb, args = tokens[0], tokens[1], tokens[2:]
        if module not in COMMANDS:
            return [f"201-Unknown module '{module}'"]
        if verb not in COMMANDS[module]:
            return [f"202-Unknown command '{verb}'"]
        low, high = COMMANDS[module][verb]
        if not low <= len(args) <= high:
            return [f"203-Bad number of parameters ({len(args)} with min/max={low}/{high})"]
        handler = getattr(self, f"_{module}_{verb}", None)
        if handler is None and module in PLATFORMS:
            handler = getattr(self, f"_platform_{verb}", None)
        if handler is None and module in _SWITCH_TEXT:
            handler = getattr(self, f"_switch_{verb}", None)
        if handler is None:
            return ["100-OK"]
        try:
            result = (
                handler(module, *args)
                if module in PLATFORMS or module in _SWITCH_TEXT
                else handler(*args)
            )
        except Reply as reply:
            return [reply.line]
        except ValueError:
            return ["204-Invalid parameter"]
        lines = list(result or [])
        if not lines or lines[-1][3:4] != "-":
            lines.append("100-OK")
        return lines

    # -- hypervisor --------------------------------------------------------------------
    def _hypervisor_version(self):
        return [f"100-{self.version}"]

    def _hypervisor_working_dir(self, path):
        if not os.path.isdir(path):
            raise Reply(204, "chdir: No such file or directory")
        self.working_dir = path

    def _hypervisor_module_list(self):
        return [f"101 {m}" for m in COMMANDS]

    def _hypervisor_cmd_list(self, module):
        if module not in COMMANDS:
            raise Reply(208, f"unknown module '{module}'")
        return [f"101 {v} (min/max args: {a}/{b})" for v, (a, b) in COMMANDS[module].items()]

    def _hypervisor_stop(self):
        self._hypervisor_reset()
        self.stopped = True

    def _hypervisor_reset(self):
        for nio in self.nios.values():
            if nio.sock:
                nio.sock.close()
        self.vms.clear()
        self.nios.clear()
        for table in self.switches.values():
            table.clear()

    # -- helpers -----------------------------------------------------------------------
    def _vm(self, name: str) -> VM:
        try:
            return self.vms[name]
        except KeyError:
            raise Reply(208, f"unable to find object '{name}'") from None

    def _path(self, path: str) -> str:
        return path if os.path.isabs(path) else os.path.join(self.working_dir, path)

    def _nio_in_use(self, nio_name: str) -> bool:
        if any(nio_name in vm.bindings.values() for vm in self.vms.values()):
            return True
        return any(nio_name in sw.nios for t in self.switches.values() for sw in t.values())

    def _port_count(self, vm: VM, slot: int, port: int) -> int | None:
        """Ports of the card that owns slot/port, or None when there is no such card."""
        if slot == 0 and port >= 16:
            wic = vm.wics.get(port // 16 - 1)
            return None if wic is None else wic[1] + (port // 16) * 16
        card = vm.cards.get(slot)
        return None if card is None else card[1]

    # -- vm ----------------------------------------------------------------------------
    def _vm_create(self, name, instance, platform):
        if name in self.vms or platform not in PLATFORMS:
            raise Reply(206, f"unable to create VM instance '{name}'")
        vm = VM(name, int(instance), platform)
        vm.chassis = {"c1700": "1720", "c2600": "2610", "c3600": "3640"}.get(platform, "")
        self._install_builtins(vm)
        self.vms[name] = vm
        return [f"100-VM '{name}' created"]

    def _install_builtins(self, vm: VM) -> None:
        vm.cards.pop(0, None)
        if vm.platform in BUILTIN:
            vm.cards[0] = BUILTIN[vm.platform]
        elif vm.platform == "c2600":
            vm.cards[0] = C2600_MB[vm.chassis.replace("XM", "")[:4]]
        elif vm.platform == "c3600" and vm.chassis == "3660":
            vm.cards[0] = ("Leopard-2FE", 2)

    def _vm_rename(self, old, new):
        vm = self._vm(old)
        if vm.status != 0 or new in self.vms:
            raise Reply(213, f"unable to rename VM instance '{old}'")
        self.vms[new] = self.vms.pop(old)
        vm.name = new
        return [f"100-VM '{old}' renamed to '{new}'"]

    def _vm_delete(self, name):
        if name not in self.vms:
            raise Reply(207, f"unable to delete VM '{name}'")
        del self.vms[name]
        return [f"100-VM '{name}' deleted"]

    def _vm_clean_delete(self, name):
        vm = self.vms.pop(name, None)
        if vm is None:
            raise Reply(207, f"unable to delete VM '{name}'")
        prefix = f"{vm.platform}_i{vm.instance_id}_"
        for entry in os.listdir(self.working_dir):
            if entry.startswith(prefix):
                try:
                    os.remove(os.path.join(self.working_dir, entry))
                except OSError:
                    pass
        return [f"100-VM '{name}' and related files deleted"]

    def _vm_start(self, name):
        vm = self._vm(name)
        lines = []
        if not vm.console:
            lines.append(f"101 Warning: no console port defined for VM '{name}'")
        try:
            with open(self._path(vm.ios), "rb") as image:
                magic = image.read(7)
        except OSError:
            magic = b""
        if vm.status != 0 or magic != b"\x7fELF\x01\x02\x01":
            raise Reply(209, f"unable to start VM instance '{name}'")
        if vm.ghost[0] == 1:
            with open(self._path(vm.ghost[1]), "wb") as ghost:
                ghost.write(b"\0" * 64)
        vm.status = 2
        if vm.nvram is None:
            vm.nvram = tuple(self._read_config(path) for path in vm.config)  # type: ignore[assignment]
        vm.started_once = True
        open(os.path.join(self.working_dir, f"{vm.platform}_i{vm.instance_id}_lock"), "w").close()
        return [*lines, f"100-VM '{name}' started"]

    def _read_config(self, path: str) -> bytes:
        if not path:
            return b""
        try:
            with open(self._path(path), "rb") as handle:
                return handle.read()
        except OSError:
            return b""

    def _vm_stop(self, name):
        vm = self._vm(name)
        vm.status = 0
        vm.enabled.clear()
        lock = os.path.join(self.working_dir, f"{vm.platform}_i{vm.instance_id}_lock")
        if os.path.exists(lock):
            os.remove(lock)
        return [f"100-VM '{name}' stopped"]

    def _vm_suspend(self, name):
        vm = self._vm(name)
        if vm.status == 2:
            vm.status = 3
        return [f"100-VM '{name}' suspended"]

    def _vm_resume(self, name):
        vm = self._vm(name)
        if vm.status == 3:
            vm.status = 2
        return [f"100-VM '{name}' resumed"]

    def _vm_get_status(self, name):
        return [f"100-{self._vm(name).status}"]

    def _vm_list(self):
        return [f"101 {vm.name} ({vm.platform})" for vm in self.vms.values()]

    def _vm_list_con_ports(self):
        return [f"101 {vm.name} ({vm.console})" for vm in self.vms.values() if vm.console]

    def _vm_set_con_tcp_port(self, name, port):
        self._vm(name).console = int(port)

    def _vm_set_aux_tcp_port(self, name, port):
        self._vm(name).aux = int(port)

    def _vm_set_ios(self, name, path):
        self._vm(name).ios = path
        return [f"100-IOS image set for '{name}'"]

    def _vm_set_config(self, name, startup, private=""):
        self._vm(name).config = (startup, private)
        return [f"100-IOS config file set for '{name}'"]

    def _vm_extract_config(self, name):
        vm = self._vm(name)
        if not vm.started_once or vm.nvram is None:
            raise Reply(206, f"unable to extract config of VM '{name}'")
        startup, private = (base64.b64encode(part).decode() for part in vm.nvram)
        return [f"100-conf '{name}' '{startup}' '{private}'"]

    def _vm_setting(self, key):
        def setter(name, *values):
            self._vm(name).settings[key] = " ".join(values)

        return setter

    def __getattr__(self, attr: str):
        simple = (
            "set_ram",
            "set_nvram",
            "set_ram_mmap",
            "set_sparse_mem",
            "set_clock_divisor",
            "set_exec_area",
            "set_disk0",
            "set_disk1",
            "set_conf_reg",
            "set_debug_level",
            "set_blk_direct_jump",
        )
        if attr.startswith("_vm_") and attr[4:] in simple:
            return self._vm_setting(attr[4:])
        raise AttributeError(attr)

    def _running(self, vm: VM) -> None:
        if vm.status == 0:
            raise Reply(212, "Bad CPU specified")

    def _vm_set_idle_pc(self, name, value):
        self._vm(name).idle_pc = value

    def _vm_set_idle_pc_online(self, name, cpu, value):
        vm = self._vm(name)
        self._running(vm)
        vm.idle_pc = value

    def _vm_get_idle_pc_prop(self, name, cpu):
        vm = self._vm(name)
        self._running(vm)
        return ["101 0x60606f54 [33]", "101 0x6025d4b8 [45]", "101 0x606071e0 [51]"]

    _vm_show_idle_pc_prop = _vm_get_idle_pc_prop

    def _vm_set_idle_max(self, name, cpu, value):
        vm = self._vm(name)
        self._running(vm)
        vm.settings["idle_max"] = value

    def _vm_set_idle_sleep_time(self, name, cpu, value):
        vm = self._vm(name)
        self._running(vm)
        vm.settings["idle_sleep"] = value

    def _vm_cpu_usage(self, name, cpu):
        self._vm(name)
        return ["101 0"]

    def _vm_set_ghost_status(self, name, status):
        vm = self._vm(name)
        vm.ghost = (int(status), vm.ghost[1])

    def _vm_set_ghost_file(self, name, path):
        vm = self._vm(name)
        vm.ghost = (vm.ghost[0], path)

    def _vm_slot_bindings(self, name):
        vm = self._vm(name)
        lines = [f"101 {slot}/0: {card[0]}" for slot, card in sorted(vm.cards.items())]
        lines += [f"101 0/{16 * (w + 1)}: {wic[0]}" for w, wic in sorted(vm.wics.items())]
        return lines

    def _vm_slot_nio_bindings(self, name, slot):
        vm = self._vm(name)
        return [f"101 {p}: {n}" for (s, p), n in sorted(vm.bindings.items()) if s == int(slot)]

    def _vm_slot_add_binding(self, name, slot, sub, card):
        vm = self._vm(name)
        slot, sub = int(slot), int(sub)
        fail = Reply(205, f"VM {name}: unable to add binding for slot {slot}/{sub}")
        if sub == 0:
            ports = CARDS.get(vm.platform, {}).get(card)
            if ports is None or slot in vm.cards:
                raise fail
            vm.cards[slot] = (card, ports)
        else:
            ports = WICS.get(vm.platform, {}).get(card)
            if slot != 0 or sub % 16 or ports is None or (sub // 16 - 1) in vm.wics:
                raise fail
            vm.wics[sub // 16 - 1] = (card, ports)

    def _vm_slot_remove_binding(self, name, slot, sub):
        vm = self._vm(name)
        slot, sub = int(slot), int(sub)
        table, key = (vm.cards, slot) if sub == 0 else (vm.wics, sub // 16 - 1)
        if key not in table:
            raise Reply(205, f"VM {name}: unable to remove binding for slot {slot}/{sub}")
        del table[key]
        for bound in [b for b in vm.bindings if b[0] == slot]:
            del vm.bindings[bound]
            vm.enabled.discard(bound)

    def _vm_slot_oir_start(self, name, slot, sub):
        self._running(self._vm(name))

    _vm_slot_oir_stop = _vm_slot_oir_start

    def _vm_slot_add_nio_binding(self, name, slot, port, nio):
        vm = self._vm(name)
        key = (int(slot), int(port))
        ports = self._port_count(vm, *key)
        if ports is None or key[1] >= ports or key in vm.bindings or nio not in self.nios:
            raise Reply(205, f"VM {name}: unable to add binding for slot {slot}/{port}")
        vm.bindings[key] = nio

    def _vm_slot_remove_nio_binding(self, name, slot, port):
        vm = self._vm(name)
        key = (int(slot), int(port))
        if key not in vm.bindings:
            raise Reply(205, f"VM {name}: unable to remove NIO binding for slot {slot}/{port}")
        del vm.bindings[key]
        vm.enabled.discard(key)

    def _vm_slot_enable_nio(self, name, slot, port):
        vm = self._vm(name)
        key = (int(slot), int(port))
        if vm.status == 0 or key not in vm.bindings:
            raise Reply(205, f"VM {name}: unable to enable NIO for slot {slot}/{port}")
        vm.enabled.add(key)

    def _vm_slot_disable_nio(self, name, slot, port):
        vm = self._vm(name)
        key = (int(slot), int(port))
        if vm.status == 0 or key not in vm.bindings:
            raise Reply(205, f"VM {name}: unable to disable NIO for slot {slot}/{port}")
        vm.enabled.discard(key)

    # -- platform modules --------------------------------------------------------------
    def _platform_vm(self, platform: str, name: str) -> VM:
        vm = self.vms.get(name)
        if vm is None:
            raise Reply(208, f"unable to find VM '{name}'")
        if vm.platform != platform:
            raise Reply(212, f"VM '{name}' is not a VM type {platform}")
        return vm

    def _platform_get_mac_addr(self, platform, name):
        vm = self._platform_vm(platform, name)
        mac = vm.settings.get("mac_addr")
        if mac is None:
            raw = f"{MAC_PREFIX[platform]}{vm.instance_id & 0xFF:02x}{self.pid_bits:04x}0000"
            mac = f"{raw[0:4]}.{raw[4:8]}.{raw[8:12]}"
        return [f"100-{mac}"]

    def _platform_set_mac_addr(self, platform, name, mac):
        self._platform_vm(platform, name).settings["mac_addr"] = mac

    def _platform_set_system_id(self, platform, name, value):
        self._platform_vm(platform, name).settings["system_id"] = value

    def _platform_set_iomem(self, platform, name, value):
        self._platform_vm(platform, name).settings["iomem"] = str(int(value))

    def _platform_set_chassis(self, platform, name, chassis):
        vm = self._platform_vm(platform, name)
        if chassis not in CHASSIS[platform] or vm.status != 0:
            raise Reply(206, f"unable to set Chassis type for router '{name}'")
        vm.chassis = chassis
        self._install_builtins(vm)

    def _c7200_set_npe(self, platform, name, npe):
        vm = self._platform_vm(platform, name)
        if npe not in NPES or vm.status != 0:
            raise Reply(206, f"unable to set NPE type for router '{name}'")
        vm.settings["npe"] = npe

    def _c7200_set_midplane(self, platform, name, midplane):
        vm = self._platform_vm(platform, name)
        if midplane not in ("std", "vxr") or vm.status != 0:
            raise Reply(206, f"unable to set midplane type for router '{name}'")
        vm.settings["midplane"] = midplane

    def _c7200_set_temp_sensor(self, platform, name, index, value):
        self._platform_vm(platform, name).settings[f"sensor{int(index)}"] = value

    def _c7200_set_power_supply(self, platform, name, index, value):
        self._platform_vm(platform, name).settings[f"power{int(index)}"] = value

    # -- nio ---------------------------------------------------------------------------
    def _nio_create(self, verb: str, name: str, *args: str) -> list[str]:
        fail = Reply(206, f"unable to create {_NIO_KINDS[verb]} NIO")
        if name in self.nios:
            raise fail
        sock = None
        if verb == "create_udp":
            try:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.bind(("0.0.0.0", int(args[0])))
            except OSError:
                if sock:
                    sock.close()
                raise fail from None
        elif verb == "create_vde" and not os.path.exists(args[0]):
            raise fail
        elif verb in ("create_gen_eth", "create_linux_eth") and not os.path.exists(
            f"/sys/class/net/{args[0]}"
        ):
            raise fail
        self.nios[name] = NIO(name, verb[7:], args, sock)
        return [f"100-NIO '{name}' created"]

    def _nio_delete(self, name):
        nio = self.nios.get(name)
        if nio is None or self._nio_in_use(name):
            raise Reply(207, f"unable to delete NIO '{name}'")
        if nio.sock:
            nio.sock.close()
        del self.nios[name]
        return [f"100-NIO '{name}' deleted"]

    def _nio_get(self, name: str) -> NIO:
        try:
            return self.nios[name]
        except KeyError:
            raise Reply(208, f"unable to find object '{name}'") from None

    def _nio_list(self):
        return [f"101 {name}" for name in reversed(self.nios)]

    def _nio_bind_filter(self, name, direction, filter_name):
        nio = self._nio_get(name)
        if filter_name not in FILTERS:
            raise Reply(208, f"Unknown filter {filter_name}")
        nio.filters[int(direction)] = filter_name

    def _nio_unbind_filter(self, name, direction):
        self._nio_get(name).filters.pop(int(direction), None)

    def _nio_setup_filter(self, name, direction, *options):
        nio = self._nio_get(name)
        if nio.filters.get(int(direction)) == "capture":
            try:
                with open(self._path(options[-1]), "wb") as handle:
                    handle.write(PCAP_HEADER)
            except (OSError, IndexError):
                raise Reply(215, "Failed to setup filter") from None

    def _nio_get_stats(self, name):
        self._nio_get(name)
        return ["100-0 0 0 0"]

    def _nio_reset_stats(self, name):
        self._nio_get(name)

    def _nio_set_bandwidth(self, name, value):
        self._nio_get(name)

    # -- switches, hubs, ATM and Frame Relay switches ----------------------------------
    def _switch(self, module: str, name: str) -> Switch:
        try:
            return self.switches[module][name]
        except KeyError:
            raise Reply(208, f"unable to find object '{name}'") from None

    def _switch_create(self, module, name):
        label, long_name = _SWITCH_TEXT[module]
        if name in self.switches[module]:
            raise Reply(206, f"unable to create {long_name} '{name}'")
        self.switches[module][name] = Switch(name, module)
        return [f"100-{label} '{name}' created"]

    def _switch_rename(self, module, old, new):
        label, long_name = _SWITCH_TEXT[module]
        table = self.switches[module]
        switch = self._switch(module, old)
        if new in table:
            raise Reply(213, f"unable to rename {long_name} '{old}'")
        table[new] = table.pop(old)
        switch.name = new
        return [f"100-{label} '{old}' renamed to '{new}'"]

    def _switch_delete(self, module, name):
        label, long_name = _SWITCH_TEXT[module]
        if self.switches[module].pop(name, None) is None:
            raise Reply(207, f"unable to delete {long_name} '{name}'")
        return [f"100-{label} '{name}' deleted"]

    def _switch_list(self, module):
        return [f"101 {name}" for name in self.switches[module]]

    def _switch_add_nio(self, module, name, nio):
        switch = self._switch(module, name)
        if nio not in self.nios:
            kind = "switch" if module == "ethsw" else "bridge"
            raise Reply(205, f"unable to bind NIO '{nio}' to {kind} '{name}'")
        switch.nios.setdefault(nio, ("access", "1"))
        return [f"100-NIO '{nio}' bound."]

    def _switch_remove_nio(self, module, name, nio):
        self._switch(module, name).nios.pop(nio, None)
        return [f"100-NIO '{nio}' unbound."]

    def _port_setting(self, name, nio, setting):
        switch = self._switch("ethsw", name)
        if nio not in switch.nios:
            raise Reply(205, "unable to apply port settings")
        switch.nios[nio] = setting
        return ["100-Port settings OK"]

    def _ethsw_set_access_port(self, module, name, nio, vlan):
        return self._port_setting(name, nio, ("access", str(int(vlan))))

    def _ethsw_set_dot1q_port(self, module, name, nio, vlan):
        return self._port_setting(name, nio, ("dot1q", str(int(vlan))))

    def _ethsw_set_qinq_port(self, module, name, nio, vlan):
        return self._port_setting(name, nio, ("qinq", str(int(vlan))))

    def _ethsw_show_mac_addr_table(self, module, name):
        self._switch(module, name)

    def _ethsw_clear_mac_addr_table(self, module, name):
        self._switch(module, name)

    def _vc(self, module: str, name: str, key: tuple, create: bool, what: str) -> list[str]:
        switch = self._switch(module, name)
        ends = (key[0], key[len(key) // 2])
        if create and (key in switch.vcs or any(nio not in self.nios for nio in ends)):
            raise Reply(205, f"unable to create {what}")
        if not create and key not in switch.vcs:
            raise Reply(205, f"unable to delete {what}")
        (switch.vcs.add if create else switch.vcs.discard)(key)
        return [f"100-{what} {'created' if create else 'deleted'}"]

    def _atmsw_create_vcc(self, module, name, *key):
        return self._vc(module, name, key, True, "VCC")

    def _atmsw_delete_vcc(self, module, name, *key):
        return self._vc(module, name, key, False, "VCC")

    def _atmsw_create_vpc(self, module, name, *key):
        return self._vc(module, name, key, True, "VPC")

    def _atmsw_delete_vpc(self, module, name, *key):
        return self._vc(module, name, key, False, "VPC")

    def _frsw_create_vc(self, module, name, *key):
        return self._vc(module, name, key, True, "VC")

    def _frsw_delete_vc(self, module, name, *key):
        return self._vc(module, name, key, False, "VC")


for _verb in _NIO_KINDS:
    setattr(
        FakeDynamips,
        f"_nio_{_verb}",
        lambda self, *args, _verb=_verb: self._nio_create(_verb, *args),
    )


@dataclass
class Fault:
    """A fault injected for command lines matching ``pattern`` (a regular expression).

    actions: ``error`` (answer ``reply`` instead of running the command), ``delay`` (wait
    ``seconds`` then answer), ``split`` (write the reply one byte at a time), ``drop`` (close
    the connection without answering), ``exit`` (the hypervisor dies, code ``exit_code``),
    ``garbage`` (answer a line that is not protocol), ``hang`` (never answer).
    ``times`` limits how often it fires (None: always).
    """

    pattern: str
    action: str
    reply: str = ""
    seconds: float = 0.0
    exit_code: int = -11
    times: int | None = None

    def matches(self, line: str) -> bool:
        return (self.times is None or self.times > 0) and re.search(self.pattern, line) is not None


class FakeHypervisorServer:
    """The fake served over TCP on loopback, in the current event loop."""

    def __init__(self, state: FakeDynamips) -> None:
        self.state = state
        self.faults: list[Fault] = []
        self.exit_code: int | None = None
        self.exited = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0
        self.fault_file: Path | None = None
        self.record_file: Path | None = None
        self._fault_mtime = 0.0

    @classmethod
    async def start(cls, host: str = "127.0.0.1", port: int = 0, **kwargs) -> FakeHypervisorServer:
        server = cls(FakeDynamips(**kwargs))
        server._server = await asyncio.start_server(server._client, host, port)
        server.port = server._server.sockets[0].getsockname()[1]
        return server

    def _load_faults(self) -> None:
        if self.fault_file is None:
            return
        try:
            mtime = self.fault_file.stat().st_mtime
        except OSError:
            return
        if mtime != self._fault_mtime:
            self._fault_mtime = mtime
            self.faults = [Fault(**item) for item in json.loads(self.fault_file.read_text())]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while not self.exited.is_set():
                raw = await reader.readline()
                if not raw:
                    break
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if self.record_file is not None:
                    with open(self.record_file, "a", encoding="utf-8") as record:
                        record.write(line + "\n")
                if not await self._answer(line, writer):
                    break
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer(self, line: str, writer: asyncio.StreamWriter) -> bool:
        self._load_faults()
        fault = next((f for f in self.faults if f.matches(line)), None)
        if fault is not None and fault.times is not None:
            fault.times -= 1
        action = fault.action if fault else ""
        if action == "delay":
            await asyncio.sleep(fault.seconds)
        if action == "hang":
            await asyncio.Event().wait()
        if action == "drop":
            self.state.commands.append(line)
            return False
        if action == "exit":
            self.state.commands.append(line)
            self.die(fault.exit_code)
            return False
        if action == "error":
            self.state.commands.append(line)
            lines = [fault.reply]
        else:
            lines = self.state.handle(line)
        data = "".join(f"{reply}\r\n" for reply in lines).encode()
        if action == "garbage":
            data = b"this is not a reply\r\n" + data
        if action == "split":
            for i in range(len(data)):
                writer.write(data[i : i + 1])
                await writer.drain()
        else:
            writer.write(data)
            await writer.drain()
        if self.state.stopped:
            self.die(0)
            return False
        return True

    def die(self, code: int) -> None:
        """Stop serving at once, as a crashed or stopped process would."""
        self.exit_code = code
        self.exited.set()
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()

    async def close(self) -> None:
        self.die(0)
        if self._server is not None:
            await self._server.wait_closed()
        self.state._hypervisor_reset()


async def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="fake dynamips hypervisor")
    parser.add_argument("-N", dest="naming")
    parser.add_argument("-l", dest="log")
    parser.add_argument("-H", dest="listen", required=True)
    parser.add_argument("--version", dest="version", default="0.2.14-amd64")
    parser.add_argument("--record-dir", type=Path, help="write commands to DIR/<port>.log")
    parser.add_argument("--faults", type=Path)
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    try:
        server = await FakeHypervisorServer.start(host, int(port), version=args.version)
    except OSError as err:
        print(f"Hypervisor: unable to create TCP sockets: {err}", flush=True)
        return 1
    server.fault_file = args.faults
    if args.record_dir:
        server.record_file = args.record_dir / f"{server.port}.log"
    if args.log:
        Path(args.log).write_text(f"fake dynamips {args.version} on {args.listen}\n")
    print(f"Hypervisor TCP control server started (IP {host} port {server.port}).", flush=True)
    await server.exited.wait()
    return server.exit_code or 0


def main() -> None:
    code = asyncio.run(_main(sys.argv[1:]))
    sys.stdout.flush()
    if code < 0:  # die by that signal, as a crashed dynamips does
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code)


if __name__ == "__main__":
    main()
