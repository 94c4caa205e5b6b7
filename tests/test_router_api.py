"""Issue 4: the router routes over HTTP (fake hypervisor): GUI fields, errors, ids, consoles,
NIOs, captures, start checks, images and file cleanup. Bug cases are cited by id."""

from __future__ import annotations

import hashlib
import os
import threading
import uuid

import pytest

from dynamips_mgr.testing.gui_payloads import WIZARD_TEMPLATE as TEMPLATE
from dynamips_mgr.web.errors import JSON_TYPE
from tests.conftest import ELF_TEST_IMAGE, Notifications, make_config
from tests.test_router_commands import (
    VMS,
    Vm,
    fake_processes,
    image_path,
    make_vm,
    post_router,
)

GUI_C7200 = {
    "name": "R1",
    "platform": "c7200",
    "ram": 512,
    "image": "c7200.image",
    "startup_config_content": "!\nhostname %h\nend\n",
    "nvram": 512,
    "idlepc": "0x606df838",
    **TEMPLATE,
    "slot0": "C7200-IO-FE",
    "slot1": "PA-4T+",
    "slot2": "PA-A1",
    "slot3": "PA-A1",
}
GUI_C3725 = {
    "name": "R2",
    "platform": "c3725",
    "ram": 128,
    "image": "c3725.image",
    "startup_config_content": "hostname %h\n",
    "nvram": 256,
    **TEMPLATE,
    "iomem": 5,
    "slot0": "GT96100-FE",
    "slot1": "NM-1FE-TX",
    "wic0": "WIC-1T",
}
COMMON_TYPES = {
    "vm_id": str,
    "project_id": str,
    "name": str,
    "dynamips_id": int,
    "vm_directory": str,
    "platform": str,
    "image": str,
    "image_md5sum": str,
    "startup_config": str,
    "private_config": str,
    "ram": int,
    "nvram": int,
    "mmap": bool,
    "sparsemem": bool,
    "clock_divisor": int,
    "idlepc": str,
    "idlemax": int,
    "idlesleep": int,
    "exec_area": int,
    "disk0": int,
    "disk1": int,
    "auto_delete_disks": bool,
    "console": int,
    "aux": (int, type(None)),
    "mac_addr": str,
    "system_id": str,
}
PLATFORM_TYPES = {
    "c7200": {"npe": str, "midplane": str, "sensors": list, "power_supplies": list},
    "c3725": {"iomem": int},
    "c3745": {"iomem": int},
    "c2691": {"iomem": int},
    "c3600": {"iomem": int, "chassis": str},
    "c2600": {"iomem": int, "chassis": str},
    "c1700": {"iomem": int, "chassis": str},
}
SLOTS = {"c7200": 7, "c3725": 3, "c3745": 5, "c2691": 2}


def check_gui_fields(body: dict, slots: int, wics: int) -> None:
    """gui-traffic.md §4.2: every key the 1.5 GUI reads, with its type; slotN for every slot,
    wicN only when slot 0 has WIC sub-slots; nothing else."""
    types = {**COMMON_TYPES, **PLATFORM_TYPES[body["platform"]]}
    for key, kind in types.items():
        assert isinstance(body[key], kind) and not (kind is int and body[key] is True), key
    uuid.UUID(body["vm_id"])
    card_keys = {f"slot{i}" for i in range(slots)} | {f"wic{i}" for i in range(wics)}
    assert set(body) == set(types) | card_keys
    for key in card_keys:
        assert body[key] is None or isinstance(body[key], str), key
    if body["platform"] == "c7200":
        assert len(body["sensors"]) == 4 and all(isinstance(v, int) for v in body["sensors"])
        assert len(body["power_supplies"]) == 2


