"""Tests of the synthetic IOS-like image, offline and booted on the real dynamips."""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dynamips_mgr.testing import synthetic_image as si

HOST = "127.0.0.1"
MIPS = ("c7200", "c3600", "c3725", "c3745", "c2691")
PPC = ("c2600", "c1700")
E_MACHINE = {
    "c7200": 25,
    "c3600": 30,
    "c3725": 97,
    "c3745": 105,
    "c2691": 102,
    "c2600": 43,
    "c1700": 51,
}
TELNET_NEGOTIATION = bytes.fromhex("FFFD18FFFB01FFFB03FFFE22")

requires_dynamips = pytest.mark.skipif(
    shutil.which("dynamips") is None, reason="dynamips is not installed"
)


# ------------------------------------------------------------------------- offline


@pytest.mark.parametrize("platform", si.PLATFORMS)
def test_elf_header(platform: str) -> None:
    image = si.build_image(platform)
    assert image[:7] == si.ELF_MAGIC == b"\x7fELF\x01\x02\x01"
    e_type, e_machine, e_version, e_entry = struct.unpack_from(">HHII", image, 16)
    assert (e_type, e_version, e_entry) == (2, 1, 0x80008000)
    assert e_machine == E_MACHINE[platform] == si.e_machine(platform)
    e_shoff, e_flags = struct.unpack_from(">II", image, 32)
    assert e_flags == (0x20000001 if platform in MIPS else 0)
    assert struct.unpack_from(">6H", image, 40) == (52, 32, 1, 40, 3, 2)
    # .text section: allocated + executable, loaded at the entry point from offset 0x1000.
    name, sh_type, flags, addr, offset, size = struct.unpack_from(">6I", image, e_shoff + 40)
    assert (name, sh_type, flags, addr, offset) == (1, 1, 6, 0x80008000, 0x1000)
    assert size % 16 == 0 and e_shoff == (0x1000 + size + 17 + 3) & ~3
    assert image[0x1000 + size : 0x1000 + size + 17] == b"\0.text\0.shstrtab\0"
    assert len(image) == e_shoff + 3 * 40 == 8716


@pytest.mark.parametrize("platform", si.PLATFORMS)
def test_reference_checksum_and_determinism(platform: str, tmp_path: Path) -> None:
    image = si.build_image(platform)
    assert hashlib.sha256(image).hexdigest() == si.REFERENCE_SHA256[platform]
    path = si.write_image(tmp_path / f"{platform}.image", platform)
    assert path.read_bytes() == image == si.build_image(platform)


def test_platforms_differ_only_where_expected() -> None:
    images = {p: si.build_image(p) for p in si.PLATFORMS}
    assert len(set(images.values())) == len(si.PLATFORMS)
    # c3725, c3745 and c2691 differ only in e_machine (bytes 18..19).
    for other in ("c3745", "c2691"):
        diff = [
            i for i, (a, b) in enumerate(zip(images["c3725"], images[other], strict=True)) if a != b
        ]
        assert diff and set(diff) <= {18, 19}


@pytest.mark.parametrize("platform", ["c7200", "c2600"])
def test_custom_strings_move_only_the_string_area(platform: str) -> None:
    default = si.build_image(platform)
    custom = si.build_image(platform, banner="HELLO THERE, TESTS", hostname="R1")
    # Hops (file 0x2000..0x214F) are unchanged; the strings follow them at 0x2150.
    assert custom[0x2000:0x2150] == default[0x2000:0x2150]
    strings = b"\r\n\r\nHELLO THERE, TESTS\r\n\r\n\0R1>\0\r\nR1>\0"
    assert custom[0x2150 : 0x2150 + len(strings)] == strings
    # Only the address operands of the prompt strings change in the code.
    diff = [i for i in range(0x1000, 0x2000) if custom[i] != default[i]]
    assert 0 < len(diff) <= 8
    assert si.boot_output("B", "H").endswith("\r\n\r\nB\r\n\r\nH>")


@pytest.mark.parametrize("platform", si.PLATFORMS)
def test_hop_addresses(platform: str) -> None:
    base = 0x60009000 if platform in MIPS else 0x80009000
    hops = si.hop_addresses(platform)
    assert len(hops) == si.HOP_COUNT == 20
    assert hops[0] == base and hops[1] == base + 0x20 and hops[-1] == base + 0x140
    assert si.idle_pc_candidates(platform) == hops[1:]
    assert si.recommended_idle_pc(platform) == base + 0x30
    assert si.isa(platform) == ("mips" if platform in MIPS else "ppc")


def test_unknown_platform() -> None:
    with pytest.raises(ValueError, match="unknown platform"):
        si.build_image("c7500")


