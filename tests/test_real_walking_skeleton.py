"""Issue 2 acceptance: the whole path to the real dynamips, with real frames."""

import socket

import psutil

from tests.conftest import needs_dynamips, wait_for

pytestmark = needs_dynamips

BROADCAST = bytes.fromhex("ffffffffffff0200000000020800") + b"walking skeleton".ljust(46)


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


async def recv(sock: socket.socket, timeout: float = 5.0) -> bytes:
    def ready():
        try:
            return sock.recv(65535)
        except BlockingIOError:
            return None

    return await wait_for(ready, timeout)


async def test_router_and_switch_forward_a_broadcast_then_close_leaves_no_process(real_api):
    api = real_api
    pid = await api.project()
    router = await api.router(pid)
    switch = await api.device(pid)
    dynamips = api.state.dynamips
    pids = [
        dynamips.routers[router["vm_id"]].hypervisor.pid,
        dynamips.devices[switch["device_id"]].hypervisor.pid,
    ]
    vm_list = await dynamips.routers[router["vm_id"]].send("vm list")
    assert vm_list == ["R1 (c7200)"]

    # router 0/0 <-> switch port 1
    await api.link(pid, router, switch, port_settings={"type": "access", "vlan": 1})
    dev = f"/projects/{pid}/dynamips/devices/{switch['device_id']}"

    # two UDP sockets of the test on switch ports 2 and 3
    host2, host3 = udp_socket(), udp_socket()
    for number, sock in ((2, host2), (3, host3)):
        lport = await api.udp_port(pid)
        reply = await api.post(
            f"{dev}/ports/{number}/nio",
            {
                "nio": {
                    "type": "nio_udp",
                    "lport": lport,
                    "rhost": "127.0.0.1",
                    "rport": sock.getsockname()[1],
                },
                "port_settings": {"type": "access", "vlan": 1},
            },
        )
        assert reply.status == 201, reply.body
        sock.connect(("127.0.0.1", lport))
    try:
        host2.send(BROADCAST)
        assert await recv(host3) == BROADCAST
    finally:
        host2.close()
        host3.close()

    reply = await api.post(f"/projects/{pid}/close")
    assert reply.status == 204
    assert not any(
        psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids
    )
