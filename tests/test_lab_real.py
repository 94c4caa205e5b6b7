"""Issues 5 and 8 on the real dynamips with the synthetic image: configs, ghost IOS, idle-PC
and a hypervisor killed under a running router."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import signal
import time

import psutil

from dynamips_mgr.dynamips.idlepc import measure_cpu_percent
from dynamips_mgr.testing.synthetic_image import BANNER, PROMPT, hop_addresses
from tests.conftest import Notifications, needs_dynamips, wait_for
from tests.test_boot_real import alive, read_console

pytestmark = needs_dynamips
STARTUP = "hostname %h\r\ninterface FastEthernet0/0\r\n no shutdown\r\nend\r\n"
PRIVATE = "private secret\nend\n"


def vm_path(project_id: str, router: dict) -> str:
    return f"/projects/{project_id}/dynamips/vms/{router['vm_id']}"


async def test_configs_pushed_at_start_read_back_and_saved_at_stop(real_api, synthetic_images):
    api = real_api
    project_id = await api.project()
    router = await api.router(
        project_id,
        platform="c3725",
        image="c3725.image",
        ram=128,
        startup_config_content=STARTUP,
        private_config_content=PRIVATE,
    )
    vm = vm_path(project_id, router)
    module_dir = api.state.projects.get(project_id).module_dir
    startup_file = module_dir / "configs/i1_startup-config.cfg"
    expected = "!\nhostname R1\ninterface FastEthernet0/0\n no shutdown\nend\n"
    assert startup_file.read_text() == expected

    assert (await api.post(f"{vm}/start")).status == 204
    await read_console(router["console"], PROMPT)
    # dynamips copied the files into NVRAM at start: GET now reads NVRAM back
    node = api.state.dynamips.routers[router["vm_id"]]
    assert (await node.send("vm extract_config", "R1"))[0].startswith("conf 'R1' '")
    reply = await api.get(f"{vm}/configs")
    assert reply.status == 200
    assert "hostname R1\ninterface FastEthernet0/0" in reply.body["startup_config_content"]
    assert reply.body["private_config_content"] == "!\n" + PRIVATE  # as written at create

    # what IOS writes to NVRAM while running is what the files get at stop
    written = "!\nhostname R1\nbanner motd ^written in NVRAM^\nend\n"
    # (the server never pushes NVRAM itself: a second control connection plays IOS here)
    reply = await raw_command(
        node.hypervisor.port, f"vm push_config R1 {_b64(written)} {_b64(PRIVATE)}"
    )
    assert reply.startswith("100-"), reply
    startup_file.unlink()
    assert (await api.post(f"{vm}/stop")).status == 204
    saved = startup_file.read_text()
    assert saved.startswith("!\n") and "written in NVRAM" in saved and "\r" not in saved
    assert (module_dir / "configs/i1_private-config.cfg").read_text() == PRIVATE  # raw (C18)
    # a stopped router that has run still answers from NVRAM
    reply = await api.get(f"{vm}/configs")
    assert "written in NVRAM" in reply.body["startup_config_content"]


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def raw_command(port: int, line: str) -> str:
    """One command on a separate connection to a hypervisor; its last reply line."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(line.encode() + b"\n")
        while True:
            reply = (await asyncio.wait_for(reader.readline(), 10)).decode().rstrip()
            if reply[3:4] != " ":
                return reply
    finally:
        writer.close()


async def test_ghost_file_built_once_and_used_by_two_routers(real_api, synthetic_images):
    """Two routers of one image and RAM started at the same time share one ghost file."""
    api = real_api
    dynamips = api.state.dynamips
    builds = []
    build = dynamips._build_ghost

    async def counting_build(router, file_name):
        began = time.monotonic()
        built = await build(router, file_name)
        builds.append((file_name, built, time.monotonic() - began))
        return built

    dynamips._build_ghost = counting_build
    project_id = await api.project()
    async with Notifications(api, project_id) as events:
        routers = [
            await api.router(project_id, name=name, platform="c3725", image="c3725.image", ram=128)
            for name in ("R1", "R2")
        ]
        replies = await asyncio.gather(
            *(api.post(f"{vm_path(project_id, r)}/start") for r in routers)
        )
        assert [r.status for r in replies] == [204, 204]
        for router in routers:
            assert BANNER in await read_console(router["console"], PROMPT)
        assert events.actions("Ghost") == []  # C10: the ghost instance never notifies

    module_dir = api.state.projects.get(project_id).module_dir
    assert [name for name in os.listdir(module_dir) if name.endswith(".ghost")] == [
        "c3725.image-128.ghost"
    ]
    assert (module_dir / "c3725.image-128.ghost").stat().st_size == 128 * 1024 * 1024
    assert [b[:2] for b in builds] == [("c3725.image-128.ghost", True)]
    print(f"ghost build (c3725, 128 MB): {builds[0][2]:.2f} s")
    for router in routers:
        node = dynamips.routers[router["vm_id"]]
        assert node.ghost_file == "c3725.image-128.ghost"
        # the process runs the VM's RAM from the shared ghost file (mapped, not copied)
        maps = [m.path for m in psutil.Process(node.hypervisor.pid).memory_maps()]
        assert str(module_dir / "c3725.image-128.ghost") in maps

    # closing the project removes the ghost file and every process
    pids = [dynamips.routers[r["vm_id"]].hypervisor.pid for r in routers]
    assert (await api.post(f"/projects/{project_id}/close")).status == 204
    assert not any(alive(pid) for pid in pids)
    assert not list(module_dir.glob("*.ghost"))


