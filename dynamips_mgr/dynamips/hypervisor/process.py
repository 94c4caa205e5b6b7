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
from .connection import Connection, State
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
        spawn_dir: Path | None = None,
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
        # dynamips starts in spawn_dir (where it caches its instruction lookup tables, ilt_*,
        # ~0.3 s of CPU to build), then moves to working_dir at once
        self.spawn_dir = spawn_dir

    # -- files -------------------------------------------------------------------------
    @property
    def log_file(self) -> Path:
        return self.working_dir / f"dynamips_i{self.hv_id}_log.txt"

    @property
    def stdout_file(self) -> Path:
        return self.working_dir / f"dynamips_i{self.hv_id}_stdout.txt"

    def output_tail(self, limit: int = 2000) -> str:
        """The last lines (at most ``limit`` characters) of the process output and log."""
        text = ""
        for path in (self.stdout_file, self.log_file):
            with contextlib.suppress(OSError), open(path, "rb") as handle:
                handle.seek(max(0, handle.seek(0, os.SEEK_END) - 4 * limit))
                content = handle.read().decode("utf-8", "replace")
                text += content if not text or text.endswith("\n") else "\n" + content
        if len(text) > limit:  # whole lines only
            text = text[-limit:].partition("\n")[2] or text[-limit:]
        return text

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
                    self._connection.settle = self._settle
                    version = await self._first_contact(deadline)
                    break
                except HypervisorUnavailable:
                    if self.alive or time.monotonic() > deadline:
                        raise
                    # lost the port race (maybe to a listener that is not ours): next port
                    if self._connection is not None:
                        await self._connection.close()
                        self._connection = None
                    await self._reap()
            else:
                raise HypervisorUnavailable(f"Could not start Dynamips{self._describe()}")
            await self._handshake(version)
        except BaseException:
            await self.stop()
            raise
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _spawn(self) -> None:
        listen = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        log_file = str(self.log_file) if self.spawn_dir else self.log_file.name
        args = ["-N1", "-l", log_file, "-H", listen]
        try:
            output = await asyncio.to_thread(open, self.stdout_file, "wb")
            with output:
                self._process = await asyncio.create_subprocess_exec(
                    self.executable,
                    *args,
                    cwd=self.spawn_dir or self.working_dir,
                    stdout=output,
                    stderr=asyncio.subprocess.STDOUT,
                    stdin=asyncio.subprocess.DEVNULL,
                    start_new_session=True,
                )
        except OSError as err:
            raise Conflict(f"Could not start Dynamips: {err}") from None
        log.info("dynamips %s started (pid %s) on %s", self.hv_id, self.pid, listen)

    async def _first_contact(self, deadline: float) -> list[str]:
        """``hypervisor version`` by the start deadline, given up as soon as our process exits:
        then whatever answered on that port (if anything) is not the dynamips we started."""
        assert self._process is not None
        reply = asyncio.ensure_future(self.send("hypervisor version"))
        exited = asyncio.ensure_future(self._process.wait())
        try:
            await asyncio.wait(
                {reply, exited},
                timeout=max(0.1, deadline - time.monotonic()),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            exited.cancel()
            if not reply.done():
                reply.cancel()
                with contextlib.suppress(asyncio.CancelledError, HypervisorUnavailable):
                    await reply
        if reply.cancelled():
            state = "exited at start" if not self.alive else "did not answer at start"
            raise HypervisorUnavailable(
                f"Dynamips on {self.host}:{self.port} {state}{self._describe()}"
            )
        return reply.result()

    async def _handshake(self, lines: list[str]) -> None:
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
        try:
            return await self._connection.send(command, *args)
        except HypervisorUnavailable:
            await self._retire_if_out_of_step()
            raise

    async def _retire_if_out_of_step(self) -> None:
        """A connection that timed out, was cancelled mid-command or got garbage is never
        trusted again (E1): end its process, so that its nodes see the hypervisor died and
        are rebuilt in a new process at their next start."""
        connection = self._connection
        if connection is None or connection.state is not State.BROKEN:
            return
        if self._process is None or not self.alive or self._stopping:
            return
        log.warning(
            "dynamips %s (pid %s) is out of step (%s): killing it",
            self.hv_id,
            self.pid,
            connection.broken_reason,
        )
        with contextlib.suppress(ProcessLookupError):
            self._process.kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._process.wait()), 2.0)

    async def _settle(self, limit: float = 0.5) -> None:
        """The connection dropped: give a dying process a moment to be reaped, so that the
        error can tell whether it is still running (and quote its output)."""
        if self._process is not None and self.alive:
            waiter = asyncio.ensure_future(self._process.wait())
            _done, pending = await asyncio.wait({waiter}, timeout=limit)
            for task in pending:
                task.cancel()

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
        if graceful:
            await self._wake_until_exit(time.monotonic() + self.stop_timeout)
        await self._reap()
        if self._watcher is not None and self._watcher is not asyncio.current_task():
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        with contextlib.suppress(OSError):
            self.stdout_file.unlink()
        if graceful:  # healthy to the end: its log says nothing worth keeping (B11)
            with contextlib.suppress(OSError):
                self.log_file.unlink()

    async def _wake_until_exit(self, deadline: float) -> None:
        """After ``hypervisor stop`` dynamips exits (cleaning up) once its accept loop sees the
        stop flag: at its next 500 ms select timeout, or at once when a connection arrives.
        So connect (and hang up) until the process is gone, backing off from 5 ms."""
        assert self._process is not None
        delay = 0.005
        while self.alive and time.monotonic() < deadline:
            with contextlib.suppress(OSError, TimeoutError):
                _reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port), 0.5
                )
                writer.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._process.wait(), delay)
            delay = min(delay * 2, 0.1)

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
