"""Shared fixtures: an app on a loopback port, driven through real HTTP, with the fake
hypervisor (an executable with dynamips' command line) or the real dynamips behind it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import socket
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
from aiohttp.test_utils import TestServer

from dynamips_mgr.app import create_app
from dynamips_mgr.config import Config
from dynamips_mgr.testing.synthetic_image import write_image
from dynamips_mgr.web.routing import STATE

REAL_DYNAMIPS = shutil.which("dynamips")
needs_dynamips = pytest.mark.skipif(REAL_DYNAMIPS is None, reason="dynamips is not installed")
ELF_TEST_IMAGE = b"\x7fELF\x01\x02\x01" + b"\0" * 1017


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02):
    """Poll ``predicate`` until it is truthy or the deadline passes (then fail)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


@dataclass
class Reply:
    status: int
    body: Any
    headers: Any
    text: str


class Api:
    """A tiny HTTP client for the app under test (every call goes over loopback HTTP)."""

    def __init__(self, server: TestServer, session: aiohttp.ClientSession, app) -> None:
        self.server, self.session, self.app = server, session, app
        self.base = f"http://127.0.0.1:{server.port}"

    @property
    def state(self):
        return self.app[STATE]

    async def request(
        self, method: str, path: str, body: Any = None, *, raw: bytes | None = None, **kwargs
    ) -> Reply:
        url = self.base + ("/v1" + path if not path.startswith(("/v1", "/docs")) else path)
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        async with self.session.request(method, url, data=data, **kwargs) as response:
            text = await response.text(errors="replace")
            try:
                parsed = json.loads(text) if text else None
            except ValueError:
                parsed = None
            return Reply(response.status, parsed, response.headers, text)

    async def get(self, path: str, **kw) -> Reply:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, body: Any = None, **kw) -> Reply:
        return await self.request("POST", path, body, **kw)

    async def put(self, path: str, body: Any = None, **kw) -> Reply:
        return await self.request("PUT", path, body, **kw)

    async def delete(self, path: str, **kw) -> Reply:
        return await self.request("DELETE", path, **kw)

    # -- helpers for common steps --------------------------------------------------------
    async def project(self, **body) -> str:
        reply = await self.post("/projects", {"name": "test", **body})
        assert reply.status == 201, reply.body
        return reply.body["project_id"]

    async def router(self, project_id: str, **body) -> dict:
        defaults = {"name": "R1", "platform": "c7200", "image": "c7200.image", "ram": 256}
        reply = await self.post(f"/projects/{project_id}/dynamips/vms", {**defaults, **body})
        assert reply.status == 201, reply.body
        return reply.body

    async def device(self, project_id: str, device_type: str = "ethernet_switch", **body) -> dict:
        reply = await self.post(
            f"/projects/{project_id}/dynamips/devices",
            {"name": "SW1", "device_type": device_type, **body},
        )
        assert reply.status == 201, reply.body
        return reply.body

    async def link(
        self,
        project_id: str,
        router: dict,
        device: dict,
        *,
        device_port: int = 1,
        port_settings: dict | None = None,
    ) -> tuple[int, int]:
        """Link router port 0/0 to a device port as a GUI does: two UDP ports, two NIOs."""
        a, b = await self.udp_port(project_id), await self.udp_port(project_id)
        base = f"/projects/{project_id}/dynamips"
        reply = await self.post(
            f"{base}/vms/{router['vm_id']}/adapters/0/ports/0/nio",
            {"type": "nio_udp", "lport": a, "rhost": "127.0.0.1", "rport": b},
        )
        assert reply.status == 201, reply.body
        body: dict = {"nio": {"type": "nio_udp", "lport": b, "rhost": "127.0.0.1", "rport": a}}
        if port_settings:
            body["port_settings"] = port_settings
        reply = await self.post(
            f"{base}/devices/{device['device_id']}/ports/{device_port}/nio", body
        )
        assert reply.status == 201, reply.body
        return a, b

    async def udp_port(self, project_id: str) -> int:
        reply = await self.post(f"/projects/{project_id}/ports/udp", {})
        assert reply.status == 201, reply.body
        return reply.body["udp_port"]