async def test_idlepc_proposals_and_auto_idlepc_drop_the_cpu(real_api, synthetic_images):
    api = real_api
    dynamips = api.state.dynamips
    project_id = await api.project()
    r1 = await api.router(project_id, name="R1", platform="c2691", image="c2691.image", ram=128)
    r2 = await api.router(project_id, name="R2", platform="c3745", image="c3745.image", ram=128)
    node1, node2 = dynamips.routers[r1["vm_id"]], dynamips.routers[r2["vm_id"]]
    vm1, vm2 = vm_path(project_id, r1), vm_path(project_id, r2)

    reply = await api.get(f"{vm1}/idlepc_proposals")
    assert reply.status == 409 and "not running" in reply.body["message"]

    # the automatic search on the stopped R2 (one router at a time: an honest timing)
    began = time.monotonic()
    auto = await api.get(f"{vm2}/auto_idlepc")
    auto_seconds = time.monotonic() - began
    assert auto.status == 200, auto.body
    assert auto.body["idlepc"] in {f"0x{a:08x}" for a in hop_addresses("c3745")}
    assert auto_seconds < 15, auto_seconds
    print(f"auto_idlepc on a stopped c3745: {auto_seconds:.2f} s -> {auto.body['idlepc']}")
    assert (await api.get(vm2)).body["idlepc"] == auto.body["idlepc"]
    assert await node2.get_status() == 0  # it started R2 itself, so it stopped it again

    assert (await api.post(f"{vm1}/start")).status == 204
    await read_console(r1["console"], PROMPT)
    proposals = await api.get(f"{vm1}/idlepc_proposals")
    assert proposals.status == 200, proposals.body
    hops = {f"0x{address:08x}" for address in hop_addresses("c2691")}
    values = [re.fullmatch(r"(0x[0-9a-f]{8}) \[(\d+)\]", line) for line in proposals.body]
    assert values and all(v and v.group(1) in hops for v in values), proposals.body

    # R1 runs without idle-PC (the proposals reset it): one core busy; a proposal drops it
    busy = await measure_cpu_percent(node1.hypervisor.pid, 1.0)
    reply = await api.put(vm1, {"idlepc": values[0].group(1)})
    assert reply.status == 200, reply.body
    await asyncio.sleep(0.3)  # let the CPU thread reach its first idle sleep
    idle = await measure_cpu_percent(node1.hypervisor.pid, 1.0)
    print(f"c2691 CPU without idle-PC {busy:.0f} %, with {values[0].group(1)} {idle:.1f} %")
    assert busy > 50 and idle < 20

    # R2 starts with the value auto_idlepc found: idle from boot on
    assert (await api.post(f"{vm2}/start")).status == 204
    await read_console(r2["console"], PROMPT)
    assert await measure_cpu_percent(node2.hypervisor.pid, 1.0) < 20


async def crash(api, events: Notifications, router: dict, sig: int) -> tuple[int, str]:
    """Start ``router``, kill its dynamips with ``sig``; the notifications must say so."""
    assert (await api.post(f"{vm_path(router['project_id'], router)}/start")).status == 204
    await read_console(router["console"], PROMPT)
    pid = api.state.dynamips.routers[router["vm_id"]].hypervisor.pid
    os.kill(pid, sig)
    error = await events.expect("log.error", timeout=5)
    await events.expect("vm.stopped", timeout=5, name=router["name"])
    return pid, error["message"]


async def test_sigkill_of_a_running_router_is_reported_and_a_new_start_works(
    real_api, synthetic_images
):
    api = real_api
    project_id = await api.project()
    router = await api.router(project_id, platform="c2600", image="c2600.image", ram=64)
    vm = vm_path(project_id, router)
    node = api.state.dynamips.routers[router["vm_id"]]
    async with Notifications(api, project_id) as events:
        pid, error = await crash(api, events, router, signal.SIGKILL)
        assert "return code: -9" in error

        began = time.monotonic()
        reply = await api.post(f"{vm}/suspend")
        assert reply.status == 409 and time.monotonic() - began < 2, reply.body
        assert "running: False" in reply.body["message"] or "not" in reply.body["message"]
        assert (await api.post(f"{vm}/stop")).status == 204

        assert (await api.post(f"{vm}/start")).status == 204  # a new process (Router.rebuild)
        assert node.hypervisor.pid != pid and alive(node.hypervisor.pid)
        assert BANNER in await read_console(router["console"], PROMPT)
        await wait_for(lambda: events.actions("R1").count("vm.started") == 2, 5)
        new_pid = node.hypervisor.pid
        # the new VM runs from the ghost file again
        maps = [m.path for m in psutil.Process(new_pid).memory_maps()]
        assert any(path.endswith("c2600.image-64.ghost") for path in maps)
    assert (await api.post(f"/projects/{project_id}/close")).status == 204
    assert not alive(new_pid) and not psutil.pid_exists(pid)


async def test_c18_a_crashed_hypervisor_is_reported_and_delete_and_close_still_work(
    real_api, synthetic_images
):
    """C18: SIGSEGV of a running router's dynamips: log.error with the return code and the
    process output, the router stopped; stop, delete and close answer 204 without a hang."""
    api = real_api
    project_id = await api.project()
    router = await api.router(project_id, platform="c1700", image="c1700.image", ram=64)
    vm = vm_path(project_id, router)
    async with Notifications(api, project_id) as events:
        pid, error = await crash(api, events, router, signal.SIGSEGV)
        assert "return code: -11" in error
        assert "vm start R1" in error  # the tail of what the process wrote
    began = time.monotonic()
    assert (await api.post(f"{vm}/stop")).status == 204
    assert (await api.delete(vm)).status == 204
    assert (await api.post(f"/projects/{project_id}/close")).status == 204
    assert time.monotonic() - began < 5
    assert not alive(pid)