async def test_gui_payloads_reply_with_every_field_the_gui_reads(api, images_dir):
    """The c7200 and c3725 template payloads of gui-traffic.md §4.1: 201 with every field of
    §4.2, Content-Type exactly application/json, image relative, md5 of the file."""
    pid = await api.project()
    md5 = hashlib.md5(ELF_TEST_IMAGE).hexdigest()
    for payload, slots, wics in ((GUI_C7200, 7, 0), (GUI_C3725, 3, 3)):
        reply = await api.post(VMS.format(pid), payload)
        assert reply.status == 201, reply.body
        assert reply.headers["Content-Type"] == JSON_TYPE
        body = reply.body
        check_gui_fields(body, slots, wics)
        assert (body["image"], body["image_md5sum"]) == (payload["image"], md5)
        assert body["startup_config"] == f"configs/i{body['dynamips_id']}_startup-config.cfg"
        assert body["private_config"] == "" and body["aux"] is None
        for key in ("ram", "nvram", "auto_delete_disks", "slot0", "slot1"):
            assert body[key] == payload[key], key
        vm = f"{VMS.format(pid)}/{body['vm_id']}"
        for reply in (await api.get(vm), await api.put(vm, {})):
            assert reply.status == 200 and reply.headers["Content-Type"] == JSON_TYPE
            assert reply.body == body
    assert (body["wic0"], body["wic1"], body["iomem"]) == ("WIC-1T", None, 5)
    # the other platforms' key sets
    for number, (platform, chassis, slots, wics) in enumerate(
        (
            ("c2691", None, 2, 3),
            ("c3745", None, 5, 3),
            ("c3600", "3620", 2, 0),
            ("c3600", "3660", 7, 0),
            ("c2600", "2651XM", 2, 3),
            ("c1700", "1760", 2, 2),
        )
    ):
        extra = {"chassis": chassis} if chassis else {}
        body = await api.router(
            pid, name=f"X{number}", platform=platform, image=f"{platform}.image", ram=64, **extra
        )
        check_gui_fields(body, slots, wics)
        assert (await api.delete(f"{VMS.format(pid)}/{body['vm_id']}")).status == 204


async def test_unknown_platform_chassis_and_adapters(api):
    pid = await api.project()
    before = fake_processes()
    for body, message in (
        ({"platform": "c9999"}, "Unknown router platform: c9999"),
        ({"chassis": "3640"}, "c7200 routers do not have chassis"),
        ({"platform": "c3600", "chassis": "3690"}, "Unknown chassis 3690 for platform c3600"),
        ({"slot1": "NM-1FE-TX"}, "Adapter NM-1FE-TX is not supported in slot 1 of a c7200"),
        ({"slot0": "PA-FE-TX"}, "Slot 0 of a c7200 takes an I/O card"),
        ({"slot1": "C7200-IO-FE"}, "Adapter C7200-IO-FE is not supported in slot 1"),
        ({"platform": "c2600", "slot1": "NM-4T"}, "Adapter NM-4T is not supported in slot 1"),
        ({"platform": "c3725", "wic0": "WIC-1ENET"}, "WIC WIC-1ENET is not supported on a c3725"),
        ({"platform": "c3725", "slot0": None}, "Slot 0 holds the built-in GT96100-FE"),
        ({"platform": "c3600", "wic0": "WIC-1T"}, "WIC slot 0 doesn't exist on this router"),
        ({"platform": "c3725", "slot3": "NM-4T"}, "Slot 3 doesn't exist on this router"),
    ):
        reply = await post_router(api, pid, **body)
        assert reply.status == 409, body
        assert reply.body["message"].startswith(message), reply.body
    reply = await post_router(api, pid, name='R"1')
    assert reply.status == 400  # D8: a quote cannot be carried to dynamips
    assert fake_processes() == before and api.state.dynamips.routers == {}
    # accepted and ignored (C21): unknown and built-in adapter names, wicN null without WICs
    body = await api.router(pid, slot1="PA-DOES-NOT-EXIST", slot0="C7200-IO-FE", wic0=None)
    assert body["slot1"] is None and body["slot0"] == "C7200-IO-FE"
    assert body["dynamips_id"] == 1


async def test_c13_rename_of_a_running_router_is_refused_and_changes_nothing(api):
    pid = await api.project()
    vm = await make_vm(api, pid, startup_config_content="hostname %h\n")
    config = api.state.projects.get(pid).module_dir / "configs/i1_startup-config.cfg"
    text = config.read_text()
    await vm.start()
    reply = await vm.put({"name": "R12"}, status=409)
    assert reply.body["message"] == 'Router "R1" is running: stop it before changing name'
    assert vm.new() == ['vm get_status "R1"']
    assert (await api.get(vm.url)).body["name"] == "R1"
    assert config.read_text() == text
    await vm.post("/stop", status=204)
    reply = await vm.put({"name": "R12"})
    assert reply.body["name"] == "R12"
    assert 'vm rename "R1" "R12"' in vm.new()


