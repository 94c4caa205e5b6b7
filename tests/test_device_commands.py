"""Issue 6 on the fake hypervisor: the exact command sequence of every device operation.

NIO names carry a random UUID; :func:`normalized` renames them ``udp-A``, ``udp-B``... in the
order dynamips first hears of them, so sequences can be compared whole.
"""

from __future__ import annotations

import re
import socket

import psutil
import pytest

from tests.conftest import hypervisor_port

MODULES = {
    "ethernet_switch": "ethsw",
    "ethernet_hub": "nio_bridge",
    "atm_switch": "atmsw",
    "frame_relay_switch": "frsw",
}
NIO_NAME = re.compile(r"\b(udp|unix|vde|tap|generic_ethernet|linux_ethernet|null)-[0-9a-f-]{36}\b")


def normalized(lines: list[str]) -> list[str]:
    names: dict[str, str] = {}

    def rename(match: re.Match) -> str:
        return names.setdefault(match.group(), f"{match.group(1)}-{chr(ord('A') + len(names))}")

    return [NIO_NAME.sub(rename, line) for line in lines]


class Dev:
    """One device of the fake: its URL, its recorded commands, NIO helpers."""

    def __init__(self, api, project_id: str, body: dict) -> None:
        self.api, self.pid, self.id, self.body = api, project_id, body["device_id"], body
        self.url = f"/projects/{project_id}/dynamips/devices/{self.id}"
        self.port = hypervisor_port(api, self.id)
        self.mark = len(self.all())

    def all(self) -> list[str]:
        return self.api.fake.commands(self.port)

    def new(self) -> list[str]:
        """Commands recorded since the last call (normalised over the whole log)."""
        lines = normalized(self.all())
        fresh, self.mark = lines[self.mark :], len(lines)
        return fresh

    async def udp(self) -> dict:
        lport = await self.api.udp_port(self.pid)
        return {"type": "nio_udp", "lport": lport, "rhost": "127.0.0.1", "rport": lport + 1000}

    async def connect(self, port: int, status: int = 201, **extra):
        reply = await self.api.post(
            f"{self.url}/ports/{port}/nio", {"nio": await self.udp(), **extra}
        )
        assert reply.status == status, reply.body
        return reply

    async def show(self) -> dict:
        reply = await self.api.get(self.url)
        assert reply.status == 200, reply.body
        return reply.body


async def make(api, device_type: str = "ethernet_switch", name: str = "SW1", **body) -> Dev:
    pid = await api.project()
    return Dev(api, pid, await api.device(pid, device_type, name=name, **body))


def udp_owned(api, project_id: str) -> set[int]:
    return api.state.ports.owned(project_id, "udp")


# -- create, rename, delete ------------------------------------------------------------------


@pytest.mark.parametrize("device_type", MODULES)
async def test_create_then_delete_each_type(api, device_type):
    module = MODULES[device_type]
    pid = await api.project()
    wanted = "6f1c2d3e-0000-4000-8000-00000000abcd"
    body = await api.device(pid, device_type, name="D1", device_id=wanted)
    assert body["device_id"] == wanted and body["name"] == "D1" and body["project_id"] == pid
    extra = {
        "ethernet_switch": {"ports": []},
        "atm_switch": {"mappings": {}},
        "frame_relay_switch": {"mappings": {}},
    }.get(device_type, {})
    assert set(body) == {"device_id", "name", "project_id", *extra}
    dev = Dev(api, pid, body)
    hypervisor = api.state.dynamips.devices[wanted].hypervisor
    commands = dev.all()
    assert commands[0] == "hypervisor version"
    assert commands[1].startswith("hypervisor working_dir ")
    assert commands[2:] == [f'{module} create "D1"']
    assert (await api.get(dev.url)).body == body

    reply = await api.delete(dev.url)
    assert reply.status == 204
    assert dev.new() == [f'{module} delete "D1"', "hypervisor stop"]
    assert (await api.get(dev.url)).status == 404
    assert not psutil.pid_exists(hypervisor.pid) or (
        psutil.Process(hypervisor.pid).status() == psutil.STATUS_ZOMBIE
    )


