"""Issue 3 §1: one connection to a hypervisor, against the in-process fake with faults.

A command that times out, is cancelled or gets a reply that is not protocol must never leave
the connection out of step: it is closed and marked BROKEN, and later commands fail at once.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from dynamips_mgr.dynamips.hypervisor.connection import Connection, State
from dynamips_mgr.dynamips.hypervisor.errors import DynamipsError, HypervisorUnavailable
from dynamips_mgr.testing.fake_hypervisor import FakeHypervisorServer, Fault
from tests.conftest import free_port, wait_for

TIMEOUT = 0.4


@pytest.fixture
async def server(tmp_path):
    server = await FakeHypervisorServer.start(working_dir=str(tmp_path))
    yield server
    await server.close()


async def connect(port: int, timeout: float = TIMEOUT, deadline: float = 5.0) -> Connection:
    return await Connection.open(
        "127.0.0.1",
        port,
        deadline=time.monotonic() + deadline,
        command_timeout=timeout,
        describe=lambda: ", Dynamips process running: True",
    )


@pytest.fixture
async def conn(server):
    connection = await connect(server.port)
    yield connection
    await connection.close()


async def test_replies_and_error_replies(conn, server):
    assert await conn.send("hypervisor version") == ["0.2.14-amd64"]
    assert await conn.send("vm create", "R 1", 1, "c7200") == ["VM 'R 1' created"]
    with pytest.raises(DynamipsError) as caught:
        await conn.send("vm create", "R 1", 2, "c7200")
    assert caught.value.status == 409
    assert (caught.value.code, caught.value.text) == (206, "unable to create VM instance 'R 1'")
    assert caught.value.command == 'vm create "R 1" 2 c7200'
    assert conn.state is State.READY  # an error reply is a complete reply: still in step
    assert await conn.send("vm list") == ["R 1 (c7200)"]
    assert server.state.commands == [
        "hypervisor version",
        'vm create "R 1" 1 c7200',
        'vm create "R 1" 2 c7200',
        "vm list",
    ]


async def test_hang_times_out_then_connection_is_broken(conn, server):
    server.faults.append(Fault("vm list", "hang"))
    started = time.monotonic()
    with pytest.raises(HypervisorUnavailable, match=r"did not answer 'vm list'.* within 0\.4 s"):
        await conn.send("vm list")
    elapsed = time.monotonic() - started
    assert TIMEOUT <= elapsed < TIMEOUT + 0.5
    assert conn.state is State.BROKEN
    started = time.monotonic()
    with pytest.raises(HypervisorUnavailable, match="unusable"):
        await conn.send("hypervisor version")  # fails at once, without a write
    assert time.monotonic() - started < 0.05
    assert server.state.commands == ["vm list"]


async def test_cancelled_send_leaves_connection_broken_never_out_of_step(conn, server):
    server.faults.append(Fault("hypervisor version", "delay", seconds=0.3, times=1))
    task = asyncio.ensure_future(conn.send("hypervisor version"))
    await wait_for(lambda: server.state.commands == ["hypervisor version"], 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert conn.state is State.BROKEN
    # the late reply to the cancelled command can never be taken for the next one's
    with pytest.raises(HypervisorUnavailable, match="cancelled"):
        await conn.send("vm list")


async def test_cancelled_while_waiting_for_the_lock_sends_nothing(conn, server):
    server.faults.append(Fault("vm list", "delay", seconds=0.2, times=1))
    first = asyncio.ensure_future(conn.send("vm list"))
    queued = asyncio.ensure_future(conn.send("hypervisor version"))
    await wait_for(lambda: server.state.commands == ["vm list"], 5)
    queued.cancel()
    assert await first == []
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert conn.state is State.READY
    assert "vm" in await conn.send("hypervisor module_list")  # its own reply
    assert server.state.commands == ["vm list", "hypervisor module_list"]


async def test_one_command_in_flight_each_caller_gets_its_own_reply(conn, server):
    server.faults.append(Fault(r'"3"', "delay", seconds=0.05))
    server.faults.append(Fault(r'"5"', "split"))
    replies = await asyncio.gather(
        *(conn.send("hypervisor working_dir", "/") for _ in range(2)),
        *(conn.send("vm get_status", str(i)) for i in range(8)),
        return_exceptions=True,
    )
    assert replies[:2] == [[], []]
    for index, reply in enumerate(replies[2:]):
        assert isinstance(reply, DynamipsError) and reply.text == f"unable to find object '{index}'"


async def test_dropped_connection_is_reported_and_breaks(conn, server):
    server.faults.append(Fault("vm list", "drop"))
    with pytest.raises(HypervisorUnavailable) as caught:
        await conn.send("vm list")
    assert "connection closed by dynamips" in caught.value.message
    assert "Dynamips process running" in caught.value.message
    assert conn.state is State.BROKEN


async def test_hypervisor_exit_mid_command_is_reported(conn, server):
    server.faults.append(Fault("vm start", "exit", exit_code=-11))
    await conn.send("vm create", "R1", 1, "c7200")
    with pytest.raises(HypervisorUnavailable, match="during 'vm start \"R1\"'"):
        await conn.send("vm start", "R1")
    assert server.exit_code == -11 and conn.state is State.BROKEN


async def test_reply_split_into_one_byte_writes(conn, server):
    server.faults.append(Fault("cmd_list", "split"))
    lines = await conn.send("hypervisor cmd_list", "vm")
    assert len(lines) > 40 and lines[0] == "list_con_ports (min/max args: 0/0)"
    assert lines[-1] == "create (min/max args: 3/3)"
    assert conn.state is State.READY


async def test_garbage_reply_breaks_the_connection(conn, server):
    server.faults.append(Fault("vm list", "garbage"))
    with pytest.raises(HypervisorUnavailable, match="unexpected line from dynamips"):
        await conn.send("vm list")
    assert conn.state is State.BROKEN


async def test_injected_error_and_multi_line_replies(conn, server):
    server.faults.append(Fault("get_idle_pc_prop", "error", reply="101 0x1 [2]\r\n100-OK"))
    server.faults.append(Fault("vm stop", "error", reply="210-refused", times=1))
    assert await conn.send("vm get_idle_pc_prop", "R1", 0) == ["0x1 [2]"]
    with pytest.raises(DynamipsError, match="refused"):
        await conn.send("vm stop", "R1")
    with pytest.raises(DynamipsError, match="unable to find object 'R1'"):
        await conn.send("vm stop", "R1")  # times=1: the fault is spent


async def test_extra_reply_bytes_mean_out_of_step():
    """A peer that answers twice (as dynamips does to an injected newline) is refused."""

    async def twice(reader, writer):
        await reader.readline()
        writer.write(b"100-OK\r\n100-OK\r\n")
        await writer.drain()

    listener = await asyncio.start_server(twice, "127.0.0.1", 0)
    try:
        connection = await connect(listener.sockets[0].getsockname()[1])
        with pytest.raises(HypervisorUnavailable, match="more than one reply"):
            await connection.send("vm list")
        assert connection.state is State.BROKEN
        await connection.close()
    finally:
        listener.close()


async def test_open_retries_until_the_port_listens():
    port = free_port()

    async def listen_later():
        await asyncio.sleep(0.2)
        return await FakeHypervisorServer.start(port=port)

    later = asyncio.ensure_future(listen_later())
    connection = await connect(port, deadline=5.0)
    server = await later
    try:
        assert await connection.send("hypervisor version") == ["0.2.14-amd64"]
    finally:
        await connection.close()
        await server.close()


async def test_open_gives_up_at_the_deadline():
    with socket.socket() as holder:  # bound, never listening: connections are refused
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(
            HypervisorUnavailable, match=f"Couldn't connect to hypervisor on 127.0.0.1:{port}"
        ):
            await connect(port, deadline=0.3)
        assert time.monotonic() - started < 1.5


async def test_closed_connection_refuses_commands(conn):
    await conn.close()
    assert conn.state is State.CLOSED
    with pytest.raises(HypervisorUnavailable, match="Not connected"):
        await conn.send("hypervisor version")