async def test_settings_needing_a_stopped_router_are_refused_while_running(api):
    """C13/C24: 409 with a clear message and nothing but the status query sent."""
    pid = await api.project()
    vm = await make_vm(
        api, pid, platform="c3725", image="c3725.image", ram=128, slot1="NM-4T", wic0="WIC-1T"
    )
    await vm.start()
    bodies = [
        {"ram": 256},
        {"nvram": 64},
        {"image": "c7200.image"},
        {"mmap": False},
        {"sparsemem": False},
        {"clock_divisor": 2},
        {"exec_area": 16},
        {"disk0": 1},
        {"disk1": 1},
        {"iomem": 10},
        {"mac_addr": "c201.0000.0001"},
        {"system_id": "X"},
        {"console": vm.body["console"] + 5},
        {"aux": vm.body["console"] + 6},
        {"slot1": None},
        {"slot2": "NM-1FE-TX"},
        {"wic1": "WIC-1T"},
        {"wic0": None},
        {"ram": 256, "idlemax": 100},
    ]
    before = (await api.get(vm.url)).body
    for body in bodies:
        reply = await vm.put(body, status=409)
        assert reply.body["message"].startswith('Router "R1" is running: stop it before'), body
        assert vm.new() == ['vm get_status "R1"'], body
    assert (await api.get(vm.url)).body == before
    # what can change while running does
    reply = await vm.put({"idlemax": 100, "auto_delete_disks": False})
    assert reply.body["idlemax"] == 100
    # a suspended router is not stopped either
    await vm.post("/suspend", status=204)
    reply = await vm.put({"name": "R2"}, status=409)
    assert reply.body["message"] == 'Router "R1" is running: stop it before changing name'
    assert vm.new() == ['vm get_status "R1"']


async def test_c24_slots_and_wics_can_be_removed_and_bad_indexes_refused(api):
    pid = await api.project()
    reply = await post_router(
        api, pid, platform="c3725", image="c3725.image", ram=128, slot1="NM-1FE-TX", wic0="WIC-2T"
    )
    assert reply.status == 201
    assert (reply.body["slot1"], reply.body["wic0"]) == ("NM-1FE-TX", "WIC-2T")
    vm = Vm(api, pid, reply.body)
    await vm.put({"slot1": None, "wic0": None})
    assert vm.new() == [
        'vm get_status "R1"',
        'vm slot_remove_binding "R1" 1 0',
        'vm slot_remove_binding "R1" 0 16',
    ]
    body = (await api.get(vm.url)).body
    assert body["slot1"] is None and body["wic0"] is None and "slot1" in body
    for bad in ({"slot9": "NM-1FE-TX"}, {"wic5": "WIC-1T"}):
        reply = await vm.put(bad, status=400)
        assert vm.new() == []
    # checks come before any command: a bad key anywhere in the body sends nothing
    reply = await vm.put({"wic2": "WIC-1T", "slot2": "NM-4T", "slot4": "NM-4T"}, status=409)
    assert reply.body["message"] == "Slot 4 doesn't exist on this router"
    assert vm.new() == []


async def test_a_refused_command_changes_no_stored_state(api):
    """State changes only after dynamips said yes (architecture rule, C13)."""
    pid = await api.project()
    vm = await make_vm(api, pid, slot1="PA-FE-TX")
    other = await make_vm(api, pid, name="R2", platform="c3600", image="c3600.image", ram=128)
    free = vm.body["console"] + 20
    cases = [
        (vm, "vm set_ram", {"ram": 1024}),
        (vm, "vm rename", {"name": "R5"}),
        (vm, "set_mac_addr", {"mac_addr": "ca01.2222.0000"}),
        (vm, "slot_add_binding", {"slot2": "PA-GE"}),
        (vm, "slot_remove_binding", {"slot1": None}),
        (vm, "set_con_tcp_port", {"console": free}),
        (vm, "set_aux_tcp_port", {"aux": free}),
        (vm, "c7200 set_npe", {"npe": "npe-200"}),
        (vm, "set_idle_pc", {"idlepc": "0x6060"}),
        (other, "c3600 set_chassis", {"chassis": "3660"}),
        (other, "set_iomem", {"iomem": 50}),
    ]
    for target, pattern, body in cases:
        before = (await api.get(target.url)).body
        api.fake.inject(pattern, "error", reply="209-refused")
        reply = await target.put(body, status=409)
        api.fake.clear_faults()
        assert reply.body["message"].endswith("209-refused") or "refused" in reply.body["message"]
        assert (await api.get(target.url)).body == before, pattern
    # the console/aux port asked for was not kept reserved
    assert not api.state.ports.in_use("tcp", free)
    assert (await vm.put({"console": free})).body["console"] == free