@pytest.mark.parametrize("device_type", MODULES)
async def test_rename_uses_the_device_module_C01(api, device_type):
    """C01: rename goes to the module that created the device (``atmsw``, never ``atm``)."""
    module = MODULES[device_type]
    dev = await make(api, device_type, name="OLD")
    reply = await api.put(dev.url, {"name": "NEW"})
    assert reply.status == 200 and reply.body["name"] == "NEW"
    assert dev.new() == [f'{module} rename "OLD" "NEW"']
    assert (await dev.show())["name"] == "NEW"

    # a refused rename: 409 carrying dynamips' text, name unchanged
    api.fake.inject(f"^{module} rename", "error", reply="213-unable to rename object")
    reply = await api.put(dev.url, {"name": "OTHER"})
    assert reply.status == 409 and "unable to rename object" in reply.body["message"]
    assert (await dev.show())["name"] == "NEW"
    # a name dynamips cannot carry is refused before anything is sent
    reply = await api.put(dev.url, {"name": 'a"b'})
    assert reply.status == 400
    assert dev.new() == [f'{module} rename "NEW" "OTHER"']


async def test_device_ids_legacy_ids_and_port_zero(api):
    """A1: a bad id is a 400; B7: the same id again is the same device (no second process);
    a legacy integer id gets a UUID; A11: port 0 is a port like any other."""
    sw = await make(api)
    reply = await api.get(f"/projects/{sw.pid}/dynamips/devices/not-a-uuid")
    assert (
        reply.status == 400 and reply.body["message"] == "Device ID not-a-uuid is not a valid UUID"
    )
    again = await api.device(sw.pid, name="SW1", device_id=sw.id)
    assert again == sw.body and len(api.state.dynamips.hypervisors[sw.pid]) == 1
    legacy = await api.device(sw.pid, name="SW2", device_id=1)
    assert legacy["device_id"] != sw.id and len(legacy["device_id"]) == 36
    await sw.connect(0, port_settings={"type": "dot1q", "vlan": 1})
    assert (await sw.show())["ports"] == [{"port": 0, "type": "dot1q", "vlan": 1, "ethertype": ""}]
    other = await api.project()
    reply = await api.get(f"/projects/{other}/dynamips/devices/{sw.id}")
    assert reply.status == 404


async def test_unknown_device_type_is_409_and_starts_nothing(api):
    pid = await api.project()
    reply = await api.post(
        f"/projects/{pid}/dynamips/devices", {"name": "X", "device_type": "token_ring"}
    )
    assert reply.status == 409 and reply.body["message"] == "Unknown device type: token_ring"
    assert api.state.dynamips.hypervisors.get(pid, []) == []


# -- Ethernet switch ---------------------------------------------------------------------------


async def test_switch_nio_add_and_remove_sequence(api):
    """devices.md §6 worked sequence, plus the JSON ``ports`` list and the UDP bookkeeping."""
    sw = await make(api)
    one = await sw.udp()
    reply = await api.post(
        f"{sw.url}/ports/1/nio", {"nio": one, "port_settings": {"type": "access", "vlan": 10}}
    )
    assert reply.status == 201 and reply.body == one
    await sw.connect(2, port_settings={"type": "dot1q", "vlan": 1, "ethertype": ""})
    await sw.connect(3)  # no settings: dynamips' default (access VLAN 1), not listed
    assert sw.new() == [
        f"nio create_udp udp-A {one['lport']} 127.0.0.1 {one['rport']}",
        'ethsw add_nio "SW1" udp-A',
        'ethsw set_access_port "SW1" udp-A 10',
        f"nio create_udp udp-B {one['lport'] + 1} 127.0.0.1 {one['rport'] + 1}",
        'ethsw add_nio "SW1" udp-B',
        'ethsw set_dot1q_port "SW1" udp-B 1',
        f"nio create_udp udp-C {one['lport'] + 2} 127.0.0.1 {one['rport'] + 2}",
        'ethsw add_nio "SW1" udp-C',
    ]
    assert (await sw.show())["ports"] == [
        {"port": 1, "type": "access", "vlan": 10, "ethertype": ""},
        {"port": 2, "type": "dot1q", "vlan": 1, "ethertype": ""},
    ]
    assert one["lport"] in udp_owned(api, sw.pid)

    reply = await api.delete(f"{sw.url}/ports/1/nio")
    assert reply.status == 204
    assert sw.new() == ['ethsw remove_nio "SW1" udp-A', "nio delete udp-A"]
    assert [p["port"] for p in (await sw.show())["ports"]] == [2]
    assert one["lport"] not in udp_owned(api, sw.pid)
    reply = await api.delete(f"{sw.url}/ports/1/nio")
    assert reply.status == 409 and reply.body["message"] == "Port 1 is not allocated"
    reply = await api.post(f"{sw.url}/ports/2/nio", {"nio": await sw.udp()})
    assert reply.status == 409 and reply.body["message"] == "Port 2 isn't free"
    assert sw.new() == []


