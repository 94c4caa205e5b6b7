"""Issue 5, the Dynamips side of the project lifecycle (fake hypervisor): closing, closed,
moved, committed, the forcing options and the server shutdown (B6, B10, B11, C26, E9)."""

from __future__ import annotations

from pathlib import Path

import psutil

from tests.conftest import hypervisor_port, make_config, wait_for

CLOSE_REMOVES = ("x.ghost", "c3600_i1_lock", "ilt_test", "c3600_i1_rommon_vars", "c3600_i1_log.txt")
CLOSE_KEEPS = (
    "c3600_i1_nvram",
    "c3600_i1_rom",
    "c3600_i1_bootflash",
    "c3600_i1_ssa",
    "c3600_i1_disk0",
)


def gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


async def lab(api, **project) -> tuple[str, dict, dict, Path]:
    project_id = await api.project(**project)
    router = await api.router(project_id, platform="c3600", image="c3600.image", ram=128)
    switch = await api.device(project_id)
    return project_id, router, switch, api.state.projects.get(project_id).module_dir


async def test_close_deletes_nodes_removes_temporary_files_and_releases_ids_and_ports(
    api, tmp_path
):
    """C26: a project path with glob-special characters; only the listed kinds of files go;
    B11: per-process log files go too."""
    path = tmp_path / "lab [x]{1}"
    path.mkdir()
    project_id, router, switch, module_dir = await lab(api, path=str(path))
    dynamips = api.state.dynamips
    pids = [
        dynamips.routers[router["vm_id"]].hypervisor.pid,
        dynamips.devices[switch["device_id"]].hypervisor.pid,
    ]
    router_port = hypervisor_port(api, router["vm_id"])
    switch_port = hypervisor_port(api, switch["device_id"])
    for name in (*CLOSE_REMOVES, *CLOSE_KEEPS, "c3600_i10_log.txt", "dynamips_i77_log.txt"):
        (module_dir / name).write_text("x")
    (module_dir / "configs").mkdir(exist_ok=True)
    (module_dir / "configs" / "i1_startup-config.cfg").write_text("!\n")
    assert api.state.ports.owned(project_id, "tcp")

    assert (await api.post(f"/projects/{project_id}/close")).status == 204

    assert router["vm_id"] not in dynamips.routers  # closing: routers and devices deleted
    assert switch["device_id"] not in dynamips.devices  # B6: not left in the table
    assert api.fake.commands(router_port)[-2:] == ['vm delete "R1"', "hypervisor stop"]
    assert api.fake.commands(switch_port)[-2:] == ['ethsw delete "SW1"', "hypervisor stop"]
    await wait_for(lambda: all(gone(pid) for pid in pids), 5)
    left = set(p.name for p in module_dir.iterdir())
    assert left == {*CLOSE_KEEPS, "configs"}
    assert (module_dir / "configs" / "i1_startup-config.cfg").read_text() == "!\n"
    assert not api.state.ports.owned(project_id, "tcp")
    assert not api.state.ports.owned(project_id, "udp")
    assert project_id not in dynamips.dynamips_ids

    # the same project opened again starts over: dynamips id 1, the first console port
    assert await api.project(project_id=project_id, path=str(path)) == project_id
    again = await api.router(project_id, platform="c3600", image="c3600.image", ram=128)
    assert again["dynamips_id"] == 1 and again["console"] == router["console"]


async def test_a_deleted_router_is_destroyed_at_commit_and_only_its_own_files(api):
    """E9: destroying router 1 never touches the files of router 10; the id is released."""
    project_id = await api.project()
    r1 = await api.router(project_id, name="R1", startup_config_content="hostname R1\n")
    r10 = await api.router(project_id, name="R10", dynamips_id=10, startup_config_content="x\n")
    module_dir = api.state.projects.get(project_id).module_dir
    mine = ["c7200_i1_nvram", "c7200_i1_disk0"]
    other = ["c7200_i10_nvram", "c7200_i10_disk0", "c7200_i1x"]
    for name in (*mine, *other):
        (module_dir / name).write_text("x")
    vms = f"/projects/{project_id}/dynamips/vms"
    assert (await api.delete(f"{vms}/{r1['vm_id']}")).status == 204
    assert all((module_dir / name).exists() for name in mine)  # until the commit

    assert (await api.post(f"/projects/{project_id}/commit")).status == 204
    assert not any((module_dir / name).exists() for name in mine)
    assert not (module_dir / "configs" / "i1_startup-config.cfg").exists()
    assert all((module_dir / name).exists() for name in other)
    assert (module_dir / "configs" / "i10_startup-config.cfg").exists()
    assert (await api.router(project_id, name="R2"))["dynamips_id"] == 1
    assert r10["vm_id"] in api.state.dynamips.routers


