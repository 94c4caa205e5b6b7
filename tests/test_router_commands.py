"""Issue 4: the exact hypervisor command sequences of routers (fake hypervisor).

Create of every platform and chassis, every setter, slots and WICs, NIO bind/unbind, captures
and the rollback of a failed create. Where the sequence differs from GNS3 1.5.4 on purpose the
test says so (known-bugs.md ids).
"""

from __future__ import annotations

import psutil
import pytest

from dynamips_mgr.dynamips.platforms import PLATFORMS
from tests.conftest import ELF_TEST_IMAGE, hypervisor_port

VMS = "/projects/{}/dynamips/vms"


class Vm:
    """A router created through the API plus access to what its hypervisor received."""

    def __init__(self, api, project_id: str, body: dict) -> None:
        self.api, self.project_id, self.body = api, project_id, body
        self.id = body["vm_id"]
        self.url = f"/projects/{project_id}/dynamips/vms/{self.id}"
        self.port = hypervisor_port(api, self.id)
        self.mark = 0

    @property
    def router(self):
        return self.api.state.dynamips.routers[self.id]

    def all_commands(self) -> list[str]:
        return self.api.fake.commands(self.port)

    def vm_commands(self) -> list[str]:
        """Everything from ``vm create`` on (the hypervisor handshake is issue 3's)."""
        lines = self.all_commands()
        start = next(i for i, line in enumerate(lines) if line.startswith("vm create"))
        return lines[start:]

    def new(self) -> list[str]:
        """Commands received since the previous call."""
        lines = self.all_commands()
        fresh, self.mark = lines[self.mark :], len(lines)
        return fresh

    async def put(self, body: dict, status: int = 200):
        self.new()
        reply = await self.api.put(self.url, body)
        assert reply.status == status, reply.body
        return reply

    async def post(self, path: str, body: dict | None = None, status: int | None = None):
        self.new()
        reply = await self.api.post(self.url + path, body if body is not None else {})
        if status is not None:
            assert reply.status == status, reply.body
        return reply

    async def start(self) -> None:
        reply = await self.post("/start", status=204)
        assert reply.status == 204
        self.new()

    async def nio(self, slot: int, port: int, status: int = 201) -> str:
        """Connect ``slot``/``port`` with a UDP NIO; returns the NIO name dynamips got."""
        lport = await self.api.udp_port(self.project_id)
        self.new()
        reply = await self.api.post(
            f"{self.url}/adapters/{slot}/ports/{port}/nio",
            {"type": "nio_udp", "lport": lport, "rhost": "127.0.0.1", "rport": lport + 1},
        )
        assert reply.status == status, reply.body
        return self.router.nios[(slot, port)].name if status == 201 else ""


async def post_router(api, project_id: str, **body):
    """POST a router with ``Api.router``'s defaults; returns the reply, whatever it is."""
    defaults = {"name": "R1", "platform": "c7200", "image": "c7200.image", "ram": 256}
    return await api.post(VMS.format(project_id), {**defaults, **body})


async def make_vm(api, project_id: str, **body) -> Vm:
    return Vm(api, project_id, await api.router(project_id, **body))


def image_path(api, name: str) -> str:
    return str(api.state.dynamips.images.dir.resolve() / name)


def create_head(name: str, dynamips_id: int, platform: str, console: int) -> list[str]:
    return [
        f'vm create "{name}" {dynamips_id} {platform}',
        f'vm set_con_tcp_port "{name}" {console}',
        f'{platform} get_mac_addr "{name}"',
    ]


# -- create ------------------------------------------------------------------------------


CHASSIS_CASES = [
    (platform, chassis)
    for platform in ("c1700", "c2600", "c3600")
    for chassis in PLATFORMS[platform].chassis
]