class FakeDynamips:
    """Controls the fake hypervisor executable: recorded commands and injected faults."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.records = root / "records"
        self.records.mkdir(parents=True)
        self.faults_file = root / "faults.json"
        self.faults_file.write_text("[]")
        self.version = "0.2.14-amd64"
        self.path = root / "dynamips"
        self._write_wrapper()

    def _write_wrapper(self) -> None:
        self.path.write_text(
            f"#!/bin/sh\nexec {sys.executable} -m dynamips_mgr.testing.fake_hypervisor "
            f"--record-dir {self.records} --faults {self.faults_file} "
            f'--version {self.version} "$@"\n'
        )
        self.path.chmod(self.path.stat().st_mode | stat.S_IEXEC)

    def set_version(self, version: str) -> None:
        self.version = version
        self._write_wrapper()

    def inject(self, pattern: str, action: str, **options) -> None:
        faults = json.loads(self.faults_file.read_text())
        faults.append({"pattern": pattern, "action": action, **options})
        self.faults_file.write_text(json.dumps(faults))

    def clear_faults(self) -> None:
        self.faults_file.write_text("[]")

    def commands(self, hypervisor_port: int) -> list[str]:
        path = self.records / f"{hypervisor_port}.log"
        return path.read_text().splitlines() if path.exists() else []


def make_config(tmp_path: Path, dynamips_path: str, **server) -> Config:
    """Defaults for tests; port ranges differ per test so parallel runs rarely meet."""
    base = random.randrange(0, 40) * 250
    options = {
        "projects_path": str(tmp_path / "projects"),
        "images_path": str(tmp_path / "images"),
        "console_start_port_range": 20000 + base,
        "console_end_port_range": 20000 + base + 249,
        "udp_start_port_range": 30000 + base,
        "udp_end_port_range": 30000 + base + 249,
        "local": True,
        **server,
    }
    config = Config.defaults(**options)
    config.values[("Dynamips", "dynamips_path")] = dynamips_path
    config.values[("Dynamips", "command_timeout")] = 10.0
    config.values[("Dynamips", "stop_timeout")] = 2.0
    return config


@pytest.fixture
def images_dir(tmp_path: Path) -> Path:
    path = tmp_path / "images" / "IOS"
    path.mkdir(parents=True)
    (path / "c7200.image").write_bytes(ELF_TEST_IMAGE)
    for platform in ("c1700", "c2600", "c2691", "c3600", "c3725", "c3745"):
        (path / f"{platform}.image").write_bytes(ELF_TEST_IMAGE)
    return path


@pytest.fixture
def fake(tmp_path: Path) -> FakeDynamips:
    return FakeDynamips(tmp_path / "fake")


async def _start_api(config: Config):
    app = create_app(config)
    server = TestServer(app, host="127.0.0.1", port=free_port())
    await server.start_server()
    session = aiohttp.ClientSession()
    return Api(server, session, app)


async def _stop_api(api: Api) -> None:
    children = [hv.pid for pool in api.state.dynamips.hypervisors.values() for hv in pool if hv.pid]
    await api.session.close()
    await api.server.close()  # runs the shutdown hooks: projects closed, hypervisors stopped
    for pid in children:  # anything still alive here leaked: kill it, then fail the test
        if psutil.pid_exists(pid):
            with_zombie = psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
            if not with_zombie:
                os.kill(pid, 9)
                raise AssertionError(f"hypervisor process {pid} outlived the app")


@pytest.fixture
async def api(tmp_path: Path, fake: FakeDynamips, images_dir: Path):
    """The app with the fake hypervisor executable behind it."""
    api = await _start_api(make_config(tmp_path, str(fake.path)))
    api.fake = fake
    yield api
    await _stop_api(api)


@pytest.fixture
async def real_api(tmp_path: Path, images_dir: Path):
    """The app with the real dynamips behind it."""
    if REAL_DYNAMIPS is None:
        pytest.skip("dynamips is not installed")
    api = await _start_api(make_config(tmp_path, REAL_DYNAMIPS))
    yield api
    await _stop_api(api)


@pytest.fixture
def synthetic_images(images_dir: Path) -> Path:
    """Bootable synthetic images ``<platform>.image`` replacing the ELF-header stubs."""
    for platform in ("c1700", "c2600", "c2691", "c3600", "c3725", "c3745", "c7200"):
        write_image(images_dir / f"{platform}.image", platform)
    return images_dir


def hypervisor_port(api: Api, node_id: str) -> int:
    dynamips = api.state.dynamips
    node = dynamips.routers.get(node_id) or dynamips.devices.get(node_id)
    return node.hypervisor.port


class Notifications:
    """Collects the JSON lines of ``GET /projects/{id}/notifications`` in the background."""

    def __init__(self, api: Api, project_id: str) -> None:
        self.api, self.project_id = api, project_id
        self.events: list[dict] = []
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> Notifications:
        url = f"{self.api.base}/v1/projects/{self.project_id}/notifications"
        response = await self.api.session.get(url)
        assert response.status == 200

        async def read() -> None:
            with contextlib.suppress(aiohttp.ClientError, asyncio.CancelledError):
                async for line in response.content:
                    if line.strip():
                        self.events.append(json.loads(line))
            response.close()

        self._task = asyncio.get_running_loop().create_task(read())
        await wait_for(lambda: any(e["action"] == "ping" for e in self.events), 5)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def actions(self, name: str | None = None) -> list[str]:
        """Actions seen so far (only those about the node ``name`` when given)."""
        return [
            e["action"]
            for e in self.events
            if name is None or (isinstance(e["event"], dict) and e["event"].get("name") == name)
        ]

    async def expect(self, action: str, timeout: float = 10.0, **fields) -> dict:
        """Wait for an event ``action`` whose event contains ``fields``; return it."""

        def found():
            for event in self.events:
                body = event["event"]
                if event["action"] == action and all(body.get(k) == v for k, v in fields.items()):
                    return body
            return None

        return await wait_for(found, timeout)


@pytest.fixture
async def make_api(tmp_path: Path, fake: FakeDynamips, images_dir: Path):
    """Start apps with other settings: ``await make_api(local=False)`` ([Server] values) or
    ``await make_api(config)``; the fake hypervisor is behind each; all stopped at the end."""
    started: list[Api] = []

    async def start(config: Config | None = None, **server: Any) -> Api:
        api = await _start_api(config or make_config(tmp_path, str(fake.path), **server))
        api.fake = fake
        started.append(api)
        return api

    yield start
    for api in started:
        await _stop_api(api)


def process_gone(pid: int) -> bool:
    """True when ``pid`` has exited (a zombie waiting to be reaped counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
