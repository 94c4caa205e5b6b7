"""Issue 3 §4, C27: hypervisors listen on loopback only, whatever the API's bind address, and
router consoles stay reachable on the public console port through the server's relay.

The relay itself is tested against local echo targets (bytes untouched, several clients,
unreachable target, close); the whole path against the real dynamips booting the synthetic
image, with ``[Server] host = 0.0.0.0``.
"""

from __future__ import annotations

import asyncio
import socket
import time

import psutil
import pytest

from dynamips_mgr.dynamips.console_relay import ConsoleRelay
from dynamips_mgr.errors import Conflict
from dynamips_mgr.testing.synthetic_image import BANNER, PROMPT
from tests.conftest import (
    REAL_DYNAMIPS,
    _start_api,
    _stop_api,
    free_port,
    make_config,
    needs_dynamips,
    wait_for,
)

TELNET_NEGOTIATION = bytes.fromhex("fffd18fffb01fffb03fffe22")


@pytest.fixture
async def echo_target():
    """A TCP echo server on loopback (stands for a router console)."""
    peers: list[asyncio.StreamWriter] = []

    async def echo(reader, writer):
        peers.append(writer)
        writer.write(b"hello\r\n")
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    server.peers = peers
    yield server
    server.close()
    for writer in peers:
        writer.close()


async def read_until(reader: asyncio.StreamReader, wanted: bytes, timeout: float = 5.0) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while wanted not in data:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{wanted!r} not received: {data[-300:]!r}"
        chunk = await asyncio.wait_for(reader.read(65536), remaining)
        assert chunk, f"closed before {wanted!r}: {data[-300:]!r}"
        data += chunk
    return data


async def test_relay_passes_every_byte_both_ways_for_several_clients(echo_target):
    port = free_port()
    relay = ConsoleRelay("127.0.0.1", port, "127.0.0.1", echo_target.sockets[0].getsockname()[1])
    await relay.start()
    try:
        clients = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        payload = bytes(range(256)) * 64  # telnet IAC (0xff) and NUL included, untouched
        for index, (reader, writer) in enumerate(clients):
            assert await read_until(reader, b"hello\r\n") == b"hello\r\n"
            writer.write(payload + bytes([index]))
        for index, (reader, _writer) in enumerate(clients):
            echoed = await read_until(reader, payload + bytes([index]))
            assert echoed == payload + bytes([index])
        assert len(echo_target.peers) == 3  # one target connection per client
        for _reader, writer in clients:
            writer.close()
    finally:
        await relay.close()


async def test_relay_to_a_console_that_is_not_listening_says_so():
    port, dead = free_port(), free_port()
    relay = ConsoleRelay("127.0.0.1", port, "127.0.0.1", dead)
    await relay.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        text = await asyncio.wait_for(reader.read(), 5)
        assert b"Console not available" in text and b"started?" in text
        writer.close()
    finally:
        await relay.close()


async def test_closing_the_relay_closes_listener_and_clients(echo_target):
    port = free_port()
    relay = ConsoleRelay("127.0.0.1", port, "127.0.0.1", echo_target.sockets[0].getsockname()[1])
    await relay.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await read_until(reader, b"hello\r\n")
    await relay.close()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # the client sees EOF
    writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_a_client_leaving_closes_its_target_connection():
    """A console that stays silent after the client left is not kept connected."""
    targets: list[asyncio.StreamWriter] = []

    async def silent(reader, writer):
        targets.append(writer)
        writer.write(b"console\r\n")
        await asyncio.Event().wait()  # never reads, never writes, never closes

    target = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = free_port()
    relay = ConsoleRelay("127.0.0.1", port, "127.0.0.1", target.sockets[0].getsockname()[1])
    await relay.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await read_until(reader, b"console\r\n")
        writer.close()
        await wait_for(lambda: not relay._tasks, 5)  # the relay let go of both ends

        async def target_closed() -> bool:
            try:
                targets[0].write(b"x" * 65536)
                await targets[0].drain()
            except ConnectionError:
                return True
            return False

        await wait_for(target_closed, 5)
    finally:
        await relay.close()
        target.close()
        for writer in targets:
            writer.close()


async def test_a_console_port_taken_by_someone_else_is_a_conflict():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        relay = ConsoleRelay("127.0.0.1", holder.getsockname()[1], "127.0.0.1", free_port())
        with pytest.raises(Conflict, match="Could not listen on console port"):
            await relay.start()