async def test_create_every_chassis_exact_commands(api):
    """c1700/c2600/c3600 with each chassis: set_chassis only when it is not the default; the
    JSON lists the chassis' slots and built-in cards."""
    pid = await api.project()
    expected_slots = {
        "1720": ["C1700-MB-1FE"],
        "1721": ["C1700-MB-1FE"],
        "1750": ["C1700-MB-1FE"],
        "1751": ["C1700-MB-1FE", "C1700-MB-WIC1"],
        "1760": ["C1700-MB-1FE", "C1700-MB-WIC1"],
        "2610": ["C2600-MB-1E", None],
        "2611": ["C2600-MB-2E", None],
        "2620": ["C2600-MB-1FE", None],
        "2621": ["C2600-MB-2FE", None],
        "2610XM": ["C2600-MB-1FE", None],
        "2611XM": ["C2600-MB-2FE", None],
        "2620XM": ["C2600-MB-1FE", None],
        "2621XM": ["C2600-MB-2FE", None],
        "2650XM": ["C2600-MB-1FE", None],
        "2651XM": ["C2600-MB-2FE", None],
        "3620": [None, None],
        "3640": [None] * 4,
        "3660": ["Leopard-2FE"] + [None] * 6,
    }
    assert {c for _, c in CHASSIS_CASES} == set(expected_slots)
    for number, (platform, chassis) in enumerate(CHASSIS_CASES, 1):
        name = f"R{number}"
        ram = PLATFORMS[platform].defaults["ram"]
        vm = await make_vm(
            api,
            pid,
            name=name,
            platform=platform,
            image=f"{platform}.image",
            ram=ram,
            chassis=chassis,
        )
        default = PLATFORMS[platform].default_chassis
        sparse = PLATFORMS[platform].defaults["sparsemem"]
        assert vm.vm_commands() == [
            *create_head(name, number, platform, vm.body["console"]),
            *([f'{platform} set_chassis "{name}" {chassis}'] if chassis != default else []),
            *([f'vm set_sparse_mem "{name}" 1'] if sparse else []),
            f'vm set_ios "{name}" "{image_path(api, f"{platform}.image")}"',
        ], (platform, chassis)
        body = vm.body
        assert body["chassis"] == chassis
        slots = [body.get(f"slot{i}", "absent") for i in range(8)]
        want = expected_slots[chassis]
        assert slots == want + ["absent"] * (8 - len(want)), chassis
        wics = {k for k in body if k.startswith("wic")}
        wic_count = {"c1700": 2, "c2600": 3}.get(platform, 0)
        assert wics == {f"wic{i}" for i in range(wic_count)}, chassis
        # one hypervisor per router: free it before the next one
        assert (await api.delete(vm.url)).status == 204


@pytest.mark.parametrize(
    ("platform", "io_card"),
    [
        ("c2691", None),
        ("c3725", None),
        ("c3745", None),
        ("c7200", None),
        ("c7200", "C7200-IO-2FE"),
        ("c7200", "C7200-IO-GE-E"),
    ],
)
async def test_create_platforms_without_chassis_exact_commands(api, platform, io_card):
    """The original's creation order (router.md §6) — without the c7200 ``vm get_status``
    before binding the I/O card (a VM that was just created cannot run) — then
    ``vm set_sparse_mem 1``: dynamips defaults sparse memory off, the model says on
    (deliberate difference, known-bugs C5)."""
    pid = await api.project()
    extra = {"slot0": io_card} if io_card else {}
    ram = PLATFORMS[platform].defaults["ram"]
    vm = await make_vm(
        api, pid, name="R1", platform=platform, image=f"{platform}.image", ram=ram, **extra
    )
    card = ['vm slot_add_binding "R1" 0 0 ' + (io_card or "C7200-IO-FE")]
    assert vm.vm_commands() == [
        *create_head("R1", 1, platform, vm.body["console"]),
        *(card if platform == "c7200" else []),
        'vm set_sparse_mem "R1" 1',
        f'vm set_ios "R1" "{image_path(api, f"{platform}.image")}"',
    ]
    slot0 = {"c7200": io_card or "C7200-IO-FE"}.get(platform, "GT96100-FE")
    assert vm.body["slot0"] == slot0
    assert vm.body["mac_addr"].startswith(
        {"c2691": "c0", "c3725": "c2", "c3745": "c4", "c7200": "ca"}[platform] + "01."
    )


