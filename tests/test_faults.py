"""Issue 9: faults at the HTTP level, each ending in a clear 409 in bounded time, the server
still serving, the API agreeing with what dynamips holds, and nothing saved lost (C18).

The fake hypervisor dies (``exit`` with -9, as ``kill -9`` would) on the command a step sends,
stops answering (``hang``) or answers garbage; the real dynamips is ``kill -9``-ed between
steps; config saves meet a folder that cannot be written even by root.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import (
    REAL_DYNAMIPS,
    Api,
    Notifications,
    hypervisor_port,
    make_config,
    needs_dynamips,
    process_gone,
    wait_for,
)

BOUND = 5.0  # seconds any faulty request may take (the fake dies at once)
KILL = -signal.SIGKILL


async def timed(call) -> tuple[object, float]:
    started = time.monotonic()
    reply = await call
    return reply, time.monotonic() - started


async def assert_serving(api: Api) -> None:
    reply = await api.get("/version")
    assert reply.status == 200


def fake_processes(api: Api) -> list[int]:
    """Live fake hypervisors started for this test's app."""
    mine = str(api.fake.records)
    return [
        child.pid
        for child in psutil.Process().children(recursive=True)
        if not process_gone(child.pid) and mine in " ".join(child.cmdline())
    ]


def router_of(api: Api, vm_id: str):
    return api.state.dynamips.routers[vm_id]


async def dynamips_names(node, listing: str) -> list[str]:
    """What dynamips itself holds (``vm list``, ``ethsw list``...), names only."""
    return [line.split(" ")[0] for line in await node.send(listing)]


def conflict(reply, elapsed: float, *words: str) -> None:
    assert reply.status == 409, reply.body
    assert set(reply.body) >= {"status", "message"}
    assert elapsed < BOUND, elapsed
    for word in words:
        assert word in reply.body["message"], reply.body["message"]


@pytest.fixture
def project_dir(api: Api):
    def module_dir(project_id: str) -> Path:
        return api.state.projects.projects[project_id].module_dir

    return module_dir


async def test_hypervisor_killed_during_router_and_switch_create(api):
    """C18/B1: the create that loses its hypervisor is rolled back: no node, no process,
    console port and dynamips id free again."""
    pid = await api.project()
    console = api.state.ports.ranges["tcp"][0] + 7
    api.fake.inject(r'^vm create "RK"', "exit", exit_code=KILL)
    vm_id = "0f4b2a52-6d1a-4e55-9a8a-3c1c1a1f0001"
    body = {"vm_id": vm_id, "name": "RK", "platform": "c7200", "image": "c7200.image"}
    reply, elapsed = await timed(
        api.post(f"/projects/{pid}/dynamips/vms", {**body, "ram": 256, "console": console})
    )
    conflict(reply, elapsed, "vm create")
    assert (await api.get(f"/projects/{pid}/dynamips/vms/{vm_id}")).status == 404
    assert not api.state.dynamips.hypervisors.get(pid)
    assert not api.state.ports.in_use("tcp", console)
    await assert_serving(api)

    api.fake.inject(r'^ethsw create "SK"', "exit", exit_code=KILL)
    reply, elapsed = await timed(
        api.post(
            f"/projects/{pid}/dynamips/devices", {"name": "SK", "device_type": "ethernet_switch"}
        )
    )
    conflict(reply, elapsed)
    assert not api.state.dynamips.devices and not api.state.dynamips.hypervisors.get(pid)

    # the same console and dynamips id 1 are free for the next router
    router = await api.router(pid, console=console)
    assert (router["console"], router["dynamips_id"]) == (console, 1)
    assert await dynamips_names(router_of(api, router["vm_id"]), "vm list") == ["R1"]
    assert fake_processes(api) == [router_of(api, router["vm_id"]).hypervisor.pid]