async def test_b10_a_deleted_but_uncommitted_router_is_destroyed_at_close(api):
    project_id = await api.project()
    r1 = await api.router(project_id, name="R1", startup_config_content="hostname R1\n")
    await api.router(project_id, name="R10", dynamips_id=10)
    module_dir = api.state.projects.get(project_id).module_dir
    for name in ("c7200_i1_nvram", "c7200_i10_nvram"):
        (module_dir / name).write_text("x")
    assert (await api.delete(f"/projects/{project_id}/dynamips/vms/{r1['vm_id']}")).status == 204
    assert (await api.post(f"/projects/{project_id}/close")).status == 204
    assert not (module_dir / "c7200_i1_nvram").exists()
    assert not (module_dir / "configs" / "i1_startup-config.cfg").exists()
    assert (module_dir / "c7200_i10_nvram").exists()


async def test_moving_the_project_sends_the_new_working_dir_to_every_hypervisor(api, tmp_path):
    project_id, router, switch, _ = await lab(api)
    new = tmp_path / "moved project"
    new.mkdir()
    reply = await api.put(f"/projects/{project_id}", {"path": str(new)})
    assert reply.status == 200, reply.body
    expected = f'hypervisor working_dir "{new}/project-files/dynamips"'
    for node_id in (router["vm_id"], switch["device_id"]):
        assert api.fake.commands(hypervisor_port(api, node_id))[-1] == expected
    assert (new / "project-files" / "dynamips").is_dir()
    # later files land in the new folder
    vm = f"/projects/{project_id}/dynamips/vms/{router['vm_id']}"
    assert (await api.put(vm, {"startup_config_content": "hostname R1\n"})).status == 200
    assert (new / "project-files/dynamips/configs/i1_startup-config.cfg").is_file()


async def test_mmap_and_sparse_memory_support_off_force_the_settings_off(make_api, fake, tmp_path):
    config = make_config(tmp_path, str(fake.path))
    config.values[("Dynamips", "mmap_support")] = False
    config.values[("Dynamips", "sparse_memory_support")] = False
    api = await make_api(config)
    project_id = await api.project()
    router = await api.router(project_id, mmap=True, sparsemem=True)
    assert (router["mmap"], router["sparsemem"]) == (False, False)
    lines = api.fake.commands(hypervisor_port(api, router["vm_id"]))
    assert lines.index('vm set_ram_mmap "R1" 0') > lines.index('vm create "R1" 1 c7200')
    assert lines[-1] != 'vm set_sparse_mem "R1" 1'
    assert [line for line in lines if line.startswith("vm set_sparse_mem")][-1].endswith(" 0")
    vm = f"/projects/{project_id}/dynamips/vms/{router['vm_id']}"
    reply = await api.put(vm, {"mmap": True, "sparsemem": True})
    assert reply.status == 200 and (reply.body["mmap"], reply.body["sparsemem"]) == (False, False)
    lines = api.fake.commands(hypervisor_port(api, router["vm_id"]))
    assert [line for line in lines if line.startswith("vm set_ram_mmap")][-1].endswith(" 0")
    # and without mmap there is no ghost IOS: the start simply works (C9)
    assert (await api.post(f"{vm}/start")).status == 204


async def test_server_shutdown_closes_projects_and_stops_every_hypervisor(api):
    await lab(api)
    other = await api.project()
    await api.device(other, name="SW2")
    pids = [hv.pid for pool in api.state.dynamips.hypervisors.values() for hv in pool]
    assert len(pids) == 3
    await api.app.shutdown()  # what SIGTERM / POST /v1/server/shutdown run
    await wait_for(lambda: all(gone(pid) for pid in pids), 5)
    assert not api.state.projects.projects
    assert not api.state.dynamips.hypervisors


async def test_unload_stops_hypervisors_of_projects_still_open(api):
    await lab(api)
    pids = [hv.pid for pool in api.state.dynamips.hypervisors.values() for hv in pool]
    await api.state.dynamips.unload()
    await wait_for(lambda: all(gone(pid) for pid in pids), 5)