async def test_dynamips_ids_lowest_free_explicit_and_released(api, make_api):
    pid = await api.project()
    first = [await api.router(pid, name=f"R{i}") for i in range(1, 4)]
    assert [r["dynamips_id"] for r in first] == [1, 2, 3]
    explicit = await api.router(pid, name="R10", dynamips_id=10)
    assert explicit["dynamips_id"] == 10
    before = fake_processes()
    reply = await post_router(api, pid, name="X", dynamips_id=10)
    assert reply.status == 409
    assert reply.body["message"] == "Dynamips identifier 10 is already used by another router"
    assert fake_processes() == before
    assert (await api.router(pid, name="R4", dynamips_id=0))["dynamips_id"] == 4
    # delete: the id (and the files named after it) stay until the commit
    assert (await api.delete(f"{VMS.format(pid)}/{first[1]['vm_id']}")).status == 204
    assert (await api.router(pid, name="R5"))["dynamips_id"] == 5
    assert (await api.post(f"/projects/{pid}/commit")).status == 204
    assert (await api.router(pid, name="R6"))["dynamips_id"] == 2
    # another project has its own ids; closing a project forgets its ids
    other = await api.project()
    assert (await api.router(other, name="O1"))["dynamips_id"] == 1
    assert (await api.post(f"/projects/{pid}/close")).status == 204
    await api.project(project_id=pid)
    assert (await api.router(pid, name="R1"))["dynamips_id"] == 1


async def test_c09_console_substitution_change_and_conflict(api):
    pid = await api.project()
    low, high = api.state.ports.ranges["tcp"]
    async with Notifications(api, pid) as events:
        reply = await post_router(api, pid, console=2001)
        assert reply.status == 201
        vm = Vm(api, pid, reply.body)
        console = reply.body["console"]
        assert low <= console <= high
        warning = await events.expect("log.warning")
        assert "2001" in warning["message"] and str(console) in warning["message"]
    assert f'vm set_con_tcp_port "R1" {console}' in vm.vm_commands()
    assert sum(c.startswith("vm set_con_tcp_port") for c in vm.vm_commands()) == 1  # E8
    wanted = high - 3
    reply = await vm.put({"console": wanted})
    assert reply.body["console"] == wanted
    assert vm.new() == ['vm get_status "R1"', f'vm set_con_tcp_port "R1" {wanted}']
    assert not api.state.ports.in_use("tcp", console)
    assert (await api.get(vm.url)).body["console"] == wanted
    # an explicit free console is honoured; another router's console is refused
    other = Vm(api, pid, await api.router(pid, name="R2", console=high - 10))
    assert other.body["console"] == high - 10
    reply = await other.put({"console": wanted}, status=409)
    assert "already in use" in reply.body["message"]
    assert other.new() == ['vm get_status "R2"']
    assert (await api.get(other.url)).body["console"] == high - 10
    # deleting releases both
    for target in (vm, other):
        assert (await api.delete(target.url)).status == 204
    assert api.state.ports.owned(pid, "tcp") == set()


async def test_aux_ports_on_request_and_with_allocate_aux_console_ports(
    api, make_api, tmp_path, fake
):
    pid = await api.project()
    plain = await api.router(pid)
    assert plain["aux"] is None
    high = api.state.ports.ranges["tcp"][1]
    asked = Vm(api, pid, await api.router(pid, name="R2", aux=high))
    assert asked.body["aux"] == high
    assert f'vm set_aux_tcp_port "R2" {high}' in asked.vm_commands()
    # deliberate (C2): the option the original read but ignored
    config = make_config(tmp_path / "aux", str(fake.path))
    config.values[("Dynamips", "allocate_aux_console_ports")] = True
    other = await make_api(config)
    opid = await other.project()
    body = await other.router(opid)
    assert isinstance(body["aux"], int) and body["aux"] != body["console"]
    commands = Vm(other, opid, body).vm_commands()
    assert commands[2] == f'vm set_aux_tcp_port "R1" {body["aux"]}'


async def test_reposting_a_vm_id_and_legacy_integer_ids(api, tmp_path):
    pid = await api.project()
    body = await api.router(pid)
    before = fake_processes()
    again = await post_router(api, pid, vm_id=body["vm_id"])
    assert again.status == 201 and again.body == body
    assert fake_processes() == before and len(api.state.dynamips.routers) == 1
    other = await api.project()
    reply = await post_router(api, other, vm_id=body["vm_id"])
    assert reply.status == 409 and "another project" in reply.body["message"]
    # pre-1.3 topology: integer router id as vm_id and dynamips_id; <name>-files moved
    path = tmp_path / "legacy"
    (path / "lab-files" / "dynamips").mkdir(parents=True)
    (path / "lab-files" / "dynamips" / "c7200_i3_nvram").write_bytes(b"nv")
    legacy = await api.project(name="lab", path=str(path))
    body = await api.router(legacy, vm_id=3, dynamips_id=3)
    uuid.UUID(body["vm_id"])
    assert body["dynamips_id"] == 3
    assert (path / "project-files" / "dynamips" / "c7200_i3_nvram").read_bytes() == b"nv"
    assert not (path / "lab-files").exists()


