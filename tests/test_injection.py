"""Issue 3 §2, C20: values dynamips cannot carry are refused (400, naming the field) before
anything is sent to any hypervisor, and no request can inject a second hypervisor command.

With the fake executable the recorded command lines prove that nothing was sent (and that no
hypervisor was even spawned); with the real dynamips, names with spaces work and an injection
attempt leaves the other nodes' hypervisors alive and in step.
"""

from __future__ import annotations

import pytest

from tests.conftest import hypervisor_port

INJECTION = 'SW3" 1 c7200\nhypervisor stop\nethsw create "SW4'
BAD_NAMES = ['SW"1', "SW2\nX", "SW\r1", "SW\x001", "SW\t1", INJECTION]
ROUTER = {"platform": "c7200", "image": "c7200.image", "ram": 256}


def vms(pid: str) -> str:
    return f"/projects/{pid}/dynamips/vms"


def devices(pid: str) -> str:
    return f"/projects/{pid}/dynamips/devices"


def all_commands(api) -> list[str]:
    return [
        line
        for log in sorted(api.fake.records.glob("*.log"))
        for line in log.read_text().splitlines()
    ]


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_c20_bad_names_refused_before_any_hypervisor_exists(api, name):
    pid = await api.project()
    for path, body in (
        (devices(pid), {"device_type": "ethernet_switch"}),
        (devices(pid), {"device_type": "ethernet_hub"}),
        (vms(pid), ROUTER),
    ):
        reply = await api.post(path, {**body, "name": name})
        assert reply.status == 400, reply.body
        assert reply.body["status"] == 400 and "'name'" in reply.body["message"]
    dynamips = api.state.dynamips
    assert dynamips.routers == {} and dynamips.devices == {}
    assert not any(dynamips.hypervisors.values())
    assert all_commands(api) == []  # not a single line reached a hypervisor
    router = await api.router(pid)  # and nothing was lost: the first id is still free
    assert router["dynamips_id"] == 1


async def test_c20_text_that_is_not_unicode_is_a_400_not_a_500(api):
    pid = await api.project()
    raw = b'{"name": "SW\\udc80", "device_type": "ethernet_switch"}'
    reply = await api.request("POST", f"/projects/{pid}/dynamips/devices", raw=raw)
    assert reply.status == 400, reply.text
    assert all_commands(api) == []


async def test_c20_injection_leaves_other_nodes_alone(api):
    """The other nodes' hypervisors receive nothing, stay up and keep answering in step."""
    pid = await api.project()
    router = await api.router(pid, name="R1")
    switch = await api.device(pid, name="SW1")
    ports = {
        "R1": hypervisor_port(api, router["vm_id"]),
        "SW1": hypervisor_port(api, switch["device_id"]),
    }
    before = {name: api.fake.commands(port) for name, port in ports.items()}
    processes = [node.hypervisor for node in api.state.dynamips.routers.values()] + [
        node.hypervisor for node in api.state.dynamips.devices.values()
    ]
    for path, body in ((devices(pid), {"device_type": "ethernet_switch"}), (vms(pid), ROUTER)):
        reply = await api.post(path, {**body, "name": INJECTION})
        assert reply.status == 400
    dev = f"{devices(pid)}/{switch['device_id']}"
    vm = f"{vms(pid)}/{router['vm_id']}"
    for path in (dev, vm):  # renames carrying the payload are refused too
        reply = await api.put(path, {"name": INJECTION})
        assert reply.status == 400, reply.body
        assert (await api.get(path)).body["name"] in ("R1", "SW1")
    assert {name: api.fake.commands(port) for name, port in ports.items()} == before
    assert all(hv.alive for hv in processes)
    reply = await api.put(dev, {"name": "SW 9"})
    assert reply.status == 200, reply.body
    assert api.fake.commands(ports["SW1"])[len(before["SW1"]) :] == ['ethsw rename "SW1" "SW 9"']
    assert not any("SW4" in line or line == "hypervisor stop" for line in all_commands(api))


async def test_c20_other_texts_that_end_up_in_commands(api, images_dir):
    """Image names, config paths and capture file names follow the same rule."""
    pid = await api.project()
    (images_dir / 'c7200"x.image').write_bytes((images_dir / "c7200.image").read_bytes())
    reply = await api.post(vms(pid), {**ROUTER, "name": "R1", "image": 'c7200"x.image'})
    assert reply.status == 400 and "image" in reply.body["message"]
    assert all_commands(api) == []
    router = await api.router(pid, name="R1")
    vm = f"{vms(pid)}/{router['vm_id']}"
    port = hypervisor_port(api, router["vm_id"])
    before = api.fake.commands(port)
    reply = await api.put(vm, {"startup_config": "configs/a\nb.cfg"})
    assert reply.status == 400, reply.body
    nio = {"type": "nio_udp", "lport": await api.udp_port(pid), "rhost": "127.0.0.1", "rport": 9}
    reply = await api.post(f"{vm}/adapters/0/ports/0/nio", nio)
    assert reply.status == 201, reply.body
    sent = api.fake.commands(port)
    for name in ('cap"ture.pcap', "cap\nture.pcap"):
        reply = await api.post(
            f"{vm}/adapters/0/ports/0/start_capture",
            {"capture_file_name": name, "data_link_type": "DLT_EN10MB"},
        )
        assert reply.status == 400, reply.body
        assert "capture_file_name" in reply.body["message"]
    assert api.fake.commands(port) == sent
    assert not any("a\nb" in line for line in before + sent)


async def test_c20_real_dynamips_names_with_spaces_and_an_injection_attempt(real_api):
    api = real_api
    pid = await api.project()
    router = await api.router(pid, name="R 1")
    switch = await api.device(pid, name="SW 1")
    dynamips = api.state.dynamips
    r1, sw1 = dynamips.routers[router["vm_id"]], dynamips.devices[switch["device_id"]]
    assert await r1.send("vm list") == ["R 1 (c7200)"]
    assert await sw1.send("ethsw list") == ["SW 1"]
    for path, body in ((devices(pid), {"device_type": "ethernet_switch"}), (vms(pid), ROUTER)):
        reply = await api.post(path, {**body, "name": INJECTION})
        assert reply.status == 400
    assert r1.hypervisor.alive and sw1.hypervisor.alive
    assert await sw1.send("ethsw list") == ["SW 1"]  # no SW4, no stop, replies in step
    assert await r1.send("vm list") == ["R 1 (c7200)"]
    reply = await api.put(f"{devices(pid)}/{switch['device_id']}", {"name": "SW 2"})
    assert reply.status == 200 and await sw1.send("ethsw list") == ["SW 2"]
