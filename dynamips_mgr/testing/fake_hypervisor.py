"""A protocol-level fake of the dynamips 0.2.14 hypervisor, for tests.

It keeps the state of every object the server creates (VMs with their slots, WICs and NIO
bindings, NIOs with their filters, Ethernet switches, hubs, ATM and Frame Relay switches),
answers with the exact reply lines the real 0.2.14 gives (success and error, checked by
``tests/test_conformance.py`` against the real binary), records every command line it
received, and injects faults on demand. The command line is read the way dynamips reads it
(``fgets`` of at most 511 bytes, then its tokenizer: CR and NUL end a command, ``#``/``!``
start a comment, empty quoted strings vanish, a newline inside quotes is a parse error).

Two ways to run it:

* in-process: ``server = await FakeHypervisorServer.start()``; ``server.port``,
  ``server.state.commands``, ``server.faults.append(Fault(...))``, ``await server.close()``;
* as an executable with dynamips' command line (``-N1 -l FILE -H [host:]port``), e.g. through
  ``python -m dynamips_mgr.testing.fake_hypervisor``. ``--record-dir DIR`` appends each command
  line to DIR/<port>.log; ``--faults FILE`` names a JSON list of faults (objects with the
  fields of :class:`Fault`), re-read when its content changes; ``--version`` sets the version
  string; ``--ignore-stop`` makes a wedged process: ``hypervisor stop`` is answered but the
  process keeps running and ignores SIGTERM (only SIGKILL ends it).

Fault actions (both modes): ``error`` (answer ``reply``, CRLF-separated lines, instead of
running the command), ``delay`` (wait ``seconds``, then run it), ``split`` (write the reply
one byte at a time), ``drop`` (close the connection without answering), ``exit`` (the
hypervisor dies at once with ``exit_code``, negative = killed by that signal), ``garbage``
(a line that is not protocol before the reply), ``hang`` (never answer).

A started router with a console port gets a console listener on the control address (like
dynamips 0.2.14, which binds consoles to the ``-H`` address): telnet negotiation, the
"Connected to Dynamips VM" greeting, then the bytes typed are echoed.

It also reproduces the 0.2.14 defects a client can run into: ``vm slot_oir_start`` (slot > 0)
on a VM without CPUs (never started, or stopped) kills the process (SIGSEGV); a refused
``vm rename`` of a running VM leaks a reference, so that VM can never be deleted (207);
removing a WIC drops every NIO binding of slot 0; ``vm slot_bindings`` repeats the main
card's line for each WIC; a failed ``vm start`` leaves the hardware initialised until
``vm stop`` (always on c7200, else once an image is set).

Known simplifications: ``vm get_idle_pc_prop`` answers at once with fixed proposals;
``vm cpu_usage`` always reports 0 s; ``nio create_tap`` always succeeds; NVRAM is stored in
``<platform>_i<id>_nvram`` (``_rom`` on c2691/c3725/c3745) in a format of its own.

Only the standard library is used; nothing here shares code with the server's client.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import errno
import json
import os
import re
import signal
import socket
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

COMMANDS: dict[str, dict[str, list[int]]] = json.loads(
    (Path(__file__).with_name("dynamips_0_2_14_commands.json")).read_text()
)
PLATFORMS = ("c1700", "c2600", "c2691", "c3600", "c3725", "c3745", "c7200")
FGETS_SIZE = 511  # dynamips reads its control connection with fgets(buffer, 512, ...)
MAX_SLOTS = 16  # VM_MAX_SLOTS
MAX_WICS = 8  # CISCO_CARD_MAX_WIC


@dataclass(frozen=True)
class Platform:
    mac_prefix: int
    nr_slots: int  # slots listed by `vm slot_bindings` and usable for NIO bindings
    cards: tuple[str, ...]  # drivers accepted in a main slot
    wics: tuple[str, ...] = ()  # drivers accepted in the WIC sub-slots of a mainboard
    ram: int = 128  # default RAM (MB), the size of a ghost file
    nvram_file: str = "nvram"


_NM = ("NM-1E", "NM-4E", "NM-1FE-TX", "NM-16ESW")
_NM_2691 = ("NM-1FE-TX", "NM-16ESW", "NM-4T", "NM-NAM", "NM-CIDS", "GT96100-FE")
_C2600_MB = tuple(f"CISCO2600-MB-{kind}" for kind in ("1E", "2E", "1FE", "2FE"))
_PA = (
    "PA-FE-TX", "PA-2FE-TX", "PA-GE", "PA-4E", "PA-8E", "PA-4T+", "PA-8T", "PA-A1",
    "PA-POS-OC3", "PA-MC-8TE1", "PA-4B", "C7200-IO-FE", "C7200-IO-2FE", "C7200-IO-GE-E",
    "C7200-JC-PA",
)  # fmt: skip
PLATFORM_SPECS = {
    "c1700": Platform(
        0xD0, 1, ("C1700-MB-1ETH", "C1710-MB-1FE-1E"), ("WIC-1T", "WIC-2T", "WIC-1ENET"), 64
    ),
    "c2600": Platform(0xC8, 2, (*_NM, "NM-NAM", "NM-CIDS", *_C2600_MB), ("WIC-1T", "WIC-2T"), 64),
    "c2691": Platform(0xC0, 2, _NM_2691, ("WIC-1T", "WIC-2T"), nvram_file="rom"),
    "c3600": Platform(0xCC, 7, (*_NM, "NM-4T", "Leopard-2FE")),
    "c3725": Platform(0xC2, 3, _NM_2691, ("WIC-1T", "WIC-2T"), nvram_file="rom"),
    "c3745": Platform(0xC4, 5, _NM_2691, ("WIC-1T", "WIC-2T"), nvram_file="rom"),
    "c7200": Platform(0xCA, 9, _PA, ram=256),
}
# Ports a card's driver accepts (None: no check) and whether enabling a port twice fails.
CARD_PORTS: dict[str, tuple[int | None, bool]] = {
    **{c: (1, True) for c in ("PA-FE-TX", "PA-A1", "PA-POS-OC3", "PA-MC-8TE1", "PA-4B")},
    **{"PA-2FE-TX": (2, False), "PA-GE": (1, False), "PA-4E": (4, False), "PA-8E": (8, False)},
    **{"PA-4T+": (4, True), "PA-8T": (8, True), "NM-4T": (4, True)},
    **{"C7200-IO-FE": (1, True), "C7200-IO-2FE": (2, False), "C7200-IO-GE-E": (2, False)},
    **{c: (None, False) for c in ("C7200-JC-PA", "NM-16ESW", "GT96100-FE")},
    **{c: (1, False) for c in ("NM-1E", "NM-1FE-TX", "NM-NAM", "NM-CIDS")},
    **{"NM-4E": (4, False), "Leopard-2FE": (2, False)},
    **{c: (int(c.split("-")[-1][0]), False) for c in _C2600_MB},
    **{"C1700-MB-1ETH": (1, True), "C1710-MB-1FE-1E": (2, True)},
    **{"WIC-1T": (1, True), "WIC-2T": (2, True), "WIC-1ENET": (1, True)},
}
SLOT0_ONLY = {"C7200-IO-FE", "C7200-IO-2FE", "C7200-IO-GE-E", "C7200-JC-PA", "GT96100-FE"}
C3600_SLOTS = {"3620": 2, "3640": 4, "3660": 7}  # slots initialised at start, per chassis
MAINBOARDS_WITH_WICS = {"C1700-MB-1ETH", "C1710-MB-1FE-1E", "GT96100-FE", *_C2600_MB}
BUILTIN = {"c2691": "GT96100-FE", "c3725": "GT96100-FE", "c3745": "GT96100-FE"}
CHASSIS_MAINBOARD = {
    "c1700": {
        "1710": "C1710-MB-1FE-1E",
        **{c: "C1700-MB-1ETH" for c in ("1720", "1721", "1750", "1751", "1760")},
    },
    "c2600": {
        "2610": "CISCO2600-MB-1E",
        "2611": "CISCO2600-MB-2E",
        **{c: "CISCO2600-MB-1FE" for c in ("2620", "2610XM", "2620XM", "2650XM")},
        **{c: "CISCO2600-MB-2FE" for c in ("2621", "2611XM", "2621XM", "2651XM")},
    },
    "c3600": {"3620": None, "3640": None, "3660": "Leopard-2FE"},
}
DEFAULT_CHASSIS = {"c1700": "1720", "c2600": "2610", "c3600": "3640"}
NPES = tuple(f"npe-{n}" for n in ("100", "150", "175", "200", "225", "300", "400", "g1", "g2"))
FILTERS = ("freq_drop", "capture")
DLT = {"en10mb": 1, "c_hdlc": 104, "ppp_serial": 50, "frelay": 107, "atm_rfc1483": 11}
_NIO_KINDS = {
    "create_udp": "UDP",
    "create_unix": "UNIX",
    "create_vde": "VDE",
    "create_tap": "TAP",
    "create_gen_eth": "generic ethernet",
    "create_linux_eth": "Linux raw ethernet",
    "create_null": "Null",
}
_SWITCH_TEXT = {  # label in replies, long name in "unable to create", word in bind errors
    "ethsw": ("ETHSW", "Ethernet switch", "switch"),
    "nio_bridge": ("NIO bridge", "NIO bridge", "bridge"),
    "atmsw": ("ATMSW", "ATM switch", ""),
    "frsw": ("FRSW", "frame-relay switch", ""),
}


def atoi(text: str) -> int:
    """C ``atoi``: optional sign and leading digits, 0 when there are none."""
    match = re.match(r"\s*([+-]?\d+)", text)
    return int(match.group(1)) if match else 0


def strtoul(text: str) -> int:
    """C ``strtoull(text, NULL, 0)``: decimal, 0x hex or 0 octal prefix."""
    match = re.match(r"\s*(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9]\d*)", text)
    return int(match.group(1), 0) if match else 0


class Reply(Exception):
    """Raised by a handler to answer with an error line (after the ``before`` lines)."""

    def __init__(self, code: int, text: str, before: list[str] | None = None) -> None:
        super().__init__(text)
        self.lines = [*(before or []), f"{code}-{text}"]


# -- the command line parser of dynamips (common/parser.c) ------------------------------------
class CommandParser:
    """dynamips' tokenizer: fed with ``fgets`` chunks, done at the first CR, LF or NUL."""

    BLANK, STRING, QUOTED, SKIP, DONE = range(5)

    def __init__(self) -> None:
        self.state = self.BLANK
        self.tokens: list[bytes] = []
        self.current = bytearray()
        self.started = False
        self.error = ""

    def _end_token(self) -> None:
        if self.current:  # an empty quoted string makes no token
            self.tokens.append(bytes(self.current))
        self.current = bytearray()

    def feed(self, data: bytes) -> bool:
        """Scan ``data``; True when the command is complete (the rest of data is ignored)."""
        for byte in data:
            if self.state == self.DONE:
                break
            char = bytes([byte])
            newline, blank = char in (b"\n", b"\r", b"\0"), char in (b" ", b"\t")
            comment, quote = char in (b"!", b"#"), char == b'"'
            if self.state == self.SKIP:
                if newline:
                    self.state = self.DONE
            elif self.state == self.BLANK:
                if newline:
                    self.state = self.DONE
                elif comment:
                    self.state = self.SKIP
                elif quote:
                    self.state = self.QUOTED
                elif not blank:
                    self.current.append(byte)
                    self.state = self.STRING
            elif self.state == self.STRING:
                if blank:
                    self._end_token()
                    self.state = self.BLANK
                elif newline:
                    self._end_token()
                    self.state = self.DONE
                elif comment:
                    self._end_token()
                    self.state = self.SKIP
                elif quote:
                    self.error = "unexpected quote"
                    self.state = self.SKIP
                else:
                    self.current.append(byte)
            elif self.state == self.QUOTED:
                if newline:
                    self.error = "unexpected end of line"
                    self.state = self.DONE
                elif quote:
                    self._end_token()
                    self.state = self.BLANK
                else:
                    self.current.append(byte)
        return self.state == self.DONE


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def tokenize(line: str) -> list[str]:
    """Split one complete command line the way dynamips does (ValueError on a parse error)."""
    parser = CommandParser()
    parser.feed(line.encode("utf-8", "surrogateescape") + b"\n")
    if parser.error:
        raise ValueError(parser.error)
    return [_decode(token) for token in parser.tokens]


