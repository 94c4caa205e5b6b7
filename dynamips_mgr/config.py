"""INI configuration with GNS3-compatible [Server] and [Dynamips] sections."""

from __future__ import annotations

import configparser
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_BOOLEANS = {
    "1": True,
    "yes": True,
    "true": True,
    "on": True,
    "0": False,
    "no": False,
    "false": False,
    "off": False,
}

# (section, key) -> (type, default, one-line help). config.example.ini is generated from this.
KEYS: dict[tuple[str, str], tuple[type, Any, str]] = {
    ("Server", "host"): (str, "127.0.0.1", "address the HTTP API binds to"),
    ("Server", "port"): (int, 3080, "TCP port of the HTTP API"),
    ("Server", "local"): (bool, False, "local mode: allow project paths, reload and shutdown"),
    ("Server", "allow_remote_console"): (bool, False, "serve router consoles on all addresses"),
    ("Server", "console_start_port_range"): (int, 5000, "first TCP port for consoles"),
    ("Server", "console_end_port_range"): (int, 10000, "last TCP port for consoles"),
    ("Server", "udp_start_port_range"): (int, 10000, "first UDP port for links"),
    ("Server", "udp_end_port_range"): (int, 20000, "last UDP port for links"),
    ("Server", "images_path"): (
        str,
        "~/GNS3/images",
        "images root; IOS images in <images_path>/IOS",
    ),
    ("Server", "projects_path"): (str, "~/GNS3/projects", "default parent folder of projects"),
    ("Server", "project_directory"): (str, "", "if set, used instead of projects_path"),
    ("Server", "auth"): (bool, False, "require HTTP basic auth (needs user)"),
    ("Server", "user"): (str, "", "basic auth user name"),
    ("Server", "password"): (str, "", "basic auth password"),
    ("Server", "debug"): (bool, False, "debug logging"),
    ("Dynamips", "dynamips_path"): (str, "dynamips", "dynamips executable (PATH lookup if bare)"),
    ("Dynamips", "ghost_ios_support"): (bool, True, "share router RAM through ghost IOS files"),
    ("Dynamips", "mmap_support"): (bool, True, "false forces mmap off on every router"),
    ("Dynamips", "sparse_memory_support"): (bool, True, "false forces sparse memory off"),
    ("Dynamips", "allocate_aux_console_ports"): (bool, False, "give every router an AUX port"),
    ("Dynamips", "command_timeout"): (float, 30.0, "seconds to wait for one hypervisor reply"),
    ("Dynamips", "connect_timeout"): (float, 10.0, "seconds to wait for a new hypervisor"),
    ("Dynamips", "stop_timeout"): (float, 3.0, "seconds a hypervisor gets to exit before kill"),
    ("Dynamips", "nodes_per_hypervisor"): (int, 1, "nodes of one project sharing a process"),
    ("Dynamips", "idlepc_threshold"): (int, 70, "auto idle-PC: accepted CPU use in percent"),
    ("Dynamips", "idlepc_measure_seconds"): (float, 1.0, "auto idle-PC: window per candidate"),
    ("Dynamips", "idlepc_boot_timeout"): (float, 20.0, "auto idle-PC: max wait for a boot"),
}

LOOKUP = ("./dynamips_mgr.ini", "~/.config/dynamips_mgr/dynamips_mgr.ini")


class ConfigError(Exception):
    """A configuration value is invalid; the message names file, section and key."""


