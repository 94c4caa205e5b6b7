"""Issue 5, configs (fake hypervisor): files, NVRAM round trip, saves, rename, bug cases
C11, C13, C14, C16 (private path kept), C17 and C18."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ELF_TEST_IMAGE, hypervisor_port, wait_for

STARTUP = "hostname %h\r\ninterface FastEthernet0/0\r\n no shutdown\r\n"
STARTUP_FILE = "!\nhostname R1\ninterface FastEthernet0/0\n no shutdown\n"
PRIVATE = "kron policy %h\r\nend\r\n"


async def make_router(api, **body) -> tuple[str, dict, str, Path]:
    project_id = await api.project()
    router = await api.router(project_id, **body)
    vm = f"/projects/{project_id}/dynamips/vms/{router['vm_id']}"
    configs = api.state.projects.get(project_id).module_dir / "configs"
    return project_id, router, vm, configs


def sent(api, router: dict, prefix: str) -> list[str]:
    return [
        c for c in api.fake.commands(hypervisor_port(api, router["vm_id"])) if c.startswith(prefix)
    ]


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """Make ``folder`` unwritable, also for root (chattr +i); skip where impossible."""
    if os.geteuid() == 0:
        chattr = shutil.which("chattr")
        if chattr is None or subprocess.run([chattr, "+i", str(folder)]).returncode != 0:
            pytest.skip("cannot make a folder read-only for root here")
        try:
            yield
        finally:
            subprocess.run([chattr, "-i", str(folder)], check=True)
    else:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)


async def test_content_becomes_files_with_prefix_no_cr_and_hostname(api):
    """`!\\n` first, CR removed, %h = router name, both paths relative to the module folder."""
    _, router, _, configs = await make_router(
        api, startup_config_content=STARTUP, private_config_content=PRIVATE
    )
    assert (configs / "i1_startup-config.cfg").read_bytes() == STARTUP_FILE.encode()
    assert (configs / "i1_private-config.cfg").read_text() == "!\nkron policy R1\nend\n"
    assert router["startup_config"] == "configs/i1_startup-config.cfg"
    assert router["private_config"] == "configs/i1_private-config.cfg"
    assert sent(api, router, "vm set_config") == [
        'vm set_config "R1" "configs/i1_startup-config.cfg" "configs/i1_private-config.cfg"'
    ]


async def test_c11_settings_updates_never_wipe_the_startup_config(api, images_dir):
    """C11: PUT ram/disk0/image leave the file byte-identical; an emptied file becomes `!\\n`."""
    (images_dir / "c7200-2.image").write_bytes(ELF_TEST_IMAGE)
    _, router, vm, configs = await make_router(api, startup_config_content=STARTUP)
    startup = configs / "i1_startup-config.cfg"
    before = startup.read_bytes()
    for body in ({"ram": 384}, {"disk0": 16}, {"image": "c7200-2.image"}):
        reply = await api.put(vm, body)
        assert reply.status == 200, reply.body
        assert startup.read_bytes() == before, body
    startup.write_bytes(b"")  # an empty NVRAM crashes dynamips: never hand it over
    assert (await api.put(vm, {"ram": 256})).status == 200
    assert startup.read_text().startswith("!\n")
    assert (await api.get(vm)).body["startup_config"] == "configs/i1_startup-config.cfg"
    assert sent(api, router, "vm set_config")[0].startswith(
        'vm set_config "R1" "configs/i1_startup-config.cfg"'
    )


async def test_c16_a_new_startup_keeps_the_private_config(api):
    """C16: changing only the startup config never resets the stored private-config path."""
    _, router, vm, configs = await make_router(
        api, startup_config_content=STARTUP, private_config_content=PRIVATE
    )
    reply = await api.put(vm, {"startup_config_content": "hostname changed\n"})
    assert reply.status == 200
    assert reply.body["private_config"] == "configs/i1_private-config.cfg"
    assert (configs / "i1_startup-config.cfg").read_text() == "!\nhostname changed\n"
    assert (configs / "i1_private-config.cfg").read_text() == "!\nkron policy R1\nend\n"
    assert all(
        c.endswith('"configs/i1_private-config.cfg"') for c in sent(api, router, "vm set_config")
    )


async def test_get_configs_reads_files_before_the_first_run_then_nvram(api):
    _, _, vm, configs = await make_router(api, startup_config_content=STARTUP)
    reply = await api.get(f"{vm}/configs")
    assert reply.status == 200
    assert reply.body == {"startup_config_content": STARTUP_FILE}  # no private key at all

    assert (await api.post(f"{vm}/start")).status == 204  # dynamips copies the file to NVRAM
    (configs / "i1_startup-config.cfg").write_text("!\nhostname changed-on-disk\n")
    assert (await api.get(f"{vm}/configs")).body == {"startup_config_content": STARTUP_FILE}


async def test_invalid_utf8_is_replaced_never_a_500(api):
    _, _, vm, configs = await make_router(api, startup_config_content=STARTUP)
    (configs / "i1_startup-config.cfg").write_bytes(b"!\nhostname R\xff1\n\xc3")
    reply = await api.get(f"{vm}/configs")  # from the file
    assert reply.status == 200
    assert reply.body["startup_config_content"] == "!\nhostname R\ufffd1\n\ufffd"
    assert (await api.post(f"{vm}/start")).status == 204
    reply = await api.get(f"{vm}/configs")  # from NVRAM (base64 of the same bytes)
    assert reply.status == 200
    assert reply.body["startup_config_content"] == "!\nhostname R\ufffd1\n\ufffd"
    assert (await api.post(f"{vm}/configs/save")).status == 200


async def test_configs_save_writes_nvram_and_a_start_stop_round_trip_is_exact(api):
    """POST configs/save writes the files from NVRAM; a start/stop leaves them byte-identical
    (the original added one more `!` line at every save; C18: private stays raw)."""
    _, _, vm, configs = await make_router(
        api, startup_config_content=STARTUP, private_config_content=PRIVATE
    )
    startup, private = configs / "i1_startup-config.cfg", configs / "i1_private-config.cfg"
    original = startup.read_bytes(), private.read_bytes()
    assert (await api.post(f"{vm}/start")).status == 204
    startup.write_text("garbage")
    private.write_text("garbage")
    reply = await api.post(f"{vm}/configs/save")
    assert reply.status == 200 and reply.text == ""
    assert (startup.read_bytes(), private.read_bytes()) == original
    assert (await api.post(f"{vm}/stop")).status == 204
    assert (startup.read_bytes(), private.read_bytes()) == original
    assert not [p for p in configs.iterdir() if p.suffix == ".tmp"]


@pytest.mark.parametrize("event", ["stop", "reload", "commit", "close"])
async def test_configs_are_saved_on(api, event):
    project_id, _, vm, configs = await make_router(api, startup_config_content=STARTUP)
    assert (await api.post(f"{vm}/start")).status == 204
    startup = configs / "i1_startup-config.cfg"
    startup.write_text("overwritten on disk, NVRAM still has the config")
    path = {
        "stop": f"{vm}/stop",
        "reload": f"{vm}/reload",
        "commit": f"/projects/{project_id}/commit",
        "close": f"/projects/{project_id}/close",
    }[event]
    assert (await api.post(path)).status == 204
    assert startup.read_text() == STARTUP_FILE


async def test_c14_never_started_routers_keep_their_files_and_one_failure_stops_nothing(api):
    """C14: commit/save of never-started routers never truncates; a deleted configs/ folder is
    recreated; one router whose hypervisor dies does not stop the others being saved."""
    project_id = await api.project()
    p = f"/projects/{project_id}/dynamips/vms"
    r2 = await api.router(project_id, name="R2", startup_config_content=STARTUP)
    r1 = await api.router(project_id, name="R1", startup_config_content=STARTUP)
    configs = api.state.projects.get(project_id).module_dir / "configs"
    files = {r["name"]: configs / f"i{r['dynamips_id']}_startup-config.cfg" for r in (r1, r2)}
    before = {name: path.read_bytes() for name, path in files.items()}

    for _ in range(2):
        assert (await api.post(f"/projects/{project_id}/commit")).status == 204
        assert (await api.post(f"{p}/{r1['vm_id']}/configs/save")).status == 200
        reply = await api.get(f"{p}/{r1['vm_id']}/configs")
        assert reply.status == 200 and list(reply.body) == ["startup_config_content"]
        assert {name: path.read_bytes() for name, path in files.items()} == before
        assert sorted(os.listdir(configs)) == ["i1_startup-config.cfg", "i2_startup-config.cfg"]

    shutil.rmtree(configs)  # gns3-server#572
    assert (await api.post(f"/projects/{project_id}/commit")).status == 204
    assert (await api.post(f"{p}/{r1['vm_id']}/configs/save")).status == 200
    assert configs.is_dir()
    reply = await api.get(f"{p}/{r1['vm_id']}/configs")
    assert reply.status == 200 and reply.body == {}

    # both run; R2's hypervisor dies while saving (it is saved first); R1 is still saved
    for router in (r1, r2):
        assert (
            await api.put(f"{p}/{router['vm_id']}", {"startup_config_content": STARTUP})
        ).status == 200
        assert (await api.post(f"{p}/{router['vm_id']}/start")).status == 204
    files["R1"].write_text("to be restored from NVRAM")
    api.fake.inject('vm extract_config "R2"', "exit", exit_code=-11)
    assert (await api.post(f"/projects/{project_id}/commit")).status == 204
    assert files["R1"].read_bytes() == before["R1"]


async def test_saving_into_a_read_only_folder_is_a_clear_409_and_loses_nothing(api):
    _, _, vm, configs = await make_router(api, startup_config_content=STARTUP)
    startup = configs / "i1_startup-config.cfg"
    assert (await api.post(f"{vm}/start")).status == 204
    with read_only(configs):
        reply = await api.post(f"{vm}/configs/save")
        assert reply.status == 409
        assert "Could not save the startup configuration" in reply.body["message"]
        reply = await api.put(vm, {"startup_config_content": "hostname new\n"})
        assert reply.status == 409
        assert "Could not create config file" in reply.body["message"]
    assert startup.read_text() == STARTUP_FILE
    assert sorted(os.listdir(configs)) == ["i1_startup-config.cfg"]  # no temporary left


async def test_c17_rename_rewrites_only_the_hostname_line_after_dynamips_agreed(api):
    """C17: `R10`, descriptions and other names stay; a shorter name leaves no stray bytes;
    a rename dynamips refuses (C13: e.g. running) changes no file."""
    text = "hostname %h\ninterface R10\n description link to R1 of R10\nbanner motd ^R1^\n"
    _, _, vm, configs = await make_router(api, startup_config_content=text)
    startup = configs / "i1_startup-config.cfg"

    api.fake.inject(
        'vm rename "R1"', "error", reply="213-unable to rename VM instance 'R1'", times=1
    )
    reply = await api.put(vm, {"name": "Z"})
    assert reply.status == 409
    assert (await api.get(vm)).body["name"] == "R1"
    assert startup.read_text() == "!\n" + text.replace("%h", "R1")

    reply = await api.put(vm, {"name": "Z"})
    assert reply.status == 200 and reply.body["name"] == "Z"
    assert startup.read_bytes() == (
        b"!\nhostname Z\ninterface R10\n description link to R1 of R10\nbanner motd ^R1^\n"
    )

    assert (await api.post(f"{vm}/start")).status == 204
    reply = await api.put(vm, {"name": "R1"})  # C13: refused while running, file unchanged
    assert reply.status == 409 and "running" in reply.body["message"]
    assert startup.read_text().startswith("!\nhostname Z\n")


async def test_rename_rewrites_the_startup_file_actually_in_use(api):
    project_id = await api.project()
    module_dir = api.state.projects.get(project_id).module_dir
    (module_dir / "custom").mkdir()
    (module_dir / "custom" / "r1.cfg").write_text("!\nhostname R1\n")
    router = await api.router(project_id, startup_config="custom/r1.cfg")
    assert router["startup_config"] == "custom/r1.cfg"
    vm = f"/projects/{project_id}/dynamips/vms/{router['vm_id']}"
    assert (await api.put(vm, {"name": "Edge"})).status == 200
    assert (module_dir / "custom" / "r1.cfg").read_text() == "!\nhostname Edge\n"
    assert not (module_dir / "configs" / "i1_startup-config.cfg").exists()


async def test_a_missing_private_config_file_is_a_409_not_a_500(api):
    project_id = await api.project()
    body = {"name": "R1", "platform": "c7200", "image": "c7200.image", "ram": 256}
    reply = await api.post(
        f"/projects/{project_id}/dynamips/vms", {**body, "private_config": "no.cfg"}
    )
    assert reply.status == 409 and "no.cfg" in reply.body["message"]

    router = await api.router(project_id, private_config_content=PRIVATE)
    vm = f"/projects/{project_id}/dynamips/vms/{router['vm_id']}"
    (api.state.projects.get(project_id).module_dir / router["private_config"]).unlink()
    reply = await api.put(vm, {"startup_config_content": STARTUP})
    assert reply.status == 409
    assert "Cannot access the private-config" in reply.body["message"]


async def test_a_router_whose_process_died_answers_configs_from_the_files(api):
    _, router, vm, configs = await make_router(api, startup_config_content=STARTUP)
    assert (await api.post(f"{vm}/start")).status == 204
    node = api.state.dynamips.routers[router["vm_id"]]
    os.kill(node.hypervisor.pid, signal.SIGKILL)
    await wait_for(lambda: not node.hypervisor.alive, 5)
    reply = await api.get(f"{vm}/configs")
    assert reply.status == 200 and reply.body == {"startup_config_content": STARTUP_FILE}
    assert (await api.post(f"{vm}/configs/save")).status == 200
    assert (configs / "i1_startup-config.cfg").read_text() == STARTUP_FILE
