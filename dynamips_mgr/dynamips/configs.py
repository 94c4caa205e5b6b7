"""Startup/private config files and the NVRAM round trip (pure functions, no I/O loop)."""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
from pathlib import Path

FRESH_PRIVATE_NVRAM = b"\nkerberos password \nend\n"


def default_paths(dynamips_id: int) -> tuple[str, str]:
    """Paths, relative to the module folder, of a router's default config files."""
    return (
        f"configs/i{dynamips_id}_startup-config.cfg",
        f"configs/i{dynamips_id}_private-config.cfg",
    )


def render(content: str, router_name: str) -> str:
    """What a pushed config becomes on disk: ``!\\n`` first, no CR, ``%h`` = router name."""
    if not content:
        return ""
    return "!\n" + content.replace("\r", "").replace("%h", router_name)


def confined(module_dir: Path, relative: str) -> Path:
    """``module_dir/relative``, refusing paths that leave the module folder."""
    root = module_dir.resolve()
    target = (root / relative).resolve()
    if os.path.isabs(relative) or not target.is_relative_to(root):
        raise ValueError(f"config path {relative} is outside {module_dir}")
    return target


def write_text(path: Path, text: str) -> None:
    """Write through a temporary file and rename, so a failure never truncates ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    try:
        with open(temporary, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise


def read_text(path: Path) -> str | None:
    """The file's text (invalid UTF-8 replaced), or None when missing or empty."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return data.decode("utf-8", "replace") or None


def parse_extract(lines: list[str]) -> tuple[bytes, bytes]:
    """Decode the reply of ``vm extract_config``: ``conf '<name>' '<b64>' '<b64>'``."""
    if not lines:
        return b"", b""
    tokens = lines[0].split(" ")
    parts = [token.strip("'") for token in tokens[-2:]] if len(tokens) >= 4 else ["", ""]
    decoded = []
    for part in parts:
        try:
            decoded.append(base64.b64decode(part, validate=False) if part else b"")
        except (binascii.Error, ValueError):
            decoded.append(b"")
    return decoded[0], decoded[1]


def startup_from_nvram(data: bytes) -> str:
    """NVRAM startup-config as the file gets it: no CR, and a first ``!`` line. The
    original always prepended ``!\n``, so a file grew one line per start/stop; here a
    text that already starts with ``!`` is kept as it is (the round trip is exact)."""
    text = data.decode("utf-8", "replace").replace("\r", "")
    return text if text.startswith("!") else "!\n" + text


def private_from_nvram(data: bytes) -> str | None:
    if not data or data == FRESH_PRIVATE_NVRAM:
        return None
    return data.decode("utf-8", "replace")


def rename_hostname(text: str, old: str, new: str) -> str:
    """Rewrite only ``hostname <old>`` lines; other occurrences of the name stay."""
    pattern = re.compile(rf"^(\s*hostname\s+){re.escape(old)}(\s*)$", re.M)
    return pattern.sub(lambda m: f"{m.group(1)}{new}{m.group(2)}", text)
