"""Issue 7 on the fake hypervisor: every NIO type's commands, every failure path, no leak."""

from __future__ import annotations

import socket

import pytest

from dynamips_mgr.dynamips import nios
from tests.conftest import hypervisor_port
from tests.test_device_commands import Dev, make, normalized, udp_owned


@pytest.fixture
def interfaces(monkeypatch):
    """Host interfaces as the NIO checks see them: name -> flags (absent = no such device)."""
    table = {"lo": 0x9, "eth8": 0x1002, "tap7": 0x1003, "tap6": 0x1002}
    monkeypatch.setattr(nios, "_interface_flags", table.get)
    return table


class Router:
    def __init__(self, api, project_id: str, body: dict) -> None:
        self.api, self.pid, self.id = api, project_id, body["vm_id"]
        self.url = f"/projects/{project_id}/dynamips/vms/{self.id}"
        self.port = hypervisor_port(api, self.id)
        self.mark = len(api.fake.commands(self.port))

    def new(self) -> list[str]:
        lines = normalized(self.api.fake.commands(self.port))
        fresh, self.mark = lines[self.mark :], len(lines)
        return fresh


async def router(api) -> Router:
    pid = await api.project()
    return Router(api, pid, await api.router(pid))


def bodies(tmp_path) -> dict[str, tuple[dict, str]]:
    """type -> (NIO body, expected create command with udp-A style names)."""
    (tmp_path / "vde.ctl").write_text("")
    return {
        "nio_unix": (
            {"type": "nio_unix", "local_file": f"{tmp_path}/l", "remote_file": f"{tmp_path}/r"},
            f'nio create_unix unix-A "{tmp_path}/l" "{tmp_path}/r"',
        ),
        "nio_vde": (
            {
                "type": "nio_vde",
                "control_file": f"{tmp_path}/vde.ctl",
                "local_file": f"{tmp_path}/v",
            },
            f'nio create_vde vde-A "{tmp_path}/vde.ctl" "{tmp_path}/v"',
        ),
        "nio_tap": ({"type": "nio_tap", "tap_device": "tap7"}, 'nio create_tap tap-A "tap7"'),
        "nio_generic_ethernet": (
            {"type": "nio_generic_ethernet", "ethernet_device": "lo"},
            'nio create_gen_eth generic_ethernet-A "lo"',
        ),
        "nio_linux_ethernet": (
            {"type": "nio_linux_ethernet", "ethernet_device": "lo"},
            'nio create_linux_eth linux_ethernet-A "lo"',
        ),
        "nio_null": ({"type": "nio_null"}, "nio create_null null-A"),
    }


TYPES = [
    "nio_udp",
    "nio_unix",
    "nio_vde",
    "nio_tap",
    "nio_generic_ethernet",
    "nio_linux_ethernet",
    "nio_null",
]


@pytest.mark.parametrize("kind", TYPES)
async def test_each_type_on_a_switch_port(api, tmp_path, interfaces, kind):
    sw = await make(api)
    if kind == "nio_udp":
        body = await sw.udp()
        create = f"nio create_udp udp-A {body['lport']} 127.0.0.1 {body['rport']}"
    else:
        body, create = bodies(tmp_path)[kind]
    prefix = create.split()[2]
    reply = await api.post(f"{sw.url}/ports/1/nio", {"nio": body})
    assert reply.status == 201 and reply.body == body
    reply = await api.delete(f"{sw.url}/ports/1/nio")
    assert reply.status == 204
    assert sw.new() == [
        create,
        f'ethsw add_nio "SW1" {prefix}',
        f'ethsw remove_nio "SW1" {prefix}',
        f"nio delete {prefix}",
    ]
    assert udp_owned(api, sw.pid) == set()


@pytest.mark.parametrize("kind", TYPES)
async def test_each_type_on_a_router_port(api, tmp_path, interfaces, kind):
    r = await router(api)
    if kind == "nio_udp":
        lport = await api.udp_port(r.pid)
        body = {"type": "nio_udp", "lport": lport, "rhost": "127.0.0.1", "rport": lport + 1}
        create = f"nio create_udp udp-A {lport} 127.0.0.1 {lport + 1}"
    else:
        body, create = bodies(tmp_path)[kind]
    prefix = create.split()[2]
    reply = await api.post(f"{r.url}/adapters/0/ports/0/nio", body)
    assert reply.status == 201 and reply.body == body
    reply = await api.delete(f"{r.url}/adapters/0/ports/0/nio")
    assert reply.status == 204
    assert [line for line in r.new() if "get_status" not in line] == [
        create,
        f'vm slot_add_nio_binding "R1" 0 0 {prefix}',
        'vm slot_remove_nio_binding "R1" 0 0',
        f"nio delete {prefix}",
    ]
    assert udp_owned(api, r.pid) == set()


