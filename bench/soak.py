"""Soak test (issue 9): create and delete many routers and switches with links against the
real dynamips, then prove nothing leaked.

Runs the server as a subprocess (``python -m dynamips_mgr``) with a temporary configuration
and folders on loopback, then, in batches, creates routers and one Ethernet switch, links every
router's 0/0 to a switch port over UDP, changes the routers' settings, captures on every link,
starts, suspends, resumes and stops half of the routers, holds the batch up a few seconds and
deletes it all again. Afterwards it checks: no dynamips process left, the server's file
descriptors, threads and child processes back to where they were, every UDP port of the range
reserved again, console port and dynamips id 1 handed out again, and no file left in the
project but the captures. Prints the figures; exits non-zero when a check fails.

    python bench/soak.py                       # 200 routers, 20 switches (a few minutes)
    python bench/soak.py --routers 20 --switches 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil

from dynamips_mgr.ports import can_bind

ELF_STUB = b"\x7fELF\x01\x02\x01" + b"\0" * 1017  # passes the image check; 0.2.14 "starts" it
CONSOLE_RANGE = (44000, 44199)
UDP_RANGE = (45000, 45599)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Soak:
    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args = args
        self.root = root
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/v1"
        self.server: subprocess.Popen | None = None
        self.process: psutil.Process | None = None
        self.http: aiohttp.ClientSession | None = None
        self.figures: dict[str, object] = {}
        self.failures: list[str] = []
        self.peak_children = 0
        self.peak_fds = 0
        self.peak_rss = 0
        self.captures = 0

    # -- plumbing ------------------------------------------------------------------------
    def write_config(self) -> Path:
        images = self.root / "images" / "IOS"
        images.mkdir(parents=True)
        (images / "c7200.image").write_bytes(ELF_STUB)
        config = self.root / "soak.ini"
        config.write_text(
            "[Server]\n"
            f"host = 127.0.0.1\nport = {self.port}\nlocal = true\n"
            f"projects_path = {self.root / 'projects'}\nimages_path = {self.root / 'images'}\n"
            f"console_start_port_range = {CONSOLE_RANGE[0]}\n"
            f"console_end_port_range = {CONSOLE_RANGE[1]}\n"
            f"udp_start_port_range = {UDP_RANGE[0]}\nudp_end_port_range = {UDP_RANGE[1]}\n"
            "[Dynamips]\n"
            f"dynamips_path = {self.args.dynamips}\n"
        )
        return config

    async def start_server(self) -> None:
        config = self.write_config()
        self.server = subprocess.Popen(  # noqa: ASYNC220 - once, at start-up
            [sys.executable, "-m", "dynamips_mgr", "--config", str(config), "-q"],
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "server.log", "wb"),  # noqa: ASYNC230 - before any await
        )
        self.process = psutil.Process(self.server.pid)
        # one connection per request: the server's sockets then say nothing about the client
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True),
            timeout=aiohttp.ClientTimeout(total=120),
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                async with self.http.get(self.base + "/version") as reply:
                    if reply.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline or self.server.poll() is not None:
                raise SystemExit("the server did not start: see " + str(self.root / "server.log"))
            await asyncio.sleep(0.1)

    async def stop_server(self) -> None:
        if self.http is not None:
            await self.http.close()
        if self.server is not None and self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            try:
                self.server.wait(30)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()

    async def call(self, method: str, path: str, body=None, expect: int | None = None):
        assert self.http is not None
        data = json.dumps(body) if body is not None else None
        async with self.http.request(method, self.base + path, data=data) as reply:
            text = await reply.text()
            if expect is not None and reply.status != expect:
                raise AssertionError(f"{method} {path}: {reply.status} {text}")
            return reply.status, (json.loads(text) if text else None)

    def dynamips_children(self) -> list[psutil.Process]:
        assert self.process is not None
        return [
            child
            for child in self.process.children(recursive=True)
            if child.is_running() and child.status() != psutil.STATUS_ZOMBIE
        ]

    async def settled_fds(self) -> int:
        """The server's descriptor count once closed connections are gone (stable 0.3 s)."""
        assert self.process is not None
        last, stable_since = self.process.num_fds(), time.monotonic()
        deadline = stable_since + 5
        while time.monotonic() < deadline and time.monotonic() - stable_since < 0.3:
            await asyncio.sleep(0.05)
            now = self.process.num_fds()
            if now != last:
                last, stable_since = now, time.monotonic()
        return last

    def started(self, number: int) -> bool:
        return bool(self.args.start_every) and number % self.args.start_every == 0

    def sample(self) -> None:
        assert self.process is not None
        self.peak_children = max(self.peak_children, len(self.dynamips_children()))
        self.peak_fds = max(self.peak_fds, self.process.num_fds())
        self.peak_rss = max(self.peak_rss, self.process.memory_info().rss)

    def check(self, ok: bool, what: str) -> None:
        print(("ok    " if ok else "FAIL  ") + what)
        if not ok:
            self.failures.append(what)

    # -- the run -------------------------------------------------------------------------
    async def batch(self, p: str, index: int, routers: int) -> None:
        _, switch = await self.call(
            "POST",
            f"{p}/dynamips/devices",
            {"name": f"SW{index}", "device_type": "ethernet_switch"},
            expect=201,
        )
        dev = f"{p}/dynamips/devices/{switch['device_id']}"

        async def router(number: int) -> str:
            name = f"R{index}_{number}"
            body = {"name": name, "platform": "c7200", "image": "c7200.image", "ram": 128}
            _, vm = await self.call("POST", f"{p}/dynamips/vms", body, expect=201)
            url = f"{p}/dynamips/vms/{vm['vm_id']}"
            settings = {"ram": 160, "slot1": "PA-FE-TX", "startup_config_content": "hostname %h"}
            await self.call("PUT", url, settings, expect=200)
            _, a = await self.call("POST", f"{p}/ports/udp", {}, expect=201)
            _, b = await self.call("POST", f"{p}/ports/udp", {}, expect=201)
            a, b = a["udp_port"], b["udp_port"]
            nio = {"type": "nio_udp", "lport": a, "rhost": "127.0.0.1", "rport": b}
            await self.call("POST", f"{url}/adapters/0/ports/0/nio", nio, expect=201)
            nio = {"type": "nio_udp", "lport": b, "rhost": "127.0.0.1", "rport": a}
            await self.call(
                "POST",
                f"{dev}/ports/{number + 1}/nio",
                {"nio": nio, "port_settings": {"type": "access", "vlan": 1}},
                expect=201,
            )
            capture = {"capture_file_name": f"{name}.pcap"}
            await self.call("POST", f"{url}/adapters/0/ports/0/start_capture", capture, expect=200)
            self.captures += 1
            if self.started(number):
                await self.call("POST", f"{url}/start", expect=204)
                await self.call("POST", f"{url}/suspend", expect=204)
                await self.call("POST", f"{url}/resume", expect=204)
            return url

        urls = await asyncio.gather(*(router(n) for n in range(routers)))
        deadline = time.monotonic() + self.args.hold  # everything of the batch alive
        while True:
            self.sample()
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.5)

        async def wind_down(number: int, url: str) -> None:
            await self.call("POST", f"{url}/adapters/0/ports/0/stop_capture", expect=204)
            if self.started(number):
                await self.call("POST", f"{url}/stop", expect=204)
            await self.call("GET", f"{url}/configs", expect=200)

        await asyncio.gather(*(wind_down(n, url) for n, url in enumerate(urls)))
        await asyncio.gather(
            *(self.call("DELETE", f"{url}/adapters/0/ports/0/nio", expect=204) for url in urls),
            *(self.call("DELETE", f"{dev}/ports/{n + 1}/nio", expect=204) for n in range(routers)),
        )
        await asyncio.gather(*(self.call("DELETE", url, expect=204) for url in urls))
        await self.call("DELETE", dev, expect=204)

    async def run(self) -> int:
        await self.start_server()
        assert self.process is not None
        _, project = await self.call("POST", "/projects", {"name": "soak"}, expect=201)
        p = f"/projects/{project['project_id']}"
        project_path = Path(project["path"])
        # one warm-up cycle, so lazily created things (thread pools...) exist before measuring
        await self.batch(p, 0, 1)
        await self.call("POST", f"{p}/commit", expect=204)
        fds_before, threads_before = await self.settled_fds(), self.process.num_threads()
        rss_before = self.process.memory_info().rss

        switches, routers = self.args.switches, self.args.routers
        per_batch = [
            routers // switches + (1 if i < routers % switches else 0) for i in range(switches)
        ]
        started = time.monotonic()
        for index, count in enumerate(per_batch, start=1):
            await self.batch(p, index, count)
            if index % 5 == 0:
                await self.call("POST", f"{p}/commit", expect=204)
            left = self.dynamips_children()
            if left:
                self.check(False, f"batch {index}: {len(left)} processes left after deletes")
        elapsed = time.monotonic() - started
        await self.call("POST", f"{p}/commit", expect=204)
        await asyncio.sleep(0.2)  # let the last exits be reaped

        self.figures.update(
            routers=routers,
            switches=switches,
            links=routers,
            seconds=round(elapsed, 1),
            routers_per_second=round(routers / elapsed, 2),
            peak_dynamips_processes=self.peak_children,
            fds_before=fds_before,
            fds_after=await self.settled_fds(),
            peak_fds=self.peak_fds,
            threads_before=threads_before,
            threads_after=self.process.num_threads(),
            rss_mib_before=round(rss_before / 2**20, 1),
            rss_mib_after=round(self.process.memory_info().rss / 2**20, 1),
            peak_rss_mib=round(self.peak_rss / 2**20, 1),
            captures=self.captures,
        )
        self.check(not self.dynamips_children(), "no dynamips process left")
        if os.environ.get("SOAK_DEBUG"):
            for fd in os.listdir(f"/proc/{self.process.pid}/fd"):
                try:
                    print(fd, os.readlink(f"/proc/{self.process.pid}/fd/{fd}"))
                except OSError:
                    pass
        self.check(
            self.figures["fds_after"] <= fds_before,
            f"server file descriptors {fds_before} -> {self.figures['fds_after']}",
        )
        pool = 1 + min(32, (os.cpu_count() or 1) + 4)  # the loop's default thread pool
        self.check(
            self.figures["threads_after"] <= max(threads_before, pool),
            f"server threads {threads_before} -> {self.figures['threads_after']} "
            f"(a thread pool of at most {pool - 1} may grow)",
        )
        await self.check_ports_and_ids(p)
        leftovers = [
            str(f.relative_to(project_path))
            for f in project_path.rglob("*")
            if f.is_file() and f.suffix != ".ghost"  # a ghost is shared until close
        ]
        pcaps = [name for name in leftovers if name.startswith("project-files/captures/")]
        self.check(len(pcaps) == self.captures, f"{len(pcaps)} capture files (user data) kept")
        leftovers = [name for name in leftovers if name not in pcaps]
        self.check(not leftovers, f"no other file left in the project folder {leftovers[:10]}")
        await self.call("POST", f"{p}/close", expect=204)
        leftovers = [
            str(f.relative_to(project_path))
            for f in project_path.rglob("*")
            if f.is_file() and f.parent.name != "captures"
        ]
        self.check(not leftovers, f"no file but captures left after close {leftovers[:10]}")
        print(json.dumps(self.figures, indent=2))
        return 1 if self.failures else 0

    async def check_ports_and_ids(self, p: str) -> None:
        """Every UDP port of the range can be reserved again; console port and id 1 too."""
        unusable = {
            port
            for port in range(UDP_RANGE[0], UDP_RANGE[1] + 1)
            if can_bind("0.0.0.0", port, socket.SOCK_DGRAM) is not None
        }
        allocated = []
        while True:
            status, body = await self.call("POST", f"{p}/ports/udp", {})
            if status != 201:
                break
            allocated.append(body["udp_port"])
        expected = set(range(UDP_RANGE[0], UDP_RANGE[1] + 1)) - unusable
        self.figures["udp_ports_reallocated"] = len(allocated)
        self.check(
            expected <= set(allocated),
            f"all {len(expected)} free UDP ports of the range reserved again "
            f"(missing {sorted(expected - set(allocated))[:10]})",
        )
        body = {"name": "Last", "platform": "c7200", "image": "c7200.image", "ram": 128}
        _, vm = await self.call("POST", f"{p}/dynamips/vms", body, expect=201)
        self.check(
            (vm["console"], vm["dynamips_id"]) == (CONSOLE_RANGE[0], 1),
            f"console {vm['console']} and dynamips id {vm['dynamips_id']} handed out again",
        )
        await self.call("DELETE", f"{p}/dynamips/vms/{vm['vm_id']}", expect=204)
        await self.call("POST", f"{p}/commit", expect=204)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--routers", type=int, default=200)
    parser.add_argument("--switches", type=int, default=20)
    parser.add_argument("--start-every", type=int, default=2, help="start every N-th router")
    parser.add_argument("--hold", type=float, default=5.0, help="seconds each batch stays up")
    parser.add_argument("--dynamips", default=shutil.which("dynamips") or "dynamips")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="soak-"))
    soak = Soak(args, root)

    async def go() -> int:
        try:
            return await soak.run()
        finally:
            await soak.stop_server()

    try:
        code = asyncio.run(go())
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    if soak.server is not None:
        # after the server exited nothing it started may survive (it stops its hypervisors)
        orphans = [
            proc.pid
            for proc in psutil.process_iter(["cwd"])
            if (proc.info.get("cwd") or "").startswith(str(root))
        ]
        if orphans:
            print(f"FAIL  processes still running in {root}: {orphans}")
            for pid in orphans:
                os.kill(pid, signal.SIGKILL)
            code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