async def test_hypervisor_killed_during_start_then_start_again(api, project_dir):
    """C18: start fails with 409; the router, its link and its config survive; the next start
    rebuilds everything in a new process."""
    pid = await api.project()
    router = await api.router(pid, startup_config_content="hostname %h\n")
    vm = f"/projects/{pid}/dynamips/vms/{router['vm_id']}"
    lport = await api.udp_port(pid)
    nio = {"type": "nio_udp", "lport": lport, "rhost": "127.0.0.1", "rport": 9}
    assert (await api.post(f"{vm}/adapters/0/ports/0/nio", nio)).status == 201
    config = project_dir(pid) / "configs" / "i1_startup-config.cfg"
    saved = config.read_bytes()
    old_pid = router_of(api, router["vm_id"]).hypervisor.pid

    api.fake.inject(r'^vm start "R1"', "exit", exit_code=KILL)
    async with Notifications(api, pid) as events:
        reply, elapsed = await timed(api.post(f"{vm}/start"))
        conflict(reply, elapsed, "vm start")
        error = await events.expect("log.error")
        assert "-9" in error["message"]
    assert process_gone(old_pid)
    await assert_serving(api)
    assert (await api.get(vm)).status == 200
    assert config.read_bytes() == saved

    api.fake.clear_faults()  # (a fault counts per process: the rebuilt one would die too)
    reply = await api.post(f"{vm}/start")
    assert reply.status == 204, reply.body
    node = router_of(api, router["vm_id"])
    assert node.hypervisor.pid != old_pid
    assert await dynamips_names(node, "vm list") == ["R1"]
    commands = api.fake.commands(hypervisor_port(api, router["vm_id"]))
    assert any(c.startswith('vm slot_add_nio_binding "R1" 0 0 ') for c in commands)
    assert (await api.get(f"{vm}/adapters/0/ports/0/nio/stats")).status == 200
    assert config.read_bytes() == saved


@pytest.mark.parametrize("dies_on", [r"^nio create_udp", r'^vm slot_add_nio_binding "R1"'])
async def test_hypervisor_killed_during_nio_add(api, dies_on):
    """C18/B4: no NIO recorded, its UDP port free, the router still deletable."""
    pid = await api.project()
    router = await api.router(pid)
    vm = f"/projects/{pid}/dynamips/vms/{router['vm_id']}"
    hv_pid = router_of(api, router["vm_id"]).hypervisor.pid
    lport = await api.udp_port(pid)
    api.fake.inject(dies_on, "exit", exit_code=KILL)
    nio = {"type": "nio_udp", "lport": lport, "rhost": "127.0.0.1", "rport": 9}
    reply, elapsed = await timed(api.post(f"{vm}/adapters/0/ports/0/nio", nio))
    conflict(reply, elapsed)
    assert not api.state.ports.in_use("udp", lport)
    assert not router_of(api, router["vm_id"]).nios
    assert (await api.get(f"{vm}/adapters/0/ports/0/nio/stats")).status == 409
    await wait_for(lambda: process_gone(hv_pid), BOUND)
    await assert_serving(api)
    reply, elapsed = await timed(api.delete(vm))
    assert reply.status == 204 and elapsed < BOUND
    assert (await api.get(vm)).status == 404


async def test_hypervisor_killed_during_switch_nio_add_and_delete(api):
    pid = await api.project()
    switch = await api.device(pid)
    dev = f"/projects/{pid}/dynamips/devices/{switch['device_id']}"
    lport = await api.udp_port(pid)
    nio = {"nio": {"type": "nio_udp", "lport": lport, "rhost": "127.0.0.1", "rport": 9}}
    api.fake.inject(r'^ethsw add_nio "SW1"', "exit", exit_code=KILL)
    reply, elapsed = await timed(api.post(f"{dev}/ports/1/nio", nio))
    conflict(reply, elapsed)
    assert not api.state.ports.in_use("udp", lport)
    assert (await api.get(dev)).body["ports"] == []
    reply, elapsed = await timed(api.delete(dev))
    assert reply.status == 204 and elapsed < BOUND
    assert not api.state.dynamips.devices
    assert not api.state.dynamips.hypervisors.get(pid)


async def test_hypervisor_killed_during_delete(api, project_dir):
    """C18: deleting a router/switch whose hypervisor dies on the way still succeeds, frees
    its console and leaves no process; saved configs stay until commit."""
    pid = await api.project()
    router = await api.router(pid, startup_config_content="hostname %h\n")
    switch = await api.device(pid)
    vm = f"/projects/{pid}/dynamips/vms/{router['vm_id']}"
    pids = [
        router_of(api, router["vm_id"]).hypervisor.pid,
        api.state.dynamips.devices[switch["device_id"]].hypervisor.pid,
    ]
    config = project_dir(pid) / "configs" / "i1_startup-config.cfg"
    saved = config.read_bytes()
    api.fake.inject(r'^vm delete "R1"', "exit", exit_code=KILL)
    api.fake.inject(r'^ethsw delete "SW1"', "exit", exit_code=KILL)
    reply, elapsed = await timed(api.delete(vm))
    assert reply.status == 204 and elapsed < BOUND, reply.body
    reply, elapsed = await timed(
        api.delete(f"/projects/{pid}/dynamips/devices/{switch['device_id']}")
    )
    assert reply.status == 204 and elapsed < BOUND, reply.body
    assert (await api.get(vm)).status == 404
    assert not api.state.ports.in_use("tcp", router["console"])
    await wait_for(lambda: all(process_gone(p) for p in pids), BOUND)
    assert not api.state.dynamips.hypervisors.get(pid)
    assert config.read_bytes() == saved
    await assert_serving(api)


