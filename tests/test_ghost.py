"""Issue 5, ghost IOS (fake hypervisor): one ghost file per (image, RAM, platform), built once
by a temporary instance, then used by every router; bug cases C8, C9, C10 and C16."""

from __future__ import annotations

import asyncio
import os

import pytest

from dynamips_mgr.dynamips.manager import ghost_file_name
from dynamips_mgr.testing.synthetic_image import build_image
from tests.conftest import ELF_TEST_IMAGE, Notifications, hypervisor_port, make_config


def commands(api, router: dict) -> list[str]:
    return api.fake.commands(hypervisor_port(api, router["vm_id"]))


async def start(api, project_id: str, router: dict) -> int:
    reply = await api.post(f"/projects/{project_id}/dynamips/vms/{router['vm_id']}/start")
    return reply.status


def ghost_commands(lines: list[str]) -> list[str]:
    return [line for line in lines if '"Ghost"' in line or "ghost" in line]


@pytest.mark.parametrize(
    ("platform", "ram"),
    [("c7200", 256), ("c3725", 128)],  # C8: RAM 128 is sent too
)
async def test_first_start_builds_the_ghost_then_the_router_uses_it(api, images_dir, platform, ram):
    project_id = await api.project()
    router = await api.router(project_id, platform=platform, image=f"{platform}.image", ram=ram)
    assert await start(api, project_id, router) == 204
    name = f"{platform}.image-{ram}.ghost"
    image = str(images_dir / f"{platform}.image")
    lines = commands(api, router)
    assert ghost_commands(lines) == [
        f'vm create "Ghost" 0 {platform}',
        f'vm set_ios "Ghost" "{image}"',
        'vm set_ghost_status "Ghost" 1',
        f'vm set_ghost_file "Ghost" "{name}"',
        f'vm set_ram "Ghost" {ram}',
        'vm start "Ghost"',
        'vm stop "Ghost"',
        'vm clean_delete "Ghost"',
        'vm set_ghost_status "R1" 2',
        f'vm set_ghost_file "R1" "{name}"',
    ]
    assert lines.index(f'vm set_ghost_file "R1" "{name}"') < lines.index('vm start "R1"')
    module_dir = api.state.projects.get(project_id).module_dir
    assert (module_dir / name).is_file()
    assert str(module_dir / name) in api.state.dynamips.ghosts

    # a second start reuses everything: no new build, no new ghost commands
    vm = f"/projects/{project_id}/dynamips/vms/{router['vm_id']}"
    assert (await api.post(f"{vm}/stop")).status == 204
    assert await start(api, project_id, router) == 204
    assert ghost_commands(commands(api, router)) == ghost_commands(lines)


async def test_concurrent_starts_of_one_image_build_the_ghost_once(api):
    project_id = await api.project()
    routers = [await api.router(project_id, name=f"R{i}") for i in range(1, 4)]
    statuses = await asyncio.gather(*(start(api, project_id, r) for r in routers))
    assert statuses == [204, 204, 204]
    creates = [c for r in routers for c in commands(api, r) if c.startswith('vm create "Ghost"')]
    assert creates == ['vm create "Ghost" 0 c7200']
    for router in routers:
        assert f'vm set_ghost_status "{router["name"]}" 2' in commands(api, router)
    module_dir = api.state.projects.get(project_id).module_dir
    assert [n for n in os.listdir(module_dir) if n.endswith(".ghost")] == ["c7200.image-256.ghost"]


async def test_c16_image_name_with_a_space_is_quoted(api, images_dir):
    (images_dir / "c7200 test.image").write_bytes(ELF_TEST_IMAGE)
    project_id = await api.project()
    router = await api.router(project_id, image="c7200 test.image")
    assert await start(api, project_id, router) == 204
    lines = commands(api, router)
    assert 'vm set_ghost_file "Ghost" "c7200 test.image-256.ghost"' in lines
    assert 'vm set_ghost_file "R1" "c7200 test.image-256.ghost"' in lines
    assert 'vm clean_delete "Ghost"' in lines
    assert (await api.post(f"/projects/{project_id}/close")).status == 204
    assert not list(api.state.projects.location.glob("*/project-files/dynamips/*.ghost"))


async def test_c9_without_mmap_or_with_ghost_support_off_the_router_starts_without_ghost(api):
    """C9: mmap off skips ghosting (no 409); so does [Dynamips] ghost_ios_support = false."""
    project_id = await api.project()
    r1 = await api.router(project_id, name="R1", mmap=False)
    assert await start(api, project_id, r1) == 204
    assert ghost_commands(commands(api, r1)) == []

    api.state.config.values[("Dynamips", "ghost_ios_support")] = False
    r2 = await api.router(project_id, name="R2")
    assert await start(api, project_id, r2) == 204
    assert ghost_commands(commands(api, r2)) == []


