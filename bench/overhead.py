#!/usr/bin/env python3
"""Per-request overhead: routes that send one hypervisor command, against that command sent
straight to a dynamips of our own holding the same objects.

The server (``--server URL`` or ``--spawn``) gets a project, a c7200 ``R1`` (not started) and an
Ethernet switch ``SW1`` linked to it; then each route is called ``--requests`` times in a row
over one keep-alive connection, interleaved with the same command sent ``--requests`` times to
our dynamips. Routes and their one command:

* ``GET .../devices/SW1/ports/1/nio/stats``: ``nio get_stats <nio>``;
* ``PUT .../devices/SW1`` with a new name: ``ethsw rename "<old>" "<new>"``;
* ``POST .../vms/R1/suspend`` (R1 stopped): ``vm get_status "R1"``.

Routes that send no command show the HTTP round trip itself (client included):
``GET /version``, ``GET .../vms/R1``, ``POST .../ports/udp``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
from floor import Dynamips, _free_udp_ports, send
from lab import ELF_STUB, Client, SpawnedServer, router_body, summarize


async def _direct(dynamips: str, root: Path) -> tuple[Dynamips, Any]:
    """Our dynamips with R1, SW1 and a NIO on SW1, as the server holds them."""
    (root / "c7200.image").write_bytes(ELF_STUB)
    process = Dynamips(dynamips, root, 1)
    connection = await process.spawn()
    a, b = _free_udp_ports(2)
    for line in (
        'vm create "R1" 1 c7200',
        f'vm set_ios "R1" "{root / "c7200.image"}"',
        'ethsw create "SW1"',
        f"nio create_udp udp-bench {a} 127.0.0.1 {b}",
        'ethsw add_nio "SW1" udp-bench',
    ):
        await send(connection, line)
    return process, connection


async def run_overhead(base: str, dynamips: str, requests: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="dynamips_mgr_overhead_"))
    process = None
    try:
        process, connection = await _direct(dynamips, root)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
            client = Client(session, base)
            reply = await client.call("setup", "POST", "/projects", {"name": "overhead"}, 201)
            project = f"/projects/{reply['project_id']}"
            body = {**router_body(0, "c7200.image"), "name": "R1"}
            vm = await client.call("setup", "POST", f"{project}/dynamips/vms", body, 201)
            vm_url = f"{project}/dynamips/vms/{vm['vm_id']}"
            sw = await client.call(
                "setup",
                "POST",
                f"{project}/dynamips/devices",
                {"name": "SW1", "device_type": "ethernet_switch"},
                201,
            )
            sw_url = f"{project}/dynamips/devices/{sw['device_id']}"
            a = (await client.call("setup", "POST", f"{project}/ports/udp", None, 201))["udp_port"]
            b = (await client.call("setup", "POST", f"{project}/ports/udp", None, 201))["udp_port"]
            nio = {"type": "nio_udp", "lport": a, "rhost": "127.0.0.1", "rport": b}
            await client.call("setup", "POST", f"{vm_url}/adapters/0/ports/0/nio", nio, 201)
            nio = {"type": "nio_udp", "lport": b, "rhost": "127.0.0.1", "rport": a}
            await client.call("setup", "POST", f"{sw_url}/ports/1/nio", {"nio": nio}, 201)

            names = ["SW1", "SW1b"]
            server_name = iter(names[i % 2] for i in range(1, 10 * requests))
            direct_name = iter(names[i % 2] for i in range(1, 10 * requests))
            direct_old = ["SW1"]

            async def direct_rename() -> None:
                new = next(direct_name)
                await send(connection, f'ethsw rename "{direct_old[0]}" "{new}"')
                direct_old[0] = new

            cases = {
                "nio_stats": (
                    lambda: client.call("nio_stats", "GET", f"{sw_url}/ports/1/nio/stats"),
                    lambda: send(connection, "nio get_stats udp-bench"),
                ),
                "rename_switch": (
                    lambda: client.call(
                        "rename_switch", "PUT", sw_url, {"name": next(server_name)}
                    ),
                    direct_rename,
                ),
                "suspend_stopped_router": (
                    lambda: client.call(
                        "suspend_stopped_router", "POST", f"{vm_url}/suspend", None, 204
                    ),
                    lambda: send(connection, 'vm get_status "R1"'),
                ),
            }
            no_command = {
                "version": lambda: client.call("version", "GET", "/version"),
                "show_router": lambda: client.call("show_router", "GET", vm_url),
                "allocate_udp": lambda: client.call(
                    "allocate_udp", "POST", f"{project}/ports/udp", None, 201
                ),
            }
            floor_times: dict[str, list[float]] = {name: [] for name in cases}
            for _ in range(requests):  # interleaved, so that a busy moment hits both sides
                for name, (route, command) in cases.items():
                    await route()
                    started = time.perf_counter()
                    await command()
                    floor_times[name].append(time.perf_counter() - started)
                for call in no_command.values():
                    await call()
            await client.call("setup", "POST", f"{project}/close", None, 204)
        result: dict[str, Any] = {"requests": requests, "one_command": {}, "no_command": {}}
        for name in cases:
            server = summarize(client.timings[name])
            floor = summarize(floor_times[name])
            result["one_command"][name] = {
                "server_p50_ms": server["p50_ms"],
                "server_p95_ms": server["p95_ms"],
                "floor_p50_ms": floor["p50_ms"],
                "overhead_p50_ms": round(server["p50_ms"] - floor["p50_ms"], 3),
            }
        for name in no_command:
            stats = summarize(client.timings[name])
            result["no_command"][name] = {"p50_ms": stats["p50_ms"], "p95_ms": stats["p95_ms"]}
        return result
    finally:
        if process is not None:
            await process.kill()
        shutil.rmtree(root, ignore_errors=True)


def format_report(result: dict[str, Any]) -> str:
    lines = [
        f"{'route (one command)':<26}{'server p50':>11}{'p95':>8}{'floor p50':>11}"
        f"{'overhead p50':>14}  (ms, {result['requests']} requests each)"
    ]
    for name, row in result["one_command"].items():
        lines.append(
            f"{name:<26}{row['server_p50_ms']:>11.3f}{row['server_p95_ms']:>8.3f}"
            f"{row['floor_p50_ms']:>11.3f}{row['overhead_p50_ms']:>14.3f}"
        )
    lines.append(f"{'route (no command)':<26}{'p50':>11}{'p95':>8}")
    for name, row in result["no_command"].items():
        lines.append(f"{name:<26}{row['p50_ms']:>11.3f}{row['p95_ms']:>8.3f}")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    if args.spawn:
        async with SpawnedServer(args.dynamips) as server:
            return await run_overhead(server.url, args.dynamips, args.requests)
    return await run_overhead(args.server, args.dynamips, args.requests)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--server", help="URL of a running server")
    where.add_argument("--spawn", action="store_true", help="start a server of our own")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--dynamips", default=shutil.which("dynamips") or "dynamips")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = asyncio.run(main_async(args))
    print(json.dumps(result) if args.json else format_report(result))


if __name__ == "__main__":
    main()