async def test_create_with_aux_adapters_wics_and_settings_in_fixed_order(api):
    """AUX right after the console; then the body in the documented fixed order (C22):
    name, chassis/npe/midplane, image, memory, ..., slots, WICs; only values that differ from
    the defaults are sent."""
    pid = await api.project()
    body = {
        "name": "R1",
        "platform": "c3725",
        "image": "c3725.image",
        "ram": 256,
        "wic1": "WIC-2T",
        "slot2": "NM-4T",
        "slot1": "NM-1FE-TX",
        "wic0": "WIC-1T",
        "idlepc": "0x60606f54",
        "disk0": 0,
        "nvram": 112,
        "iomem": 10,
        "exec_area": 64,
    }
    reply = await api.post(VMS.format(pid), body)  # the body's key order does not matter
    assert reply.status == 201, reply.body
    vm = Vm(api, pid, reply.body)
    assert vm.vm_commands() == [
        *create_head("R1", 1, "c3725", reply.body["console"]),
        'vm set_sparse_mem "R1" 1',
        f'vm set_ios "R1" "{image_path(api, "c3725.image")}"',
        'vm set_ram "R1" 256',
        'vm set_disk0 "R1" 0',
        'c3725 set_iomem "R1" 10',
        'vm set_idle_pc "R1" 0x60606f54',
        'vm slot_add_binding "R1" 1 0 NM-1FE-TX',
        'vm slot_add_binding "R1" 2 0 NM-4T',
        'vm slot_add_binding "R1" 0 16 WIC-1T',
        'vm slot_add_binding "R1" 0 32 WIC-2T',
    ]
    assert [reply.body[f"wic{i}"] for i in range(3)] == ["WIC-1T", "WIC-2T", None]

    aux = await api.router(pid, name="R2", platform="c7200", aux=api.state.ports.ranges["tcp"][1])
    commands = Vm(api, pid, aux).vm_commands()
    assert commands[:4] == [
        'vm create "R2" 2 c7200',
        f'vm set_con_tcp_port "R2" {aux["console"]}',
        f'vm set_aux_tcp_port "R2" {aux["aux"]}',
        'c7200 get_mac_addr "R2"',
    ]


# -- setters -----------------------------------------------------------------------------


async def test_every_vm_setter_on_a_stopped_router(api, images_dir):
    """One command per changed setting, preceded by the running check; same values send
    nothing. A relative image equal to the stored one is not re-sent (deliberate, C20)."""
    (images_dir / "other.image").write_bytes(ELF_TEST_IMAGE)
    pid = await api.project()
    vm = await make_vm(api, pid)
    free_port = vm.body["console"] + 10
    nothing = None  # no change at all: not even the running check is sent
    cases = [
        ({"name": "R9"}, ['vm rename "R1" "R9"']),
        ({"name": "R1"}, ['vm rename "R9" "R1"']),
        ({"image": "other.image"}, [f'vm set_ios "R1" "{image_path(api, "other.image")}"']),
        ({"image": image_path(api, "other.image")}, nothing),
        ({"image": "other.image"}, nothing),
        ({"ram": 512}, ['vm set_ram "R1" 512']),
        ({"ram": 512}, nothing),
        ({"nvram": 256}, ['vm set_nvram "R1" 256']),
        ({"mmap": False}, ['vm set_ram_mmap "R1" 0']),
        ({"mmap": True}, ['vm set_ram_mmap "R1" 1']),
        ({"sparsemem": False}, ['vm set_sparse_mem "R1" 0']),
        ({"clock_divisor": 2}, ['vm set_clock_divisor "R1" 2']),
        ({"exec_area": 32}, ['vm set_exec_area "R1" 32']),
        ({"disk0": 10}, ['vm set_disk0 "R1" 10']),
        ({"disk1": 20}, ['vm set_disk1 "R1" 20']),
        ({"mac_addr": "ca01.1111.0000"}, ['c7200 set_mac_addr "R1" ca01.1111.0000']),
        ({"system_id": "FTX123"}, ['c7200 set_system_id "R1" "FTX123"']),
        ({"console": free_port}, [f'vm set_con_tcp_port "R1" {free_port}']),
        ({"aux": free_port + 1}, [f'vm set_aux_tcp_port "R1" {free_port + 1}']),
        ({"idlepc": "0x60606f54"}, ['vm set_idle_pc "R1" 0x60606f54']),
        ({"idlepc": ""}, ['vm set_idle_pc "R1" 0x0']),
        ({"idlepc": "0x0"}, nothing),
        ({"idlemax": 300, "idlesleep": 10}, []),  # stored; applied at the next start (C6)
        ({"npe": "npe-225"}, ['c7200 set_npe "R1" npe-225']),
        ({"midplane": "std"}, ['c7200 set_midplane "R1" std']),
        ({"sensors": [30, 22, 22, 22], "power_supplies": [1, 0]}, []),  # sent once running
        ({"auto_delete_disks": True}, []),
        ({"iomem": 10, "chassis": "3620"}, nothing),  # not c7200 properties: ignored
        ({"platform": "c3725", "image_md5sum": "x", "startup_config_base64": "x"}, nothing),
        ({}, nothing),
    ]
    for body, expected in cases:
        name = vm.router.name
        reply = await vm.put(body)
        wanted = [] if expected is None else [f'vm get_status "{name}"', *expected]
        assert vm.new() == wanted, body
    data = reply.body
    assert (data["name"], data["image"], data["ram"], data["nvram"]) == (
        "R1",
        "other.image",
        512,
        256,
    )
    assert (data["mmap"], data["sparsemem"], data["clock_divisor"], data["exec_area"]) == (
        True,
        False,
        2,
        32,
    )
    assert (data["disk0"], data["disk1"], data["mac_addr"], data["system_id"]) == (
        10,
        20,
        "ca01.1111.0000",
        "FTX123",
    )
    assert (data["console"], data["aux"], data["idlepc"]) == (free_port, free_port + 1, "0x0")
    assert (data["idlemax"], data["idlesleep"], data["npe"], data["midplane"]) == (
        300,
        10,
        "npe-225",
        "std",
    )
    assert (data["sensors"], data["power_supplies"], data["auto_delete_disks"]) == (
        [30, 22, 22, 22],
        [1, 0],
        True,
    )
    assert "iomem" not in data and "chassis" not in data