async def test_npe_g2_routers_are_not_ghosted(api, images_dir):
    """npe-g2 (PowerPC, c7200p images) starts without ghost IOS, as in the original."""
    (images_dir / "c7200p.image").write_bytes(build_image("c2600"))  # PowerPC code
    project_id = await api.project()
    router = await api.router(project_id, image="c7200p.image", npe="npe-g2")
    assert router["npe"] == "npe-g2"
    assert await start(api, project_id, router) == 204
    assert ghost_commands(commands(api, router)) == []


async def test_c10_the_ghost_instance_sends_no_notification(api):
    project_id = await api.project()
    async with Notifications(api, project_id) as events:
        router = await api.router(project_id)
        assert await start(api, project_id, router) == 204
        await events.expect("vm.started", name="R1")
        assert [e for e in events.events if e["action"].startswith(("vm.", "log."))] == [
            e for e in events.events if e["action"] == "vm.started"
        ]
        assert events.actions("Ghost") == []


@pytest.mark.parametrize(
    "failing",
    ['vm set_ghost_status "Ghost"', 'vm set_ram "Ghost"', 'vm start "Ghost"'],
)
async def test_a_failed_ghost_build_deletes_the_ghost_vm_and_the_router_still_starts(api, failing):
    """C16: a failing ghost build never leaves the Ghost instance behind (which would keep the
    process alive after close); the router starts without ghost and a later start retries."""
    api.fake.inject(failing, "error", reply="206-unable to do that", times=1)
    project_id = await api.project()
    router = await api.router(project_id)
    assert await start(api, project_id, router) == 204
    lines = commands(api, router)
    assert 'vm clean_delete "Ghost"' in lines
    assert 'vm set_ghost_status "R1" 2' not in lines
    node = api.state.dynamips.routers[router["vm_id"]]
    assert await node.send("vm list") == ["R1 (c7200)"]
    assert not api.state.dynamips.ghosts

    vm = f"/projects/{project_id}/dynamips/vms/{router['vm_id']}"
    assert (await api.post(f"{vm}/stop")).status == 204
    assert await start(api, project_id, router) == 204  # the build is tried again, and works
    assert 'vm set_ghost_status "R1" 2' in commands(api, router)


async def test_when_clean_delete_fails_the_ghost_vm_is_deleted_anyway(api):
    api.fake.inject('vm clean_delete "Ghost"', "error", reply="207-unable to delete VM 'Ghost'")
    project_id = await api.project()
    router = await api.router(project_id)
    assert await start(api, project_id, router) == 204
    assert 'vm delete "Ghost"' in commands(api, router)
    node = api.state.dynamips.routers[router["vm_id"]]
    assert await node.send("vm list") == ["R1 (c7200)"]


async def test_ghost_files_are_removed_and_forgotten_at_project_close(api):
    project_id = await api.project()
    router = await api.router(project_id)
    assert await start(api, project_id, router) == 204
    module_dir = api.state.projects.get(project_id).module_dir
    assert list(module_dir.glob("*.ghost"))
    assert (await api.post(f"/projects/{project_id}/close")).status == 204
    assert not list(module_dir.glob("*.ghost"))
    assert not api.state.dynamips.ghosts


def test_ghost_file_names():
    """The original's name when the image says its platform; one file never serves two."""
    assert ghost_file_name("/images/IOS/c7200-adv.124.image", "c7200", 256) == (
        "c7200-adv.124.image-256.ghost"
    )
    assert ghost_file_name("/images/IOS/ios.bin", "c3725", 128) == "ios.bin-c3725-128.ghost"
    assert ghost_file_name("/x/c3725.image", "c3745", 128) == "c3725.image-c3745-128.ghost"
    assert ghost_file_name("C:\\IOS\\c7200:x.bin", "c7200", 256) == "C--IOS-c7200-x.bin-256.ghost"


async def test_two_images_on_one_shared_hypervisor_build_one_ghost_instance_at_a_time(
    make_api, fake, tmp_path, images_dir
):
    """Routers sharing a process (nodes_per_hypervisor) starting together with different
    images: the "Ghost" instances are built one after the other, so both builds succeed."""
    config = make_config(tmp_path, str(fake.path))
    config.values[("Dynamips", "nodes_per_hypervisor")] = 2
    api = await make_api(config)
    (images_dir / "c7200-2.image").write_bytes(ELF_TEST_IMAGE)
    project_id = await api.project()
    r1 = await api.router(project_id, name="R1")
    r2 = await api.router(project_id, name="R2", image="c7200-2.image")
    assert hypervisor_port(api, r1["vm_id"]) == hypervisor_port(api, r2["vm_id"])
    assert await asyncio.gather(start(api, project_id, r1), start(api, project_id, r2)) == [
        204,
        204,
    ]
    lines = commands(api, r1)
    assert lines.count('vm create "Ghost" 0 c7200') == 2
    assert 'vm set_ghost_file "R1" "c7200.image-256.ghost"' in lines
    assert 'vm set_ghost_file "R2" "c7200-2.image-256.ghost"' in lines