# -- NIOs and captures --------------------------------------------------------------------


async def test_nio_checks_happen_before_anything_is_created(api):
    pid = await api.project()
    vm = await make_vm(api, pid)
    lport = await api.udp_port(pid)
    nio = {"type": "nio_udp", "lport": lport, "rhost": "127.0.0.1", "rport": lport + 1}
    for (slot, port), message in (
        ((9, 0), 'Slot 9 does not exist on router "R1"'),
        ((5, 0), "Adapter is missing in slot 5"),
        ((0, 3), "Port 3 does not exist in adapter C7200-IO-FE"),
    ):
        vm.new()
        reply = await api.post(f"{vm.url}/adapters/{slot}/ports/{port}/nio", nio)
        assert (reply.status, reply.body["message"]) == (409, message)
        assert vm.new() == []
        reply = await api.delete(f"{vm.url}/adapters/{slot}/ports/{port}/nio")
        assert (reply.status, reply.body["message"]) == (409, message)
    # C06: an unresolvable remote host never reaches dynamips, and the port is released
    reply = await api.post(
        f"{vm.url}/adapters/0/ports/0/nio", {**nio, "rhost": "no-such-host.invalid"}
    )
    assert reply.status == 409 and vm.new() == []
    assert not api.state.ports.in_use("udp", lport)
    # A2: removing from an unconnected port is a 409, not a 500
    reply = await api.delete(f"{vm.url}/adapters/0/ports/0/nio")
    assert (reply.status, reply.body["message"]) == (409, "Port 0/0 is not connected")


async def test_c06_udp_ports_released_after_failures_and_removal(api):
    pid = await api.project()
    vm = await make_vm(api, pid)
    url = f"{vm.url}/adapters/0/ports/0/nio"
    lport = await api.udp_port(pid)
    nio = {"type": "nio_udp", "lport": lport, "rhost": "127.0.0.1", "rport": lport + 1}
    api.fake.inject("nio create_udp", "error", reply="206-unable to create UDP NIO", times=1)
    reply = await api.post(url, nio)
    assert reply.status == 409 and "unable to create UDP NIO" in reply.body["message"]
    assert "nio create_udp" in reply.body["message"]  # which command failed
    assert not api.state.ports.in_use("udp", lport)
    assert vm.router.nios == {}
    reply = await api.post(url, nio)
    assert reply.status == 201
    other = await api.udp_port(pid)
    reply = await api.post(url, {**nio, "lport": other})
    assert (reply.status, reply.body["message"]) == (409, "Port 0/0 isn't free")
    assert vm.router.nios[(0, 0)].lport == lport
    assert (await api.delete(url)).status == 204
    assert not api.state.ports.in_use("udp", lport)


async def test_c23_captures(api):
    pid = await api.project()
    project = api.state.projects.get(pid)
    vm = await make_vm(api, pid, slot1="PA-4T+")
    capture = f"{vm.url}/adapters/0/ports/0/start_capture"
    body = {"capture_file_name": "R1_to_SW1.pcap", "data_link_type": "DLT_EN10MB"}
    reply = await api.post(capture, body)
    assert (reply.status, reply.body["message"]) == (409, "Port 0/0 is not connected")
    reply = await api.post(f"{vm.url}/adapters/3/ports/0/start_capture", body)
    assert (reply.status, reply.body["message"]) == (409, "Adapter is missing in slot 3")
    nio = await vm.nio(0, 0)
    reply = await api.post(capture, body)
    assert reply.status == 200 and reply.headers["Content-Type"] == JSON_TYPE
    path = project.path / "project-files" / "captures" / "R1_to_SW1.pcap"
    assert reply.body == {"pcap_file_path": str(path)}
    assert path.is_file()
    reply = await api.post(capture, body)
    assert reply.status == 409 and "already" in reply.body["message"]
    assert (await api.post(f"{vm.url}/adapters/0/ports/0/stop_capture")).status == 204
    # unicode name
    reply = await api.post(capture, {**body, "capture_file_name": "Ünïcode 捕获.pcap"})
    assert reply.status == 200
    assert (path.parent / "Ünïcode 捕获.pcap").is_file()
    assert (await api.post(f"{vm.url}/adapters/0/ports/0/stop_capture")).status == 204
    # names that could leave the captures folder (D2)
    vm.new()
    for name in (
        "R1_FastEthernet0/0_to_SW1.pcap",
        "../../escape.pcap",
        "/tmp/abs.pcap",
        "..",
        "a\\b.pcap",
    ):
        reply = await api.post(capture, {**body, "capture_file_name": name})
        assert reply.status == 400, name
    assert vm.new() == []
    assert sorted(p.name for p in path.parent.iterdir()) == ["R1_to_SW1.pcap", "Ünïcode 捕获.pcap"]
    assert not (project.path / "escape.pcap").exists()
    # no data link type: the port type's default (A3); a serial port gets C-HDLC
    await vm.nio(1, 2)
    reply = await api.post(
        f"{vm.url}/adapters/1/ports/2/start_capture", {"capture_file_name": "serial.pcap"}
    )
    assert reply.status == 200
    assert " 2 c_hdlc " in vm.new()[-1]
    # setup_filter refused: the filter is unbound again and the port can capture later
    api.fake.inject("nio setup_filter", "error", reply="215-Failed to setup filter", times=1)
    reply = await api.post(capture, body)
    assert reply.status == 409
    assert vm.new()[-1] == f"nio unbind_filter {nio} 2"
    assert (await api.post(capture, body)).status == 200