async def test_platform_setters_iomem_and_chassis(api):
    pid = await api.project()
    vm = await make_vm(api, pid, platform="c3600", image="c3600.image", ram=128)
    await vm.put({"iomem": 10})
    assert vm.new() == ['vm get_status "R1"', 'c3600 set_iomem "R1" 10']
    reply = await vm.put({"chassis": "3620"})
    assert vm.new() == ['vm get_status "R1"', 'c3600 set_chassis "R1" 3620']
    assert (reply.body["chassis"], reply.body["slot0"], reply.body["slot1"]) == ("3620", None, None)
    assert "slot2" not in reply.body
    # chassis and the new chassis' slots in one body: the slots apply to the new layout
    reply = await vm.put({"chassis": "3660", "slot0": "Leopard-2FE", "slot5": "NM-1E"})
    assert vm.new() == [
        'vm get_status "R1"',
        'c3600 set_chassis "R1" 3660',
        'vm slot_add_binding "R1" 5 0 NM-1E',
    ]
    assert reply.body["slot0"] == "Leopard-2FE" and reply.body["slot6"] is None


async def test_idle_and_c7200_environment_setters_while_running(api):
    """Running: idle-PC goes to the VM and the running CPU; idlemax/idlesleep (in ms, sent
    in µs — deliberate, C7) and c7200 sensors/power supplies are sent at once."""
    pid = await api.project()
    vm = await make_vm(api, pid)
    await vm.start()
    cases = [
        (
            {"idlepc": "0x6025d4b8"},
            ['vm set_idle_pc "R1" 0x6025d4b8', 'vm set_idle_pc_online "R1" 0 0x6025d4b8'],
        ),
        ({"idlemax": 1500}, ['vm set_idle_max "R1" 0 1500']),
        ({"idlesleep": 20}, ['vm set_idle_sleep_time "R1" 0 20000']),
        (
            {"sensors": [22, 22, 40, 22]},
            [f'c7200 set_temp_sensor "R1" {i} {v}' for i, v in enumerate((22, 22, 40, 22))],
        ),
        (
            {"power_supplies": [0, 1]},
            ['c7200 set_power_supply "R1" 0 0', 'c7200 set_power_supply "R1" 1 1'],
        ),
    ]
    for body, expected in cases:
        await vm.put(body)
        assert vm.new() == ['vm get_status "R1"', *expected], body


async def test_values_stored_while_stopped_are_applied_at_start(api):
    """Deliberate (C6, C24): idlemax/idlesleep and c7200 sensors/power supplies set while
    stopped are sent after ``vm start`` — only on an actual start."""
    pid = await api.project()
    vm = await make_vm(api, pid)
    await vm.put(
        {"idlemax": 700, "idlesleep": 40, "sensors": [25, 22, 22, 22], "power_supplies": [1, 0]}
    )
    await vm.post("/start", status=204)
    commands = vm.new()
    start = commands.index('vm start "R1"')
    assert commands[start:] == [
        'vm start "R1"',
        'vm set_idle_max "R1" 0 700',
        'vm set_idle_sleep_time "R1" 0 40000',
        *(f'c7200 set_temp_sensor "R1" {i} {v}' for i, v in enumerate((25, 22, 22, 22))),
        'c7200 set_power_supply "R1" 0 1',
        'c7200 set_power_supply "R1" 1 0',
    ]
    await vm.post("/start", status=204)  # already running: nothing re-sent
    assert vm.new() == ['vm get_status "R1"']


