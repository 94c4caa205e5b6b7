#!/usr/bin/env python3
"""Build, boot and tear down a small Dynamips lab through the dynamips_mgr REST API.

Start a server first (``./run server --local``), then::

    python examples/lab.py                          # upload the images over HTTP
    python examples/lab.py --image-dir ~/GNS3/images/IOS   # or write them there directly

The lab, on an empty server::

      R1 (c7200) f0/0 --+                     +-- s1/0 R1 (PA-4T+, DLCI 102)
      R2 (c7200) f0/0 --+-- SW1 (Ethernet)    |
      R3 (c3725) f0/0 --+                FR1 (Frame Relay)
                                              |
                                              +-- s0/0 R3 (WIC-1T, DLCI 201)

It boots every router with the synthetic IOS-like image the test suite uses (no Cisco image
needed), prints each console's banner, finds an idle-PC for R1 and gives it to R2, captures
R1's Ethernet link, saves the configs, stops the routers and closes the project.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from dynamips_mgr.testing.synthetic_image import PROMPT, build_image, recommended_idle_pc

IMAGES = {"c7200": "synth-c7200.image", "c3725": "synth-c3725.image"}
ROUTERS = [  # name, platform, RAM, extra settings
    ("R1", "c7200", 256, {"slot1": "PA-4T+"}),
    ("R2", "c7200", 256, {}),
    ("R3", "c3725", 128, {"wic0": "WIC-1T"}),
]
CONFIG = "hostname %h\ninterface FastEthernet0/0\n ip address 10.0.0.{n} 255.255.255.0\nend\n"


class ApiError(Exception):
    pass


class Client:
    """The few calls this example needs; every error body is shown as it came."""

    def __init__(self, session: aiohttp.ClientSession, server: str) -> None:
        self.session, self.base = session, server.rstrip("/") + "/v1"

    async def call(self, method: str, path: str, body: Any = None, *, data: bytes | None = None):
        kwargs = {"json": body} if data is None else {"data": data}
        async with self.session.request(method, self.base + path, **kwargs) as response:
            text = await response.text()
            if response.status >= 300:
                raise ApiError(f"{method} {path} -> {response.status}: {text}")
            return await response.json() if text else None


async def provide_images(api: Client, image_dir: Path | None) -> None:
    """Put the synthetic images where the server finds them (if they are not there yet)."""
    present = {entry["filename"] for entry in await api.call("GET", "/dynamips/vms")}
    for platform, name in IMAGES.items():
        if name in present:
            continue
        if image_dir is not None:
            image_dir.mkdir(parents=True, exist_ok=True)
            (image_dir / name).write_bytes(build_image(platform))
            print(f"wrote {image_dir / name}")
        else:
            await api.call("POST", f"/dynamips/vms/{name}", data=build_image(platform))
            print(f"uploaded {name}")


async def link(
    api: Client,
    project: str,
    router: dict,
    slot: int,
    port: int,
    device: dict,
    device_port: int,
    **extra: Any,
) -> None:
    """One UDP tunnel between a router port and a switch port."""
    a = (await api.call("POST", f"/projects/{project}/ports/udp", {}))["udp_port"]
    b = (await api.call("POST", f"/projects/{project}/ports/udp", {}))["udp_port"]
    vm = f"/projects/{project}/dynamips/vms/{router['vm_id']}"
    await api.call(
        "POST",
        f"{vm}/adapters/{slot}/ports/{port}/nio",
        {"type": "nio_udp", "lport": a, "rhost": "127.0.0.1", "rport": b},
    )
    dev = f"/projects/{project}/dynamips/devices/{device['device_id']}"
    await api.call(
        "POST",
        f"{dev}/ports/{device_port}/nio",
        {"nio": {"type": "nio_udp", "lport": b, "rhost": "127.0.0.1", "rport": a}, **extra},
    )


async def console_banner(host: str, port: int, timeout: float = 15.0) -> str:
    """Read a router's console until its prompt; return what the router printed."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            reader, writer = await asyncio.open_connection(host, port)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
    data = b""
    try:
        while PROMPT.encode() not in data:
            chunk = await asyncio.wait_for(reader.read(4096), deadline - time.monotonic())
            if not chunk:
                break
            data += chunk
    finally:
        writer.close()
    text = data.decode("latin-1").replace("\r", "")
    lines = [line for line in text.split("\n") if line.strip() and not line.startswith("\xff")]
    return " | ".join(lines[-3:])


