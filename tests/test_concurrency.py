"""Issue 9: clients building and tearing down topologies in parallel.

Each client builds a router and an Ethernet switch linked by UDP, checks what it built, waits
for the others (so that everything is alive at once), then tears it down. Checked: no
deadlock (everything within a deadline), no cross-talk (every object and every hypervisor
holds only its own client's names), dynamips ids unique per project, consoles and UDP ports
unique across the server, and no process left at the end.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

import pytest

from tests.conftest import Api, needs_dynamips, process_gone

DEADLINE = 60.0


@dataclass
class Built:
    client: int
    project_id: str
    routers: list[dict] = field(default_factory=list)
    switches: list[dict] = field(default_factory=list)
    udp_ports: list[int] = field(default_factory=list)
    pids: set[int] = field(default_factory=set)


async def build(api: Api, client: int, project_id: str, round_: int) -> Built:
    built = Built(client, project_id)
    p = f"/projects/{project_id}"
    name = f"C{client}R{round_}"
    router = await api.router(project_id, name=name)
    switch = await api.device(project_id, name=f"C{client}S{round_}")
    built.routers.append(router)
    built.switches.append(switch)
    vm = f"{p}/dynamips/vms/{router['vm_id']}"
    dev = f"{p}/dynamips/devices/{switch['device_id']}"
    a, b = await api.link(
        project_id, router, switch, port_settings={"type": "access", "vlan": 10 + client}
    )
    built.udp_ports += [a, b]
    # what this client reads back is what it built, not a neighbour's object
    reply = await api.get(vm)
    assert (reply.body["name"], reply.body["project_id"]) == (name, project_id)
    reply = await api.get(dev)
    assert reply.body["name"] == switch["name"]
    assert reply.body["ports"][0]["vlan"] == 10 + client
    dynamips = api.state.dynamips
    for node in (dynamips.routers[router["vm_id"]], dynamips.devices[switch["device_id"]]):
        built.pids.add(node.hypervisor.pid)
    return built


async def check_dynamips_holds_only_its_own(api: Api, built: Built) -> None:
    dynamips = api.state.dynamips
    for router in built.routers:
        node = dynamips.routers[router["vm_id"]]
        assert [line.split(" ")[0] for line in await node.send("vm list")] == [router["name"]]
    for switch in built.switches:
        node = dynamips.devices[switch["device_id"]]
        assert [line.split(" ")[0] for line in await node.send("ethsw list")] == [switch["name"]]


async def tear_down(api: Api, built: Built) -> None:
    p = f"/projects/{built.project_id}"
    for router in built.routers:
        vm = f"{p}/dynamips/vms/{router['vm_id']}"
        assert (await api.delete(f"{vm}/adapters/0/ports/0/nio")).status == 204
        assert (await api.delete(vm)).status == 204
    for switch in built.switches:
        dev = f"{p}/dynamips/devices/{switch['device_id']}"
        assert (await api.delete(f"{dev}/ports/1/nio")).status == 204
        assert (await api.delete(dev)).status == 204


def assert_unique(everything: list[Built]) -> None:
    consoles = Counter(r["console"] for b in everything for r in b.routers)
    assert max(consoles.values()) == 1, consoles
    udp = Counter(port for b in everything for port in b.udp_ports)
    assert max(udp.values()) == 1, udp
    per_project: dict[str, Counter] = {}
    for b in everything:
        for r in b.routers:
            per_project.setdefault(b.project_id, Counter())[r["dynamips_id"]] += 1
    for ids in per_project.values():
        assert max(ids.values()) == 1, ids
    pids = Counter(pid for b in everything for pid in b.pids)
    assert max(pids.values()) == 1, pids


async def run_clients(api: Api, clients: int, rounds: int, *, shared: bool) -> list[int]:
    """Returns every hypervisor pid seen; fails on any problem or past the deadline."""
    if shared:
        projects = [await api.project(name="shared")] * clients
    else:
        projects = [await api.project(name=f"p{i}") for i in range(clients)]
    barrier = asyncio.Barrier(clients)
    everything: list[list[Built]] = [[] for _ in range(rounds)]

    async def client(index: int) -> None:
        for round_ in range(rounds):
            built = await build(api, index, projects[index], round_)
            everything[round_].append(built)
            await barrier.wait()  # everything of this round is alive now
            if index == 0:
                assert_unique(everything[round_])
            await check_dynamips_holds_only_its_own(api, built)
            await barrier.wait()
            await tear_down(api, built)

    await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(clients))), DEADLINE)
    assert not api.state.dynamips.routers and not api.state.dynamips.devices
    for project_id in set(projects):
        assert (await api.post(f"/projects/{project_id}/close")).status == 204
    assert not any(api.state.dynamips.hypervisors.values())
    return [pid for round_ in everything for b in round_ for pid in b.pids]


@pytest.mark.parametrize("shared", [True, False], ids=["one-project", "separate-projects"])
async def test_eight_clients_build_and_tear_down_in_parallel(api, shared):
    pids = await run_clients(api, clients=8, rounds=2, shared=shared)
    assert len(pids) == 8 * 2 * 2
    assert all(process_gone(pid) for pid in pids)


async def test_concurrent_requests_on_one_router_are_serialised(api):
    """Eight clients rename and resize the same router at once: every request gets a clear
    answer and the final name is the one dynamips holds."""
    pid = await api.project()
    router = await api.router(pid)
    vm = f"/projects/{pid}/dynamips/vms/{router['vm_id']}"

    async def change(index: int):
        return await api.put(vm, {"name": f"N{index}", "ram": 128 + 16 * index})

    replies = await asyncio.wait_for(asyncio.gather(*(change(i) for i in range(8))), DEADLINE)
    assert [r.status for r in replies] == [200] * 8
    final = (await api.get(vm)).body
    node = api.state.dynamips.routers[router["vm_id"]]
    assert await node.send("vm list") == [f"{final['name']} (c7200)"]
    # requests were applied one at a time: the final name and RAM come from the same one
    index = int(final["name"][1:])
    assert final["ram"] == 128 + 16 * index
    assert replies[index].body["name"] == final["name"]


@needs_dynamips
async def test_four_clients_on_the_real_dynamips(real_api):
    pids = await run_clients(real_api, clients=4, rounds=1, shared=True)
    assert all(process_gone(pid) for pid in pids)