# ------------------------------------------------------------------ real dynamips


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _poll(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.02):
    """Return the first truthy value of *predicate*, polling until *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Reply:
    code: int  # code of the final "NNN-" line
    lines: list[str]  # every line without its "NNN-" / "NNN " prefix, the final one last

    @property
    def text(self) -> str:
        return self.lines[-1]


class Hypervisor:
    """Minimal client for the dynamips hypervisor text protocol."""

    def __init__(self, port: int, sock: socket.socket) -> None:
        self.port = port
        self.sock = sock
        self.buffer = b""

    def send(self, command: str, timeout: float = 10.0) -> Reply:
        self.sock.sendall(command.encode() + b"\n")
        deadline = time.monotonic() + timeout
        lines: list[str] = []
        while True:
            while b"\r\n" not in self.buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no reply to {command!r} within {timeout} s")
                self.sock.settimeout(remaining)
                chunk = self.sock.recv(4096)
                if not chunk:
                    raise AssertionError(f"hypervisor closed the connection on {command!r}")
                self.buffer += chunk
            raw, self.buffer = self.buffer.split(b"\r\n", 1)
            line = raw.decode()
            lines.append(line[4:])
            if len(line) >= 4 and line[3] == "-":
                return Reply(int(line[:3]), lines)

    def ok(self, command: str, expect: str | None = None, timeout: float = 10.0) -> Reply:
        """Send *command*, assert a 1xx reply (and its final text if *expect* is given)."""
        reply = self.send(command, timeout)
        assert 100 <= reply.code < 200, f"{command!r} -> {reply}"
        if expect is not None:
            assert reply.text == expect, f"{command!r} -> {reply}"
        return reply


class Console:
    """Raw TCP client for a VM console (telnet negotiation is simply ignored)."""

    def __init__(self, port: int) -> None:
        self.sock = _poll(lambda: self._connect(port), 5.0, f"console port {port}")
        self.data = b""

    @staticmethod
    def _connect(port: int) -> socket.socket | None:
        try:
            return socket.create_connection((HOST, port), timeout=1.0)
        except OSError:
            return None

    def read_until(self, marker: bytes, timeout: float = 5.0) -> bytes:
        """Read until *marker* is in the data; return and consume the data up to it."""
        deadline = time.monotonic() + timeout
        while marker not in self.data:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{marker!r} not seen on the console; got {self.data!r}")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(4096)
            assert chunk, f"console closed; got {self.data!r}"
            self.data += chunk
        end = self.data.index(marker) + len(marker)
        head, self.data = self.data[:end], self.data[end:]
        return head

    def close(self) -> None:
        self.sock.close()


@dataclass
class Dynamips:
    proc: subprocess.Popen[bytes]
    hv: Hypervisor
    workdir: Path
    consoles: list[Console] = field(default_factory=list)

    def console(self, port: int) -> Console:
        console = Console(port)
        self.consoles.append(console)
        return console


def _spawn(workdir: Path, procs: list[subprocess.Popen[bytes]]) -> Dynamips:
    """Start `dynamips -H` on a free loopback port (a few tries) and connect to it."""
    for attempt in range(3):
        port = _free_port()
        with open(workdir / f"dynamips-{attempt}.out", "wb") as out:
            proc = subprocess.Popen(
                ["dynamips", "-N1", "-l", "log.txt", "-H", f"{HOST}:{port}"],
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        procs.append(proc)

        def connected(proc=proc, port=port) -> socket.socket | bool | None:
            if proc.poll() is not None:
                return True  # exited (port taken?): try again
            try:
                return socket.create_connection((HOST, port), timeout=1.0)
            except OSError:
                return None

        result = _poll(connected, 10.0, "the hypervisor port")
        if isinstance(result, socket.socket):
            return Dynamips(proc, Hypervisor(port, result), workdir)
    raise AssertionError(f"dynamips did not start; see {workdir}")


@pytest.fixture
def dynamips(tmp_path: Path) -> Iterator[Callable[[], Dynamips]]:
    """Factory of hypervisors run in tmp_path; every process started is killed at the end."""
    procs: list[subprocess.Popen[bytes]] = []
    started: list[Dynamips] = []

    def start() -> Dynamips:
        dyn = _spawn(tmp_path, procs)
        started.append(dyn)
        return dyn

    try:
        yield start
    finally:
        for dyn in started:
            for console in dyn.consoles:
                console.close()
            dyn.hv.sock.close()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


def _boot(
    dyn: Dynamips, platform: str, banner: str = si.BANNER, hostname: str = si.HOSTNAME
) -> tuple[Console, float]:
    """Create and start VM R1 with the image; return its console and boot-to-prompt time."""
    hv = dyn.hv
    image = si.write_image(dyn.workdir / "image", platform, banner=banner, hostname=hostname)
    cport = _free_port()
    assert hv.ok("hypervisor version").text.startswith("0.2.")
    hv.ok(f"vm create R1 1 {platform}", "VM 'R1' created")
    hv.ok(f'vm set_ios R1 "{image}"', "IOS image set for 'R1'")
    hv.ok(f"vm set_con_tcp_port R1 {cport}", "OK")
    hv.ok("vm get_status R1", "0")
    started = time.monotonic()
    hv.ok("vm start R1", "VM 'R1' started")
    console = dyn.console(cport)
    boot = si.boot_output(banner, hostname).encode()
    seen = console.read_until(boot)
    elapsed = time.monotonic() - started
    assert seen.startswith(TELNET_NEGOTIATION)
    greeting = f'Connected to Dynamips VM "R1" (ID 1, type {platform}) - Console port\r\n'
    assert greeting.encode() in seen
    assert seen.count(banner.encode()) == 1
    hv.ok("vm get_status R1", "2")
    return console, elapsed


def _shutdown(dyn: Dynamips) -> None:
    hv = dyn.hv
    hv.ok("vm stop R1", "VM 'R1' stopped")
    hv.ok("vm get_status R1", "0")
    hv.ok("vm delete R1")
    hv.ok("hypervisor stop", "OK")
    assert dyn.proc.wait(timeout=10) is not None


def _check_echo(console: Console, prompt: bytes) -> None:
    console.sock.sendall(b"abc\r")
    assert console.read_until(b"abc\r\n" + prompt) == b"abc\r\n" + prompt
    console.sock.sendall(b"\r\n")  # the LF never reaches the image
    assert console.read_until(b"\r\n" + prompt) == b"\r\n" + prompt


@pytest.mark.dynamips
@requires_dynamips
@pytest.mark.parametrize("platform", si.PLATFORMS)
def test_boot_banner_and_echo(dynamips: Callable[[], Dynamips], platform: str) -> None:
    dyn = dynamips()
    console, elapsed = _boot(dyn, platform)
    print(f"{platform}: vm start -> prompt in {elapsed:.3f} s")
    _check_echo(console, si.PROMPT.encode())
    _shutdown(dyn)


@pytest.mark.dynamips
@requires_dynamips
def test_boot_custom_strings_and_config(dynamips: Callable[[], Dynamips]) -> None:
    dyn = dynamips()
    hv = dyn.hv
    config = "!\nhostname R1\n!\nend\n"
    b64 = base64.b64encode(config.encode()).decode()
    console, _ = _boot(dyn, "c1700", banner="CUSTOM BANNER", hostname="R1")
    _check_echo(console, b"R1>")
    hv.ok(f"vm push_config R1 {b64}")
    assert hv.ok("vm extract_config R1").text == f"conf 'R1' '{b64}' ''"
    _shutdown(dyn)


def _cpu_seconds(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def _cpu_fraction(pid: int, window: float) -> float:
    """Fraction of one core used by *pid* over a *window*-second measurement."""
    cpu, start = _cpu_seconds(pid), time.monotonic()
    time.sleep(window)  # measurement window, not a wait for an event
    return (_cpu_seconds(pid) - cpu) / (time.monotonic() - start)


PROPOSAL = re.compile(r"^(0x[0-9a-f]{8}) \[(\d+)\]$")


@pytest.mark.dynamips
@requires_dynamips
@pytest.mark.parametrize("platform", ["c7200", "c2600"])
def test_idle_pc(dynamips: Callable[[], Dynamips], platform: str) -> None:
    pytest.importorskip("psutil")
    dyn = dynamips()
    hv = dyn.hv
    console, _ = _boot(dyn, platform)
    pid = dyn.proc.pid

    # Sampling takes ~10 s of a running VM: measure the busy CPU over the same window.
    cpu, start = _cpu_seconds(pid), time.monotonic()
    reply = hv.ok("vm get_idle_pc_prop R1 0", "OK", timeout=40)
    duration = time.monotonic() - start
    busy = (_cpu_seconds(pid) - cpu) / duration
    proposals = [(int(m[1], 16), int(m[2])) for m in map(PROPOSAL.match, reply.lines[:-1]) if m]
    assert len(proposals) == len(reply.lines) - 1, reply
    print(f"{platform}: proposals in {duration:.1f} s, CPU {busy:.0%}: {reply.lines[:-1]}")
    assert busy > 0.5
    candidates = si.idle_pc_candidates(platform)
    usable = [pc for pc, count in proposals if pc in candidates and 20 <= count <= 80]
    assert usable, f"no hop proposed with a count in 20..80: {reply.lines}"
    assert [pc for pc, _ in proposals] == sorted(pc for pc, _ in proposals)

    idle_pc = si.recommended_idle_pc(platform)
    idle_pc = idle_pc if idle_pc in usable else usable[0]
    hv.ok(f"vm set_idle_pc_online R1 0 0x{idle_pc:08x}", "OK")
    samples: list[float] = []

    def idle() -> bool:
        samples.append(_cpu_fraction(pid, 0.5))
        return samples[-1] < 0.15

    _poll(idle, 10.0, f"CPU to drop (samples {samples})", interval=0)
    print(f"{platform}: CPU after idle-pc 0x{idle_pc:08x}: {samples}")
    assert hv.ok("vm get_idle_pc_prop R1 0", "OK").lines == ["OK"]  # refused while set
    _check_echo(console, si.PROMPT.encode())
    _shutdown(dyn)