async def test_qinq_default_ethertype_forms_send_three_arguments_C03(api):
    """C03: missing, null, "" and 0x8100 all mean 802.1Q: the 3-argument form."""
    sw = await make(api)
    forms = [{}, {"ethertype": None}, {"ethertype": ""}, {"ethertype": "0x8100"}]
    for port, form in enumerate(forms, start=1):
        await sw.connect(port, port_settings={"type": "qinq", "vlan": 100, **form})
    qinq = [line for line in sw.new() if "set_qinq_port" in line]
    assert qinq == [f'ethsw set_qinq_port "SW1" udp-{c} 100' for c in "ABCD"]
    assert [p["ethertype"] for p in (await sw.show())["ports"]] == ["0x8100"] * 4


async def test_qinq_other_ethertype_on_0_2_14_is_409_and_leaves_the_port_free_C03(api):
    sw = await make(api)
    nio = await sw.udp()
    reply = await api.post(
        f"{sw.url}/ports/4/nio",
        {"nio": nio, "port_settings": {"type": "qinq", "vlan": 100, "ethertype": "0x88A8"}},
    )
    assert reply.status == 409
    assert ">= 0.2.16" in reply.body["message"] and "0.2.14" in reply.body["message"]
    assert sw.new() == []  # nothing reached dynamips
    assert nio["lport"] in udp_owned(api, sw.pid)  # nothing was created: the port is kept
    reply = await api.post(
        f"{sw.url}/ports/4/nio", {"nio": nio, "port_settings": {"type": "qinq", "vlan": 100}}
    )
    assert reply.status == 201, reply.body
    # the same refusal through PUT ports: still nothing sent
    reply = await api.put(
        sw.url, {"ports": [{"port": 4, "type": "qinq", "vlan": 7, "ethertype": "0x9100"}]}
    )
    assert reply.status == 409 and ">= 0.2.16" in reply.body["message"]
    assert [line for line in sw.new() if "set_" in line] == ['ethsw set_qinq_port "SW1" udp-A 100']


async def test_qinq_ethertype_on_0_2_16_sends_the_fourth_argument_C03(api):
    api.fake.set_version("0.2.16-amd64")
    sw = await make(api)
    await sw.connect(1, port_settings={"type": "qinq", "vlan": 100, "ethertype": "0x88A8"})
    await sw.connect(2, port_settings={"type": "qinq", "vlan": 200})
    sets = [line for line in sw.new() if "set_qinq_port" in line]
    assert sets == [
        'ethsw set_qinq_port "SW1" udp-A 100 0x88A8',
        'ethsw set_qinq_port "SW1" udp-B 200',
    ]
    assert [p["ethertype"] for p in (await sw.show())["ports"]] == ["0x88A8", "0x8100"]


async def test_port_settings_refused_by_dynamips_leave_nothing_behind(api):
    sw = await make(api)
    api.fake.inject("set_access_port", "error", reply="205-unable to apply port settings", times=1)
    nio = await sw.udp()
    reply = await api.post(
        f"{sw.url}/ports/1/nio", {"nio": nio, "port_settings": {"type": "access", "vlan": 10}}
    )
    assert reply.status == 409 and "unable to apply port settings" in reply.body["message"]
    assert sw.new() == [
        f"nio create_udp udp-A {nio['lport']} 127.0.0.1 {nio['rport']}",
        'ethsw add_nio "SW1" udp-A',
        'ethsw set_access_port "SW1" udp-A 10',
        'ethsw remove_nio "SW1" udp-A',
        "nio delete udp-A",
    ]
    assert nio["lport"] not in udp_owned(api, sw.pid)
    assert (await sw.show())["ports"] == []


