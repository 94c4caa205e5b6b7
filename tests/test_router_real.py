"""Issue 4 on the real dynamips: every platform through HTTP, the adapter catalogue and the
hot-plug (OIR) rule as the binary accepts them."""

from __future__ import annotations

import socket

import psutil
import pytest

from dynamips_mgr.dynamips.hypervisor.errors import DynamipsError
from dynamips_mgr.dynamips.platforms import ADAPTERS, PLATFORMS, WICS
from tests.conftest import needs_dynamips, wait_for

pytestmark = needs_dynamips

VMS = "/projects/{}/dynamips/vms"
# per platform: create extras, then the updates (slots, WICs) and the expected slot lines
PLANS = {
    "c1700": ({"chassis": "1751", "wic0": "WIC-1T"}, {"wic1": "WIC-1ENET", "wic0": None}),
    "c2600": (
        {"chassis": "2621XM", "slot1": "NM-1FE-TX", "wic0": "WIC-2T"},
        {"slot1": "NM-16ESW", "wic1": "WIC-1T"},
    ),
    "c2691": ({"slot1": "NM-4T", "wic0": "WIC-1T"}, {"slot1": None, "wic2": "WIC-2T"}),
    "c3600": ({"chassis": "3620", "slot1": "NM-4E"}, {"slot0": "NM-1FE-TX", "slot1": "NM-1E"}),
    "c3725": ({"slot1": "NM-1FE-TX", "wic0": "WIC-1T"}, {"slot2": "NM-4T", "wic0": "WIC-2T"}),
    "c3745": ({"slot1": "NM-4T", "wic0": "WIC-2T"}, {"slot4": "NM-1FE-TX", "wic0": None}),
    "c7200": ({"slot1": "PA-FE-TX"}, {"slot1": "PA-8T", "slot6": "PA-GE", "slot0": "C7200-IO-2FE"}),
}


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def bindable(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def card_lines(router) -> list[str]:
    """``vm slot_bindings`` of the real VM: one ``s/0: CARD`` line per card; dynamips prints
    WIC sub-slots as extra lines naming the slot-0 card."""
    return sorted(await router.send("vm slot_bindings", router.name))


def expected_lines(body: dict) -> list[str]:
    """What the real VM should report for a router JSON (hypervisor names of built-ins)."""
    native = {"C1700-MB-1FE": "C1700-MB-1ETH", "C1700-MB-WIC1": None}
    native.update({f"C2600-MB-{m}": f"CISCO2600-MB-{m}" for m in ("1E", "2E", "1FE", "2FE")})
    lines = []
    for index in range(7):
        card = body.get(f"slot{index}")
        name = native.get(card, card) if card else None
        if name:
            lines.append(f"{index}/0: {name}")
    wics = sum(1 for i in range(3) if body.get(f"wic{i}"))
    lines += [f"0/0: {native.get(body['slot0'], body['slot0'])}"] * wics
    return sorted(lines)


@pytest.mark.parametrize("platform", sorted(PLANS))
async def test_platform_lifecycle_on_real_dynamips(real_api, platform):
    """Create (adapter + WIC), update (slot, WIC, RAM, rename), link and unlink a UDP NIO,
    delete: the VM matches the JSON at each step; nothing is left behind."""
    api = real_api
    pid = await api.project()
    project = api.state.projects.get(pid)
    create, update = PLANS[platform]
    reply = await api.post(
        VMS.format(pid),
        {"name": "R1", "platform": platform, "ram": 96, "image": f"{platform}.image", **create},
    )
    assert reply.status == 201, reply.body
    body = reply.body
    for key, value in create.items():
        assert body[key] == value, key
    url = f"{VMS.format(pid)}/{body['vm_id']}"
    router = api.state.dynamips.routers[body["vm_id"]]
    pid_of_process = router.hypervisor.pid
    assert await card_lines(router) == expected_lines(body)

    reply = await api.put(url, update)
    assert reply.status == 200, reply.body
    body = reply.body
    for key, value in update.items():
        assert body[key] == value, key
    assert await card_lines(router) == expected_lines(body)
    reply = await api.put(url, {"ram": 160, "name": "Edge-1"})
    assert reply.status == 200, reply.body
    assert (reply.body["ram"], reply.body["name"]) == (160, "Edge-1")
    assert await router.send("vm list") == [f"Edge-1 ({platform})"]

    # a UDP link on the first port of slot 0 (slot 0 of the c3620 holds NM-1FE-TX now)
    lport = await api.udp_port(pid)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        nio = {
            "type": "nio_udp",
            "lport": lport,
            "rhost": "127.0.0.1",
            "rport": peer.getsockname()[1],
        }
        reply = await api.post(f"{url}/adapters/0/ports/0/nio", nio)
        assert reply.status == 201, reply.body
        name = router.nios[(0, 0)].name
        assert any(line.startswith(name) for line in await router.send("nio list"))
        assert (await api.delete(f"{url}/adapters/0/ports/0/nio")).status == 204
        assert not any(line.startswith(name) for line in await router.send("nio list"))
    assert not api.state.ports.in_use("udp", lport)

    console = body["console"]
    assert (await api.delete(url)).status == 204
    await wait_for(lambda: not alive(pid_of_process), 5)  # the DELETE does not wait for it
    assert not api.state.ports.in_use("tcp", console) and bindable(console, socket.SOCK_STREAM)
    assert bindable(lport, socket.SOCK_DGRAM)
    assert api.state.ports.owned(pid, "tcp") == set()
    assert (await api.post(f"/projects/{pid}/commit")).status == 204
    module = project.module_dir
    assert not [p for p in module.rglob(f"{platform}_i1_*")]
    assert not (module / "configs" / "i1_startup-config.cfg").exists()
    assert (await api.post(f"/projects/{pid}/close")).status == 204
    assert [p.name for p in module.rglob("*") if p.is_file()] == []


async def test_adapter_and_wic_catalogue_matches_the_real_binary(real_api):
    """platforms.py's placement data is what dynamips 0.2.14 accepts: every catalogue card is
    offered to every platform through ``vm slot_add_binding`` on scratch VMs."""
    api = real_api
    pid = await api.project()
    router = api.state.dynamips.routers[(await api.router(pid))["vm_id"]]
    removable = sorted(n for n, card in ADAPTERS.items() if not card.builtin)
    number = 100
    for platform, spec in PLATFORMS.items():
        accepted, accepted_wics = set(), set()
        for card in [*removable, *WICS]:
            number += 1
            name = f"P{number}"
            await router.send("vm create", name, number, platform)
            sub = 16 if card in WICS else 0
            slot = 0 if card in WICS else 1
            try:
                await router.send("vm slot_add_binding", name, slot, sub, card)
                (accepted_wics if card in WICS else accepted).add(card)
            except DynamipsError:
                pass
            await router.send("vm delete", name)
        io_cards = {"C7200-IO-FE", "C7200-IO-2FE", "C7200-IO-GE-E"}
        assert accepted - io_cards == set(spec.adapters), platform
        assert accepted_wics == set(spec.wics), platform


async def test_hot_plug_rule_matches_the_real_binary(real_api, synthetic_images):
    """OIR on running routers (known-bugs C4, "verify against the real hypervisor"): the real
    0.2.14 engages OIR for c7200 PAs and c3660/c3745 network modules and refuses it on the
    c3725 (and c2691/c2600); the server allows exactly the first group while running."""
    api = real_api
    pid = await api.project()
    cases = [
        ("c7200", None, "PA-4T+", True),
        ("c3600", "3660", "NM-1FE-TX", True),
        ("c3745", None, "NM-4T", True),
        ("c3745", None, "NM-16ESW", True),
        ("c3725", None, "NM-1FE-TX", False),
    ]
    for number, (platform, chassis, card, hot) in enumerate(cases, 1):
        extra = {"chassis": chassis} if chassis else {}
        body = await api.router(
            pid, name=f"H{number}", platform=platform, ram=64, image=f"{platform}.image", **extra
        )
        url = f"{VMS.format(pid)}/{body['vm_id']}"
        router = api.state.dynamips.routers[body["vm_id"]]
        assert (await api.post(f"{url}/start")).status == 204
        try:
            assert await router.send("vm get_status", router.name) == ["2"]
            reply = await api.put(url, {"slot1": card})
            if hot:
                assert reply.status == 200, reply.body
                assert f"1/0: {card}" in await router.send("vm slot_bindings", router.name)
                reply = await api.put(url, {"slot1": None})
                assert reply.status == 200, reply.body
                assert reply.body["slot1"] is None
            else:
                assert reply.status == 409 and "running" in reply.body["message"]
                # measured: the binary itself cannot engage OIR on this platform
                await router.send("vm slot_add_binding", router.name, 1, 0, card)
                with pytest.raises(DynamipsError, match="unable to engage OIR"):
                    await router.send("vm slot_oir_start", router.name, 1, 0)
                await router.send("vm slot_remove_binding", router.name, 1, 0)
            assert await router.send("vm get_status", router.name) == ["2"]
        finally:
            assert (await api.delete(url)).status == 204


async def test_wic_removal_rebinds_the_other_slot0_links_on_real_dynamips(real_api):
    """Dynamips 0.2.14 drops every slot-0 NIO binding when a WIC is removed (measured); the
    server binds the surviving ones again (C15), so each of them still unbinds cleanly."""
    api = real_api
    pid = await api.project()
    body = await api.router(
        pid, platform="c3725", image="c3725.image", ram=128, wic0="WIC-1T", wic1="WIC-2T"
    )
    url = f"{VMS.format(pid)}/{body['vm_id']}"
    for port in (0, 1, 16, 32, 33):
        reply = await api.post(f"{url}/adapters/0/ports/{port}/nio", {"type": "nio_null"})
        assert reply.status == 201, reply.body
    reply = await api.put(url, {"wic1": None})
    assert reply.status == 200 and reply.body["wic1"] is None
    for port in (0, 1, 16):
        reply = await api.delete(f"{url}/adapters/0/ports/{port}/nio")
        assert reply.status == 204, (port, reply.body)
    reply = await api.delete(f"{url}/adapters/0/ports/32/nio")
    assert reply.status == 409
    router = api.state.dynamips.routers[body["vm_id"]]
    assert await router.send("nio list") == []