# -- object model ------------------------------------------------------------------------------
@dataclass
class Card:
    name: str
    slot: int
    subslot: int
    subs: list[Card | None] = field(default_factory=lambda: [None] * MAX_WICS)
    nios: dict[int, str] = field(default_factory=dict)  # port -> NIO name, oldest first
    active: bool = False  # the driver is initialised (VM started, or OIR)
    enabled: set[int] = field(default_factory=set)

    @property
    def has_wics(self) -> bool:
        return self.name in MAINBOARDS_WITH_WICS

    def port_ok(self, port: int) -> bool:
        ports = CARD_PORTS.get(self.name, (1, True))[0]
        return ports is None or 0 <= port < ports

    def activate(self) -> None:
        """The driver starts: every bound NIO on a port it knows is enabled."""
        self.active = True
        self.enabled = {port for port in self.nios if self.port_ok(port)}
        for sub in self.subs:
            if sub is not None:
                sub.activate()

    def deactivate(self) -> None:
        self.active = False
        self.enabled.clear()
        for sub in self.subs:
            if sub is not None:
                sub.deactivate()


@dataclass
class VM:
    name: str
    instance_id: int
    platform: str
    status: int = 0  # 0 halted, 1 shutting down (ghost creation), 2 running, 3 suspended
    hardware: bool = False  # CPUs and cards exist: after a start attempt, until stop
    chassis: str = ""
    ios: str = ""
    config: tuple[str, str] = ("", "")
    console: int | None = None
    aux: int | None = None
    ram: int = 0
    idle_pc: int = 0
    ghost_status: int = 0
    ghost_file: str = ""
    mac: str | None = None
    leaked_refs: int = 0  # references 0.2.14 never gives back: the VM cannot be deleted
    settings: dict[str, str] = field(default_factory=dict)
    slots: list[Card | None] = field(default_factory=lambda: [None] * MAX_SLOTS)

    @property
    def spec(self) -> Platform:
        return PLATFORM_SPECS[self.platform]


