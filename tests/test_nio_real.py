"""Issue 7 on the real dynamips: NIO types created and deleted, a router-switch link carrying
frames, the packet-loss filter measured on real frames."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid

from tests.conftest import needs_dynamips, wait_for
from tests.test_devices_real import End, Ends, ethernet, link, pcap_packets

pytestmark = needs_dynamips


def udp_queue(port: int) -> int | None:
    """Bytes waiting in the receive queue of the UDP socket bound to ``port`` (Linux)."""
    total = None
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(OSError), open(table) as handle:
            for line in handle.readlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    total = (total or 0) + int(fields[4].split(":")[1], 16)
    return total


async def nio_names(node) -> list[str]:
    return await node.send("nio list")


async def test_udp_unix_null_on_router_and_switch_ports(real_api, tmp_path):
    api = real_api
    pid = await api.project()
    router = await api.router(pid)
    switch = await api.device(pid)
    dynamips = api.state.dynamips
    ends = {
        f"/projects/{pid}/dynamips/vms/{router['vm_id']}/adapters/0/ports/0": (
            dynamips.routers[router["vm_id"]],
            (0, 0),
        ),
        f"/projects/{pid}/dynamips/devices/{switch['device_id']}/ports/1": (
            dynamips.devices[switch["device_id"]],
            1,
        ),
    }
    for url, (node, key) in ends.items():
        lport = await api.udp_port(pid)
        for nio in (
            {"type": "nio_udp", "lport": lport, "rhost": "127.0.0.1", "rport": 9},
            {"type": "nio_udp", "lport": lport, "rhost": "::1", "rport": 9},
            {
                "type": "nio_unix",
                "local_file": str(tmp_path / f"{key}.l"),
                "remote_file": str(tmp_path / f"{key}.r"),
            },
            {"type": "nio_null"},
        ):
            body = nio if "/vms/" in url else {"nio": nio}
            reply = await api.post(f"{url}/nio", body)
            assert reply.status == 201, (nio, reply.body)
            assert reply.body == nio
            assert await nio_names(node) == [node.nios[key].name]
            reply = await api.delete(f"{url}/nio")
            assert reply.status == 204
            assert await nio_names(node) == []
        assert lport not in api.state.ports.owned(pid, "udp")


async def test_vde_without_a_switch_and_tap_are_clear(real_api, tmp_path):
    """VDE: no vde_switch here, dynamips refuses: 409 with its text. TAP: dynamips creates a
    missing device (as root) but it is down: 409 and the NIO deleted; a device that exists
    and is up (when this machine lets the test make one) is accepted."""
    api = real_api
    pid = await api.project()
    sw = await api.device(pid)
    node = api.state.dynamips.devices[sw["device_id"]]
    url = f"/projects/{pid}/dynamips/devices/{sw['device_id']}/ports/1/nio"
    vde = {
        "type": "nio_vde",
        "control_file": str(tmp_path / "no-vde.ctl"),
        "local_file": str(tmp_path / "vde.local"),
    }
    reply = await api.post(url, {"nio": vde})
    assert reply.status == 409 and "unable to create VDE NIO" in reply.body["message"]

    tap = f"tapdm{uuid.uuid4().hex[:6]}"
    reply = await api.post(url, {"nio": {"type": "nio_tap", "tap_device": tap}})
    assert reply.status == 409
    # root: dynamips creates the device, which is down; otherwise dynamips refuses it
    assert reply.body["message"] == f"TAP interface {tap} is down" or (
        "unable to create TAP NIO" in reply.body["message"]
    )
    assert await nio_names(node) == []
    assert not os.path.exists(f"/sys/class/net/{tap}")  # the NIO and its device are gone

    if os.geteuid() != 0 or shutil.which("ip") is None:
        return
    if await ip("tuntap", "add", "dev", tap, "mode", "tap") != 0:
        return
    try:
        assert await ip("link", "set", tap, "up") == 0
        reply = await api.post(url, {"nio": {"type": "nio_tap", "tap_device": tap}})
        assert reply.status == 201, reply.body
        assert (await api.delete(url)).status == 204
        assert await nio_names(node) == []
    finally:
        await ip("link", "del", tap)


async def ip(*args: str) -> int:
    """Run ``ip`` (the host's iproute2) and return its exit code."""
    process = await asyncio.create_subprocess_exec(
        "ip", *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    return await process.wait()


async def test_router_switch_udp_link_carries_frames(real_api, synthetic_images):
    """Switch port 1 <-UDP-> router 0/0 (c7200 booted on the synthetic image, so its NIC
    reads the NIO); frames sent by the test into switch port 2 show up in both NIOs'
    counters."""
    api = real_api
    pid = await api.project()
    router = await api.router(pid)
    switch = await api.device(pid)
    vm = f"/projects/{pid}/dynamips/vms/{router['vm_id']}"
    dev = f"/projects/{pid}/dynamips/devices/{switch['device_id']}"
    await api.link(pid, router, switch)
    assert (await api.post(f"{vm}/start")).status == 204

    async with Ends(host=End()) as e:
        await link(api, pid, f"{dev}/ports/2", e["host"])
        frames = [ethernet(f"to the router {i}") for i in range(5)]
        for frame in frames:
            e["host"].send(frame)

        async def counted() -> bool:
            stats = (await api.get(f"{vm}/adapters/0/ports/0/nio/stats")).body
            return stats["packets_in"] == len(frames)

        await wait_for(counted)
        router_stats = (await api.get(f"{vm}/adapters/0/ports/0/nio/stats")).body
        assert router_stats["bytes_in"] == sum(len(f) for f in frames)
        switch_stats = (await api.get(f"{dev}/ports/1/nio/stats")).body
        assert switch_stats["packets_out"] == len(frames)
        assert switch_stats["bytes_out"] == sum(len(f) for f in frames)


async def test_frequency_drop_drops_the_expected_share(real_api):
    """``filters: {"frequency_drop": N}`` on a hub port drops every N-th frame it receives:
    measured on 100 numbered frames, then -1 drops all and 0 none; a capture on the same
    port coexists with it (it records only what the filter let through)."""
    api = real_api
    every = 4
    pid = await api.project()
    hub = await api.device(pid, "ethernet_hub", name="HUB1")
    url = f"/projects/{pid}/dynamips/devices/{hub['device_id']}/ports"
    async with Ends(src=End(), dst=End()) as e:
        nios = {
            "src": await link(
                api, pid, f"{url}/1", e["src"], nio_extra={"filters": {"frequency_drop": every}}
            ),
            "dst": await link(api, pid, f"{url}/2", e["dst"]),
        }
        sent = 100
        for number in range(1, sent + 1):
            e["src"].send(ethernet(f"frame {number:03d}"))
            if number % 10 == 0:  # keep dynamips' socket buffer far from full
                await wait_for(lambda n=number: len(e["dst"].poll()) >= n - n // every)
        expected = [ethernet(f"frame {n:03d}") for n in range(1, sent + 1) if n % every]
        await wait_for(lambda: len(e["dst"].poll()) >= len(expected))
        stats = (await api.get(f"{url}/1/nio/stats")).body
        assert stats["packets_in"] == len(expected)  # dynamips counts after its filters
        reply = await api.put(f"{url}/1/nio/filters", {"filters": {"frequency_drop": -1}})
        assert reply.status == 200 and reply.body["filters"] == {"frequency_drop": -1}
        for _ in range(5):
            e["src"].send(ethernet("dropped: all"))
        # dynamips read them (its socket queue is empty); its one receive thread then handles
        # dst's frame only after them, so once that frame reaches src their fate is sealed
        await wait_for(lambda: udp_queue(nios["src"]["lport"]) == 0)
        e["dst"].send(ethernet("proof"))
        assert await e["src"].next() == ethernet("proof")
        reply = await api.put(f"{url}/1/nio/filters", {"filters": {"frequency_drop": 0}})
        assert reply.status == 200 and "filters" not in reply.body
        e["src"].send(ethernet("marker"))
        await wait_for(lambda: ethernet("marker") in e["dst"].poll())
        received = e["dst"].poll()
        assert received == [*expected, ethernet("marker")]
        received.clear()
        reply = await api.put(f"{url}/1/nio/filters", {"filters": {"frequency_drop": 2}})
        assert reply.status == 200
        reply = await api.post(f"{url}/1/start_capture", {"capture_file_name": "loss.pcap"})
        assert reply.status == 200
        for number in range(1, 5):
            e["src"].send(ethernet(f"captured {number}"))
        assert await e["dst"].next() == ethernet("captured 1")
        assert await e["dst"].next() == ethernet("captured 3")
        path = reply.body["pcap_file_path"]
        await wait_for(lambda: len(pcap_packets(path)[1]) >= 2)
        assert (await api.post(f"{url}/1/stop_capture", {})).status == 204
        assert pcap_packets(path) == (1, [ethernet("captured 1"), ethernet("captured 3")])
        dropped = sent - len(expected)
        print(
            f"frequency_drop={every}: {dropped}/{sent} real frames dropped ({dropped / sent:.0%})"
        )
        assert dropped == sent // every