async def test_ports_update_is_all_or_nothing_C04(api):
    """C04: an unconnected port in the list is refused before any command (and before the
    rename of the same request); a refusal by dynamips half-way puts the old settings back."""
    sw = await make(api)
    await sw.connect(1, port_settings={"type": "access", "vlan": 1})
    await sw.connect(2, port_settings={"type": "access", "vlan": 1})
    sw.new()
    before = await sw.show()
    change = [{"port": 1, "type": "access", "vlan": 10}, {"port": 2, "type": "dot1q", "vlan": 1}]
    reply = await api.put(
        sw.url, {"name": "SW-CORE", "ports": [*change, {"port": 3, "type": "access", "vlan": 30}]}
    )
    assert reply.status == 409 and "Port 3" in reply.body["message"]
    assert sw.new() == []
    assert await sw.show() == before

    api.fake.inject("set_dot1q_port", "error", reply="205-unable to apply port settings", times=1)
    reply = await api.put(sw.url, {"ports": change})
    assert reply.status == 409
    assert sw.new() == [
        'ethsw set_access_port "SW1" udp-A 10',
        'ethsw set_dot1q_port "SW1" udp-B 1',
        'ethsw set_access_port "SW1" udp-A 1',  # rolled back
    ]
    assert await sw.show() == before

    reply = await api.put(sw.url, {"name": "SW-CORE", "ports": change})
    assert reply.status == 200
    assert sw.new() == [
        'ethsw rename "SW1" "SW-CORE"',
        'ethsw set_access_port "SW-CORE" udp-A 10',
        'ethsw set_dot1q_port "SW-CORE" udp-B 1',
    ]
    assert reply.body["ports"] == [{**change[0], "ethertype": ""}, {**change[1], "ethertype": ""}]
    assert reply.body == await sw.show()
    # a ports list on a device that has no ports settings: 400
    hub = Dev(api, sw.pid, await api.device(sw.pid, "ethernet_hub", name="HUB1"))
    reply = await api.put(hub.url, {"ports": change})
    assert reply.status == 400 and "Ethernet switch" in reply.body["message"]


@pytest.mark.parametrize(
    ("device_type", "extra"),
    [
        ("ethernet_hub", {"port_settings": {"type": "access", "vlan": 1}}),
        ("atm_switch", {"port_settings": {"type": "access", "vlan": 1}}),
        ("frame_relay_switch", {"port_settings": {"type": "dot1q", "vlan": 1}}),
        ("ethernet_switch", {"mappings": {"1:102": "2:201"}}),
        ("ethernet_hub", {"mappings": {"1:102": "2:201"}}),
    ],
)
async def test_settings_a_device_does_not_have_are_400_before_anything_is_sent(
    api, device_type, extra
):
    dev = await make(api, device_type)
    nio = await dev.udp()
    reply = await api.post(f"{dev.url}/ports/1/nio", {"nio": nio, **extra})
    assert reply.status == 400
    assert ("port_settings" if "port_settings" in extra else "mappings") in reply.body["message"]
    assert dev.new() == []
    reply = await api.post(f"{dev.url}/ports/1/nio", {"nio": nio})
    assert reply.status == 201


# -- hub ---------------------------------------------------------------------------------------


async def test_hub_nio_sequence(api):
    hub = await make(api, "ethernet_hub", name="HUB1")
    await hub.connect(1)
    await hub.connect(2)
    assert await hub.show() == hub.body
    await api.delete(f"{hub.url}/ports/1/nio")
    assert [line for line in hub.new() if not line.startswith("nio create")] == [
        'nio_bridge add_nio "HUB1" udp-A',
        'nio_bridge add_nio "HUB1" udp-B',
        'nio_bridge remove_nio "HUB1" udp-A',
        "nio delete udp-A",
    ]


# -- ATM and Frame Relay -------------------------------------------------------------------------