async def test_udp_rhost_ipv6_and_names_resolve(api):
    sw = await make(api)
    for port, rhost in ((1, "::1"), (2, "localhost")):
        lport = await api.udp_port(sw.pid)
        body = {"type": "nio_udp", "lport": lport, "rhost": rhost, "rport": 4000}
        reply = await api.post(f"{sw.url}/ports/{port}/nio", {"nio": body})
        assert reply.status == 201, reply.body
        assert sw.new()[0] == f"nio create_udp udp-{'AB'[port - 1]} {lport} {rhost} 4000"


# -- failures: nothing leaks -----------------------------------------------------------------


async def test_busy_local_port_is_409_with_the_command_and_frees_the_port_C06(api):
    """C06 step 2/4: dynamips cannot bind the lport: 409 naming the command, nothing kept."""
    r = await router(api)
    busy = await api.udp_port(r.pid)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blocker:
        blocker.bind(("0.0.0.0", busy))
        body = {"type": "nio_udp", "lport": busy, "rhost": "127.0.0.1", "rport": busy + 1}
        reply = await api.post(f"{r.url}/adapters/0/ports/0/nio", body)
    assert reply.status == 409
    assert "unable to create UDP NIO" in reply.body["message"]
    assert "nio create_udp" in reply.body["message"]
    assert busy not in udp_owned(api, r.pid)
    assert [line.split()[:2] for line in r.new()] == [["nio", "create_udp"]]
    free = await api.udp_port(r.pid)
    reply = await api.post(
        f"{r.url}/adapters/0/ports/0/nio",
        {"type": "nio_udp", "lport": free, "rhost": "127.0.0.1", "rport": 9},
    )
    assert reply.status == 201


async def test_bad_rhost_is_409_without_sending_anything_C06(api):
    r = await router(api)
    sw = Dev(api, r.pid, await api.device(r.pid))
    lport = await api.udp_port(r.pid)
    body = {"type": "nio_udp", "lport": lport, "rhost": "no-such-host.invalid", "rport": 9}
    reply = await api.post(f"{r.url}/adapters/0/ports/0/nio", body)
    assert reply.status == 409
    assert "Could not create an UDP connection to no-such-host.invalid:9" in reply.body["message"]
    reply = await api.post(f"{sw.url}/ports/1/nio", {"nio": body})
    assert reply.status == 409
    assert r.new() == [] and sw.new() == []
    assert lport not in udp_owned(api, r.pid)


async def test_binding_refused_deletes_the_nio_and_frees_the_port(api):
    sw = await make(api)
    api.fake.inject("ethsw add_nio", "error", reply="205-unable to bind NIO", times=1)
    body = await sw.udp()
    reply = await api.post(f"{sw.url}/ports/1/nio", {"nio": body})
    assert reply.status == 409 and "unable to bind NIO" in reply.body["message"]
    assert sw.new()[1:] == ['ethsw add_nio "SW1" udp-A', "nio delete udp-A"]
    assert body["lport"] not in udp_owned(api, sw.pid)

    r = Router(api, sw.pid, await api.router(sw.pid))
    api.fake.inject("slot_add_nio_binding", "error", reply="205-unable to add binding")
    lport = await api.udp_port(sw.pid)
    body = {"type": "nio_udp", "lport": lport, "rhost": "127.0.0.1", "rport": 9}
    reply = await api.post(f"{r.url}/adapters/0/ports/0/nio", body)
    assert reply.status == 409
    assert r.new()[-1] == "nio delete udp-A"
    assert lport not in udp_owned(api, sw.pid)


async def test_lport_of_another_link_is_refused_before_dynamips(api):
    sw = await make(api)
    body = await sw.udp()
    await api.post(f"{sw.url}/ports/1/nio", {"nio": body})
    sw.new()
    reply = await api.post(f"{sw.url}/ports/2/nio", {"nio": body})
    assert reply.status == 409
    assert f"UDP port {body['lport']} is already used by port 1 of SW1" == reply.body["message"]
    assert sw.new() == []
    assert body["lport"] in udp_owned(api, sw.pid)  # still the first link's


