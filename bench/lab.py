#!/usr/bin/env python3
"""Lab build benchmark: N c7200 routers, M Ethernet switches, one link per router, then teardown.

Talks HTTP to a running dynamips_mgr (``--server URL``), or starts one itself (``--spawn``:
a subprocess with a temporary configuration, projects and images folder, on a free port,
driving the real ``dynamips`` unless ``--dynamips`` names another executable).

Phases, each finished before the next starts (a barrier), as a GUI opening a lab does:

* ``project``: ``POST /projects``;
* ``build``: create the routers (not started) and the switches;
* ``link``: per link (router i port 0/0 <-> switch i % M port i // M + 1): both UDP ports
  allocated together, then both NIOs sent together (the GUI's way);
* ``unlink``: both NIO deletes together;
* ``delete``: every router and switch deleted;
* ``close``: ``POST /projects/{id}/close``.

``--concurrency C`` runs C units of work (a node create, a link, ...) at a time.
Memory (server RSS, its children's RSS and PSS) is read after ``link``, when the lab is
complete; CPU seconds are the server's and its children's (reaped ones included) over the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from dynamips_mgr.testing.gui_payloads import WIZARD_TEMPLATE

PHASES = ("project", "build", "link", "unlink", "delete", "close")
ELF_STUB = b"\x7fELF\x01\x02\x01" + b"\0" * 1017  # enough for a router that is not started
STARTUP_CONFIG = "!\nhostname %h\n!\ninterface FastEthernet0/0\n no shutdown\n!\nend\n"
MIB = 1024 * 1024


def router_body(index: int, image: str) -> dict[str, Any]:
    """What the GNS3 1.5 GUI sends for a c7200 made from a wizard template."""
    return {
        "name": f"R{index + 1}",
        "platform": "c7200",
        "ram": 512,
        "image": image,
        "startup_config_content": STARTUP_CONFIG,
        "nvram": 512,
        **WIZARD_TEMPLATE,
        "slot0": "C7200-IO-FE",
    }


def switch_body(index: int) -> dict[str, Any]:
    return {"name": f"SW{index + 1}", "device_type": "ethernet_switch"}


class ApiError(RuntimeError):
    pass


class Client:
    """Times every request by operation name; fails loudly on an unexpected status."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base.rstrip("/") + "/v1"
        self.timings: dict[str, list[float]] = defaultdict(list)

    async def call(self, op: str, method: str, path: str, body: Any = None, expect: int = 200):
        data = json.dumps(body if body is not None else {})
        started = time.perf_counter()
        async with self.session.request(
            method, self.base + path, data=data, headers={"Content-Type": "application/json"}
        ) as response:
            text = await response.text()
        self.timings[op].append(time.perf_counter() - started)
        if response.status != expect:
            raise ApiError(f"{method} {path}: {response.status} {text[:2000]}")
        return json.loads(text) if text else None