async def test_stop_capture_errors(api):
    pid = await api.project()
    vm = await make_vm(api, pid)
    reply = await api.post(f"{vm.url}/adapters/0/ports/0/stop_capture")
    assert (reply.status, reply.body["message"]) == (409, "Port 0/0 is not connected")
    reply = await api.post(f"{vm.url}/adapters/4/ports/0/stop_capture")
    assert (reply.status, reply.body["message"]) == (409, "Adapter is missing in slot 4")


# -- lifecycle -----------------------------------------------------------------------------


async def test_start_checks_the_image_and_notifications_carry_the_router(api, images_dir):
    pid = await api.project()
    vm = await make_vm(api, pid)
    missing = image_path(api, "missing.image")
    await vm.put({"image": "missing.image"})
    reply = await vm.post("/start", status=409)
    assert reply.body["message"] == f'IOS image "{missing}" is not accessible'
    (images_dir / "text.image").write_text("not an ELF file at all")
    await vm.put({"image": "text.image"})
    reply = await vm.post("/start", status=409)
    assert reply.body["message"] == f'"{image_path(api, "text.image")}" is not a valid IOS image'
    assert not any(c.startswith('vm start "R1"') for c in vm.all_commands())
    await vm.put({"image": "c7200.image"})
    async with Notifications(api, pid) as events:
        await vm.post("/start", status=204)
        started = await events.expect("vm.started", name="R1")
        await vm.post("/stop", status=204)
        stopped = await events.expect("vm.stopped", name="R1")
    current = (await api.get(vm.url)).body
    for event in (started, stopped):
        assert event == current
    assert events.actions("R1").count("vm.started") == 1


async def test_suspend_resume_reload_and_idlepc_route_errors(api):
    pid = await api.project()
    vm = await make_vm(api, pid)
    reply = await api.get(f"{vm.url}/idlepc_proposals")
    assert (reply.status, reply.body["message"]) == (409, 'Router "R1" is not running')
    assert (await api.get(vm.url)).body["idlepc"] == ""  # E5: checked before any change
    await vm.post("/suspend", status=204)
    assert vm.new() == ['vm get_status "R1"']
    await vm.start()
    await vm.post("/suspend", status=204)
    assert vm.new() == ['vm get_status "R1"', 'vm suspend "R1"']
    await vm.post("/resume", status=204)
    assert vm.new() == ['vm get_status "R1"', 'vm resume "R1"']
    await vm.post("/reload", status=204)
    commands = vm.new()
    assert commands.index('vm stop "R1"') < commands.index('vm start "R1"')
    reply = await api.get(f"{vm.url}/idlepc_proposals")
    assert reply.status == 200 and reply.body == [
        "0x60606f54 [33]",
        "0x6025d4b8 [45]",
        "0x606071e0 [51]",
    ]
    reply = await api.post(f"{vm.url}/configs/save")
    assert reply.status == 200 and reply.text == ""
    reply = await api.get(f"{vm.url}/configs")
    assert reply.status == 200 and reply.headers["Content-Type"] == JSON_TYPE


# -- images ------------------------------------------------------------------------------


