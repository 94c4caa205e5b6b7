"""Issue 2 item 1: the command line serves, answers the version and stops cleanly on signals."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import psutil
import pytest

from tests.conftest import free_port, process_gone, wait_for


class ServerProcess:
    """``python -m dynamips_mgr`` in a clean HOME and working directory, killed at the end."""

    def __init__(self, tmp_path: Path, *args: str, port: int | None = None) -> None:
        self.port = port or free_port()
        home = tmp_path / "home"
        home.mkdir(exist_ok=True)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dynamips_mgr",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                *args,
            ],
            cwd=tmp_path,
            env={**os.environ, "HOME": str(home)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.base = f"http://127.0.0.1:{self.port}/v1"

    async def ready(self, session: aiohttp.ClientSession) -> None:
        async def answers() -> bool:
            assert self.process.poll() is None, self.process.communicate()
            try:
                async with session.get(self.base + "/version") as reply:
                    return reply.status == 200
            except aiohttp.ClientConnectionError:
                return False

        await wait_for(answers, 20, 0.05)

    async def exit_code(self, timeout: float = 20) -> int:
        await wait_for(lambda: self.process.poll() is not None, timeout)
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()


@pytest.fixture
def server_process(tmp_path: Path):
    started: list[ServerProcess] = []

    def start(*args: str) -> ServerProcess:
        started.append(ServerProcess(tmp_path, *args))
        return started[-1]

    yield start
    for server in started:
        server.kill()


async def test_serves_the_version_then_exits_0_on_sigterm(tmp_path, server_process):
    log = tmp_path / "server.log"
    server = server_process("--log", str(log))
    async with aiohttp.ClientSession() as session:
        await server.ready(session)
        async with session.get(server.base + "/version") as reply:
            assert reply.headers["Content-Type"] == "application/json"
            body = await reply.json()
    assert body.pop("local") is False
    assert body.pop("version") == "1.5.4"
    assert set(body) <= {"server"}  # our own package version may be the only extra key
    assert f"serving on http://127.0.0.1:{server.port}" in log.read_text()
    server.process.send_signal(signal.SIGTERM)
    assert await server.exit_code() == 0


def _fake_children(pid: int) -> list[int]:
    return [
        child.pid
        for child in psutil.Process(pid).children(recursive=True)
        if "fake_hypervisor" in " ".join(child.cmdline())
    ]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_signal_closes_every_project_and_exits_0(tmp_path, fake, server_process, signum):
    config = tmp_path / "server.ini"
    base = free_port()  # a free region of ports for consoles and links
    config.write_text(
        f"[Server]\nprojects_path = {tmp_path / 'projects'}\n"
        f"console_start_port_range = {base}\nconsole_end_port_range = {base + 50}\n"
        f"udp_start_port_range = {base}\nudp_end_port_range = {base + 50}\n"
        f"[Dynamips]\ndynamips_path = {fake.path}\n"
    )
    server = server_process("--config", str(config))
    children: list[int] = []
    try:
        async with aiohttp.ClientSession() as session:
            await server.ready(session)
            async with session.post(
                server.base + "/projects", json={"name": "lab", "temporary": True}
            ) as reply:
                project = await reply.json()
            async with session.post(
                f"{server.base}/projects/{project['project_id']}/dynamips/devices",
                json={"name": "SW1", "device_type": "ethernet_switch"},
            ) as reply:
                assert reply.status == 201, await reply.text()
            children = _fake_children(server.process.pid)
            assert len(children) == 1
            stream = await session.get(
                f"{server.base}/projects/{project['project_id']}/notifications"
            )
            assert json.loads(await stream.content.readline())["action"] == "ping"

            server.process.send_signal(signum)
            lines = [line async for line in stream.content if line.strip()]
            assert json.loads(lines[-1])["action"] == "project.closed"  # the stream ended
            stream.close()
        assert await server.exit_code() == 0
        assert all(process_gone(pid) for pid in children)
        (record,) = fake.records.glob("*.log")
        commands = record.read_text().splitlines()
        assert commands[-2:] == ['ethsw delete "SW1"', "hypervisor stop"]
        assert not Path(project["path"]).exists()  # the temporary project was closed
    finally:
        for pid in children:  # never leave a fake behind, even when an assertion failed
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()


def test_the_console_script_is_installed_with_every_option():
    script = shutil.which("dynamips-mgr")
    assert script is not None
    run = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0
    for option in (
        "--host",
        "--port",
        "--config",
        "--local",
        "--allow",
        "--debug",
        "--quiet",
        "--log",
    ):
        assert option in run.stdout
    run = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0 and run.stdout.startswith("dynamips-mgr ")


async def test_a_busy_port_is_one_clear_line(tmp_path, server_process):
    first = server_process()
    async with aiohttp.ClientSession() as session:
        await first.ready(session)
    second = ServerProcess(tmp_path, port=first.port)
    try:
        _out, err = await asyncio.to_thread(second.process.communicate, timeout=20)
    finally:
        second.kill()
    assert second.process.returncode != 0
    assert err.strip().splitlines() == [err.strip()]
    assert f"cannot serve on 127.0.0.1:{first.port}" in err