async def _limited(concurrency: int, jobs: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
    semaphore = asyncio.Semaphore(concurrency)

    async def one(job: Callable[[], Awaitable[Any]]) -> Any:
        async with semaphore:
            return await job()

    return list(await asyncio.gather(*(one(job) for job in jobs)))


class Probe:
    """psutil view of the server process and its children (None when the pid is unknown)."""

    def __init__(self, pid: int | None) -> None:
        self.process = psutil.Process(pid) if pid else None

    def cpu(self) -> tuple[float, float]:
        """(server, children) CPU seconds so far; children = reaped + still running."""
        if self.process is None:
            return 0.0, 0.0
        own = self.process.cpu_times()
        children = own.children_user + own.children_system
        for child in self._children():
            with contextlib.suppress(psutil.Error):
                times = child.cpu_times()
                children += times.user + times.system
        return own.user + own.system, children

    def memory(self) -> dict[str, Any]:
        if self.process is None:
            return {}
        children = self._children()
        rss = pss = 0
        for child in children:
            with contextlib.suppress(psutil.Error):
                info = child.memory_full_info()
                rss += info.rss
                pss += getattr(info, "pss", info.rss)
        return {
            "server_rss_mib": round(self.process.memory_info().rss / MIB, 1),
            "children": len(children),
            "children_rss_mib": round(rss / MIB, 1),
            "children_pss_mib": round(pss / MIB, 1),
        }

    def _children(self) -> list[psutil.Process]:
        try:
            return self.process.children(recursive=True) if self.process else []
        except psutil.Error:
            return []


def interpreter_rss_mib() -> float | None:
    """RSS of a bare ``python -c`` here (site hooks included): the floor of any Python server."""
    code = "print(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])"
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        return round(int(done.stdout) / 1024, 1)
    except (OSError, ValueError):
        return None


def summarize(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    return {
        "count": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(p95 * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


async def run_lab(
    base: str,
    routers: int,
    switches: int,
    concurrency: int,
    *,
    image: str = "c7200.image",
    server_pid: int | None = None,
    on_phase: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None,
    keep: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build and tear the lab down; ``on_phase(name, ids)`` runs after each phase.

    ``keep`` receives the project id and the first router, switch and NIO replies.
    """
    keep = {} if keep is None else keep
    if switches < 1 and routers:
        raise ValueError("links need at least one switch")
    probe = Probe(server_pid)
    phases: dict[str, float] = {}
    memory: dict[str, Any] = {}
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        client = Client(session, base)
        await client.call("version", "GET", "/version")
        idle = probe.memory().get("server_rss_mib")
        cpu_start = probe.cpu()
        run_start = time.perf_counter()
        ids: dict[str, Any] = {}

        async def phase(name: str, jobs: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
            started = time.perf_counter()
            results = await _limited(concurrency, jobs)
            phases[name] = round(time.perf_counter() - started, 4)
            if on_phase is not None:
                await on_phase(name, ids)
            return results

        async def new_project():
            reply = await client.call(
                "create_project", "POST", "/projects", {"name": "bench"}, expect=201
            )
            return reply["project_id"]

        (pid,) = await phase("project", [new_project])
        ids["project"] = keep["project"] = pid
        project = f"/projects/{pid}"

        async def new_router(i: int):
            body = router_body(i, image)
            reply = await client.call("create_router", "POST", f"{project}/dynamips/vms", body, 201)
            keep.setdefault("router", reply)
            return reply["vm_id"]

        async def new_switch(i: int):
            path = f"{project}/dynamips/devices"
            reply = await client.call("create_switch", "POST", path, switch_body(i), 201)
            keep.setdefault("switch", reply)
            return reply["device_id"]

        jobs = [lambda i=i: new_router(i) for i in range(routers)]
        jobs += [lambda i=i: new_switch(i) for i in range(switches)]
        created = await phase("build", jobs)
        ids["routers"], ids["switches"] = created[:routers], created[routers:]

        def ends(i: int) -> tuple[str, str]:
            vm = f"{project}/dynamips/vms/{ids['routers'][i]}/adapters/0/ports/0/nio"
            device = f"{project}/dynamips/devices/{ids['switches'][i % switches]}"
            return vm, f"{device}/ports/{i // switches + 1}/nio"

        async def link(i: int) -> None:
            udp = f"{project}/ports/udp"
            a, b = await asyncio.gather(
                client.call("allocate_udp", "POST", udp, expect=201),
                client.call("allocate_udp", "POST", udp, expect=201),
            )
            a, b = a["udp_port"], b["udp_port"]
            vm, device = ends(i)
            router_nio, switch_nio = await asyncio.gather(
                client.call(
                    "add_router_nio",
                    "POST",
                    vm,
                    {"type": "nio_udp", "lport": a, "rhost": "127.0.0.1", "rport": b},
                    201,
                ),
                client.call(
                    "add_switch_nio",
                    "POST",
                    device,
                    {
                        "nio": {"type": "nio_udp", "lport": b, "rhost": "127.0.0.1", "rport": a},
                        "port_settings": {"type": "access", "vlan": 1},
                    },
                    201,
                ),
            )
            keep.setdefault("router_nio", router_nio)
            keep.setdefault("switch_nio", switch_nio)

        await phase("link", [lambda i=i: link(i) for i in range(routers)])
        memory = probe.memory()

        async def unlink(i: int) -> None:
            vm, device = ends(i)
            await asyncio.gather(
                client.call("remove_router_nio", "DELETE", vm, expect=204),
                client.call("remove_switch_nio", "DELETE", device, expect=204),
            )

        await phase("unlink", [lambda i=i: unlink(i) for i in range(routers)])

        def delete(kind: str, op: str, node_id: str):
            return lambda: client.call(
                op, "DELETE", f"{project}/dynamips/{kind}/{node_id}", None, 204
            )

        jobs = [delete("vms", "delete_router", r) for r in ids["routers"]]
        jobs += [delete("devices", "delete_switch", s) for s in ids["switches"]]
        await phase("delete", jobs)

        async def close() -> None:
            await client.call("close_project", "POST", f"{project}/close", expect=204)

        await phase("close", [close])
        total = time.perf_counter() - run_start
        cpu_end = probe.cpu()
    return {
        "routers": routers,
        "switches": switches,
        "concurrency": concurrency,
        "total_s": round(total, 4),
        "phases_s": phases,
        "operations": {op: summarize(values) for op, values in client.timings.items()},
        "memory_after_link": {
            **memory,
            "server_rss_before_mib": idle,
            "bare_python_rss_mib": interpreter_rss_mib(),
        },
        "cpu_s": {
            "server": round(cpu_end[0] - cpu_start[0], 3),
            "children": round(cpu_end[1] - cpu_start[1], 3),
        },
    }


# -- a server of our own ----------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SpawnedServer:
    """``python -m dynamips_mgr`` with a temporary configuration; stopped with SIGTERM."""

    def __init__(self, dynamips: str, options: dict[str, Any] | None = None) -> None:
        self.dynamips = dynamips
        self.options = options or {}
        self.root = Path(tempfile.mkdtemp(prefix="dynamips_mgr_bench_"))
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def _config(self) -> Path:
        images = self.root / "images" / "IOS"
        images.mkdir(parents=True)
        (images / "c7200.image").write_bytes(ELF_STUB)
        dynamips = {"dynamips_path": self.dynamips, **self.options}
        base = random.randrange(20) * 1000  # ranges of their own: parallel runs rarely meet
        text = (
            "[Server]\nhost = 127.0.0.1\n"
            f"port = {self.port}\nlocal = true\n"
            f"console_start_port_range = {20000 + base}\n"
            f"console_end_port_range = {20999 + base}\n"
            f"udp_start_port_range = {40000 + base}\nudp_end_port_range = {40999 + base}\n"
            f"projects_path = {self.root / 'projects'}\nimages_path = {self.root / 'images'}\n"
            "[Dynamips]\n" + "".join(f"{k} = {v}\n" for k, v in dynamips.items())
        )
        path = self.root / "server.ini"
        path.write_text(text)
        return path

    def _start(self) -> subprocess.Popen:
        config = self._config()
        with open(self.root / "server.log", "wb") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "dynamips_mgr", "--config", str(config), "-q"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.root,
            )

    async def __aenter__(self) -> SpawnedServer:
        self.process = self._start()
        deadline = time.monotonic() + 20
        async with aiohttp.ClientSession() as session:
            while True:
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(self.url + "/v1/version") as response:
                        if response.status == 200:
                            return self
                if self.process.poll() is not None or time.monotonic() > deadline:
                    await self.__aexit__()
                    raise RuntimeError(f"the server did not start: {self.log_tail()}")
                await asyncio.sleep(0.02)

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.root / "server.log").read_text(errors="replace")[-2000:]
        return ""

    async def __aexit__(self, *exc: object) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            children = psutil.Process(process.pid).children(recursive=True)
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, 20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            for child in children:  # anything the server left behind
                with contextlib.suppress(psutil.Error):
                    child.kill()
            await asyncio.to_thread(psutil.wait_procs, children, 5)
        shutil.rmtree(self.root, ignore_errors=True)


def server_pid_of(url: str) -> int | None:
    """The pid listening on the URL's port (when this user may see it)."""
    port = int(url.rsplit(":", 1)[1].split("/")[0]) if url.count(":") >= 2 else 80
    with contextlib.suppress(psutil.Error, PermissionError):
        for conn in psutil.net_connections("tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
                return conn.pid
    return None


# -- command line -----------------------------------------------------------------------------
def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--routers", type=int, default=10)
    parser.add_argument("--switches", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs; the one with the median total is shown"
    )
    parser.add_argument(
        "--dynamips",
        default=shutil.which("dynamips") or "dynamips",
        help="dynamips executable (default: the one on PATH)",
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--server", help="URL of a running server, e.g. http://127.0.0.1:3080")
    where.add_argument("--spawn", action="store_true", help="start a server of our own")
    parser.add_argument("--server-pid", type=int, help="pid of --server (found when omitted)")
    parser.add_argument("--image", default="c7200.image", help="image name the server knows")
    parser.add_argument(
        "--nodes-per-hypervisor",
        type=int,
        default=1,
        help="[Dynamips] nodes_per_hypervisor of the spawned server",
    )
    return parser.parse_args(argv)


def format_report(result: dict[str, Any]) -> str:
    lines = [
        f"lab: {result['routers']} routers, {result['switches']} switches, "
        f"concurrency {result['concurrency']}: total {result['total_s']:.3f} s",
        "phases: " + ", ".join(f"{k} {v:.3f} s" for k, v in result["phases_s"].items()),
        f"{'operation':<18}{'count':>6}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}",
    ]
    for op, stats in result["operations"].items():
        lines.append(
            f"{op:<18}{stats['count']:>6}{stats['p50_ms']:>9.2f}{stats['p95_ms']:>9.2f}"
            f"{stats['max_ms']:>9.2f}"
        )
    memory = result["memory_after_link"]
    if memory:
        lines.append(
            f"memory after link: server RSS {memory['server_rss_mib']} MiB "
            f"({memory['server_rss_before_mib']} MiB before the project), "
            f"{memory['children']} children RSS {memory['children_rss_mib']} MiB "
            f"(PSS {memory['children_pss_mib']} MiB); a bare python: "
            f"{memory['bare_python_rss_mib']} MiB"
        )
    cpu = result["cpu_s"]
    lines.append(f"CPU: server {cpu['server']} s, children {cpu['children']} s")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    if args.spawn:
        options = {"nodes_per_hypervisor": args.nodes_per_hypervisor}
        async with SpawnedServer(args.dynamips, options) as server:
            result = await run_lab(
                server.url,
                args.routers,
                args.switches,
                args.concurrency,
                image=args.image,
                server_pid=server.pid,
            )
            result["nodes_per_hypervisor"] = args.nodes_per_hypervisor
            return result
    pid = args.server_pid or server_pid_of(args.server)
    return await run_lab(
        args.server, args.routers, args.switches, args.concurrency, image=args.image, server_pid=pid
    )


def median_run(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The run whose ``total_s`` is the median, with every run's total beside it."""
    ordered = sorted(results, key=lambda r: r["total_s"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["totals_s"] = [r["total_s"] for r in results]
    return chosen


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = median_run([asyncio.run(main_async(args)) for _ in range(args.repeat)])
    print(json.dumps(result) if args.json else format_report(result))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