async def test_c21_image_list(api, images_dir):
    for entry in list(images_dir.iterdir()):
        entry.unlink()
    (images_dir / "c7200-a.image").write_bytes(ELF_TEST_IMAGE)
    (images_dir / "c3725-b.image").write_bytes(ELF_TEST_IMAGE)
    (images_dir / "c7200-a.image.md5sum").write_text("0" * 32)
    (images_dir / ".hidden.image").write_bytes(ELF_TEST_IMAGE)
    (images_dir / "notes.txt").write_text("notes")
    (images_dir / "x86.bin").write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 64)
    (images_dir / "empty.image").write_bytes(b"")
    (images_dir / "subdir").mkdir()
    (images_dir / "broken.image").symlink_to(images_dir / "nowhere")
    unreadable = images_dir / "unreadable.image"
    unreadable.write_bytes(ELF_TEST_IMAGE)
    unreadable.chmod(0)
    if os.access(unreadable, os.R_OK):  # root reads anything: make it unopenable instead
        unreadable.unlink()
        os.mkfifo(images_dir / "fifo.image")
    expected = [
        {"filename": "c3725-b.image", "path": "c3725-b.image"},
        {"filename": "c7200-a.image", "path": "c7200-a.image"},
    ]
    reply = await api.get("/dynamips/vms")
    assert (reply.status, reply.body) == (200, expected)
    assert reply.headers["Content-Type"] == JSON_TYPE
    for entry in list(images_dir.iterdir()):
        if entry.is_dir() and not entry.is_symlink():
            entry.rmdir()
        else:
            entry.chmod(0o600) if not entry.is_symlink() else None
            entry.unlink()
    images_dir.rmdir()
    images_dir.write_text("a file named IOS")
    assert (await api.get("/dynamips/vms")).body == []
    images_dir.unlink()
    reply = await api.get("/dynamips/vms")
    assert (reply.status, reply.body) == (200, [])


async def test_image_upload_is_atomic_writes_md5_and_stays_in_the_folder(api, images_dir, tmp_path):
    data = ELF_TEST_IMAGE * 300
    reply = await api.post("/dynamips/vms/new.image", raw=data)
    assert reply.status == 204, reply.text
    assert (images_dir / "new.image").read_bytes() == data
    assert (images_dir / "new.image.md5sum").read_text().strip() == hashlib.md5(data).hexdigest()
    assert {"filename": "new.image", "path": "new.image"} in (await api.get("/dynamips/vms")).body
    assert not [p for p in images_dir.iterdir() if p.name.endswith(".tmp")]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("keep")
    (images_dir / "link.image").symlink_to(outside / "victim")
    (images_dir / "sub").symlink_to(outside, target_is_directory=True)
    for path in (
        "..%2F..%2Fescape.image",
        "%2E%2E%2Fescape.image",
        "sub%2Fx.image",
        "link.image",
        ".hidden",
        "..%5Cescape.image",
    ):
        url = f"{api.base}/v1/dynamips/vms/{path}"
        async with api.session.post(url, data=b"x") as response:
            assert response.status == 403, path
    assert (outside / "victim").read_text() == "keep"
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    assert not (tmp_path / "escape.image").exists()
    assert not (images_dir.parent / "escape.image").exists()


async def test_image_resolution_relative_absolute_and_md5_once_off_the_loop(
    api, images_dir, tmp_path
):
    pid = await api.project()
    images = api.state.dynamips.images
    calls: list[bool] = []
    compute = images._compute_md5

    def counting(path):
        calls.append(threading.current_thread() is threading.main_thread())
        return compute(path)

    images._compute_md5 = counting
    absolute_inside = str(images_dir / "c7200.image")
    (tmp_path / "elsewhere.image").write_bytes(ELF_TEST_IMAGE)
    (images_dir.parent / "legacy.image").write_bytes(ELF_TEST_IMAGE)
    r1 = await api.router(pid, image=absolute_inside)
    assert r1["image"] == "c7200.image"
    r2 = await api.router(pid, name="R2", image=str(tmp_path / "elsewhere.image"))
    assert r2["image"] == str(tmp_path / "elsewhere.image")
    r3 = await api.router(pid, name="R3", image="legacy.image")
    assert r3["image"] == str(images_dir.parent / "legacy.image")
    assert r1["image_md5sum"] == hashlib.md5(ELF_TEST_IMAGE).hexdigest()
    count = len(calls)
    assert count == 3 and not any(calls)  # one per file, never on the event loop thread
    for _ in range(2):
        await api.get(f"{VMS.format(pid)}/{r1['vm_id']}")
    assert len(calls) == count
    (images_dir / "c7200.image").write_bytes(ELF_TEST_IMAGE + b"changed")
    body = (await api.get(f"{VMS.format(pid)}/{r1['vm_id']}")).body
    assert body["image_md5sum"] == hashlib.md5(ELF_TEST_IMAGE + b"changed").hexdigest()
    assert len(calls) == count + 1
    # a missing image: null md5 (the GUI offers an upload)
    r4 = await api.router(pid, name="R4", image="not-there.image")
    assert r4["image"] == "not-there.image" and r4["image_md5sum"] is None
    reply = await post_router(api, pid, name="R5", image="../../../etc/passwd")
    assert reply.status == 403  # relative names cannot leave the images folder (D5)


