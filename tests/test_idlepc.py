"""Issue 5, idle-PC (fake hypervisor; the real CPU drop is in test_lab_real.py): proposals,
the automatic search, and idle max/sleep applied at start (C6, C7, E4, E5)."""

from __future__ import annotations

import time

from tests.conftest import hypervisor_port

FAKE_PROPOSALS = ["0x60606f54 [33]", "0x6025d4b8 [45]", "0x606071e0 [51]"]


async def setup(api, **body) -> tuple[str, dict, str]:
    project_id = await api.project()
    router = await api.router(project_id, **body)
    return project_id, router, f"/projects/{project_id}/dynamips/vms/{router['vm_id']}"


def sent(api, router: dict) -> list[str]:
    return api.fake.commands(hypervisor_port(api, router["vm_id"]))


def tune(api, **values) -> None:
    """Short timings; the fake's console greets and then stays silent, so the boot wait
    lasts ``idlepc_boot_timeout`` (a real router's prompt ends it: test_lab_real.py)."""
    values = {"idlepc_measure_seconds": 0.3, "idlepc_boot_timeout": 0.5, **values}
    for key, value in values.items():
        api.state.config.values[("Dynamips", key)] = value


async def test_proposals_need_a_running_router_checked_before_any_reset(api):
    """E5: the original reset the idle-PC to 0x0 before finding the router stopped."""
    _, router, vm = await setup(api, idlepc="0x60001234")
    before = sent(api, router)
    reply = await api.get(f"{vm}/idlepc_proposals")
    assert reply.status == 409 and reply.body["message"] == 'Router "R1" is not running'
    assert sent(api, router)[len(before) :] == ['vm get_status "R1"']
    assert (await api.get(vm)).body["idlepc"] == "0x60001234"


async def test_proposals_keep_only_32_bit_values(api):
    _, router, vm = await setup(api)
    assert (await api.post(f"{vm}/start")).status == 204
    api.fake.inject(
        "get_idle_pc_prop",
        "error",
        reply="101 0xffffffffbfc00000 [1000]\r\n101 0x60009030 [33]\r\n101 junk\r\n100-OK",
    )
    reply = await api.get(f"{vm}/idlepc_proposals")
    assert reply.status == 200 and reply.body == ["0x60009030 [33]"]
    assert sent(api, router)[-3:] == [
        'vm set_idle_pc "R1" 0x0',
        'vm set_idle_pc_online "R1" 0 0x0',
        'vm get_idle_pc_prop "R1" 0',
    ]


async def test_auto_idlepc_starts_measures_and_stops_again_without_a_fixed_sleep(api):
    """No fixed 20 s sleep: the boot wait is bounded by ``idlepc_boot_timeout`` and the fake's
    CPU is idle, so the first proposal qualifies at once; the router it started is stopped
    again and keeps the value."""
    tune(api)
    _, router, vm = await setup(api)
    began = time.monotonic()
    reply = await api.get(f"{vm}/auto_idlepc")
    assert reply.status == 200, reply.body
    assert time.monotonic() - began < 3
    assert reply.body == {"idlepc": "0x60606f54"}
    assert (await api.get(vm)).body["idlepc"] == "0x60606f54"
    lines = sent(api, router)
    assert lines.index('vm start "R1"') < lines.index('vm stop "R1"')
    # kept by the VM itself, not only by the running CPU: the next start idles at once
    assert 'vm set_idle_pc "R1" 0x60606f54' in lines
    node = api.state.dynamips.routers[router["vm_id"]]
    assert await node.get_status() == 0


async def test_auto_idlepc_on_a_running_router_leaves_it_running(api):
    tune(api)
    _, router, vm = await setup(api)
    assert (await api.post(f"{vm}/start")).status == 204
    reply = await api.get(f"{vm}/auto_idlepc")
    assert reply.status == 200
    assert 'vm stop "R1"' not in sent(api, router)
    assert await api.state.dynamips.routers[router["vm_id"]].get_status() == 2


async def test_auto_idlepc_resumes_a_suspended_router_and_suspends_it_again(api):
    tune(api)
    _, router, vm = await setup(api)
    assert (await api.post(f"{vm}/start")).status == 204
    assert (await api.post(f"{vm}/suspend")).status == 204
    assert (await api.get(f"{vm}/auto_idlepc")).status == 200
    assert await api.state.dynamips.routers[router["vm_id"]].get_status() == 3


async def test_when_no_value_qualifies_the_stored_idlepc_is_unchanged(api):
    """E4: the original left the last tried value set."""
    tune(api, idlepc_threshold=0)  # nothing is under 0 %
    _, router, vm = await setup(api, idlepc="0x60001234")
    reply = await api.get(f"{vm}/auto_idlepc")
    assert reply.status == 409
    assert reply.body["message"] == "Sorry, no idle-pc value was suitable"
    assert (await api.get(vm)).body["idlepc"] == "0x60001234"
    lines = sent(api, router)
    online = [line.split()[-1] for line in lines if line.startswith('vm set_idle_pc_online "R1"')]
    # reset for sampling, every proposal measured, then the previous value put back
    assert online == ["0x0", "0x60606f54", "0x6025d4b8", "0x606071e0", "0x60001234"]
    assert lines.index('vm set_idle_pc_online "R1" 0 0x60001234') < lines.index('vm stop "R1"')


async def test_no_proposal_at_all_is_a_409_and_keeps_the_idlepc(api):
    tune(api)
    api.fake.inject("get_idle_pc_prop", "error", reply="100-OK")
    _, _, vm = await setup(api, idlepc="0x60001234")
    reply = await api.get(f"{vm}/auto_idlepc")
    assert reply.status == 409 and reply.body["message"] == "No Idle-PC values found"
    assert (await api.get(vm)).body["idlepc"] == "0x60001234"


async def test_an_idlepc_set_while_running_survives_a_restart(api):
    """dynamips' set_idle_pc_online changes only the running CPU, which the next start
    recreates from the VM's own value: both are set."""
    _, router, vm = await setup(api)
    assert (await api.post(f"{vm}/start")).status == 204
    assert (await api.put(vm, {"idlepc": "0x60009030"})).status == 200
    assert sent(api, router)[-2:] == [
        'vm set_idle_pc "R1" 0x60009030',
        'vm set_idle_pc_online "R1" 0 0x60009030',
    ]


async def test_c6_c7_idlemax_and_idlesleep_set_while_stopped_apply_at_every_start(api):
    """C6: values set while stopped were never applied by the original. C7: the ``idlesleep``
    field is in milliseconds (GNS3 default 30) while dynamips takes microseconds (its default
    30000): the server multiplies by 1000, so 50 ms is sent as 50000."""
    _, router, vm = await setup(api)
    reply = await api.put(vm, {"idlemax": 1000, "idlesleep": 50})
    assert reply.status == 200 and (reply.body["idlemax"], reply.body["idlesleep"]) == (1000, 50)
    assert not [line for line in sent(api, router) if "idle_max" in line or "idle_sleep" in line]
    for _ in range(2):  # dynamips recreates the CPU, with its defaults, at every start
        before = len(sent(api, router))
        assert (await api.post(f"{vm}/start")).status == 204
        new = sent(api, router)[before:]
        assert new.index('vm start "R1"') < new.index('vm set_idle_max "R1" 0 1000')
        assert 'vm set_idle_sleep_time "R1" 0 50000' in new
        assert (await api.post(f"{vm}/stop")).status == 204