# -- slots and WICs ----------------------------------------------------------------------


async def test_slot_add_replace_remove_stopped(api):
    pid = await api.project()
    vm = await make_vm(api, pid)
    await vm.put({"slot1": "PA-FE-TX"})
    assert vm.new() == ['vm get_status "R1"', 'vm slot_add_binding "R1" 1 0 PA-FE-TX']
    await vm.put({"slot1": "PA-4T+"})
    assert vm.new() == [
        'vm get_status "R1"',
        'vm slot_remove_binding "R1" 1 0',
        'vm slot_add_binding "R1" 1 0 PA-4T+',
    ]
    reply = await vm.put({"slot1": None})
    assert vm.new() == ['vm get_status "R1"', 'vm slot_remove_binding "R1" 1 0']
    assert reply.body["slot1"] is None
    await vm.put({"slot0": "C7200-IO-2FE"})
    assert vm.new() == [
        'vm get_status "R1"',
        'vm slot_remove_binding "R1" 0 0',
        'vm slot_add_binding "R1" 0 0 C7200-IO-2FE',
    ]


async def test_slot_removal_unbinds_and_deletes_its_nios_first(api):
    """Deliberate (B5): the original forgot NIOs of a removed adapter; here they are unbound,
    deleted and their UDP ports released before the card goes."""
    pid = await api.project()
    vm = await make_vm(api, pid, slot1="PA-2FE-TX")
    nio = await vm.nio(1, 1)
    lport = vm.router.nios[(1, 1)].lport
    await vm.put({"slot1": None})
    assert vm.new() == [
        'vm get_status "R1"',
        'vm slot_remove_nio_binding "R1" 1 1',
        f"nio delete {nio}",
        'vm slot_remove_binding "R1" 1 0',
    ]
    assert not api.state.ports.in_use("udp", lport)


async def test_hot_plug_on_running_c7200_uses_oir(api):
    pid = await api.project()
    vm = await make_vm(api, pid)
    await vm.start()
    await vm.put({"slot3": "PA-8T"})
    assert vm.new() == [
        'vm get_status "R1"',
        'vm slot_add_binding "R1" 3 0 PA-8T',
        'vm slot_oir_start "R1" 3 0',
    ]
    await vm.put({"slot3": None})
    assert vm.new() == [
        'vm get_status "R1"',
        'vm slot_oir_stop "R1" 3 0',
        'vm slot_remove_binding "R1" 3 0',
    ]
    # the I/O card is not hot-pluggable
    reply = await vm.put({"slot0": "C7200-IO-2FE"}, status=409)
    assert "running" in reply.body["message"]
    assert vm.new() == ['vm get_status "R1"']


@pytest.mark.parametrize(
    ("platform", "chassis", "card", "hot"),
    [
        ("c3600", "3660", "NM-4T", True),
        ("c3745", None, "NM-4T", True),
        ("c3745", None, "NM-1FE-TX", True),
        ("c3725", None, "NM-4T", False),
        ("c2691", None, "NM-1FE-TX", False),
        ("c3600", "3640", "NM-1FE-TX", False),
        ("c2600", None, "NM-1FE-TX", False),
    ],
)
async def test_hot_plug_rule(api, platform, chassis, card, hot):
    """Deliberate (C4): OIR where the real dynamips and the chassis support it (c7200 PAs,
    c3660 and c3745 network modules; measured in test_router_real) — elsewhere 409 and
    nothing sent."""
    pid = await api.project()
    extra = {"chassis": chassis} if chassis else {}
    vm = await make_vm(api, pid, platform=platform, image=f"{platform}.image", ram=128, **extra)
    await vm.start()
    reply = await vm.put({"slot1": card}, status=200 if hot else 409)
    if hot:
        assert vm.new() == [
            'vm get_status "R1"',
            f'vm slot_add_binding "R1" 1 0 {card}',
            'vm slot_oir_start "R1" 1 0',
        ]
        assert reply.body["slot1"] == card
    else:
        assert reply.body["message"] == 'Router "R1" is running: stop it before changing slot1'
        assert vm.new() == ['vm get_status "R1"']
        assert (await vm.api.get(vm.url)).body["slot1"] is None