# -- delete and close --------------------------------------------------------------------


@pytest.mark.parametrize("auto_delete", [False, True])
async def test_c26_files_removed_by_exact_patterns(api, tmp_path, auto_delete):
    path = tmp_path / "lab [x]{1}"
    pid = await api.project(path=str(path))
    module = path / "project-files" / "dynamips"
    r1, _r10 = [
        await api.router(
            pid,
            name=f"R{number}",
            platform="c3600",
            image="c3600.image",
            ram=128,
            dynamips_id=number,
            auto_delete_disks=auto_delete,
            startup_config_content="hostname %h",
        )
        for number in (1, 10)
    ]
    await api.device(pid)
    kinds = (
        "nvram",
        "rom",
        "bootflash",
        "ssa",
        "disk0",
        "disk1",
        "slot0",
        "flash0",
        "log.txt",
        "rommon_vars",
        "lock",
    )
    for number in (1, 10):
        for kind in kinds:
            (module / f"c3600_i{number}_{kind}").write_bytes(b"x")
    for name in ("x.ghost", "ilt_test"):
        (module / name).write_bytes(b"x")
    (path / "project-files" / "keep.txt").write_text("keep")
    (path / "c3600_i1_nvram").write_text("keep")
    assert (await api.delete(f"{VMS.format(pid)}/{r1['vm_id']}")).status == 204
    assert all((module / f"c3600_i10_{kind}").exists() for kind in kinds)
    assert (await api.post(f"/projects/{pid}/commit")).status == 204
    assert not [p for p in module.iterdir() if p.name.startswith("c3600_i1_")]
    assert not (module / "configs" / "i1_startup-config.cfg").exists()
    assert all((module / f"c3600_i10_{kind}").exists() for kind in kinds)
    assert (module / "configs" / "i10_startup-config.cfg").exists()
    assert (await api.post(f"/projects/{pid}/close")).status == 204
    left = sorted(p.name for p in module.iterdir() if p.is_file())
    kept = ("nvram", "rom", "bootflash", "ssa", "disk0", "disk1", "slot0", "flash0")
    assert left == ([] if auto_delete else sorted(f"c3600_i10_{k}" for k in kept))
    assert (module / "configs" / "i10_startup-config.cfg").exists()
    assert (path / "project-files" / "keep.txt").exists() and (path / "c3600_i1_nvram").exists()
    assert fake_processes() == set()


async def test_delete_without_commit_then_close_removes_the_files(api):
    """Deliberate (B10): the original left the files of a deleted router when the project
    closed without a commit."""
    pid = await api.project()
    module = api.state.projects.get(pid).module_dir
    vm = await api.router(pid, startup_config_content="hostname %h")
    (module / "c7200_i1_nvram").write_bytes(b"x")
    assert (await api.delete(f"{VMS.format(pid)}/{vm['vm_id']}")).status == 204
    assert (module / "c7200_i1_nvram").exists()
    assert (await api.post(f"/projects/{pid}/close")).status == 204
    assert not (module / "c7200_i1_nvram").exists()
    assert not (module / "configs" / "i1_startup-config.cfg").exists()


async def test_failed_create_keeps_files_that_were_there_before(api):
    """A project re-opened with its saved config: a failed create removes only what it
    wrote itself."""
    pid = await api.project()
    module = api.state.projects.get(pid).module_dir
    (module / "configs").mkdir()
    saved = module / "configs" / "i1_startup-config.cfg"
    saved.write_text("!\nhostname R1\n")
    (module / "c7200_i1_nvram").write_bytes(b"nvram")
    api.fake.inject("vm set_ram", "error", reply="206-refused")
    reply = await post_router(
        api, pid, ram=512, dynamips_id=1, startup_config="configs/i1_startup-config.cfg"
    )
    assert reply.status == 409
    assert saved.read_text() == "!\nhostname R1\n"
    assert (module / "c7200_i1_nvram").read_bytes() == b"nvram"