@dataclass
class NIO:
    name: str
    kind: str
    args: tuple[str, ...]
    sock: socket.socket | None = None
    refs: int = 0
    filters: dict[str, str] = field(default_factory=dict)  # rx/tx/both -> filter name
    captures: dict[str, tuple[str, int]] = field(default_factory=dict)  # slot -> (path, dlt)


@dataclass
class Switch:
    name: str
    module: str
    ports: list[list] = field(default_factory=list)  # [nio name, settings] per port
    vcs: list[tuple] = field(default_factory=list)  # ATM: ("vp"|"vc", in..., out...)


def _registry_rename(table: dict, old: str, new: str) -> None:
    """Renaming moves an object to the head of dynamips' registry lists."""
    table[new] = table.pop(old)


def _listing(table: dict) -> list[str]:
    return list(reversed(table))  # the registry lists the newest object first


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
        self.closing = False  # `hypervisor close`: this connection ends after the reply
        self.pid_bits = os.getpid() & 0xFFFF
        self.uuid = str(uuid.uuid4())
        self.console_hook: Callable[[VM, bool], None] | None = None

    # -- dispatch ------------------------------------------------------------------------------
    def handle(self, line: str) -> list[str]:
        """Record and run one complete command line."""
        self.commands.append(line)
        parser = CommandParser()
        parser.feed(line.encode("utf-8", "surrogateescape") + b"\n")
        return self.execute(parser)

    def execute(self, parser: CommandParser) -> list[str]:
        """Run a command the parser has completed; return its reply lines."""
        if parser.error:
            return [f"200-Parse error: {parser.error}"]
        tokens = [_decode(token) for token in parser.tokens]
        if len(tokens) < 2:
            return ["200-At least a module and a command must be specified"]
        module, verb, args = tokens[0], tokens[1], tokens[2:]
        if module not in COMMANDS:
            return [f"201-Unknown module '{module}'"]
        if verb not in COMMANDS[module]:
            return [f"202-Unknown command '{verb}'"]
        low, high = COMMANDS[module][verb]
        if (module, verb) == ("ethsw", "set_qinq_port") and self._version_at_least(0, 2, 16):
            high = 4  # the optional ethertype argument appeared in 0.2.16
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
            if module in PLATFORMS or module in _SWITCH_TEXT:
                result = handler(module, *args)
            else:
                result = handler(*args)
        except Reply as reply:
            return reply.lines
        lines = list(result or [])
        if not lines or lines[-1][3:4] != "-":
            lines.append("100-OK")
        return lines

    def _version_at_least(self, *wanted: int) -> bool:
        found = re.match(r"(\d+)\.(\d+)\.(\d+)", self.version)
        return found is not None and tuple(map(int, found.groups())) >= wanted

    # -- hypervisor ----------------------------------------------------------------------------
    def _hypervisor_version(self):
        return [f"100-{self.version}"]

    def _hypervisor_working_dir(self, path):
        target = self._path(path)
        if not os.path.exists(target):
            code = errno.ENOENT
        elif not os.path.isdir(target):
            code = errno.ENOTDIR
        elif not os.access(target, os.X_OK):
            code = errno.EACCES
        else:
            self.working_dir = target
            return None
        raise Reply(204, f"chdir: {os.strerror(code)}")

    def _hypervisor_module_list(self):
        return [f"101 {m}" for m in COMMANDS]

    def _hypervisor_cmd_list(self, module):
        if module not in COMMANDS:
            raise Reply(201, f"unknown module '{module}'")
        return [f"101 {v} (min/max args: {a}/{b})" for v, (a, b) in COMMANDS[module].items()]

    def _hypervisor_parser_test(self, *args):
        return [
            f'101 arg {i} (len {len(a.encode("utf-8", "surrogateescape"))}): "{a}"'
            for i, a in enumerate(args)
        ]

    def _hypervisor_uuid(self):
        return [f"100-{self.uuid}"]

    def _hypervisor_stop(self):
        self._hypervisor_reset()
        self.stopped = True

    def _hypervisor_close(self):
        self.closing = True

    def _hypervisor_reset(self):
        for name in list(self.vms):
            self._destroy_vm(self.vms.pop(name))
        for table in self.switches.values():
            for switch in table.values():
                self._free_switch(switch)
            table.clear()
        for nio in self.nios.values():
            self._close_nio(nio)
        self.nios.clear()

    # -- helpers -------------------------------------------------------------------------------
    def _path(self, path: str) -> str:
        return path if os.path.isabs(path) else os.path.join(self.working_dir, path)

    def _file(self, vm: VM, suffix: str) -> str:
        return self._path(f"{vm.platform}_i{vm.instance_id}_{suffix}")

    def _vm(self, name: str) -> VM:
        try:
            return self.vms[name]
        except KeyError:
            raise Reply(208, f"unable to find object '{name}'") from None

    def _acquire(self, nio_name: str) -> bool:
        nio = self.nios.get(nio_name)
        if nio is not None:
            nio.refs += 1
        return nio is not None

    def _release(self, nio_name: str) -> None:
        nio = self.nios.get(nio_name)
        if nio is not None and nio.refs > 0:
            nio.refs -= 1

    # -- vm ------------------------------------------------------------------------------------
    def _vm_create(self, name, instance, platform):
        if name in self.vms or platform not in PLATFORMS:
            raise Reply(206, f"unable to create VM instance '{name}'")
        vm = VM(name, atoi(instance), platform, ram=PLATFORM_SPECS[platform].ram)
        if platform in DEFAULT_CHASSIS:
            self._set_chassis(vm, DEFAULT_CHASSIS[platform])
        elif platform in BUILTIN:
            vm.slots[0] = Card(BUILTIN[platform], 0, 0)
        for suffix in ("lock", "log.txt"):
            with contextlib.suppress(OSError):
                open(self._file(vm, suffix), "a").close()
        self.vms[name] = vm
        return [f"100-VM '{name}' created"]

    def _vm_rename(self, old, new):
        vm = self._vm(old)
        if new in self.vms:
            raise Reply(213, f"unable to rename VM instance '{old}', '{new}' already exists")
        if vm.status != 0:
            vm.leaked_refs += 1  # 0.2.14 forgets vm_release() on this error path
            raise Reply(213, f"unable to rename VM instance '{old}'")
        _registry_rename(self.vms, old, new)
        vm.name = new
        return [f"100-VM '{old}' renamed to '{new}'"]

    def _destroy_vm(self, vm: VM) -> None:
        self._halt(vm)
        for card in [c for c in vm.slots if c is not None]:
            for holder in (card, *(s for s in card.subs if s is not None)):
                for nio_name in holder.nios.values():
                    self._release(nio_name)
        with contextlib.suppress(OSError):
            os.remove(self._file(vm, "lock"))

    def _vm_delete(self, name):
        vm = self.vms.get(name)
        if vm is None or vm.leaked_refs:
            raise Reply(207, f"unable to delete VM '{name}'")
        del self.vms[name]
        self._destroy_vm(vm)
        return [f"100-VM '{name}' deleted"]

    def _vm_clean_delete(self, name):
        vm = self._vm(name)
        if vm.leaked_refs:
            raise Reply(207, f"unable to delete VM '{name}'")
        del self.vms[name]
        self._destroy_vm(vm)
        prefix = f"{vm.platform}_i{vm.instance_id}_"
        with contextlib.suppress(OSError):
            for entry in os.listdir(self.working_dir):
                if entry.startswith(prefix):
                    with contextlib.suppress(OSError):
                        os.remove(os.path.join(self.working_dir, entry))
        return [f"100-VM '{name}' and related files deleted"]

    def _vm_start(self, name):
        vm = self._vm(name)
        warning = (
            []
            if vm.console is not None
            else [f"101 Warning: no console port defined for VM '{name}'"]
        )
        if vm.status in (2, 3):
            return [*warning, f"100-VM '{name}' started"]
        if not vm.ios and vm.platform != "c7200":  # checked before the hardware is set up
            raise Reply(209, f"unable to start VM instance '{name}'", warning)
        self._power_up(vm)
        if not self._bootable(vm):
            raise Reply(209, f"unable to start VM instance '{name}'", warning)
        if vm.ghost_status == 1:
            with open(self._path(vm.ghost_file), "wb") as ghost:
                ghost.truncate(vm.ram * 1024 * 1024)
            vm.status = 1
        else:
            self._push_configs(vm)
            vm.status = 2
            if self.console_hook is not None and vm.console is not None:
                self.console_hook(vm, True)
        return [*warning, f"100-VM '{name}' started"]

    def _power_up(self, vm: VM) -> None:
        """What a start does before loading the image: CPUs, default cards, drivers."""
        vm.hardware = True
        if vm.platform == "c7200" and vm.slots[0] is None:
            vm.slots[0] = Card("C7200-IO-FE", 0, 0)
        for slot_id, card in enumerate(vm.slots[: vm.spec.nr_slots]):
            if card is not None and self._driver_starts(vm, card, slot_id):
                card.activate()

    @staticmethod
    def _driver_starts(vm: VM, card: Card, slot_id: int) -> bool:
        """Whether the card's driver initialises in that slot (else it stays inactive)."""
        if card.name in SLOT0_ONLY or card.name == "Leopard-2FE":
            return slot_id == 0
        if vm.platform == "c3600":
            return slot_id < C3600_SLOTS.get(vm.chassis, 7)
        return not (vm.platform == "c2600" and card.name in ("NM-NAM", "NM-CIDS"))

    def _bootable(self, vm: VM) -> bool:
        try:
            with open(self._path(vm.ios), "rb") as image:
                magic = image.read(7)
        except OSError:
            return False
        if magic != b"\x7fELF\x01\x02\x01":
            return False
        return vm.ghost_status != 2 or os.path.isfile(self._path(vm.ghost_file))

    def _push_configs(self, vm: VM) -> None:
        startup, private = vm.config
        if not startup and not private:
            return
        parts = list(self._read_nvram(vm) or (b"", b""))
        for index, path in enumerate((startup, private)):
            if path:
                try:
                    with open(self._path(path), "rb") as handle:
                        parts[index] = handle.read()
                except OSError:
                    pass
        if any(parts):
            self._write_nvram(vm, parts[0], parts[1])

    def _read_nvram(self, vm: VM) -> tuple[bytes, bytes] | None:
        try:
            with open(self._file(vm, vm.spec.nvram_file), encoding="ascii") as handle:
                data = json.load(handle)
            return base64.b64decode(data["startup"]), base64.b64decode(data["private"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _write_nvram(self, vm: VM, startup: bytes, private: bytes) -> None:
        encoded = {
            k: base64.b64encode(v).decode() for k, v in (("startup", startup), ("private", private))
        }
        with open(self._file(vm, vm.spec.nvram_file), "w", encoding="ascii") as handle:
            json.dump(encoded, handle)

    def _halt(self, vm: VM) -> None:
        if vm.status == 2 and self.console_hook is not None and vm.console is not None:
            self.console_hook(vm, False)
        vm.status = 0
        vm.hardware = False
        for card in vm.slots:
            if card is not None:
                card.deactivate()

    def _vm_stop(self, name):
        self._halt(self._vm(name))
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
        return [f"101 {name} ({self.vms[name].platform})" for name in _listing(self.vms)]

    def _vm_list_con_ports(self):
        return [
            f"101 {name} ({self.vms[name].console})"
            for name in _listing(self.vms)
            if self.vms[name].console is not None
        ]

    def _vm_set_con_tcp_port(self, name, port):
        self._vm(name).console = atoi(port)

    def _vm_set_aux_tcp_port(self, name, port):
        self._vm(name).aux = atoi(port)

    def _vm_set_ios(self, name, path):
        self._vm(name).ios = path
        return [f"100-IOS image set for '{name}'"]

    def _vm_set_config(self, name, startup, private=""):
        vm = self._vm(name)
        vm.config = (startup or vm.config[0], private or vm.config[1])
        return [f"100-IOS config file set for '{name}'"]

    def _vm_extract_config(self, name):
        vm = self._vm(name)
        nvram = self._read_nvram(vm)
        if nvram is None:
            raise Reply(206, f"unable to extract config of VM '{name}'")
        startup, private = (base64.b64encode(part).decode() for part in nvram)
        return [f"100-conf '{name}' '{startup}' '{private}'"]

    def _vm_push_config(self, name, startup, private="(keep)"):
        vm = self._vm(name)
        parts = list(self._read_nvram(vm) or (b"", b""))
        try:
            for index, value in enumerate((startup, private)):
                if value != "(keep)":
                    parts[index] = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise Reply(206, f"unable to push IOS config for VM '{name}'") from None
        self._write_nvram(vm, parts[0], parts[1])
        return [f"100-IOS config file pushed tm VM '{name}'"]

    def _vm_set_ram(self, name, value):
        self._vm(name).ram = atoi(value)

    def _vm_set_idle_pc(self, name, value):
        self._vm(name).idle_pc = strtoul(value)

    def _vm_set_ghost_status(self, name, status):
        self._vm(name).ghost_status = atoi(status)

    def _vm_set_ghost_file(self, name, path):
        self._vm(name).ghost_file = path

    def _vm_send_con_msg(self, name, text, kind="plain"):
        vm = self._vm(name)
        if vm.status != 2 or kind not in ("plain", "base64"):
            raise Reply(204, "Invalid parameter")
        return [f"100-{len(text.encode('utf-8', 'surrogateescape'))} byte(s) written"]

    _vm_send_aux_msg = _vm_send_con_msg

    def _cpu(self, name: str, cpu: str) -> VM:
        vm = self._vm(name)
        if not vm.hardware or atoi(cpu) != 0:
            raise Reply(212, "Bad CPU specified")
        return vm

    def _vm_set_idle_pc_online(self, name, cpu, value):
        self._cpu(name, cpu).idle_pc = strtoul(value)

    def _vm_get_idle_pc_prop(self, name, cpu):
        vm = self._cpu(name, cpu)
        if vm.status != 2:  # what 0.2.14 finds after ~10 s when nothing runs
            return ["101 0xffffffffbfc00000 [1000]"]
        if vm.idle_pc:  # sampling is refused while an idle-PC is set
            return []
        return ["101 0x60606f54 [33]", "101 0x6025d4b8 [45]", "101 0x606071e0 [51]"]

    def _vm_show_idle_pc_prop(self, name, cpu):
        self._cpu(name, cpu)

    def _vm_set_idle_max(self, name, cpu, value):
        self._cpu(name, cpu).settings["idle_max"] = value

    def _vm_set_idle_sleep_time(self, name, cpu, value):
        self._cpu(name, cpu).settings["idle_sleep"] = value

    def _vm_show_timer_drift(self, name, cpu):
        self._cpu(name, cpu)
        return ["101 Timer Drift: 0", "101 Pending Timer IRQ: 0"]

    def _vm_cpu_usage(self, name, cpu):
        self._vm(name)
        return ["101 0"]

    def __getattr__(self, attr: str):
        simple = (
            "set_nvram", "set_ram_mmap", "set_sparse_mem", "set_clock_divisor", "set_exec_area",
            "set_disk0", "set_disk1", "set_conf_reg", "set_debug_level", "set_blk_direct_jump",
            "cpu_info",
        )  # fmt: skip
        if attr.startswith("_vm_") and attr[4:] in simple:
            key = attr[4:]

            def setter(name, *values):
                self._vm(name).settings[key] = " ".join(values)

            return setter
        raise AttributeError(attr)

    # -- vm slots (common/cisco_card.c) --------------------------------------------------------
    def _slot_target(self, vm: VM, slot: int, port: int) -> tuple[Card | None, int, int | None]:
        """(main card, real port, WIC index or None); ValueError for an invalid WIC id."""
        if slot >= MAX_SLOTS:
            raise ValueError(slot)
        main = vm.slots[slot]
        if main is not None and main.has_wics and port >> 4:
            if port >> 4 > MAX_WICS:
                raise ValueError(port)
            return main, port & 0x0F, (port >> 4) - 1
        return main, port, None

    def _binding_card(self, vm: VM, slot: int, port: int) -> tuple[Card | None, int]:
        """The card holding NIO bindings for slot/port (sub-slots translated)."""
        if slot >= vm.spec.nr_slots or vm.slots[slot] is None:
            return None, port
        try:
            main, real, wic = self._slot_target(vm, slot, port)
        except ValueError:
            return vm.slots[slot], 0
        assert main is not None
        return (main if wic is None else main.subs[wic]), real

    def _vm_slot_bindings(self, name):
        vm = self._vm(name)
        lines = []
        for card in vm.slots[: vm.spec.nr_slots]:
            if card is not None:
                line = f"101 {card.slot}/{card.subslot}: {card.name}"
                # 0.2.14 prints the main card again for each WIC (instead of the WIC)
                lines += [line] * (1 + sum(sub is not None for sub in card.subs))
        return lines

    def _vm_slot_nio_bindings(self, name, slot):
        vm = self._vm(name)
        slot_id = atoi(slot)
        main = vm.slots[slot_id] if 0 <= slot_id < vm.spec.nr_slots else None
        lines = []
        for card in (main, *(main.subs if main else ())):
            if card is not None:
                lines += [f"101 {port}: {nio}" for port, nio in reversed(card.nios.items())]
        return lines

    def _vm_slot_add_binding(self, name, slot, port, card_name):
        vm = self._vm(name)
        slot_id, port_id = atoi(slot), atoi(port)
        fail = Reply(205, f"VM {name}: unable to add binding for slot {slot_id}/{port_id}")
        try:
            main, _real, wic = self._slot_target(vm, slot_id, port_id)
        except ValueError:
            raise fail from None
        if wic is None:
            if main is not None or card_name not in vm.spec.cards:
                raise fail
            vm.slots[slot_id] = Card(card_name, slot_id, port_id)
        else:
            assert main is not None
            if main.subs[wic] is not None or card_name not in vm.spec.wics:
                raise fail
            main.subs[wic] = Card(card_name, slot_id, port_id)

    def _remove_card(self, vm: VM, slot_id: int, port_id: int) -> bool:
        try:
            main, _real, wic = self._slot_target(vm, slot_id, port_id)
        except ValueError:
            return False
        card = main if wic is None or main is None else main.subs[wic]
        if card is None or card.active or any(card.subs):
            return False
        if slot_id < vm.spec.nr_slots and main is not None:
            # dynamips drops the NIO bindings of the whole slot, sub-slots included
            for holder in (main, *(s for s in main.subs if s is not None)):
                for nio_name in holder.nios.values():
                    self._release(nio_name)
                holder.nios.clear()
                holder.enabled.clear()
        if wic is None:
            vm.slots[slot_id] = None
        else:
            assert main is not None
            main.subs[wic] = None
        return True

    def _vm_slot_remove_binding(self, name, slot, port):
        vm = self._vm(name)
        slot_id, port_id = atoi(slot), atoi(port)
        if not self._remove_card(vm, slot_id, port_id):
            raise Reply(205, f"VM {name}: unable to remove binding for slot {slot_id}/{port_id}")

    def _vm_slot_add_nio_binding(self, name, slot, port, nio_name):
        vm = self._vm(name)
        slot_id, port_id = atoi(slot), atoi(port)
        card, real = self._binding_card(vm, slot_id, port_id)
        if card is None or real in card.nios or not self._acquire(nio_name):
            raise Reply(205, f"VM {name}: unable to add binding for slot {slot_id}/{port_id}")
        card.nios[real] = nio_name

    def _vm_slot_remove_nio_binding(self, name, slot, port):
        vm = self._vm(name)
        slot_id, port_id = atoi(slot), atoi(port)
        card, real = self._binding_card(vm, slot_id, port_id)
        if card is None or real not in card.nios:
            raise Reply(
                205, f"VM {name}: unable to remove NIO binding for slot {slot_id}/{port_id}"
            )
        self._release(card.nios.pop(real))
        card.enabled.discard(real)

    def _vm_slot_enable_nio(self, name, slot, port):
        vm = self._vm(name)
        slot_id, port_id = atoi(slot), atoi(port)
        card, real = self._binding_card(vm, slot_id, port_id)
        if card is None or real not in card.nios or not card.active or not card.port_ok(real):
            raise Reply(205, f"VM {name}: unable to enable NIO for slot {slot_id}/{port_id}")
        if real in card.enabled and CARD_PORTS.get(card.name, (1, True))[1]:
            raise Reply(205, f"VM {name}: unable to enable NIO for slot {slot_id}/{port_id}")
        card.enabled.add(real)

    def _vm_slot_disable_nio(self, name, slot, port):
        vm = self._vm(name)
        slot_id, port_id = atoi(slot), atoi(port)
        card, real = self._binding_card(vm, slot_id, port_id)
        if card is None or real not in card.nios or not card.active or not card.port_ok(real):
            raise Reply(205, f"VM {name}: unable to disable NIO for slot {slot_id}/{port_id}")
        card.enabled.discard(real)

    def _vm_slot_oir_start(self, name, slot, port):
        vm = self._vm(name)
        slot_id, port_id = atoi(slot), atoi(port)
        if slot_id == 0:
            raise Reply(209, f"VM {name}: unable to engage OIR for slot {slot_id}/{port_id}")
        if not vm.hardware:
            raise Crash(-11)  # 0.2.14 dereferences the missing CPU group: SIGSEGV
        card = vm.slots[slot_id] if slot_id < vm.spec.nr_slots else None
        if card is not None and self._driver_starts(vm, card, slot_id):
            card.activate()

    def _vm_slot_oir_stop(self, name, slot, port):
        vm = self._vm(name)
        slot_id, port_id = atoi(slot), atoi(port)
        card = vm.slots[slot_id] if slot_id < vm.spec.nr_slots else None
        if card is None or slot_id == 0:
            raise Reply(210, f"VM {name}: unable to engage OIR for slot {slot_id}/{port_id}")
        card.deactivate()

    # -- platform modules ----------------------------------------------------------------------
    def _platform_vm(self, platform: str, name: str) -> VM:
        vm = self.vms.get(name)
        if vm is None:
            raise Reply(208, f"unable to find VM '{name}'")
        if vm.platform != platform:
            raise Reply(212, f"VM '{name}' is not a VM type {platform}")
        return vm

    def _platform_list(self, platform):
        return [f"101 {n}" for n in _listing(self.vms) if self.vms[n].platform == platform]

    def _platform_show_hardware(self, platform, name):
        self._platform_vm(platform, name)

    def _platform_get_mac_addr(self, platform, name):
        vm = self._platform_vm(platform, name)
        if vm.mac is None:
            raw = f"{vm.spec.mac_prefix:02x}{vm.instance_id & 0xFF:02x}{self.pid_bits:04x}0000"
            return [f"100-{raw[0:4]}.{raw[4:8]}.{raw[8:12]}"]
        return [f"100-{vm.mac}"]

    def _platform_set_mac_addr(self, platform, name, mac):
        vm = self._platform_vm(platform, name)
        dotted = re.fullmatch(r"([0-9a-fA-F]{1,4})\.([0-9a-fA-F]{1,4})\.([0-9a-fA-F]{1,4})", mac)
        colons = re.fullmatch(r"([0-9a-fA-F]{1,2})" + r":([0-9a-fA-F]{1,2})" * 5, mac)
        if dotted:
            raw = "".join(f"{int(g, 16):04x}" for g in dotted.groups())
        elif colons:
            raw = "".join(f"{int(g, 16):02x}" for g in colons.groups())
        else:
            raise Reply(206, f"unable to set MAC address for router '{name}'")
        vm.mac = f"{raw[0:4]}.{raw[4:8]}.{raw[8:12]}"

    def _platform_set_system_id(self, platform, name, value):
        self._platform_vm(platform, name).settings["system_id"] = value

    def _platform_set_iomem(self, platform, name, value):
        self._platform_vm(platform, name).settings["iomem"] = str(atoi(value))

    def _set_chassis(self, vm: VM, chassis: str) -> None:
        vm.chassis = chassis
        board = CHASSIS_MAINBOARD[vm.platform][chassis]
        if vm.platform in ("c1700", "c2600") and vm.slots[0] is not None:
            self._remove_card(vm, 0, 0)  # fails silently while WICs are installed
        if board is not None and vm.slots[0] is None:
            vm.slots[0] = Card(board, 0, 0)

    def _platform_set_chassis(self, platform, name, chassis):
        vm = self._platform_vm(platform, name)
        if chassis not in CHASSIS_MAINBOARD[platform] or vm.status == 2:
            raise Reply(206, f"unable to set Chassis type for router '{name}'")
        self._set_chassis(vm, chassis)

    def _c7200_set_npe(self, platform, name, npe):
        vm = self._platform_vm(platform, name)
        if npe not in NPES or vm.status == 2:
            raise Reply(206, f"unable to set NPE type for router '{name}'")
        vm.settings["npe"] = npe

    def _c7200_set_midplane(self, platform, name, midplane):
        vm = self._platform_vm(platform, name)
        if midplane not in ("std", "vxr") or vm.status == 2:
            raise Reply(206, f"unable to set Midplane type for router '{name}'")
        vm.settings["midplane"] = midplane

    def _c7200_set_temp_sensor(self, platform, name, index, value):
        self._platform_vm(platform, name).settings[f"sensor{atoi(index)}"] = value

    def _c7200_set_power_supply(self, platform, name, index, value):
        self._platform_vm(platform, name).settings[f"power{atoi(index)}"] = value

    # -- nio -----------------------------------------------------------------------------------
    def _nio_create(self, verb: str, name: str, *args: str) -> list[str]:
        fail = Reply(206, f"unable to create {_NIO_KINDS[verb]} NIO")
        if name in self.nios:
            raise fail
        try:
            sock = self._open_nio(verb, args)
        except OSError:
            raise fail from None
        self.nios[name] = NIO(name, verb[7:], args, sock)
        return [f"100-NIO '{name}' created"]

    def _open_nio(self, verb: str, args: tuple[str, ...]) -> socket.socket | None:
        if verb == "create_udp":
            remote = socket.getaddrinfo(args[1], atoi(args[2]), type=socket.SOCK_DGRAM)[0]
            sock = socket.socket(remote[0], socket.SOCK_DGRAM)
            try:
                sock.bind(("::" if remote[0] == socket.AF_INET6 else "0.0.0.0", atoi(args[0])))
                sock.connect(remote[4])
            except OSError:
                sock.close()
                raise
            return sock
        if verb == "create_unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                sock.bind(self._path(args[0]))
            except OSError:
                sock.close()
                raise
            return sock
        if verb == "create_vde" and not os.path.exists(self._path(args[0])):
            raise FileNotFoundError(args[0])
        if verb in ("create_gen_eth", "create_linux_eth"):
            if not os.path.exists(f"/sys/class/net/{args[0]}"):
                raise FileNotFoundError(args[0])
        return None

    def _close_nio(self, nio: NIO) -> None:
        for slot in list(nio.captures):
            self._free_filter(nio, slot)
        if nio.sock is not None:
            if nio.sock.family == socket.AF_UNIX:
                with contextlib.suppress(OSError):
                    os.remove(self._path(nio.args[0]))
            nio.sock.close()

    def _nio_delete(self, name):
        nio = self.nios.get(name)
        if nio is None or nio.refs:
            raise Reply(207, f"unable to delete NIO '{name}'")
        self._close_nio(nio)
        del self.nios[name]
        return [f"100-NIO '{name}' deleted"]

    def _nio_rename(self, old, new):
        nio = self._nio_get(old)
        if new in self.nios:
            raise Reply(213, f"unable to rename NIO '{old}', '{new}' already exists")
        _registry_rename(self.nios, old, new)
        nio.name = new
        return [f"100-NIO '{old}' renamed to '{new}'"]

    def _nio_get(self, name: str) -> NIO:
        try:
            return self.nios[name]
        except KeyError:
            raise Reply(208, f"unable to find object '{name}'") from None

    def _nio_list(self):
        return [f"101 {name}" for name in _listing(self.nios)]

    @staticmethod
    def _filter_slot(direction: str) -> str:
        return {0: "rx", 1: "tx"}.get(atoi(direction), "both")

    def _nio_bind_filter(self, name, direction, filter_name):
        nio = self._nio_get(name)
        if filter_name not in FILTERS:
            raise Reply(208, f"Unknown filter {filter_name}")
        slot = self._filter_slot(direction)
        nio.filters[slot] = filter_name
        nio.captures.pop(slot, None)  # the data is dropped (an open capture file stays open)

    def _free_filter(self, nio: NIO, slot: str) -> None:
        capture = nio.captures.pop(slot, None)
        if capture is not None:  # libpcap writes the buffered file header when it closes
            path, dlt = capture
            with contextlib.suppress(OSError), open(path, "r+b") as handle:
                if not handle.read(1):
                    handle.write(_pcap_header(dlt))

    def _nio_unbind_filter(self, name, direction):
        nio = self._nio_get(name)
        slot = self._filter_slot(direction)
        if slot not in nio.filters:
            raise Reply(208, "No filter previously defined")
        self._free_filter(nio, slot)  # 0.2.14 frees the data but keeps the filter bound

    def _nio_setup_filter(self, name, direction, *options):
        nio = self._nio_get(name)
        slot = self._filter_slot(direction)
        kind = nio.filters.get(slot)
        failed = Reply(215, "Failed to setup filter")
        if kind is None or len(options) != (2 if kind == "capture" else 1):
            raise failed
        if kind == "capture":
            self._free_filter(nio, slot)
            path = self._path(options[1])
            try:
                open(path, "wb").close()
            except OSError:
                raise failed from None
            nio.captures[slot] = (path, DLT.get(options[0].lower(), 1))

    def _nio_get_stats(self, name):
        self._nio_get(name)
        return ["100-0 0 0 0"]

    def _nio_reset_stats(self, name):
        self._nio_get(name)

    def _nio_set_bandwidth(self, name, value):
        self._nio_get(name)

    def _nio_set_debug(self, name, value):
        self._nio_get(name)

    # -- switches, hubs, ATM and Frame Relay switches ------------------------------------------
    def _switch(self, module: str, name: str) -> Switch:
        try:
            return self.switches[module][name]
        except KeyError:
            raise Reply(208, f"unable to find object '{name}'") from None

    def _switch_create(self, module, name):
        label, long_name, _ = _SWITCH_TEXT[module]
        if name in self.switches[module]:
            raise Reply(206, f"unable to create {long_name} '{name}'")
        self.switches[module][name] = Switch(name, module)
        return [f"100-{label} '{name}' created"]

    def _switch_rename(self, module, old, new):
        label = _SWITCH_TEXT[module][0]
        table = self.switches[module]
        switch = self._switch(module, old)
        if new in table:
            raise Reply(213, f"unable to rename {label} '{old}', '{new}' already exists")
        _registry_rename(table, old, new)
        switch.name = new
        return [f"100-{label} '{old}' renamed to '{new}'"]

    def _free_switch(self, switch: Switch) -> None:
        for nio_name, _settings in switch.ports:
            self._release(nio_name)
        for vc in switch.vcs:
            self._release(vc[1])
            self._release(vc[len(vc) // 2 + 1])

    def _switch_delete(self, module, name):
        label = _SWITCH_TEXT[module][0]
        switch = self.switches[module].pop(name, None)
        if switch is None:
            raise Reply(207, f"unable to delete {label} '{name}'")
        self._free_switch(switch)
        return [f"100-{label} '{name}' deleted"]

    def _switch_list(self, module):
        return [f"101 {name}" for name in _listing(self.switches[module])]

    def _switch_add_nio(self, module, name, nio):
        switch = self._switch(module, name)
        if not self._acquire(nio):
            kind = _SWITCH_TEXT[module][2]
            raise Reply(205, f"unable to bind NIO '{nio}' to {kind} '{name}'")
        switch.ports.append([nio, ("access", 1)])
        return [f"100-NIO '{nio}' bound."]

    def _switch_remove_nio(self, module, name, nio):
        switch = self._switch(module, name)
        port = next((p for p in switch.ports if p[0] == nio), None)
        if port is None:
            kind = _SWITCH_TEXT[module][2]
            raise Reply(205, f"unable to bind NIO '{nio}' to {kind} '{name}'")
        switch.ports.remove(port)
        self._release(nio)
        return [f"100-NIO '{nio}' unbound."]

    def _port_setting(self, name: str, nio: str, setting: tuple) -> list[str]:
        switch = self._switch("ethsw", name)
        port = next((p for p in switch.ports if p[0] == nio), None)
        if port is None:
            raise Reply(205, "unable to apply port settings")
        port[1] = setting
        return ["100-Port settings OK"]

    def _ethsw_set_access_port(self, module, name, nio, vlan):
        return self._port_setting(name, nio, ("access", atoi(vlan)))

    def _ethsw_set_dot1q_port(self, module, name, nio, vlan):
        return self._port_setting(name, nio, ("dot1q", atoi(vlan)))

    def _ethsw_set_qinq_port(self, module, name, nio, vlan, ethertype="0x8100"):
        return self._port_setting(name, nio, ("qinq", atoi(vlan), strtoul(ethertype)))

    def _ethsw_show_mac_addr_table(self, module, name):
        self._switch(module, name)

    def _ethsw_clear_mac_addr_table(self, module, name):
        self._switch(module, name)

    def _vc(self, module: str, name: str, args: tuple, kind: str, create: bool) -> list[str]:
        """ATM VPC/VCC and Frame Relay VC: ``args`` = (in nio, ids..., out nio, ids...)."""
        switch = self._switch(module, name)
        half = len(args) // 2
        key = (kind, args[0], *map(atoi, args[1:half]), args[half], *map(atoi, args[half + 1 :]))
        what = {"vp": "VPC", "vc": "VCC" if module == "atmsw" else "VC"}[kind]
        ends = (args[0], args[half])
        if not create:
            if key not in switch.vcs or any(n not in self.nios for n in ends):
                raise Reply(205, f"unable to delete {what}")
            switch.vcs.remove(key)
            self._release(key[1])
            self._release(key[half + 1])
            return [f"100-{what} deleted"]
        same_input = {(vc[0], vc[1 : 1 + len(vc) // 2]) for vc in switch.vcs}
        taken = (kind, key[1 : 1 + half]) in same_input
        if module == "atmsw" and kind == "vc":  # a VCC cannot use a VPI switched as a VP
            taken = taken or ("vp", key[1:3]) in same_input
        if taken or any(n not in self.nios for n in ends):
            raise Reply(205, f"unable to create {what}")
        self._acquire(key[1])
        self._acquire(key[half + 1])
        switch.vcs.append(key)
        return [f"100-{what} created"]

    def _atmsw_create_vpc(self, module, name, *args):
        return self._vc(module, name, args, "vp", True)

    def _atmsw_delete_vpc(self, module, name, *args):
        return self._vc(module, name, args, "vp", False)

    def _atmsw_create_vcc(self, module, name, *args):
        return self._vc(module, name, args, "vc", True)

    def _atmsw_delete_vcc(self, module, name, *args):
        return self._vc(module, name, args, "vc", False)

    def _frsw_create_vc(self, module, name, *args):
        return self._vc(module, name, args, "vc", True)

    def _frsw_delete_vc(self, module, name, *args):
        return self._vc(module, name, args, "vc", False)


for _verb in _NIO_KINDS:
    setattr(
        FakeDynamips,
        f"_nio_{_verb}",
        lambda self, *args, _verb=_verb: self._nio_create(_verb, *args),
    )


def _pcap_header(link_type: int) -> bytes:
    return (
        bytes.fromhex("d4c3b2a102000400")
        + bytes(8)
        + (8192).to_bytes(4, "little")
        + (link_type.to_bytes(4, "little"))
    )


class Crash(Exception):
    """A command that makes the real dynamips die (the fake dies the same way)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


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


ACTIONS = ("error", "delay", "split", "drop", "exit", "garbage", "hang")
TELNET_GREETING = bytes.fromhex("fffd18fffb01fffb03fffe22")


class FakeHypervisorServer:
    """The fake served over TCP on loopback, in the current event loop."""

    def __init__(self, state: FakeDynamips, host: str = "127.0.0.1") -> None:
        self.state = state
        self.host = host
        self.faults: list[Fault] = []
        self.exit_code: int | None = None
        self.exited = asyncio.Event()
        self.ignore_stop = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task] = set()
        self._consoles: dict[str, asyncio.Server] = {}
        self.port = 0
        self.fault_file: Path | None = None
        self.record_file: Path | None = None
        self.log_file: Path | None = None
        self._fault_text: str | None = None
        state.console_hook = self._console

    @classmethod
    async def start(cls, host: str = "127.0.0.1", port: int = 0, **kwargs) -> FakeHypervisorServer:
        server = cls(FakeDynamips(**kwargs), host)
        server._server = await asyncio.start_server(server._client, host or None, port)
        server.port = server._server.sockets[0].getsockname()[1]
        return server

    def _load_faults(self) -> None:
        if self.fault_file is None:
            return
        try:
            text = self.fault_file.read_text()
        except OSError:
            return
        if text != self._fault_text:
            self._fault_text = text
            with contextlib.suppress(ValueError, TypeError):
                self.faults = [Fault(**item) for item in json.loads(text or "[]")]

    def _record(self, line: str) -> None:
        self.state.commands.append(line)
        if self.record_file is not None:
            with open(self.record_file, "a", encoding="utf-8", errors="surrogateescape") as f:
                f.write(line + "\n")

    def _log(self, text: str) -> None:
        if self.log_file is not None:
            with contextlib.suppress(OSError):
                with open(self.log_file, "a", encoding="utf-8", errors="replace") as log:
                    log.write(f"HYPERVISOR: {text}\n")

    @staticmethod
    async def _fgets(reader: asyncio.StreamReader, pending: bytearray) -> bytes | None:
        """What ``fgets(buffer, 512, ...)`` returns: up to 511 bytes, ending at a newline."""
        while b"\n" not in pending[:FGETS_SIZE] and len(pending) < FGETS_SIZE:
            data = await reader.read(4096)
            if not data:
                if not pending:
                    return None
                break
            pending.extend(data)
        end = pending.find(b"\n", 0, FGETS_SIZE)
        size = end + 1 if end >= 0 else min(len(pending), FGETS_SIZE)
        chunk = bytes(pending[:size])
        del pending[:size]
        return chunk

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        pending, line, command = bytearray(), bytearray(), bytearray()
        parser = CommandParser()
        try:
            while not self.exited.is_set():
                chunk = await self._fgets(reader, pending)
                if chunk is None:
                    break
                line.extend(chunk)
                if chunk.endswith(b"\n"):
                    self._record(_decode(bytes(line)).rstrip("\r\n"))
                    line.clear()
                data = chunk.split(b"\0", 1)[0]  # strlen()
                command.extend(data)
                if not data or not parser.feed(data):
                    continue
                text = _decode(bytes(command)).split("\n", 1)[0].rstrip("\r")
                command.clear()
                if not await self._answer(text, parser, writer):
                    break
                parser = CommandParser()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)  # type: ignore[arg-type]
            writer.close()

    async def _answer(self, text: str, parser: CommandParser, writer: asyncio.StreamWriter) -> bool:
        """Run one command (or its fault); False when the connection must end."""
        self._load_faults()
        fault = next((f for f in self.faults if f.matches(text)), None)
        if fault is not None and fault.times is not None:
            fault.times -= 1
        action = fault.action if fault else ""
        self._log(f"exec_cmd: {text}")
        if action == "delay":
            await asyncio.sleep(fault.seconds)
        if action == "hang":
            await asyncio.Event().wait()
        if action == "drop":
            return False
        if action == "exit":
            self.die(fault.exit_code)
            return False
        if action == "error":
            lines = fault.reply.split("\r\n")
        else:
            try:
                lines = self.state.execute(parser)
            except Crash as crash:
                self.die(crash.code)
                return False
        data = "".join(f"{reply}\r\n" for reply in lines).encode("utf-8", "surrogateescape")
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
            if self.ignore_stop:
                self.state.stopped = False
                return True
            self.die(0)
            return False
        if self.state.closing:
            self.state.closing = False
            return False
        return True

    # -- router consoles -----------------------------------------------------------------------
    def _console(self, vm: VM, started: bool) -> None:
        if started:
            task = asyncio.get_running_loop().create_task(self._open_console(vm))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            server = self._consoles.pop(vm.name, None)
            if server is not None:
                server.close()

    async def _open_console(self, vm: VM) -> None:
        greeting = (
            TELNET_GREETING
            + (
                f'Connected to Dynamips VM "{vm.name}" (ID {vm.instance_id}, type {vm.platform}) '
                "- Console port\r\nPress ENTER to get the prompt.\r\n"
            ).encode()
        )

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                writer.write(greeting)
                while data := await reader.read(4096):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        with contextlib.suppress(OSError):
            assert vm.console is not None
            self._consoles[vm.name] = await asyncio.start_server(
                serve, self.host or None, vm.console
            )

    def die(self, code: int) -> None:
        """Stop serving at once, as a crashed or stopped process would."""
        self.exit_code = code
        self.exited.set()
        if self._server is not None:
            self._server.close()
        for console in self._consoles.values():
            console.close()
        self._consoles.clear()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):  # e.g. a connection held by a "hang" fault
            if task is not asyncio.current_task():
                task.cancel()

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
    parser.add_argument("--ignore-stop", action="store_true", help="a wedged dynamips")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    host = host.strip("[]")
    if args.ignore_stop:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        server = await FakeHypervisorServer.start(host, int(port), version=args.version)
    except OSError as err:
        print(f"Hypervisor: unable to create TCP sockets: {err}", flush=True)
        return 1
    server.fault_file = args.faults
    server.ignore_stop = args.ignore_stop
    if args.record_dir:
        server.record_file = args.record_dir / f"{server.port}.log"
    if args.log:
        server.log_file = Path(args.log)
        server._log(f"Release {args.version}/Linux (fake); started on {args.listen}")
    print(f"Hypervisor TCP control server started (IP {host} port {server.port}).", flush=True)
    watchdog = asyncio.get_running_loop().create_task(_exit_with_parent(server))
    await server.exited.wait()
    watchdog.cancel()
    return server.exit_code or 0


async def _exit_with_parent(server: FakeHypervisorServer) -> None:
    """A fake whose server (a test run) was killed outright must not linger as an orphan."""
    parent = os.getppid()
    while os.getppid() == parent:  # noqa: ASYNC110 (no event exists for a parent exit)
        await asyncio.sleep(1.0)
    server.die(0)


def main() -> None:
    code = asyncio.run(_main(sys.argv[1:]))
    sys.stdout.flush()
    if code < 0:  # die by that signal, as a crashed dynamips does (without a core file)
        with contextlib.suppress(ImportError, ValueError, OSError):
            import resource

            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        with contextlib.suppress(OSError, ValueError):  # SIGKILL/SIGSTOP cannot be reset
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code)


if __name__ == "__main__":
    main()
