"""Issue 2 item 6: the port manager (manager.md §4), UDP allocation, and the other server
routes of item 6 (interfaces, version check, shutdown)."""

from __future__ import annotations

import socket

import pytest

from dynamips_mgr.errors import Conflict
from dynamips_mgr.ports import BANNED_PORTS, PortManager
from tests.conftest import free_port

TCP, UDP = socket.SOCK_STREAM, socket.SOCK_DGRAM


def free_pair(kind: int) -> int:
    """A port P such that P and P + 1 are both free on loopback and on every address."""
    for _ in range(50):
        port = free_port(kind)
        if port >= 65535:
            continue
        try:
            for candidate in (port, port + 1):
                with socket.socket(socket.AF_INET, kind) as sock:
                    sock.bind(("0.0.0.0", candidate))
        except OSError:
            continue
        return port
    raise AssertionError("no two consecutive free ports")


def occupy(kind: int, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, kind)
    sock.bind(("127.0.0.1", port))
    if kind == TCP:
        sock.listen()
    return sock


def test_banned_ports_are_never_handed_out():
    assert {6665, 6666, 6667, 6668, 6669, 6000, 22, 23} <= BANNED_PORTS
    ports = PortManager(udp_range=(6665, 6670))
    assert ports.allocate("udp", "p") == 6670
    with pytest.raises(Conflict):
        ports.allocate("udp", "p")
    with pytest.raises(Conflict, match="browsers refuse"):
        PortManager(console_range=(6660, 6670)).reserve("tcp", 6666, "p")


@pytest.mark.parametrize("kind", [TCP, UDP], ids=["tcp", "udp"])
def test_a_port_in_use_by_someone_else_is_skipped_up_to_the_last_port_of_the_range(kind):
    """Bind probe, and E7: the whole range is scanned, its last port included."""
    start = free_pair(kind)
    proto = "tcp" if kind == TCP else "udp"
    ports = PortManager("127.0.0.1", console_range=(start, start + 1), udp_range=(start, start + 1))
    with occupy(kind, start):
        assert ports.allocate(proto, "p") == start + 1  # the range's last port
        with pytest.raises(Conflict) as caught:
            ports.allocate(proto, "p")
    host = "127.0.0.1" if proto == "tcp" else "0.0.0.0"
    assert caught.value.message.startswith(
        f"Could not find a free port between {start} and {start + 1} on host {host}, "
        "last exception: "
    )
    assert caught.value.status == 409


def test_reserve_and_release_per_owner():
    start = free_pair(UDP)
    ports = PortManager(udp_range=(start, start + 1))
    assert ports.reserve("udp", start, "a") == start
    with pytest.raises(Conflict, match="already in use"):
        ports.reserve("udp", start, "b")
    with pytest.raises(Conflict, match="outside the range"):
        ports.reserve("udp", start + 2, "b")
    assert ports.allocate("udp", "b") == start + 1
    assert ports.owned("a", "udp") == {start} and ports.owned("b", "udp") == {start + 1}
    assert ports.release_owner("a") == [("udp", start)]
    assert not ports.in_use("udp", start) and ports.in_use("udp", start + 1)
    ports.release("udp", start + 1)
    ports.release("udp", None)  # nothing to release: no error
    assert ports.owned("b", "udp") == set()


def test_console_host_follows_allow_remote_console():
    assert PortManager("127.0.0.1").console_host == "127.0.0.1"
    assert PortManager("127.0.0.1", remote_console=True).console_host == "0.0.0.0"
    assert PortManager("::1", remote_console=True).console_host == "::"


async def test_ranges_come_from_the_configuration(make_api):
    tcp, udp = free_pair(TCP), free_pair(UDP)
    api = await make_api(
        console_start_port_range=tcp,
        console_end_port_range=tcp + 1,
        udp_start_port_range=udp,
        udp_end_port_range=udp + 1,
    )
    assert api.state.ports.ranges == {"tcp": (tcp, tcp + 1), "udp": (udp, udp + 1)}
    pid = await api.project()
    router = await api.router(pid)
    assert router["console"] == tcp


async def test_udp_ports_are_sequential_exhaust_with_409_and_come_back_at_close(make_api):
    start = free_pair(UDP)
    api = await make_api(udp_start_port_range=start, udp_end_port_range=start + 1)
    pid = await api.project()
    assert [await api.udp_port(pid), await api.udp_port(pid)] == [start, start + 1]
    reply = await api.post(f"/projects/{pid}/ports/udp", {})
    assert reply.status == 409
    assert reply.body["message"].startswith(
        f"Could not find a free port between {start} and {start + 1} on host 0.0.0.0"
    )
    other = await api.project()
    assert (await api.post(f"/projects/{other}/ports/udp")).status == 409
    assert (await api.post(f"/projects/{pid}/close")).status == 204
    assert [await api.udp_port(other), await api.udp_port(other)] == [start, start + 1]


async def test_udp_port_route_ids(api):
    reply = await api.post("/projects/nope/ports/udp")
    assert reply.status == 400
    reply = await api.post("/projects/00000000-0000-0000-0000-000000000000/ports/udp")
    assert reply.status == 404


# -- the other server routes of item 6 -------------------------------------------------------


async def test_interfaces_include_loopback(api):
    reply = await api.get("/interfaces")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json"
    by_name = {entry["name"]: entry for entry in reply.body}
    assert by_name["lo"] == {
        "id": "lo",
        "name": "lo",
        "ip_address": "127.0.0.1",
        "mac_address": by_name["lo"]["mac_address"],
    }
    assert [entry["name"] for entry in reply.body] == sorted(by_name)


async def test_version_check(api):
    reply = await api.post("/version", {"version": "1.5.4"})
    assert (reply.status, reply.body) == (200, {"version": "1.5.4"})
    reply = await api.post("/version", {"version": "1.5.3", "local": True})
    assert reply.status == 409
    assert reply.body == {
        "message": "Client version 1.5.3 differs with server version 1.5.4",
        "status": 409,
    }
    for bad in ({}, {"version": 154}, {"version": "1.5.4", "extra": 1}, [], {"local": "yes"}):
        assert (await api.post("/version", bad)).status == 400, bad
    reply = await api.get("/version")
    assert reply.body["version"] == "1.5.4" and reply.body["local"] is True


async def test_shutdown_is_local_only_and_closes_every_project(make_api):
    remote = await make_api(local=False)
    pid = await remote.project()
    reply = await remote.post("/server/shutdown")
    assert reply.body == {"message": "You can only stop a local server", "status": 403}
    assert not remote.state.shutdown.is_set()
    assert (await remote.get(f"/projects/{pid}")).status == 200

    local = await make_api(local=True)
    pid = await local.project()
    switch = await local.device(pid)
    hypervisor = local.state.dynamips.devices[switch["device_id"]].hypervisor
    reply = await local.post("/server/shutdown", {})
    assert reply.status == 201
    assert local.state.shutdown.is_set()  # __main__ waits on this to stop serving
    assert local.state.projects.projects == {}
    assert not hypervisor.alive