async def test_hypervisor_killed_during_nio_delete(api):
    """The link's NIO died with its process: removing it succeeds and frees the port."""
    pid = await api.project()
    router = await api.router(pid)
    vm = f"/projects/{pid}/dynamips/vms/{router['vm_id']}"
    lport = await api.udp_port(pid)
    nio = {"type": "nio_udp", "lport": lport, "rhost": "127.0.0.1", "rport": 9}
    assert (await api.post(f"{vm}/adapters/0/ports/0/nio", nio)).status == 201
    api.fake.inject(r'^vm slot_remove_nio_binding "R1"', "exit", exit_code=KILL)
    reply, elapsed = await timed(api.delete(f"{vm}/adapters/0/ports/0/nio"))
    assert elapsed < BOUND
    assert reply.status in (204, 409), reply.body
    if reply.status == 409:  # the first answer may report the crash; a retry removes it
        reply = await api.delete(f"{vm}/adapters/0/ports/0/nio")
        assert reply.status == 204, reply.body
    assert not api.state.ports.in_use("udp", lport)
    assert (await api.get(f"{vm}/adapters/0/ports/0/nio/stats")).status == 409
    api.fake.clear_faults()
    assert (await api.post(f"{vm}/start")).status == 204  # rebuilt without the link
    commands = api.fake.commands(hypervisor_port(api, router["vm_id"]))
    assert not any(c.startswith("vm slot_add_nio_binding") for c in commands)


@pytest.fixture
async def slow_api(make_api, tmp_path, fake):
    config = make_config(tmp_path, str(fake.path))
    config.values[("Dynamips", "command_timeout")] = 0.5
    return await make_api(config)


@pytest.mark.parametrize("fault", ["hang", "garbage"])
async def test_hypervisor_that_hangs_or_answers_garbage(slow_api, fault):
    """E1: a hung or out-of-step hypervisor costs one bounded 409; the router keeps its old
    settings, other routers are unaffected, and the router can be started again (rebuilt in
    a new process) or deleted."""
    api = slow_api
    pid = await api.project()
    r1 = await api.router(pid)
    r2 = await api.router(pid, name="R2")
    vm1 = f"/projects/{pid}/dynamips/vms/{r1['vm_id']}"
    vm2 = f"/projects/{pid}/dynamips/vms/{r2['vm_id']}"
    old_pid = router_of(api, r1["vm_id"]).hypervisor.pid
    api.fake.inject(r'^vm set_ram "R1"', fault)
    reply, elapsed = await timed(api.put(vm1, {"ram": 512}))
    conflict(reply, elapsed)
    assert (await api.get(vm1)).body["ram"] == 256
    reply = await api.put(vm2, {"ram": 384})
    assert reply.status == 200 and reply.body["ram"] == 384
    await assert_serving(api)

    # the hypervisor that lost step is not trusted again: the next start rebuilds the router
    api.fake.clear_faults()
    reply, elapsed = await timed(api.post(f"{vm1}/start"))
    assert reply.status == 204 and elapsed < BOUND, reply.body
    assert process_gone(old_pid)
    node = router_of(api, r1["vm_id"])
    assert await dynamips_names(node, "vm list") == ["R1"]
    reply, elapsed = await timed(api.delete(vm1))
    assert reply.status == 204 and elapsed < BOUND
    assert process_gone(node.hypervisor.pid if node.hypervisor else old_pid)