def _convert(kind: type, raw: str) -> Any:
    if kind is bool:
        value = _BOOLEANS.get(raw.strip().lower())
        if value is None:
            raise ValueError(f"not a boolean: {raw!r} (use true/false, yes/no, on/off, 1/0)")
        return value
    if kind is int:
        try:
            return int(raw.strip())
        except ValueError:
            raise ValueError(f"not an integer: {raw!r}") from None
    if kind is float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError(f"not a number: {raw!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"not a finite number: {raw!r}")
        return value
    return raw.strip()


@dataclass
class Config:
    """Typed settings: defaults, then the file, then command-line overrides."""

    values: dict[tuple[str, str], Any]
    path: Path | None = None
    overrides: dict[tuple[str, str], Any] | None = None

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, overrides: dict | None = None) -> Config:
        chosen = Path(path) if path else _find_default()
        if path and not chosen.is_file():
            raise ConfigError(f"{chosen}: configuration file not found")
        values = {key: spec[1] for key, spec in KEYS.items()}
        if chosen is not None:
            values.update(_read_file(chosen))
        config = cls(values, chosen, dict(overrides or {}))
        config.values.update(config.overrides)
        config.validate()
        return config

    @classmethod
    def defaults(cls, **server: Any) -> Config:
        """Embedded defaults with some [Server] values replaced (handy for tests)."""
        overrides = {("Server", k): v for k, v in server.items()}
        config = cls({key: spec[1] for key, spec in KEYS.items()}, None, overrides)
        config.values.update(overrides)
        config.validate()
        return config

    def reload(self) -> None:
        """Re-read the file (if any) and re-apply the command-line overrides."""
        if self.path is not None:
            values = {**self.values, **_read_file(self.path), **(self.overrides or {})}
            Config(values, self.path, self.overrides).validate()  # bad file: values unchanged
            self.values.update(values)

    def get(self, section: str, key: str) -> Any:
        return self.values[(section, key)]

    def set(self, section: str, key: str, value: Any) -> None:
        self.values[(section, key)] = value

    def server(self, key: str) -> Any:
        return self.values[("Server", key)]

    def dynamips(self, key: str) -> Any:
        return self.values[("Dynamips", key)]

    def _where(self, section: str, key: str) -> str:
        """Where a value came from, for error messages: the command line or the file."""
        if (section, key) in (self.overrides or {}):
            return "command line"
        return str(self.path) if self.path else "configuration"

    def validate(self) -> None:
        def fail(section: str, key: str, text: str) -> ConfigError:
            return ConfigError(f"{self._where(section, key)}: [{section}] {key}: {text}")

        for lo, hi in (
            ("console_start_port_range", "console_end_port_range"),
            ("udp_start_port_range", "udp_end_port_range"),
        ):
            start, end = self.server(lo), self.server(hi)
            for key, port in ((lo, start), (hi, end)):
                if not 1 <= port <= 65535:
                    raise fail("Server", key, f"{port} is not a port (1-65535)")
            if end < start:
                raise fail("Server", hi, f"{end} is lower than {lo} {start}")
        if not 0 <= self.server("port") <= 65535:
            raise fail("Server", "port", f"{self.server('port')} is not a port (0-65535)")
        for key in ("command_timeout", "connect_timeout", "stop_timeout"):
            if self.dynamips(key) <= 0:
                raise fail("Dynamips", key, "must be positive")
        if self.dynamips("nodes_per_hypervisor") < 1:
            raise fail("Dynamips", "nodes_per_hypervisor", "must be at least 1")

    @property
    def images_dir(self) -> Path:
        return Path(os.path.expanduser(self.server("images_path"))).resolve() / "IOS"

    @property
    def projects_location(self) -> Path:
        chosen = self.server("project_directory") or self.server("projects_path")
        return Path(os.path.normpath(os.path.expanduser(chosen))).absolute()


def _find_default() -> Path | None:
    for candidate in LOOKUP:
        path = Path(os.path.expanduser(candidate))
        if path.is_file():
            return path
    return None


def _read_file(path: Path) -> dict[tuple[str, str], Any]:
    parser = configparser.RawConfigParser()
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except (OSError, configparser.Error, UnicodeDecodeError) as err:
        text = " ".join(str(err).split())  # one line, whatever configparser says
        raise ConfigError(f"{path}: cannot read configuration: {text}") from None
    values: dict[tuple[str, str], Any] = {}
    for section in parser.sections():
        for key, raw in parser.items(section):
            spec = KEYS.get((section, key))
            if spec is None:
                continue  # other GNS3 sections and keys are accepted and ignored
            try:
                values[(section, key)] = _convert(spec[0], raw)
            except ValueError as err:
                raise ConfigError(f"{path}: [{section}] {key}: {err}") from None
    return values


def example_ini() -> str:
    """The text of config.example.ini: every key with its default and what it does."""
    lines = ["# dynamips_mgr configuration: every key, with its default.", ""]
    section = None
    for (sect, key), (_kind, default, text) in KEYS.items():
        if sect != section:
            if section is not None:
                lines.append("")
            lines.append(f"[{sect}]")
            section = sect
        shown = str(default).lower() if isinstance(default, bool) else default
        lines.append(f"; {text}")
        lines.append(f"{key} = {shown}".rstrip())
    return "\n".join(lines) + "\n"