@pytest.mark.parametrize("kind", ["nio_nat", "nio_vmnet"])
async def test_unsupported_types_are_409_on_routers_C07(api, kind):
    r = await router(api)
    body = {"type": kind, **({"vmnet": "vmnet1"} if kind == "nio_vmnet" else {})}
    reply = await api.post(f"{r.url}/adapters/0/ports/0/nio", body)
    assert reply.status == 409 and reply.body["message"] == f"NIO of type {kind} is not supported"
    assert r.new() == []


async def test_unsupported_types_on_devices(api):
    sw = await make(api)
    reply = await api.post(f"{sw.url}/ports/1/nio", {"nio": {"type": "nio_nat"}})
    assert reply.status == 409 and reply.body["message"] == "NIO of type nio_nat is not supported"
    reply = await api.post(f"{sw.url}/ports/1/nio", {"nio": {"type": "nio_vmnet", "vmnet": "v"}})
    assert reply.status == 400  # not a device NIO kind in the schema (as the original)
    assert sw.new() == []


@pytest.mark.parametrize("kind", ["nio_generic_ethernet", "nio_linux_ethernet"])
async def test_missing_or_down_interface_is_409_before_dynamips(api, interfaces, kind):
    sw = await make(api)
    for device, text in (("eth0x", "does not exist"), ("eth8", "is down")):
        reply = await api.post(
            f"{sw.url}/ports/1/nio", {"nio": {"type": kind, "ethernet_device": device}}
        )
        assert reply.status == 409
        assert reply.body["message"] == f"Ethernet interface {device} {text}"
    assert sw.new() == []


async def test_tap_down_after_creation_is_409_and_deleted(api, interfaces):
    """dynamips creates a missing TAP device, so it is checked after creation (as the
    original) and the NIO is deleted when it is not up."""
    sw = await make(api)
    reply = await api.post(
        f"{sw.url}/ports/1/nio", {"nio": {"type": "nio_tap", "tap_device": "tap6"}}
    )
    assert reply.status == 409 and reply.body["message"] == "TAP interface tap6 is down"
    assert sw.new() == ['nio create_tap tap-A "tap6"', "nio delete tap-A"]


async def test_vde_refused_by_dynamips_is_409_with_its_text_C07(api, tmp_path):
    r = await router(api)
    body = {"type": "nio_vde", "control_file": "/nonexistent/ctl", "local_file": f"{tmp_path}/v"}
    reply = await api.post(f"{r.url}/adapters/0/ports/0/nio", body)
    assert reply.status == 409 and "unable to create VDE NIO" in reply.body["message"]
    body = {"type": "nio_unix", "local_file": f"{tmp_path}/l", "remote_file": f"{tmp_path}/r"}
    reply = await api.post(f"{r.url}/adapters/0/ports/0/nio", body)  # the port was left free
    assert reply.status == 201
    assert [line for line in r.new() if "get_status" not in line][-1] == (
        'vm slot_add_nio_binding "R1" 0 0 unix-B'
    )


async def test_text_dynamips_cannot_carry_is_400(api, tmp_path):
    sw = await make(api)
    body = {"type": "nio_unix", "local_file": f'{tmp_path}/a"b', "remote_file": f"{tmp_path}/r"}
    reply = await api.post(f"{sw.url}/ports/1/nio", {"nio": body})
    assert reply.status == 400 and "local_file" in reply.body["message"]
    assert sw.new() == []


# -- the optional filters object, stats ---------------------------------------------------------