async def test_wic_ports_numbering_and_removal_rebinds_slot0_nios(api):
    """WIC sub-slot w is hypervisor sub-slot 16*(w+1) with ports 16*(w+1)+k. Removing a WIC
    makes dynamips drop every slot-0 binding: the server unbinds the WIC's own NIOs and binds
    the surviving slot-0 NIOs again (deliberate, C15)."""
    pid = await api.project()
    vm = await make_vm(api, pid, platform="c3725", image="c3725.image", ram=128)
    await vm.put({"wic0": "WIC-1T", "wic1": "WIC-2T", "wic2": "WIC-1T"})
    assert vm.new() == [
        'vm get_status "R1"',
        'vm slot_add_binding "R1" 0 16 WIC-1T',
        'vm slot_add_binding "R1" 0 32 WIC-2T',
        'vm slot_add_binding "R1" 0 48 WIC-1T',
    ]
    # valid WIC ports: 16, 32, 33, 48; 17, 34, 49 and 64 do not exist
    for port in (17, 34, 49, 64, 2):
        reply = await api.post(
            f"{vm.url}/adapters/0/ports/{port}/nio",
            {"type": "nio_null"},
        )
        assert reply.status == 409, port
        assert reply.body["message"].startswith(f"Port {port} does not exist in adapter ")
    names = {port: await vm.nio(0, port) for port in (0, 1, 16, 32, 33, 48)}
    vm.new()
    reply = await vm.put({"wic1": None})
    assert vm.new() == [
        'vm get_status "R1"',
        'vm slot_remove_nio_binding "R1" 0 32',
        f"nio delete {names[32]}",
        'vm slot_remove_nio_binding "R1" 0 33',
        f"nio delete {names[33]}",
        'vm slot_remove_binding "R1" 0 32',
        *(f'vm slot_add_nio_binding "R1" 0 {p} {names[p]}' for p in (0, 1, 16, 48)),
    ]
    assert reply.body["wic1"] is None
    assert sorted(vm.router.nios) == [(0, 0), (0, 1), (0, 16), (0, 48)]
    # dynamips holds them again: each unbinds normally (the fake refuses unknown bindings)
    for port in (0, 1, 16, 48):
        assert (await api.delete(f"{vm.url}/adapters/0/ports/{port}/nio")).status == 204


async def test_wic_1enet_has_one_port_on_c1700(api):
    """Deliberate (C11): WIC-1ENET has one port (the original modelled two)."""
    pid = await api.project()
    vm = await make_vm(api, pid, platform="c1700", image="c1700.image", ram=64, wic1="WIC-1ENET")
    assert vm.vm_commands()[-1] == 'vm slot_add_binding "R1" 0 32 WIC-1ENET'
    await vm.nio(0, 32)
    await vm.nio(0, 33, status=409)


# -- NIOs and captures --------------------------------------------------------------------


async def test_nio_bind_unbind_stopped_and_running(api):
    pid = await api.project()
    vm = await make_vm(api, pid)
    lport = await api.udp_port(pid)
    vm.new()
    url = f"{vm.url}/adapters/0/ports/0/nio"
    reply = await api.post(
        url, {"type": "nio_udp", "lport": lport, "rhost": "127.0.0.1", "rport": lport + 1}
    )
    assert reply.status == 201
    nio = vm.router.nios[(0, 0)].name
    assert vm.new() == [
        f"nio create_udp {nio} {lport} 127.0.0.1 {lport + 1}",
        f'vm slot_add_nio_binding "R1" 0 0 {nio}',
    ]  # a router never started is not asked for its status
    assert (await api.delete(url)).status == 204
    assert vm.new() == [
        'vm slot_remove_nio_binding "R1" 0 0',
        f"nio delete {nio}",
    ]
    await vm.start()
    nio = await vm.nio(0, 0)
    assert vm.new()[1:] == [
        f'vm slot_add_nio_binding "R1" 0 0 {nio}',
        'vm get_status "R1"',
        'vm slot_enable_nio "R1" 0 0',
    ]
    assert (await api.delete(url)).status == 204
    assert vm.new() == [
        'vm get_status "R1"',
        'vm slot_disable_nio "R1" 0 0',
        'vm slot_remove_nio_binding "R1" 0 0',
        f"nio delete {nio}",
    ]


