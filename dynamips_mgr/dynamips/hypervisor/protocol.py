"""The dynamips hypervisor text protocol, without I/O.

Every command line the server sends is built here from a signature table, so quoting and
argument checks live in one place. Replies are parsed by :class:`ReplyParser`, which takes
bytes in any chunking and hands back complete replies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ...errors import ArgumentError

# Argument kinds: "name"/"path" are quoted free text, "int" an integer, "token" a bare word.
# A trailing "?" marks an optional argument.
SIGNATURES: dict[str, str] = {
    "hypervisor version": "",
    "hypervisor working_dir": "path",
    "hypervisor stop": "",
    "hypervisor reset": "",
    "hypervisor module_list": "",
    "hypervisor cmd_list": "token",
    "vm create": "name int token",
    "vm rename": "name name",
    "vm delete": "name",
    "vm clean_delete": "name",
    "vm start": "name",
    "vm stop": "name",
    "vm suspend": "name",
    "vm resume": "name",
    "vm get_status": "name",
    "vm list": "",
    "vm list_con_ports": "",
    "vm set_con_tcp_port": "name int",
    "vm set_aux_tcp_port": "name int",
    "vm set_ios": "name path",
    "vm set_config": "name path path?",
    "vm extract_config": "name",
    "vm set_ram": "name int",
    "vm set_nvram": "name int",
    "vm set_ram_mmap": "name int",
    "vm set_sparse_mem": "name int",
    "vm set_clock_divisor": "name int",
    "vm set_exec_area": "name int",
    "vm set_disk0": "name int",
    "vm set_disk1": "name int",
    "vm set_idle_pc": "name token",
    "vm set_idle_pc_online": "name int token",
    "vm get_idle_pc_prop": "name int",
    "vm show_idle_pc_prop": "name int",
    "vm set_idle_max": "name int int",
    "vm set_idle_sleep_time": "name int int",
    "vm set_ghost_status": "name int",
    "vm set_ghost_file": "name path",
    "vm cpu_usage": "name int",
    "vm slot_bindings": "name",
    "vm slot_add_binding": "name int int token",
    "vm slot_remove_binding": "name int int",
    "vm slot_oir_start": "name int int",
    "vm slot_oir_stop": "name int int",
    "vm slot_add_nio_binding": "name int int token",
    "vm slot_remove_nio_binding": "name int int",
    "vm slot_enable_nio": "name int int",
    "vm slot_disable_nio": "name int int",
    "nio create_udp": "token int token int",
    "nio create_unix": "token path path",
    "nio create_vde": "token path path",
    "nio create_tap": "token path",
    "nio create_gen_eth": "token path",
    "nio create_linux_eth": "token path",
    "nio create_null": "token",
    "nio delete": "token",
    "nio list": "",
    "nio bind_filter": "token int token",
    "nio unbind_filter": "token int",
    "nio setup_filter": "token int token path?",  # freq_drop N / capture <dlt> "<file>"
    "nio get_stats": "token",
    "nio reset_stats": "token",
    "nio set_bandwidth": "token int",
    "ethsw create": "name",
    "ethsw list": "",
    "ethsw rename": "name name",
    "ethsw delete": "name",
    "ethsw add_nio": "name token",
    "ethsw remove_nio": "name token",
    "ethsw set_access_port": "name token int",
    "ethsw set_dot1q_port": "name token int",
    "ethsw set_qinq_port": "name token int token?",
    "ethsw show_mac_addr_table": "name",
    "ethsw clear_mac_addr_table": "name",
    "nio_bridge create": "name",
    "nio_bridge list": "",
    "nio_bridge rename": "name name",
    "nio_bridge delete": "name",
    "nio_bridge add_nio": "name token",
    "nio_bridge remove_nio": "name token",
    "atmsw create": "name",
    "atmsw list": "",
    "atmsw rename": "name name",
    "atmsw delete": "name",
    "atmsw create_vpc": "name token int token int",
    "atmsw delete_vpc": "name token int token int",
    "atmsw create_vcc": "name token int int token int int",
    "atmsw delete_vcc": "name token int int token int int",
    "frsw create": "name",
    "frsw list": "",
    "frsw rename": "name name",
    "frsw delete": "name",
    "frsw create_vc": "name token int token int",
    "frsw delete_vc": "name token int token int",
}
PLATFORMS = ("c1700", "c2600", "c2691", "c3600", "c3725", "c3745", "c7200")
_PLATFORM_SIGNATURES = {
    "get_mac_addr": "name",
    "set_mac_addr": "name token",
    "set_system_id": "name name",
    "set_chassis": "name token",
    "set_iomem": "name int",
    "set_npe": "name token",
    "set_midplane": "name token",
    "set_temp_sensor": "name int int",
    "set_power_supply": "name int int",
}
for _platform in PLATFORMS:
    for _verb, _sig in _PLATFORM_SIGNATURES.items():
        SIGNATURES[f"{_platform} {_verb}"] = _sig

_TOKEN = re.compile(r"^[A-Za-z0-9_.:+/@%\-]+$")
_FORBIDDEN = re.compile(r'["\x00-\x1f\x7f]')


def check_text(field_name: str, value: str, *, allow_empty: bool = False) -> str:
    """Refuse text that dynamips cannot carry inside a quoted argument."""
    if not isinstance(value, str):
        raise ArgumentError(field_name, "must be a string")
    if not value and not allow_empty:
        raise ArgumentError(field_name, "must not be empty")
    bad = _FORBIDDEN.search(value)
    if bad:
        shown = "a double quote" if bad.group() == '"' else f"control character {bad.group()!r}"
        raise ArgumentError(field_name, f"{shown} cannot be sent to dynamips")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ArgumentError(field_name, "is not valid Unicode text") from None
    return value


def _render(kind: str, value: object, label: str) -> str:
    if kind in ("name", "path"):
        return '"' + check_text(label, str(value), allow_empty=(kind == "path")) + '"'
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ArgumentError(label, f"{value!r} is not an integer")
        return str(value)
    text = str(value)
    if not _TOKEN.match(text):
        raise ArgumentError(label, f"{text!r} is not a plain word dynamips accepts")
    return text


# Commands that take long by design: their reply is awaited at least this many seconds,
# whatever the configured command timeout (the idle-PC sampler runs ~10.2 s).
MIN_TIMEOUTS: dict[str, float] = {"vm get_idle_pc_prop": 30.0, "vm show_idle_pc_prop": 30.0}


def format_command(command: str, *args: object) -> str:
    """Build one command line (without the newline) from the signature table."""
    try:
        signature = SIGNATURES[command]
    except KeyError:
        raise ValueError(f"unknown hypervisor command {command!r}") from None
    kinds = signature.split()
    required = [k for k in kinds if not k.endswith("?")]
    if not len(required) <= len(args) <= len(kinds):
        raise ValueError(f"{command} takes {len(kinds)} arguments, got {len(args)}")
    parts = [command]
    for position, (kind, value) in enumerate(zip(kinds, args, strict=False), start=1):
        label = f"{command} argument {position} ({kind.rstrip('?')})"
        parts.append(_render(kind.rstrip("?"), value, label))
    return " ".join(parts)


@dataclass
class Reply:
    """One complete reply: its final code and the text lines (prefixes removed)."""

    code: int
    lines: list[str] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return 100 <= self.code < 200

    @property
    def text(self) -> str:
        """The final line's text (the error message of a 2xx reply)."""
        return self.raw[-1][4:] if self.raw else ""


class ProtocolViolation(Exception):
    """The peer sent something that is not a dynamips reply line."""


_LINE = re.compile(r"^([12]\d\d)([ -])(.*)$", re.S)


class ReplyParser:
    """Turns bytes into :class:`Reply` objects; feed it whatever the socket returned."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pending: list[str] = []

    @property
    def idle(self) -> bool:
        """True when no partial reply is buffered."""
        return not self._buffer and not self._pending

    def feed(self, data: bytes) -> list[Reply]:
        self._buffer.extend(data)
        replies: list[Reply] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                return replies
            raw = bytes(self._buffer[:end]).rstrip(b"\r").decode("utf-8", "replace")
            del self._buffer[: end + 1]
            match = _LINE.match(raw)
            if match is None:
                raise ProtocolViolation(f"unexpected line from dynamips: {raw[:200]!r}")
            self._pending.append(raw)
            if match.group(2) == "-":
                replies.append(self._finish(int(match.group(1))))

    def _finish(self, code: int) -> Reply:
        raw, self._pending = self._pending, []
        lines = [line[4:] for line in raw]
        if 100 <= code < 200 and lines[-1] == "OK":
            lines.pop()
        return Reply(code, lines, raw)