async def test_config_save_into_an_unwritable_folder_loses_nothing(api, project_dir):
    """C14: a save that cannot be written answers 409 and leaves the saved file intact; once
    the obstacle is gone the save works. (Tests run as root, so permissions would not stop
    the write: a directory stands where the temporary file must go.)"""
    pid = await api.project()
    router = await api.router(pid, startup_config_content="hostname %h\n")
    vm = f"/projects/{pid}/dynamips/vms/{router['vm_id']}"
    configs = project_dir(pid) / "configs"
    config = configs / "i1_startup-config.cfg"
    saved = config.read_bytes()
    assert (await api.post(f"{vm}/start")).status == 204  # the fake's NVRAM: the file's text
    blocker = configs / "i1_startup-config.cfg.tmp"
    blocker.mkdir()

    reply, elapsed = await timed(api.post(f"{vm}/configs/save"))
    conflict(reply, elapsed, "i1_startup-config.cfg")
    assert config.read_bytes() == saved
    assert (await api.post(f"/projects/{pid}/commit")).status == 204  # logged, not fatal
    assert config.read_bytes() == saved
    await assert_serving(api)

    blocker.rmdir()
    assert (await api.post(f"{vm}/configs/save")).status == 200
    assert b"hostname R1" in config.read_bytes()


async def test_config_written_where_configs_is_a_file(api, project_dir):
    """Pushing a config when ``configs`` cannot be a folder: 409, nothing changed."""
    pid = await api.project()
    router = await api.router(pid)
    vm = f"/projects/{pid}/dynamips/vms/{router['vm_id']}"
    configs = project_dir(pid) / "configs"
    shutil.rmtree(configs, ignore_errors=True)
    configs.write_bytes(b"not a folder")
    reply, elapsed = await timed(api.put(vm, {"startup_config_content": "hostname %h\n"}))
    conflict(reply, elapsed)
    assert configs.read_bytes() == b"not a folder"
    assert (await api.get(vm)).body["startup_config"] == ""
    await assert_serving(api)


@needs_dynamips
async def test_real_dynamips_killed_between_steps(real_api):
    """kill -9 of real dynamips processes: bounded 409s, the other node unaffected, a start
    rebuilds the router in a new process, deletes and close leave no process."""
    api = real_api
    assert REAL_DYNAMIPS
    pid = await api.project()
    router = await api.router(pid)
    switch = await api.device(pid)
    vm = f"/projects/{pid}/dynamips/vms/{router['vm_id']}"
    dev = f"/projects/{pid}/dynamips/devices/{switch['device_id']}"
    first = router_of(api, router["vm_id"]).hypervisor.pid
    os.kill(first, signal.SIGKILL)
    await wait_for(lambda: process_gone(first), BOUND)

    lport = await api.udp_port(pid)
    nio = {"type": "nio_udp", "lport": lport, "rhost": "127.0.0.1", "rport": 9}
    reply, elapsed = await timed(api.post(f"{vm}/adapters/0/ports/0/nio", nio))
    conflict(reply, elapsed)
    assert not api.state.ports.in_use("udp", lport)
    assert (await api.get(vm)).status == 200
    reply = await api.post(f"{dev}/ports/1/nio", {"nio": nio})
    assert reply.status == 201, reply.body
    switch_node = api.state.dynamips.devices[switch["device_id"]]
    assert await dynamips_names(switch_node, "ethsw list") == ["SW1"]

    reply = await api.post(f"{vm}/start")
    assert reply.status == 204, reply.body
    node = router_of(api, router["vm_id"])
    second = node.hypervisor.pid
    assert second != first
    assert await dynamips_names(node, "vm list") == ["R1"]

    os.kill(second, signal.SIGKILL)
    os.kill(switch_node.hypervisor.pid, signal.SIGKILL)
    third = switch_node.hypervisor.pid
    await wait_for(lambda: process_gone(second) and process_gone(third), BOUND)
    for url in (vm, dev):
        reply, elapsed = await timed(api.delete(url))
        assert reply.status == 204 and elapsed < BOUND, reply.body
    reply, elapsed = await timed(api.post(f"/projects/{pid}/close"))
    assert reply.status == 204 and elapsed < BOUND
    assert not api.state.dynamips.hypervisors.get(pid)
    assert all(process_gone(p) for p in (first, second, third))


async def test_hypervisor_that_hangs_during_create(slow_api):
    """E1/B1: a create whose hypervisor stops answering is rolled back within the timeout:
    no router, no process, the console port free."""
    api = slow_api
    pid = await api.project()
    api.fake.inject(r'^vm set_con_tcp_port "RH"', "hang")
    body = {"name": "RH", "platform": "c7200", "image": "c7200.image", "ram": 256}
    reply, elapsed = await timed(api.post(f"/projects/{pid}/dynamips/vms", body))
    conflict(reply, elapsed, "did not answer")
    assert not api.state.dynamips.routers
    assert not api.state.dynamips.hypervisors.get(pid)
    assert not api.state.ports.owned(pid, "tcp")
    assert not fake_processes(api)
    await assert_serving(api)
