#!/usr/bin/env python3
"""Auto idle-PC benchmark: ``GET …/auto_idlepc`` end to end on the real dynamips.

Serves an in-process dynamips_mgr (temporary projects and images folders, free port, the
real ``dynamips``), writes the synthetic IOS-like image of each platform, and per platform:

1. creates a router and starts it, measures its dynamips process' CPU without idle-PC;
2. times ``auto_idlepc`` on the running router (proposals sampling + measuring);
3. stops it, times ``auto_idlepc`` on the stopped router (start, boot wait, the above, stop);
4. starts it again and measures the CPU with the idle-PC found.

The original server needed 20 s + ~3 s per tried value. Not run by the test suite::

    python bench/auto_idlepc.py                      # c7200
    python bench/auto_idlepc.py --platforms c7200 c2600 --runs 2
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil
from aiohttp import web

from dynamips_mgr.app import create_app
from dynamips_mgr.config import Config
from dynamips_mgr.dynamips.platforms import PLATFORMS
from dynamips_mgr.testing.synthetic_image import PROMPT, write_image
from dynamips_mgr.web.routing import STATE


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def cpu_percent(pid: int, window: float = 2.0) -> float:
    process = psutil.Process(pid)
    before, start = process.cpu_times(), time.monotonic()
    await asyncio.sleep(window)
    after = process.cpu_times()
    used = after.user + after.system - before.user - before.system
    return used * 100 / (time.monotonic() - start)


async def wait_prompt(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
    data = b""
    try:
        while PROMPT.encode() not in data:
            data += await asyncio.wait_for(reader.read(4096), deadline - time.monotonic())
    finally:
        writer.close()


class Bench:
    def __init__(self, session: aiohttp.ClientSession, base: str, app: web.Application) -> None:
        self.session, self.base, self.app = session, base + "/v1", app

    async def call(self, method: str, path: str, body: object = None):
        async with self.session.request(method, self.base + path, json=body) as response:
            text = await response.text()
            if response.status >= 300:
                raise RuntimeError(f"{method} {path}: {response.status} {text}")
            return await response.json() if text else None

    async def timed(self, method: str, path: str) -> tuple[float, object]:
        began = time.monotonic()
        result = await self.call(method, path)
        return time.monotonic() - began, result

    async def run(self, platform: str) -> dict[str, float | str]:
        project = (await self.call("POST", "/projects", {"name": f"bench-{platform}"}))[
            "project_id"
        ]
        ram = PLATFORMS[platform].defaults["ram"]
        body = {"name": "R1", "platform": platform, "image": f"{platform}.image", "ram": ram}
        router = await self.call("POST", f"/projects/{project}/dynamips/vms", body)
        vm = f"/projects/{project}/dynamips/vms/{router['vm_id']}"
        node = self.app[STATE].dynamips.routers[router["vm_id"]]
        try:
            await self.call("POST", f"{vm}/start")
            await wait_prompt(router["console"])
            busy = await cpu_percent(node.hypervisor.pid)
            running_s, found = await self.timed("GET", f"{vm}/auto_idlepc")
            await self.call("PUT", vm, {"idlepc": "0x0"})
            await self.call("POST", f"{vm}/stop")
            stopped_s, found = await self.timed("GET", f"{vm}/auto_idlepc")
            await self.call("POST", f"{vm}/start")
            await wait_prompt(router["console"])
            await asyncio.sleep(0.3)
            idle = await cpu_percent(node.hypervisor.pid)
        finally:
            await self.call("POST", f"/projects/{project}/close")
        return {
            "idlepc": found["idlepc"],
            "busy": busy,
            "idle": idle,
            "running": running_s,
            "stopped": stopped_s,
        }


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--platforms", nargs="+", default=["c7200"], choices=sorted(PLATFORMS))
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--dynamips", default=shutil.which("dynamips") or "dynamips")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-idlepc-") as tmp:
        root = Path(tmp)
        (root / "images" / "IOS").mkdir(parents=True)
        for platform in args.platforms:
            write_image(root / "images" / "IOS" / f"{platform}.image", platform)
        config = Config.defaults(
            projects_path=str(root / "projects"), images_path=str(root / "images"), local=True
        )
        config.values[("Dynamips", "dynamips_path")] = args.dynamips
        app = create_app(config)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            async with aiohttp.ClientSession() as session:
                bench = Bench(session, f"http://127.0.0.1:{port}", app)
                print(
                    "platform  idle-PC      CPU before  CPU after  auto (running)  auto (stopped)"
                )
                for platform in args.platforms:
                    results = [await bench.run(platform) for _ in range(args.runs)]
                    for result in results:
                        print(
                            f"{platform:8}  {result['idlepc']:11}  {result['busy']:9.1f}%"
                            f"  {result['idle']:8.1f}%  {result['running']:13.2f}s"
                            f"  {result['stopped']:13.2f}s"
                        )
                    if len(results) > 1:
                        median = statistics.median(r["stopped"] for r in results)
                        print(
                            f"{platform:8}  median auto_idlepc on a stopped router: {median:.2f}s"
                        )
        finally:
            await runner.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