async def build_lab(api: Client, project: str, host: str) -> None:
    vms = f"/projects/{project}/dynamips/vms"
    routers = {}
    for n, (name, platform, ram, extra) in enumerate(ROUTERS, start=1):
        routers[name] = await api.call(
            "POST",
            vms,
            {
                "name": name,
                "platform": platform,
                "image": IMAGES[platform],
                "ram": ram,
                "startup_config_content": CONFIG.format(n=n),
                **extra,
            },
        )
        print(f"{name}: {platform}, console {routers[name]['console']}")
    devices = f"/projects/{project}/dynamips/devices"
    sw1 = await api.call("POST", devices, {"name": "SW1", "device_type": "ethernet_switch"})
    fr1 = await api.call("POST", devices, {"name": "FR1", "device_type": "frame_relay_switch"})

    for port, name in enumerate(("R1", "R2", "R3"), start=1):
        await link(
            api,
            project,
            routers[name],
            0,
            0,
            sw1,
            port,
            port_settings={"type": "access", "vlan": 1},
        )
    dlcis = {"1:102": "2:201"}
    await link(api, project, routers["R1"], 1, 0, fr1, 1, mappings=dlcis)  # s1/0 (PA-4T+)
    await link(api, project, routers["R3"], 0, 16, fr1, 2, mappings=dlcis)  # s0/0 (WIC-1T)
    print("links: R1, R2, R3 on SW1; R1 s1/0 <-> FR1 (DLCI 102/201) <-> R3 s0/0")

    began = time.monotonic()
    await asyncio.gather(*(api.call("POST", f"{vms}/{r['vm_id']}/start") for r in routers.values()))
    banners = await asyncio.gather(*(console_banner(host, r["console"]) for r in routers.values()))
    for name, banner in zip(routers, banners, strict=True):
        print(f"{name} console: {banner}")
    print(f"all routers booted in {time.monotonic() - began:.1f} s")

    # idle-PC: measured on R1, reused by R2 (same image); R3 gets its image's known value
    began = time.monotonic()
    found = (await api.call("GET", f"{vms}/{routers['R1']['vm_id']}/auto_idlepc"))["idlepc"]
    print(f"auto idle-PC for R1: {found} (found in {time.monotonic() - began:.1f} s)")
    await api.call("PUT", f"{vms}/{routers['R2']['vm_id']}", {"idlepc": found})
    await api.call(
        "PUT",
        f"{vms}/{routers['R3']['vm_id']}",
        {"idlepc": f"0x{recommended_idle_pc('c3725'):08x}"},
    )

    r1 = f"{vms}/{routers['R1']['vm_id']}/adapters/0/ports/0"
    capture = await api.call(
        "POST",
        f"{r1}/start_capture",
        {"capture_file_name": "R1-f0-0.pcap", "data_link_type": "DLT_EN10MB"},
    )
    print(f"capturing R1 f0/0 to {capture['pcap_file_path']}")
    await asyncio.sleep(1)
    await api.call("POST", f"{r1}/stop_capture")

    for name, router in routers.items():
        await api.call("POST", f"{vms}/{router['vm_id']}/configs/save")
        saved = await api.call("GET", f"{vms}/{router['vm_id']}/configs")
        first = saved.get("startup_config_content", "").split("\n")[1:2]
        print(f"{name} config saved ({router['startup_config']}): {first}")
    await asyncio.gather(*(api.call("POST", f"{vms}/{r['vm_id']}/stop") for r in routers.values()))
    print("routers stopped")


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="http://127.0.0.1:3080", help="the API's address")
    parser.add_argument(
        "--image-dir",
        type=Path,
        help="write the images into this folder (the server's images/IOS) "
        "instead of uploading them",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    host = URL(args.server).host or "127.0.0.1"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        api = Client(session, args.server)
        try:
            version = await api.call("GET", "/version")
        except aiohttp.ClientError as err:
            print(f"no server at {args.server}: {err}", file=sys.stderr)
            return 1
        print(f"server {args.server}: version {version['version']}")
        project = None
        try:
            await provide_images(api, args.image_dir)
            project = (await api.call("POST", "/projects", {"name": "example-lab"}))["project_id"]
            await build_lab(api, project, host)
        except ApiError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        finally:
            if project is not None:
                await api.call("POST", f"/projects/{project}/commit")
                await api.call("POST", f"/projects/{project}/close")
                print(f"project {project} closed")
    print(f"done in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
