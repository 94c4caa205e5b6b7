"""Relay a public console port to a router console that dynamips serves on loopback.

dynamips 0.2.14 binds consoles to its control address, which is always loopback here; a
remote GUI reaches a console through this plain TCP relay (telnet bytes pass untouched).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ..errors import Conflict

log = logging.getLogger(__name__)
CHUNK = 16384


class ConsoleRelay:
    def __init__(self, host: str, port: int, target_host: str, target_port: int) -> None:
        self.host, self.port = host, port
        self.target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        if self._server is None:
            try:
                self._server = await asyncio.start_server(self._client, self.host, self.port)
            except OSError as err:
                raise Conflict(
                    f"Could not listen on console port {self.host}:{self.port}: {err}"
                ) from None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        target_writer: asyncio.StreamWriter | None = None
        try:
            try:
                target_reader, target_writer = await asyncio.open_connection(*self.target)
            except OSError as err:
                writer.write(f"Console not available ({err}): is the router started?\r\n".encode())
                with contextlib.suppress(OSError):
                    await writer.drain()
                return
            pipes = [
                asyncio.ensure_future(_pipe(reader, target_writer)),
                asyncio.ensure_future(_pipe(target_reader, writer)),
            ]
            try:  # when either side hangs up, the other one is closed too
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pipe in pipes:
                    pipe.cancel()
        finally:
            for end in (writer, target_writer):
                if end is not None:
                    end.close()
            self._tasks.discard(task)

    def close_nowait(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._tasks):
            task.cancel()

    async def close(self) -> None:
        server = self._server
        tasks = list(self._tasks)
        self.close_nowait()
        if server is not None:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF; ``drain`` bounds the buffered bytes (back-pressure)."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            writer.write_eof()
