"""Spawn, connect, watch and stop one ``dynamips`` hypervisor process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

from ...errors import Conflict
from .connection import Connection
from .errors import HypervisorUnavailable

log = logging.getLogger(__name__)

MIN_VERSION = (0, 2, 11)
ExitCallback = Callable[["Hypervisor", int], None]


def find_dynamips(setting: str) -> str:
    """Resolve the executable from ``[Dynamips] dynamips_path`` (PATH lookup when bare)."""
    path = setting if os.sep in setting else shutil.which(setting)
    if not path or not os.path.exists(path):
        raise Conflict(f"Could not find Dynamips ({setting!r} is not installed or not on PATH)")
    if not os.path.isfile(path):
        raise Conflict(f"Dynamips {path} is not accessible (not a regular file)")
    if not os.access(path, os.X_OK):
        raise Conflict(f"Dynamips {path} is not executable")
    return path


def parse_version(text: str) -> tuple[int, ...] | None:
    """``0.2.14-amd64`` -> (0, 2, 14); None when no version can be read."""
    match = re.match(r"^(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if not match:
        return None
    return tuple(int(part or 0) for part in match.groups())


def _free_loopback_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class Hypervisor:
    """A running dynamips process in hypervisor mode and its control connection.

    The control port always listens on loopback. ``nodes`` counts the routers and devices
    hosted here; the owner stops the process when the last one leaves.
    """

    def __init__(
        self,
        executable: str,
        working_dir: Path,
        *,
        hv_id: int,
        host: str = "127.0.0.1",
        command_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        stop_timeout: float = 3.0,
    ) -> None:
        if host not in ("127.0.0.1", "::1"):
            raise ValueError("the hypervisor control port only listens on loopback")
        self.executable = executable
        self.working_dir = Path(working_dir)
        self.hv_id = hv_id
        self.host = host
        self.port = 0
        self.command_timeout = command_timeout
        self.connect_timeout = connect_timeout
        self.stop_timeout = stop_timeout
        self.version = ""
        self.version_tuple: tuple[int, ...] = ()
        self.nodes: set[object] = set()
        self.on_exit: list[ExitCallback] = []
        self._process: asyncio.subprocess.Process | None = None
        self._connection: Connection | None = None
        self._watcher: asyncio.Task | None = None
        self._stopping = False

    # -- files -------------------------------------------------------------------------
    @property
    def log_file(self) -> Path:
        return self.working_dir / f"dynamips_i{self.hv_id}_log.txt"

    @property
    def stdout_file(self) -> Path:
        return self.working_dir / f"dynamips_i{self.hv_id}_stdout.txt"

    def output_tail(self, limit: int = 2000) -> str:
        """The last ``limit`` characters of the process output and log."""
        text = ""
        for path in (self.stdout_file, self.log_file):
            with contextlib.suppress(OSError):
                text += path.read_text("utf-8", "replace")[-limit:]
        return text[-limit:]

    # -- state -------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def returncode(self) -> int | None:
        return self._process.returncode if self._process else None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.returncode is None

    def _describe(self) -> str:
        running = self.alive
        tail = "" if running else self.output_tail(500).strip()
        text = f", Dynamips process running: {running}"
        return text + (f"; process output: {tail}" if tail else "")

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Spawn dynamips on a free loopback port, connect and check its version."""
        self.working_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.connect_timeout
        try:
            for _attempt in range(3):
                self.port = _free_loopback_port(self.host)
                await self._spawn()
                try:
                    self._connection = await Connection.open(
                        self.host,
                        self.port,
                        deadline=deadline,
                        command_timeout=self.command_timeout,
                        describe=self._describe,
                        alive=lambda: self.alive,
                    )
                    break
                except HypervisorUnavailable:
                    if self.alive or time.monotonic() > deadline:
                        raise
                    await self._reap()  # lost the port race: try another port
            else:
                raise HypervisorUnavailable(f"Could not start Dynamips{self._describe()}")
            await self._handshake()
        except BaseException:
            await self.stop()
            raise
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _spawn(self) -> None:
        listen = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        args = ["-N1", "-l", self.log_file.name, "-H", listen]
        try:
            output = await asyncio.to_thread(open, self.stdout_file, "wb")
            with output:
                self._process = await asyncio.create_subprocess_exec(
                    self.executable,
                    *args,
                    cwd=self.working_dir,
                    stdout=output,
                    stderr=asyncio.subprocess.STDOUT,
                    stdin=asyncio.subprocess.DEVNULL,
                    start_new_session=True,
                )
        except OSError as err:
            raise Conflict(f"Could not start Dynamips: {err}") from None
        log.info("dynamips %s started (pid %s) on %s", self.hv_id, self.pid, listen)

    async def _handshake(self) -> None:
        lines = await self.send("hypervisor version")
        self.version = lines[0].split("-")[0] if lines else "Unknown"
        parsed = parse_version(self.version)
        if parsed is None or parsed < MIN_VERSION:
            raise Conflict(
                f"Dynamips version must be >= 0.2.11, detected version is {self.version}"
            )
        self.version_tuple = parsed
        await self.send("hypervisor working_dir", str(self.working_dir))

    async def send(self, command: str, *args: object) -> list[str]:
        if self._connection is None:
            raise HypervisorUnavailable(f"Not connected to dynamips{self._describe()}")
        return await self._connection.send(command, *args)

    async def set_working_dir(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        await self.send("hypervisor working_dir", str(path))
        self.working_dir = path

    async def _watch(self) -> None:
        assert self._process is not None
        returncode = await self._process.wait()
        if self._stopping:
            return
        log.warning("dynamips %s (pid %s) exited with %s", self.hv_id, self.pid, returncode)
        if self._connection is not None:
            self._connection.mark_broken(f"process exited with return code {returncode}")
        for callback in list(self.on_exit):
            try:
                callback(self, returncode)
            except Exception:
                log.exception("hypervisor exit callback failed")

    async def stop(self) -> None:
        """``hypervisor stop``, then terminate/kill after a bounded wait; always reaps."""
        self._stopping = True
        graceful = False
        if self._connection is not None:
            if self.alive:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        self._connection.send("hypervisor stop"),
                        min(self.stop_timeout, self.command_timeout),
                    )
                    graceful = True
            await self._connection.close()
        await self._reap(self.stop_timeout if graceful else 0.0)
        if self._watcher is not None and self._watcher is not asyncio.current_task():
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        with contextlib.suppress(OSError):
            self.stdout_file.unlink()

    async def _reap(self, grace: float = 0.0) -> None:
        process = self._process
        if process is None:
            return
        if process.returncode is None:
            try:
                await asyncio.wait_for(process.wait(), grace)
            except TimeoutError:
                for sig_send in (process.terminate, process.kill):
                    with contextlib.suppress(ProcessLookupError):
                        sig_send()
                    try:
                        await asyncio.wait_for(process.wait(), 1.0)
                        break
                    except TimeoutError:
                        continue
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
