"""One TCP connection to a dynamips hypervisor, one command in flight at a time."""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable

from .errors import DynamipsError, HypervisorUnavailable
from .protocol import MIN_TIMEOUTS, ProtocolViolation, Reply, ReplyParser, format_command


class State(enum.Enum):
    READY = "ready"
    BUSY = "busy"
    BROKEN = "broken"
    CLOSED = "closed"


class Connection:
    """Sends commands and returns their reply lines.

    A command that times out, is cancelled, or gets a malformed reply leaves the stream out
    of step, so the connection is closed and marked BROKEN: later commands fail at once.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        address: str,
        command_timeout: float,
        describe: Callable[[], str] = lambda: "",
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._lock = asyncio.Lock()
        self._parser = ReplyParser()
        self.address = address
        self.command_timeout = command_timeout
        self.describe = describe
        self.state = State.READY
        self.broken_reason = ""
        # awaited when the peer hung up, before the error is worded (the owner may wait a
        # moment there for a dying process to be reaped, so the error can say it died)
        self.settle: Callable[[], Awaitable[None]] | None = None

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        deadline: float,
        command_timeout: float,
        describe: Callable[[], str] = lambda: "",
        alive: Callable[[], bool] = lambda: True,
    ) -> Connection:
        """Connect, retrying until the monotonic ``deadline``: every 2 ms during the first
        50 ms (a dynamips listens ~3-10 ms after its spawn), then backing off to 100 ms."""
        delay = 0.002
        patient_from = time.monotonic() + 0.05
        last: Exception | None = None
        while True:
            try:
                remaining = max(0.05, deadline - time.monotonic())
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port), timeout=min(1.0, remaining)
                )
                return cls(
                    reader,
                    writer,
                    address=f"{host}:{port}",
                    command_timeout=command_timeout,
                    describe=describe,
                )
            except (OSError, TimeoutError) as err:
                last = err
            if not alive() or time.monotonic() + delay > deadline:
                raise HypervisorUnavailable(
                    f"Couldn't connect to hypervisor on {host}:{port}: {last}{describe()}"
                )
            await asyncio.sleep(delay)
            if time.monotonic() > patient_from:
                delay = min(delay * 2, 0.1)

    async def send(self, command: str, *args: object) -> list[str]:
        """Send ``command`` (a key of the signature table) and return its reply lines."""
        line = format_command(command, *args)
        reply = await self.exchange(line, max(self.command_timeout, MIN_TIMEOUTS.get(command, 0)))
        if not reply.ok:
            raise DynamipsError(reply.code, reply.text, line)
        return reply.lines

    async def exchange(self, line: str, timeout: float | None = None) -> Reply:
        """Write one already formatted line and read its complete reply."""
        timeout = self.command_timeout if timeout is None else timeout
        async with self._lock:
            self._check_usable()
            self.state = State.BUSY
            try:
                self._writer.write(line.encode("utf-8") + b"\n")
                async with asyncio.timeout(timeout):  # no extra task, unlike wait_for
                    reply = await self._read_reply(line)
            except TimeoutError:
                self._break(f"no reply to '{line}' within {timeout:g} s")
                raise HypervisorUnavailable(
                    f"Dynamips did not answer '{line}' on {self.address} within "
                    f"{timeout:g} s{self.describe()}"
                ) from None
            except asyncio.CancelledError:
                self._break(f"'{line}' was cancelled before its reply")
                raise
            except (OSError, EOFError, ProtocolViolation) as err:
                self._break(str(err))
                if self.settle is not None and not isinstance(err, ProtocolViolation):
                    await self.settle()
                raise HypervisorUnavailable(
                    f"Lost dynamips on {self.address} during '{line}': {err}{self.describe()}"
                ) from None
            self.state = State.READY
            return reply

    async def _read_reply(self, line: str) -> Reply:
        await self._writer.drain()
        while True:
            data = await self._reader.read(65536)
            if not data:
                raise EOFError("connection closed by dynamips")
            replies = self._parser.feed(data)
            if replies:
                if len(replies) > 1 or not self._parser.idle:
                    raise ProtocolViolation(f"more than one reply to '{line}'")
                return replies[0]

    def _check_usable(self) -> None:
        if self.state is State.CLOSED:
            raise HypervisorUnavailable(f"Not connected to dynamips on {self.address}")
        if self.state is State.BROKEN:
            raise HypervisorUnavailable(
                f"Connection to dynamips on {self.address} is unusable "
                f"({self.broken_reason}){self.describe()}"
            )

    def _break(self, reason: str) -> None:
        if self.state is not State.BROKEN:  # the first reason is the telling one
            self.broken_reason = reason
        self.state = State.BROKEN
        self._writer.close()

    def mark_broken(self, reason: str) -> None:
        """Called when the process died: later commands fail at once with ``reason``."""
        if self.state in (State.READY, State.BUSY):
            self._break(reason)
        elif self.state is State.BROKEN:  # e.g. after the EOF of its death: say why
            self.broken_reason = reason

    async def close(self) -> None:
        if self.state is not State.BROKEN:
            self.state = State.CLOSED
        self._writer.close()
        try:
            await asyncio.wait_for(self._writer.wait_closed(), 1.0)
        except (OSError, TimeoutError):
            pass