async def test_frequency_drop_filter_lifecycle(api):
    sw = await make(api)
    body = {**await sw.udp(), "filters": {"frequency_drop": 5}}
    reply = await api.post(f"{sw.url}/ports/1/nio", {"nio": body})
    assert reply.status == 201 and reply.body == body
    assert sw.new()[1:] == [
        "nio bind_filter udp-A 0 freq_drop",
        "nio setup_filter udp-A 0 5",
        'ethsw add_nio "SW1" udp-A',
    ]
    filters = f"{sw.url}/ports/1/nio/filters"
    reply = await api.put(filters, {"filters": {"frequency_drop": 3}})
    assert reply.status == 200 and reply.body["filters"] == {"frequency_drop": 3}
    reply = await api.put(filters, {"filters": {"frequency_drop": -1}})
    assert reply.status == 200
    assert sw.new() == ["nio setup_filter udp-A 0 3", "nio setup_filter udp-A 0 -1"]
    # a capture takes dynamips' "both" slot: the loss filter stays, both are unbound at the end
    reply = await api.post(f"{sw.url}/ports/1/start_capture", {"capture_file_name": "x.pcap"})
    assert reply.status == 200
    reply = await api.post(f"{sw.url}/ports/1/stop_capture", {})
    assert reply.status == 204
    assert [line.split()[:3] for line in sw.new()] == [
        ["nio", "bind_filter", "udp-A"],
        ["nio", "setup_filter", "udp-A"],
        ["nio", "unbind_filter", "udp-A"],
    ]
    reply = await api.put(filters, {"filters": {"frequency_drop": 0}})
    assert reply.status == 200 and "filters" not in reply.body
    assert sw.new() == ["nio unbind_filter udp-A 0"]
    for bad in ({"frequency_drop": -2}, {"frequency_drop": "x"}, {"loss": 1}):
        assert (await api.put(filters, {"filters": bad})).status == 400
    reply = await api.put(f"{sw.url}/ports/2/nio/filters", {"filters": {"frequency_drop": 2}})
    assert reply.status == 409 and reply.body["message"] == "Port 2 is not allocated"
    reply = await api.put(filters, {"filters": {"frequency_drop": 2}})
    assert reply.status == 200
    await api.delete(f"{sw.url}/ports/1/nio")
    assert sw.new()[-3:] == [
        'ethsw remove_nio "SW1" udp-A',
        "nio unbind_filter udp-A 0",
        "nio delete udp-A",
    ]


async def test_filter_refused_at_creation_deletes_the_nio(api):
    sw = await make(api)
    api.fake.inject("bind_filter", "error", reply="208-Unknown filter freq_drop", times=1)
    body = {**await sw.udp(), "filters": {"frequency_drop": 2}}
    reply = await api.post(f"{sw.url}/ports/1/nio", {"nio": body})
    assert reply.status == 409 and "Unknown filter" in reply.body["message"]
    assert sw.new()[1:] == ["nio bind_filter udp-A 0 freq_drop", "nio delete udp-A"]
    assert body["lport"] not in udp_owned(api, sw.pid)


async def test_filters_and_stats_on_router_ports(api):
    r = await router(api)
    lport = await api.udp_port(r.pid)
    body = {
        "type": "nio_udp",
        "lport": lport,
        "rhost": "127.0.0.1",
        "rport": 9,
        "filters": {"frequency_drop": 4},
    }
    assert (await api.post(f"{r.url}/adapters/0/ports/0/nio", body)).status == 201
    reply = await api.put(
        f"{r.url}/adapters/0/ports/0/nio/filters", {"filters": {"frequency_drop": 0}}
    )
    assert reply.status == 200 and "filters" not in reply.body
    reply = await api.get(f"{r.url}/adapters/0/ports/0/nio/stats")
    assert reply.status == 200
    assert reply.body == {"packets_in": 0, "packets_out": 0, "bytes_in": 0, "bytes_out": 0}
    assert [line for line in r.new() if "filter" in line or "stats" in line] == [
        "nio bind_filter udp-A 0 freq_drop",
        "nio setup_filter udp-A 0 4",
        "nio unbind_filter udp-A 0",
        "nio get_stats udp-A",
    ]
    reply = await api.get(f"{r.url}/adapters/0/ports/1/nio/stats")
    assert reply.status == 409


async def test_stats_on_device_ports(api):
    sw = await make(api)
    await sw.connect(1)
    sw.new()
    api.fake.inject("get_stats", "error", reply="100-12 7 1500 900", times=1)
    reply = await api.get(f"{sw.url}/ports/1/nio/stats")
    assert reply.status == 200
    assert reply.body == {"packets_in": 12, "packets_out": 7, "bytes_in": 1500, "bytes_out": 900}
    assert sw.new() == ["nio get_stats udp-A"]
    reply = await api.get(f"{sw.url}/ports/3/nio/stats")
    assert reply.status == 409 and reply.body["message"] == "Port 3 is not allocated"