async def test_atm_circuits_follow_the_nios(api):
    """VC and VP circuits appear when both ends have a NIO, both directions, once; they go
    before the NIO that carries them."""
    atm = await make(api, "atm_switch", name="ATM1")
    table = {"1:0:100": "2:0:200", "1:10": "2:20"}
    mirrored = {"2:0:200": "1:0:100", "2:20": "1:10"}
    await atm.connect(1, mappings=table)
    assert [line.split()[:2] for line in atm.new()] == [["nio", "create_udp"]]
    await atm.connect(2, mappings=mirrored)
    assert atm.new()[1:] == [
        'atmsw create_vcc "ATM1" udp-B 0 200 udp-A 0 100',
        'atmsw create_vcc "ATM1" udp-A 0 100 udp-B 0 200',
        'atmsw create_vpc "ATM1" udp-B 20 udp-A 10',
        'atmsw create_vpc "ATM1" udp-A 10 udp-B 20',
    ]
    assert (await atm.show())["mappings"] == {
        "(1, 0, 100)": "(2, 0, 200)",
        "(2, 0, 200)": "(1, 0, 100)",
        "(1, 10)": "(2, 20)",
        "(2, 20)": "(1, 10)",
    }
    # the whole table again with a third port: nothing is created twice
    await atm.connect(3, mappings={**table, **mirrored, "3:1:1": "1:1:1"})
    assert atm.new()[1:] == [
        'atmsw create_vcc "ATM1" udp-C 1 1 udp-A 1 1',
        'atmsw create_vcc "ATM1" udp-A 1 1 udp-C 1 1',
    ]
    reply = await api.delete(f"{atm.url}/ports/1/nio")
    assert reply.status == 204
    assert atm.new() == [
        'atmsw delete_vcc "ATM1" udp-A 0 100 udp-B 0 200',
        'atmsw delete_vcc "ATM1" udp-B 0 200 udp-A 0 100',
        'atmsw delete_vpc "ATM1" udp-A 10 udp-B 20',
        'atmsw delete_vpc "ATM1" udp-B 20 udp-A 10',
        'atmsw delete_vcc "ATM1" udp-A 1 1 udp-C 1 1',
        'atmsw delete_vcc "ATM1" udp-C 1 1 udp-A 1 1',
        "nio delete udp-A",
    ]
    assert (await atm.show())["mappings"] == {}


async def test_frame_relay_circuits_follow_the_nios(api):
    fr = await make(api, "frame_relay_switch", name="FR1")
    await fr.connect(1, mappings={"1:102": "2:201"})
    await fr.connect(2, mappings={"2:201": "1:102"})
    await fr.connect(3, mappings={"1:102": "2:201", "3:301": "2:202"})
    assert [line for line in fr.new() if line.startswith("frsw")] == [
        'frsw create_vc "FR1" udp-B 201 udp-A 102',
        'frsw create_vc "FR1" udp-A 102 udp-B 201',
        'frsw create_vc "FR1" udp-C 301 udp-B 202',
        'frsw create_vc "FR1" udp-B 202 udp-C 301',
    ]
    assert (await fr.show())["mappings"] == {
        "(1, 102)": "(2, 201)",
        "(2, 201)": "(1, 102)",
        "(3, 301)": "(2, 202)",
        "(2, 202)": "(3, 301)",
    }
    reply = await api.delete(f"{fr.url}/ports/2/nio")
    assert reply.status == 204
    assert fr.new() == [
        'frsw delete_vc "FR1" udp-B 201 udp-A 102',
        'frsw delete_vc "FR1" udp-A 102 udp-B 201',
        'frsw delete_vc "FR1" udp-B 202 udp-C 301',
        'frsw delete_vc "FR1" udp-C 301 udp-B 202',
        "nio delete udp-B",
    ]
    assert (await fr.show())["mappings"] == {}


async def test_a_refused_circuit_undoes_the_nio_add(api):
    atm = await make(api, "atm_switch", name="ATM1")
    await atm.connect(1)
    api.fake.inject("create_vcc .* udp-.* 0 200 udp-", "error", reply="205-unable to create VCC")
    nio = await atm.udp()
    reply = await api.post(
        f"{atm.url}/ports/2/nio", {"nio": nio, "mappings": {"1:0:100": "2:0:200"}}
    )
    assert reply.status == 409 and "unable to create VCC" in reply.body["message"]
    assert atm.new()[2:] == [
        'atmsw create_vcc "ATM1" udp-A 0 100 udp-B 0 200',
        'atmsw create_vcc "ATM1" udp-B 0 200 udp-A 0 100',
        'atmsw delete_vcc "ATM1" udp-A 0 100 udp-B 0 200',
        "nio delete udp-B",
    ]
    assert (await atm.show())["mappings"] == {}
    assert nio["lport"] not in udp_owned(api, atm.pid)
    assert 2 not in api.state.dynamips.devices[atm.id].nios


