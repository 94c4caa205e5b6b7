"""Issue 6 on the real dynamips: devices forward real frames, cells and captures.

The test's UDP sockets on 127.0.0.1 stand in for the far ends of the links. "Nothing came
out of port X" is shown by a later frame that must reach X: when it arrives, X must have
received nothing before it (the earlier frame was switched before the later one was sent).
"""

from __future__ import annotations

import socket
import struct

import psutil

from tests.conftest import needs_dynamips, wait_for

pytestmark = needs_dynamips

BROADCAST = bytes.fromhex("ffffffffffff")


class End:
    """The far end of one link: a UDP socket on loopback and what it received."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sock.send(data)

    def poll(self) -> list[bytes]:
        while True:
            try:
                self.received.append(self.sock.recv(65535))
            except BlockingIOError:
                return self.received

    async def next(self, timeout: float = 5.0) -> bytes:
        """The oldest frame not yet taken, waiting for it if needed."""
        await wait_for(self.poll, timeout)
        return self.received.pop(0)

    def close(self) -> None:
        self.sock.close()


async def link(
    api,
    project_id: str,
    url: str,
    end: End,
    body_extra: dict | None = None,
    nio_extra: dict | None = None,
) -> dict:
    """Connect ``url`` (a device port or a router adapter port) to ``end``; return the NIO."""
    lport = await api.udp_port(project_id)
    nio = {
        "type": "nio_udp",
        "lport": lport,
        "rhost": "127.0.0.1",
        "rport": end.port,
        **(nio_extra or {}),
    }
    body = nio if "/vms/" in url else {"nio": nio, **(body_extra or {})}
    reply = await api.post(f"{url}/nio", body)
    assert reply.status == 201, reply.body
    end.sock.connect(("127.0.0.1", lport))
    return nio


def ethernet(tag: str, dst: bytes = BROADCAST, vlan: int | None = None) -> bytes:
    """An Ethernet frame (60 bytes before any 802.1Q tag) whose payload names it."""
    header = dst + bytes.fromhex("020000000001")
    if vlan is not None:
        header += struct.pack("!HH", 0x8100, vlan)
    return header + b"\x08\x00" + tag.encode().ljust(46, b".")


def untag(frame: bytes) -> tuple[int | None, bytes]:
    if frame[12:14] == b"\x81\x00":
        return struct.unpack("!H", frame[14:16])[0] & 0x0FFF, frame[:12] + frame[16:]
    return None, frame


class Ends(dict):
    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        for end in self.values():
            end.close()


async def assert_silent(quiet: End, prove: End, proof: bytes, arrives: bytes | None = None):
    """``quiet`` got nothing so far: ``proof`` sent by ``prove`` is the first thing it gets
    (as ``arrives`` when the device rewrites it)."""
    prove.send(proof)
    assert await quiet.next() == (arrives or proof)
    assert quiet.poll() == []


async def test_ethernet_switch_vlans_and_trunk(real_api):
    api = real_api
    pid = await api.project()
    sw = await api.device(pid, name="SW1")
    url = f"/projects/{pid}/dynamips/devices/{sw['device_id']}/ports"
    async with Ends(a=End(), b=End(), c=End(), t=End()) as e:
        for port, name, settings in (
            (1, "a", {"type": "access", "vlan": 10}),
            (2, "b", {"type": "access", "vlan": 10}),
            (3, "c", {"type": "access", "vlan": 20}),
            (4, "t", {"type": "dot1q", "vlan": 1}),
        ):
            await link(api, pid, f"{url}/{port}", e[name], {"port_settings": settings})

        # port 1 (VLAN 10) -> port 2 (VLAN 10), trunk tagged 10; never port 3 (VLAN 20)
        one = ethernet("from port 1")
        e["a"].send(one)
        assert await e["b"].next() == one
        assert untag(await e["t"].next()) == (10, one)
        proof = ethernet("vlan 20 via trunk", vlan=20)
        await assert_silent(e["c"], e["t"], proof, untag(proof)[1])

        # trunk, tagged VLAN 10 -> port 2 untagged (and port 1), not port 3
        tagged = ethernet("from the trunk", vlan=10)
        e["t"].send(tagged)
        assert await e["b"].next() == untag(tagged)[1]
        assert await e["a"].next() == untag(tagged)[1]
        proof = ethernet("vlan 20 again", vlan=20)
        await assert_silent(e["c"], e["t"], proof, untag(proof)[1])

        # port 2 -> trunk with an 802.1Q tag for VLAN 10
        two = ethernet("from port 2")
        e["b"].send(two)
        frame = await e["t"].next()
        assert frame[12:14] == b"\x81\x00" and untag(frame) == (10, two)
        assert await e["a"].next() == two
        assert e["t"].poll() == [] and e["b"].poll() == []


async def test_ethernet_hub_floods_every_other_port(real_api):
    api = real_api
    pid = await api.project()
    hub = await api.device(pid, "ethernet_hub", name="HUB1")
    url = f"/projects/{pid}/dynamips/devices/{hub['device_id']}/ports"
    async with Ends(p1=End(), p2=End(), p3=End()) as e:
        for number, name in enumerate(e, start=1):
            await link(api, pid, f"{url}/{number}", e[name])
        frame = ethernet("into the hub", dst=bytes.fromhex("0200000000aa"))
        e["p1"].send(frame)
        assert await e["p2"].next() == frame
        assert await e["p3"].next() == frame
        await assert_silent(e["p1"], e["p2"], ethernet("back to port 1"))  # not sent back
        assert await e["p3"].next() == ethernet("back to port 1")


def q922(dlci: int) -> bytes:
    """The 2-byte Frame Relay address (Q.922) dynamips' frsw reads: DLCI high 6 bits in
    byte 0 (bits 7-2), low 4 bits in byte 1 (bits 7-4), EA=1 in the last byte."""
    return bytes([(dlci >> 4) << 2, ((dlci & 0x0F) << 4) | 0x01])


def fr_dlci(frame: bytes) -> int:
    return ((frame[0] & 0xFC) >> 2) << 4 | (frame[1] & 0xF0) >> 4


async def test_frame_relay_switch_rewrites_the_dlci(real_api):
    api = real_api
    pid = await api.project()
    fr = await api.device(pid, "frame_relay_switch", name="FR1")
    url = f"/projects/{pid}/dynamips/devices/{fr['device_id']}/ports"
    async with Ends(p1=End(), p2=End()) as e:
        await link(api, pid, f"{url}/1", e["p1"], {"mappings": {"1:102": "2:201"}})
        await link(api, pid, f"{url}/2", e["p2"], {"mappings": {"2:201": "1:102"}})
        payload = b"\x03\xcc" + b"frame relay payload".ljust(40, b".")  # UI + NLPID IP
        e["p1"].send(q922(103) + b"\x03\xccunmapped DLCI 103")
        e["p1"].send(q922(102) + payload)
        out = await e["p2"].next()
        assert fr_dlci(out) == 201 and out == q922(201) + payload
        assert e["p2"].poll() == []  # DLCI 103 went nowhere (it was sent first)
        e["p2"].send(q922(201) + payload)
        assert await e["p1"].next() == q922(102) + payload
        reply = await api.get(f"/projects/{pid}/dynamips/devices/{fr['device_id']}")
        assert reply.body["mappings"] == {"(1, 102)": "(2, 201)", "(2, 201)": "(1, 102)"}


def hec(header: bytes) -> int:
    """ATM header error control: CRC-8 (x^8+x^2+x+1) of 4 bytes, XOR 0x55 (ITU I.432)."""
    crc = 0
    for byte in header[:4]:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x107) if crc & 0x80 else crc << 1
    return (crc & 0xFF) ^ 0x55


def cell(vpi: int, vci: int, payload: bytes) -> bytes:
    """A raw 53-byte ATM cell as dynamips' atmsw takes it over UDP: NNI header (12-bit VPI,
    16-bit VCI, PTI, CLP), HEC byte, 48 bytes of payload."""
    header = struct.pack("!I", (vpi << 20) | (vci << 4))
    return header + bytes([hec(header)]) + payload.ljust(48, b".")[:48]


def cell_address(data: bytes) -> tuple[int, int]:
    word = struct.unpack("!I", data[:4])[0]
    return word >> 20, (word >> 4) & 0xFFFF


async def test_atm_switch_switches_cells(real_api):
    api = real_api
    pid = await api.project()
    atm = await api.device(pid, "atm_switch", name="ATM1")
    url = f"/projects/{pid}/dynamips/devices/{atm['device_id']}/ports"
    table = {"1:0:100": "2:0:200", "1:10": "2:20"}
    async with Ends(p1=End(), p2=End()) as e:
        await link(api, pid, f"{url}/1", e["p1"], {"mappings": table})
        await link(api, pid, f"{url}/2", e["p2"], {"mappings": table})
        e["p1"].send(cell(0, 101, b"unmapped VC"))
        e["p1"].send(cell(0, 100, b"VC 0/100"))
        out = await e["p2"].next()
        assert len(out) == 53 and cell_address(out) == (0, 200)
        assert out == cell(0, 200, b"VC 0/100") and out[4] == hec(out)
        assert e["p2"].poll() == []  # 0/101 went nowhere
        e["p1"].send(cell(10, 55, b"VP 10"))  # VP switching keeps the VCI
        assert await e["p2"].next() == cell(20, 55, b"VP 10")
        e["p2"].send(cell(0, 200, b"back"))
        assert await e["p1"].next() == cell(0, 100, b"back")


def pcap_packets(path: str) -> tuple[int, list[bytes]]:
    with open(path, "rb") as handle:
        data = handle.read()
    if len(data) < 24:
        return -1, []
    magic, _, _, _, _, _, link_type = struct.unpack("<IHHiIII", data[:24])
    assert magic == 0xA1B2C3D4
    packets, offset = [], 24
    while offset + 16 <= len(data):
        _, _, caplen, _ = struct.unpack("<IIII", data[offset : offset + 16])
        if offset + 16 + caplen > len(data):
            break
        packets.append(data[offset + 16 : offset + 16 + caplen])
        offset += 16 + caplen
    return link_type, packets


async def test_capture_on_a_switch_port_holds_the_frames_sent(real_api):
    api = real_api
    pid = await api.project()
    sw = await api.device(pid, name="SW1")
    url = f"/projects/{pid}/dynamips/devices/{sw['device_id']}/ports"
    async with Ends(a=End(), b=End()) as e:
        await link(api, pid, f"{url}/1", e["a"], {"port_settings": {"type": "access", "vlan": 1}})
        await link(api, pid, f"{url}/2", e["b"], {"port_settings": {"type": "access", "vlan": 1}})
        reply = await api.post(
            f"{url}/1/start_capture",
            {"capture_file_name": "SW1_1.pcap", "data_link_type": "DLT_EN10MB"},
        )
        assert reply.status == 200, reply.body
        path = reply.body["pcap_file_path"]
        frames = [ethernet(f"captured {i}") for i in range(3)]
        for frame in frames:
            e["a"].send(frame)
            assert await e["b"].next() == frame
        answer = ethernet("out of port 1")
        e["b"].send(answer)
        assert await e["a"].next() == answer
        expected = [*frames, answer]
        await wait_for(lambda: len(pcap_packets(path)[1]) >= len(expected))
        assert pcap_packets(path) == (1, expected)  # link type 1 = Ethernet
        reply = await api.post(f"{url}/1/stop_capture", {})
        assert reply.status == 204
        e["a"].send(ethernet("after the stop"))
        assert await e["b"].next() == ethernet("after the stop")
        assert pcap_packets(path) == (1, expected)


def gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


async def test_delete_and_close_leave_no_process_nio_or_port(real_api):
    """Own processes: delete stops the device's process and frees its UDP ports. Shared
    process: deleting a device removes its NIOs and object from the survivor."""
    api = real_api
    dynamips = api.state.dynamips
    pid = await api.project()
    dev = f"/projects/{pid}/dynamips/devices"
    async with Ends(a=End(), b=End(), c=End()) as e:
        fr = await api.device(pid, "frame_relay_switch", name="FR1")
        nios = [
            await link(
                api,
                pid,
                f"{dev}/{fr['device_id']}/ports/{n}",
                e[name],
                {"mappings": {"1:102": "2:201"}},
            )
            for n, name in ((1, "a"), (2, "b"))
        ]
        process = dynamips.devices[fr["device_id"]].hypervisor.pid
        assert (await api.delete(f"{dev}/{fr['device_id']}")).status == 204
        await wait_for(lambda: gone(process))
        assert api.state.ports.owned(pid, "udp") == set()
        assert all(bindable(nio["lport"]) for nio in nios)

        dynamips.config.values[("Dynamips", "nodes_per_hypervisor")] = 2
        sw = await api.device(pid, name="SW1")
        hub = await api.device(pid, "ethernet_hub", name="HUB1")
        hub_node = dynamips.devices[hub["device_id"]]
        shared = hub_node.hypervisor
        assert dynamips.devices[sw["device_id"]].hypervisor is shared
        sw_nio = await link(
            api,
            pid,
            f"{dev}/{sw['device_id']}/ports/1",
            e["a"],
            {"port_settings": {"type": "access", "vlan": 1}},
        )
        await link(api, pid, f"{dev}/{hub['device_id']}/ports/1", e["c"])
        assert (await api.delete(f"{dev}/{sw['device_id']}")).status == 204
        assert await hub_node.send("nio list") == [hub_node.nios[1].name]
        assert await hub_node.send("ethsw list") == []
        assert bindable(sw_nio["lport"]) and sw_nio["lport"] not in api.state.ports.owned(
            pid, "udp"
        )
        assert shared.alive

        assert (await api.post(f"/projects/{pid}/close")).status == 204
        await wait_for(lambda: gone(shared.pid))
        assert api.state.ports.owned(pid, "udp") == set()
        assert dynamips.devices == {} and dynamips.hypervisors.get(pid, []) == []


async def test_rename_every_type_and_qinq_on_0_2_14_C01_C03(real_api):
    """C01: each rename reaches the module that holds the device (the real binary lists the
    new name). C03: the 3-argument qinq form is accepted; 0x88A8 is a 409 that leaves the
    port free."""
    api = real_api
    pid = await api.project()
    modules = {
        "ethernet_switch": "ethsw",
        "ethernet_hub": "nio_bridge",
        "atm_switch": "atmsw",
        "frame_relay_switch": "frsw",
    }
    for device_type, module in modules.items():
        body = await api.device(pid, device_type, name=f"{module}-1")
        reply = await api.put(
            f"/projects/{pid}/dynamips/devices/{body['device_id']}", {"name": f"{module}-2"}
        )
        assert reply.status == 200 and reply.body["name"] == f"{module}-2", reply.body
        node = api.state.dynamips.devices[body["device_id"]]
        assert await node.send(f"{module} list") == [f"{module}-2"]

    switch = next(d for d in api.state.dynamips.devices.values() if d.module == "ethsw")
    url = f"/projects/{pid}/dynamips/devices/{switch.id}/ports"
    async with Ends(a=End(), b=End()) as e:
        await link(api, pid, f"{url}/1", e["a"], {"port_settings": {"type": "qinq", "vlan": 100}})
        nio = {
            "type": "nio_udp",
            "lport": await api.udp_port(pid),
            "rhost": "127.0.0.1",
            "rport": e["b"].port,
        }
        reply = await api.post(
            f"{url}/4/nio",
            {"nio": nio, "port_settings": {"type": "qinq", "vlan": 100, "ethertype": "0x88A8"}},
        )
        assert reply.status == 409 and ">= 0.2.16" in reply.body["message"]
        assert list(switch.nios) == [1]
        reply = await api.post(
            f"{url}/4/nio",
            {"nio": nio, "port_settings": {"type": "qinq", "vlan": 100, "ethertype": ""}},
        )
        assert reply.status == 201, reply.body
        assert (await api.get(f"/projects/{pid}/dynamips/devices/{switch.id}")).body["ports"] == [
            {"port": 1, "type": "qinq", "vlan": 100, "ethertype": "0x8100"},
            {"port": 4, "type": "qinq", "vlan": 100, "ethertype": "0x8100"},
        ]