async def test_relayed_console_with_the_fake_hypervisor(make_api):
    """The same path with the fake executable: its started routers serve a console too."""
    api = await make_api(host="0.0.0.0")
    pid = await api.project()
    router = await api.router(pid, name="R1")
    vm = f"/projects/{pid}/dynamips/vms/{router['vm_id']}"
    reader, writer = await asyncio.open_connection("127.0.0.1", router["console"])
    assert b"Console not available" in await asyncio.wait_for(reader.read(), 5)  # stopped
    writer.close()
    assert (await api.post(f"{vm}/start")).status == 204
    node = api.state.dynamips.routers[router["vm_id"]]
    assert {ip for ip, _port in listening(node.hypervisor.pid)} == {"127.0.0.1"}
    reader, writer = await asyncio.open_connection("127.0.0.1", router["console"])
    try:
        greeting = await read_until(reader, b"Press ENTER to get the prompt.\r\n")
        assert greeting.startswith(TELNET_NEGOTIATION) and b'VM "R1" (ID 1, type c7200)' in greeting
        writer.write(b"\xff\xfb\x01hello")
        await read_until(reader, b"\xff\xfb\x01hello")
    finally:
        writer.close()


def public_address() -> str:
    """A non-loopback IPv4 address of this machine, else 127.0.0.1."""
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                return address.address
    return "127.0.0.1"


def listening(pid: int) -> set[tuple[str, int]]:
    connections = psutil.Process(pid).net_connections(kind="inet")
    return {(c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN}


@pytest.fixture
async def remote_api(tmp_path, synthetic_images):
    """The app configured with ``[Server] host = 0.0.0.0``, the real dynamips behind it."""
    if REAL_DYNAMIPS is None:
        pytest.skip("dynamips is not installed")
    api = await _start_api(make_config(tmp_path, REAL_DYNAMIPS, host="0.0.0.0"))
    yield api
    await _stop_api(api)


@needs_dynamips
async def test_c27_loopback_hypervisors_and_consoles_relayed_to_the_public_port(remote_api):
    api = remote_api
    pid = await api.project()
    router = await api.router(pid, name="R1", image="c7200.image")
    switch = await api.device(pid, name="SW1")
    dynamips = api.state.dynamips
    node = dynamips.routers[router["vm_id"]]
    pids = {node.hypervisor.pid, dynamips.devices[switch["device_id"]].hypervisor.pid}
    for dynamips_pid in pids:  # the control ports: loopback only
        assert {ip for ip, _port in listening(dynamips_pid)} == {"127.0.0.1"}

    vm = f"/projects/{pid}/dynamips/vms/{router['vm_id']}"
    reply = await api.post(f"{vm}/start")
    assert reply.status == 204, reply.body
    internal = dynamips.console_target(node)
    assert internal != router["console"]
    await wait_for(lambda: ("127.0.0.1", internal) in listening(node.hypervisor.pid), 10)
    for dynamips_pid in pids:  # the router's console too
        assert {ip for ip, _port in listening(dynamips_pid)} == {"127.0.0.1"}
    assert ("0.0.0.0", router["console"]) in listening(psutil.Process().pid)  # the relay

    address = public_address()
    if address != "127.0.0.1":  # dynamips' control port is not reachable from there
        with pytest.raises(OSError):
            await asyncio.open_connection(address, node.hypervisor.port)
    first = await asyncio.open_connection(address, router["console"])
    second = await asyncio.open_connection(address, router["console"])
    try:
        for reader, _writer in (first, second):  # what dynamips writes, relayed untouched
            seen = await read_until(reader, PROMPT.encode(), timeout=10)
            assert seen.startswith(TELNET_NEGOTIATION)
            assert b'Connected to Dynamips VM "R1"' in seen and BANNER.encode() in seen
        first[1].write(b"abc\r")
        await read_until(first[0], b"abc\r\n" + PROMPT.encode())
    finally:
        for _reader, writer in (first, second):
            writer.close()

    reply = await api.delete(vm)
    assert reply.status == 204

    async def relay_closed() -> bool:
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", router["console"])
        except OSError:
            return True
        writer.close()
        return False

    await wait_for(relay_closed, 5)