@pytest.mark.parametrize(
    ("device_type", "mappings", "named"),
    [
        ("frame_relay_switch", {"1:102": "2:a"}, "'1:102': '2:a'"),
        ("frame_relay_switch", {"1::3": "2:201"}, "'1::3'"),
        ("frame_relay_switch", {"1:2:3": "2:201"}, "'1:2:3'"),
        ("atm_switch", {"1:0:100": "2:20"}, "'1:0:100': '2:20'"),
        ("atm_switch", {"1:0:100": "2:0:200", "x": "2:3"}, "'x'"),
    ],
)
async def test_bad_mapping_text_is_400_naming_the_entry(api, device_type, mappings, named):
    dev = await make(api, device_type)
    reply = await api.post(f"{dev.url}/ports/1/nio", {"nio": await dev.udp(), "mappings": mappings})
    assert reply.status == 400 and named in reply.body["message"]
    assert dev.new() == []
    reply = await api.post(
        f"{dev.url}/ports/1/nio", {"nio": await dev.udp(), "mappings": {"1:1": 2}}
    )
    assert reply.status == 400  # not a string: refused by the schema


# -- captures ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device_type", "dlt"),
    [
        ("ethernet_switch", "en10mb"),
        ("ethernet_hub", "en10mb"),
        ("atm_switch", "atm_rfc1483"),
        ("frame_relay_switch", "frelay"),
    ],
)
async def test_capture_commands_and_refusals(api, device_type, dlt):
    dev = await make(api, device_type)
    await dev.connect(1)
    dev.new()
    reply = await api.post(f"{dev.url}/ports/1/start_capture", {"capture_file_name": "c.pcap"})
    assert reply.status == 200
    path = reply.body["pcap_file_path"]
    project = api.state.projects.get(dev.pid)
    assert path == str(project.captures_dir / "c.pcap")
    assert dev.new() == [
        "nio bind_filter udp-A 2 capture",
        f'nio setup_filter udp-A 2 {dlt} "{path}"',
    ]
    reply = await api.post(f"{dev.url}/ports/1/start_capture", {"capture_file_name": "d.pcap"})
    assert reply.status == 409 and "already a filter applied" in reply.body["message"]
    reply = await api.post(f"{dev.url}/ports/1/stop_capture", {})
    assert reply.status == 204
    reply = await api.post(
        f"{dev.url}/ports/1/start_capture",
        {"capture_file_name": "e.pcap", "data_link_type": "DLT_EN10MB"},
    )
    assert reply.status == 200
    assert dev.new() == [
        "nio unbind_filter udp-A 2",
        "nio bind_filter udp-A 2 capture",
        f'nio setup_filter udp-A 2 en10mb "{project.captures_dir / "e.pcap"}"',
    ]
    # a capture running while the NIO goes: its filter is unbound before the delete
    await api.delete(f"{dev.url}/ports/1/nio")
    assert dev.new()[-2:] == ["nio unbind_filter udp-A 2", "nio delete udp-A"]
    for bad in ("../x.pcap", "/tmp/x.pcap"):
        await dev.connect(2)
        reply = await api.post(f"{dev.url}/ports/2/start_capture", {"capture_file_name": bad})
        assert reply.status == 400
        await api.delete(f"{dev.url}/ports/2/nio")
    reply = await api.post(f"{dev.url}/ports/5/start_capture", {"capture_file_name": "f.pcap"})
    assert reply.status == 409 and reply.body["message"] == "Port 5 is not allocated"
    reply = await api.post(f"{dev.url}/ports/5/stop_capture", {})
    assert reply.status == 409


# -- lifecycle -----------------------------------------------------------------------------------


async def test_delete_and_close_release_ports_and_processes(api):
    sw = await make(api)
    await sw.connect(1)
    hub = Dev(api, sw.pid, await api.device(sw.pid, "ethernet_hub", name="HUB1"))
    await hub.connect(1)
    owned = udp_owned(api, sw.pid)
    assert len(owned) == 2
    sw_pid = api.state.dynamips.devices[sw.id].hypervisor.pid
    hub_pid = api.state.dynamips.devices[hub.id].hypervisor.pid

    assert (await api.delete(sw.url)).status == 204
    assert len(udp_owned(api, sw.pid)) == 1
    reply = await api.post(f"/projects/{sw.pid}/close")
    assert reply.status == 204
    assert udp_owned(api, sw.pid) == set()
    assert api.state.dynamips.devices == {}
    assert api.state.dynamips.hypervisors.get(sw.pid, []) == []
    for pid in (sw_pid, hub_pid):
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    # the fake really let go of its UDP sockets: the ports can be bound again
    for port in owned:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("0.0.0.0", port))