async def test_nio_binding_refused_retries_once_then_cleans_up(api):
    """A refused binding: the original's remove-and-retry; when that fails too, the NIO is
    deleted and nothing stays bound."""
    pid = await api.project()
    vm = await make_vm(api, pid)
    api.fake.inject("vm slot_add_nio_binding", "error", reply="205-VM R1: unable to add binding")
    await vm.nio(0, 0, status=409)
    commands = vm.new()
    nio = commands[0].split()[2]
    assert commands[1:] == [
        f'vm slot_add_nio_binding "R1" 0 0 {nio}',
        'vm slot_remove_nio_binding "R1" 0 0',
        f"nio delete {nio}",
    ]
    assert vm.router.nios == {}


async def test_capture_start_stop_commands(api):
    pid = await api.project()
    vm = await make_vm(api, pid, slot1="PA-4T+", slot2="PA-A1")
    for slot, expected in ((0, "en10mb"), (1, "c_hdlc"), (2, "atm_rfc1483")):
        nio = await vm.nio(slot, 0)
        vm.new()
        reply = await api.post(
            f"{vm.url}/adapters/{slot}/ports/0/start_capture",
            {"capture_file_name": f"c{slot}.pcap"},
        )
        assert reply.status == 200, reply.body
        path = reply.body["pcap_file_path"]
        assert vm.new() == [
            f"nio bind_filter {nio} 2 capture",
            f'nio setup_filter {nio} 2 {expected} "{path}"',
        ]
        reply = await api.post(f"{vm.url}/adapters/{slot}/ports/0/stop_capture")
        assert reply.status == 204
        assert vm.new() == [f"nio unbind_filter {nio} 2"]
    nio = vm.router.nios[(1, 0)].name
    reply = await api.post(
        f"{vm.url}/adapters/1/ports/0/start_capture",
        {"capture_file_name": "x.pcap", "data_link_type": "DLT_PPP_SERIAL"},
    )
    assert reply.status == 200
    assert vm.new()[-1].startswith(f"nio setup_filter {nio} 2 ppp_serial ")


# -- delete and rollback -----------------------------------------------------------------


async def test_delete_sequence(api):
    pid = await api.project()
    vm = await make_vm(api, pid)
    await vm.nio(0, 0)
    vm.new()
    assert (await api.delete(vm.url)).status == 204
    assert vm.new() == [
        'vm get_status "R1"',
        'vm delete "R1"',
        "hypervisor stop",
    ]


def fake_processes() -> set[int]:
    return {
        p.pid
        for p in psutil.Process().children(recursive=True)
        if p.status() != psutil.STATUS_ZOMBIE and "fake_hypervisor" in " ".join(p.cmdline())
    }


@pytest.mark.parametrize(
    ("fault", "body"),
    [
        ("c2600 set_chassis", {"platform": "c2600", "image": "c2600.image", "chassis": "2621"}),
        ("vm set_ios", {}),
        ("vm slot_add_binding .* 1 0", {"slot1": "PA-GE"}),
        ("vm set_config", {"startup_config_content": "hostname %h\n"}),
    ],
)
async def test_failed_create_rolls_back_everything(api, fault, body):
    """Deliberate (B1): the original left the process, ports and id behind. Here: 409, the
    hypervisor is stopped, and a second create gets the same dynamips id and console."""
    pid = await api.project()
    module_dir = api.state.projects.get(pid).module_dir
    before = fake_processes()
    api.fake.inject(fault, "error", reply="206-refused by the fake")
    reply = await post_router(api, pid, **body)
    assert reply.status == 409, reply.body
    assert "refused by the fake" in reply.body["message"]
    assert fake_processes() == before
    logs = sorted(api.fake.records.glob("*.log"), key=lambda p: p.stat().st_mtime)
    commands = logs[-1].read_text().splitlines()
    assert commands[-3:] == ['vm get_status "R1"', 'vm delete "R1"', "hypervisor stop"]
    console = int(next(c for c in commands if c.startswith("vm set_con_tcp_port")).split()[-1])
    assert api.state.dynamips.routers == {}
    assert api.state.ports.owned(pid, "tcp") == set()
    assert sorted(p.name for p in module_dir.rglob("*") if p.is_file()) == []
    api.fake.clear_faults()
    again = await api.router(pid, **{"name": "R1", **body})
    assert again["dynamips_id"] == 1
    assert again["console"] == console
