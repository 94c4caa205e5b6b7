"""Issue 8: every platform boots the synthetic image on the real dynamips, through the API.

Each test drives one router through its whole life over HTTP: create, start (``vm.started``
on the notification stream), console banner and prompt, suspend/resume, reload, stop
(``vm.stopped``), delete, and checks that no dynamips process is left.
"""

from __future__ import annotations

import asyncio
import time

import psutil
import pytest

from dynamips_mgr.dynamips.platforms import PLATFORMS
from dynamips_mgr.testing.synthetic_image import BANNER, PROMPT
from dynamips_mgr.testing.synthetic_image import PLATFORMS as IMAGE_PLATFORMS
from tests.conftest import Notifications, needs_dynamips, wait_for

pytestmark = needs_dynamips
BOOT_DEADLINE = 5.0


async def read_console(port: int, until: str, timeout: float = BOOT_DEADLINE) -> str:
    """Connect to a console and read until ``until`` shows up (fails after ``timeout``)."""
    deadline = time.monotonic() + timeout

    async def connect():
        try:
            return await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return None

    reader, writer = await wait_for(connect, timeout)
    data = b""
    try:
        while until.encode() not in data:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{until!r} not seen on console {port}: {data!r}"
            chunk = await asyncio.wait_for(reader.read(4096), remaining)
            assert chunk, f"console {port} closed before {until!r}: {data!r}"
            data += chunk
    finally:
        writer.close()
    return data.decode("latin-1")


def alive(pid: int) -> bool:
    return psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE


@pytest.mark.parametrize("platform", IMAGE_PLATFORMS)
async def test_platform_boots_and_lives_through_the_api(real_api, synthetic_images, platform):
    api = real_api
    project_id = await api.project()
    ram = PLATFORMS[platform].defaults["ram"]
    async with Notifications(api, project_id) as events:
        router = await api.router(
            project_id, name="R1", platform=platform, image=f"{platform}.image", ram=ram
        )
        vm = f"/projects/{project_id}/dynamips/vms/{router['vm_id']}"
        node = api.state.dynamips.routers[router["vm_id"]]
        pid = node.hypervisor.pid

        began = time.monotonic()
        reply = await api.post(f"{vm}/start")
        assert reply.status == 204, reply.body
        console = await read_console(router["console"], PROMPT)
        boot_seconds = time.monotonic() - began
        assert BANNER in console and f"type {platform}" in console
        await events.expect("vm.started", name="R1")
        print(f"{platform}: start + boot to {PROMPT} through the API in {boot_seconds:.2f} s")

        reply = await api.post(f"{vm}/suspend")
        assert reply.status == 204
        assert await node.get_status() == 3
        assert "VM is not running" in await read_console(router["console"], "!!!\r\n")
        reply = await api.post(f"{vm}/resume")
        assert reply.status == 204
        assert await node.get_status() == 2

        reply = await api.post(f"{vm}/reload")
        assert reply.status == 204
        assert await node.get_status() == 2
        # a reload restarts the VM: a fresh console buffer shows the banner exactly once
        console = await read_console(router["console"], PROMPT)
        assert console.count(BANNER) == 1

        reply = await api.post(f"{vm}/stop")
        assert reply.status == 204
        await events.expect("vm.stopped", name="R1")
        assert await node.get_status() == 0
        assert events.actions("R1").count("vm.started") == 2  # start, reload
        assert events.actions("Ghost") == []  # the ghost instance never notifies (C10)

        reply = await api.delete(vm)
        assert reply.status == 204
        await wait_for(lambda: not alive(pid), 5)


async def test_npe_g2_is_accepted_and_a_mips_image_on_it_is_a_clear_409_at_start(
    real_api, synthetic_images
):
    """NPE-G2 is a PowerPC board (c7200p templates send it): the setting is accepted as in
    the original. The synthetic image is MIPS code, so its start is a 409 carrying dynamips'
    reason (0.2.14 answers 209 "invalid load address", or dies of SIGSEGV when sparse memory
    is on: then the 409 says the process stopped); switching back to npe-400 boots again."""
    api = real_api
    project_id = await api.project()
    router = await api.router(project_id, image="c7200.image")
    vm = f"/projects/{project_id}/dynamips/vms/{router['vm_id']}"
    reply = await api.put(vm, {"npe": "npe-g2"})
    assert reply.status == 200 and reply.body["npe"] == "npe-g2"
    reply = await api.post(f"{vm}/start")
    assert reply.status == 409
    message = reply.body["message"]
    assert "invalid load address" in message or "running: False" in message, message
    reply = await api.put(vm, {"npe": "npe-400"})
    assert reply.status == 200
    assert (await api.post(f"{vm}/start")).status == 204
    assert (await api.post(f"{vm}/stop")).status == 204
