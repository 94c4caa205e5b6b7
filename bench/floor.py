#!/usr/bin/env python3
"""The protocol's own floor for bench/lab.py: the same hypervisor commands, straight to dynamips.

1. Record: a dynamips_mgr with the fake hypervisor (``--record-dir``) builds and tears down a
   lab of one router, one switch and one link with bench/lab.py; the command lines each
   hypervisor received, phase by phase, become templates (names, ids, ports, NIO names and
   paths replaced by placeholders).
2. Replay the templates for N routers, M switches and N links with the lab's phases, units
   of work and concurrency, against the real dynamips:

   * ``per_node``: one dynamips process per node, as the server does (spawn, connect,
     ``hypervisor version``, ``hypervisor working_dir``, the node's commands; at delete the
     node's commands, ``hypervisor stop`` and the wait for the process to exit, woken at once
     as the server does it);
   * ``one_process``: one dynamips for everything, two connections per unit in flight.

Every dynamips here starts in a folder where its instruction lookup tables are already
cached, as the server's do. Also measured: spawn + connect (+ version + working_dir) of one
hypervisor, the first one in a fresh folder, and ``hypervisor stop`` until the process has
exited, left alone and woken (medians of ``--samples`` runs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import socket
import stat
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lab import (
    ELF_STUB,
    PHASES,
    SpawnedServer,
    _limited,
    add_common_arguments,
    median_run,
    run_lab,
    summarize,
)

from dynamips_mgr.dynamips.hypervisor.connection import Connection

HANDSHAKE = ("hypervisor version", "hypervisor working_dir")
STOP = "hypervisor stop"
NIO_NAME = re.compile(r"\budp-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
Templates = dict[str, dict[str, list[str]]]  # role -> phase -> command lines


# -- 1. record ---------------------------------------------------------------------------------
def _fake_wrapper(root: Path) -> tuple[Path, Path]:
    records = root / "records"
    records.mkdir(parents=True)
    wrapper = root / "dynamips"
    wrapper.write_text(
        f"#!/bin/sh\nexec {sys.executable} -m dynamips_mgr.testing.fake_hypervisor "
        f'--record-dir {records} "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return wrapper, records


async def record() -> Templates:
    """Run a 1-router, 1-switch, 1-link lab against the fake and template what it received."""
    root = Path(tempfile.mkdtemp(prefix="dynamips_mgr_floor_"))
    try:
        wrapper, records = _fake_wrapper(root)
        marks: dict[str, dict[str, int]] = {}

        async def snapshot(phase: str, ids: dict[str, Any]) -> None:
            marks[phase] = {p.name: len(p.read_text().splitlines()) for p in records.glob("*.log")}

        async with SpawnedServer(str(wrapper)) as server:
            replies: dict[str, Any] = {}
            result = await run_lab(server.url, 1, 1, 1, on_phase=snapshot, keep=replies)
            workdir = str(
                server.root / "projects" / replies["project"] / "project-files" / "dynamips"
            )
        files = {p.name: p.read_text().splitlines() for p in records.glob("*.log")}
        return _templates(files, marks, replies, workdir, result)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _templates(
    files: dict[str, list[str]],
    marks: dict[str, dict[str, int]],
    replies: dict[str, Any],
    workdir: str,
    result: dict[str, Any],
) -> Templates:
    router, switch = replies["router"], replies["switch"]
    router_nio, switch_nio = replies["router_nio"], replies["switch_nio"]
    tokens = {
        f'"{router["name"]}"': '"{name}"',
        f'"{switch["name"]}"': '"{name}"',
        str(router["console"]): "{console}",
        str(router_nio["lport"]): "{a}",
        str(switch_nio["lport"]): "{b}",
    }
    templates: Templates = {}
    for name, lines in files.items():
        role = "router" if any(line.startswith("vm create") for line in lines) else "switch"
        if role in templates:
            raise RuntimeError(f"two hypervisors recorded for the {role}: {sorted(files)}")
        per_phase: dict[str, list[str]] = {}
        start = 0
        for phase in PHASES:
            end = marks[phase].get(name, 0) if phase != PHASES[-1] else len(lines)
            per_phase[phase] = [
                _template(line, tokens, workdir, router["dynamips_id"])
                for line in lines[start:end]
                if not line.startswith((*HANDSHAKE, STOP))
            ]
            start = max(start, end)
        if not any(line.startswith(STOP) for line in lines):
            raise RuntimeError(f"the {role}'s hypervisor was never stopped")
        templates[role] = per_phase
    if set(templates) != {"router", "switch"}:
        raise RuntimeError(f"expected a router and a switch hypervisor, got {sorted(files)}")
    return templates


def _template(line: str, tokens: dict[str, str], workdir: str, dynamips_id: int) -> str:
    line = line.replace("{", "{{").replace("}", "}}")
    line = line.replace(f'"{workdir}', '"{workdir}')
    line = NIO_NAME.sub("{nio}", line)
    line = re.sub(rf"\bi{dynamips_id}_", "i{dyn}_", line)
    parts = re.findall(r'"[^"]*"|\S+', line)
    if line.startswith("vm create "):
        parts[3] = "{dyn}"
    if line.startswith("vm set_ios "):
        parts[3] = '"{image}"'
    return " ".join(tokens.get(part, part) for part in parts)


# -- 2. replay ---------------------------------------------------------------------------------
def _free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _free_udp_ports(count: int) -> list[int]:
    """Ports that bind now, from a random base so that parallel runs rarely meet."""
    ports: list[int] = []
    port = 40000 + random.randrange(100) * 200
    while len(ports) < count:
        with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("0.0.0.0", port))
            ports.append(port)
        port += 1
    return ports


class Dynamips:
    """One dynamips hypervisor process: spawn, connections, stop."""

    def __init__(self, executable: str, workdir: Path, index: int, cwd: Path | None = None) -> None:
        self.executable, self.workdir, self.index = executable, workdir, index
        self.cwd = cwd or workdir  # where dynamips finds (or builds) its ILT cache files
        self.process: asyncio.subprocess.Process | None = None
        self.port = 0
        self.connections: list[Connection] = []

    async def spawn(self) -> Connection:
        """Start, connect, ``hypervisor version`` and ``working_dir``: what the server does."""
        self.port = _free_tcp_port()
        self.process = await asyncio.create_subprocess_exec(
            self.executable,
            "-N1",
            "-l",
            str(self.workdir / f"dynamips_i{self.index}_log.txt"),
            "-H",
            f"127.0.0.1:{self.port}",
            cwd=self.cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        connection = await self.connect()
        await send(connection, "hypervisor version")
        await send(connection, f'hypervisor working_dir "{self.workdir}"')
        return connection

    async def connect(self) -> Connection:
        connection = await Connection.open(
            "127.0.0.1", self.port, deadline=time.monotonic() + 10, command_timeout=30
        )
        self.connections.append(connection)
        return connection

    async def stop(self, *, wake: bool = True) -> None:
        """``hypervisor stop`` and wait for the exit. dynamips exits when its accept loop sees
        the stop flag: at its next 500 ms select timeout, or at once when a connection arrives
        (``wake``: connect and hang up until it is gone, as the server does)."""
        if self.process is None:
            return
        await send(self.connections[0], STOP)
        for connection in self.connections:
            await connection.close()
        try:
            delay, deadline = 0.005, time.monotonic() + 10
            while self.process.returncode is None and time.monotonic() < deadline:
                if wake:
                    with contextlib.suppress(OSError):
                        _reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                        writer.close()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.process.wait(), delay if wake else 10)
                delay = min(delay * 2, 0.1)
        finally:
            await self.kill()

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()


async def send(connection: Connection, line: str) -> None:
    reply = await connection.exchange(line)
    if not reply.ok:
        raise RuntimeError(f"dynamips refused '{line}': {reply.code} {reply.text}")


class Replay:
    """Replays the lab with the recorded templates; times units with the lab's names."""

    def __init__(
        self,
        templates: Templates,
        executable: str,
        routers: int,
        switches: int,
        concurrency: int,
        *,
        per_node: bool,
        workdir: Path,
        ilt: Path | None = None,
    ) -> None:
        self.templates, self.executable = templates, executable
        self.routers, self.switches, self.concurrency = routers, switches, concurrency
        self.per_node = per_node
        self.workdir = workdir
        self.ilt = ilt
        self.timings: dict[str, list[float]] = defaultdict(list)
        self.processes: list[Dynamips] = []
        udp = _free_udp_ports(2 * routers)
        self.values: dict[str, dict[str, Any]] = {}
        for i in range(routers):
            self.values[f"r{i}"] = {
                "name": f"R{i + 1}",
                "dyn": i + 1,
                "console": 5000 + i,
                "a": udp[2 * i],
                "b": udp[2 * i + 1],
                "nio": f"udp-{uuid.uuid4()}",
                "workdir": str(workdir),
                "image": str(workdir / "c7200.image"),
            }
        for j in range(switches):
            self.values[f"s{j}"] = {"name": f"SW{j + 1}", "workdir": str(workdir)}
        self.connection_of: dict[str, Connection] = {}
        self.process_of: dict[str, Dynamips] = {}
        self.pool: asyncio.Queue[Connection] = asyncio.Queue()

    def _lines(self, node: str, phase: str, link: int | None = None) -> list[str]:
        role = "router" if node[0] == "r" else "switch"
        values = dict(self.values[node])
        if link is not None:  # a switch port carries the router's link: its ports, its NIO
            router = self.values[f"r{link}"]
            values.update(a=router["a"], b=router["b"], nio=f"{router['nio']}-sw")
        return [line.format(**values) for line in self.templates[role][phase]]

    async def _send_all(self, node: str, lines: list[str]) -> None:
        if self.per_node:
            for line in lines:
                await send(self.connection_of[node], line)
            return
        connection = await self.pool.get()
        try:
            for line in lines:
                await send(connection, line)
        finally:
            self.pool.put_nowait(connection)

    async def _run(self, node: str, phase: str, op: str, link: int | None = None) -> None:
        started = time.perf_counter()
        await self._send_all(node, self._lines(node, phase, link))
        self.timings[op].append(time.perf_counter() - started)

    async def _create(self, node: str, op: str) -> None:
        started = time.perf_counter()
        if self.per_node:
            process = Dynamips(self.executable, self.workdir, len(self.processes) + 1, self.ilt)
            self.processes.append(process)
            self.process_of[node] = process
            self.connection_of[node] = await process.spawn()
        await self._send_all(node, self._lines(node, "build"))
        self.timings[op].append(time.perf_counter() - started)

    async def _delete(self, node: str, op: str) -> None:
        started = time.perf_counter()
        await self._run(node, "delete", op + "_commands")
        if self.per_node:
            await self.process_of[node].stop()
        self.timings[op].append(time.perf_counter() - started)

    async def run(self) -> dict[str, Any]:
        (self.workdir / "c7200.image").write_bytes(ELF_STUB)
        routers = [f"r{i}" for i in range(self.routers)]
        switches = [f"s{j}" for j in range(self.switches)]
        phases: dict[str, float] = {}

        async def phase(name: str, jobs: list[Callable[[], Awaitable[Any]]]) -> None:
            started = time.perf_counter()
            await _limited(self.concurrency, jobs)
            phases[name] = round(time.perf_counter() - started, 4)

        def pair(i: int, stage: str, router_op: str, switch_op: str) -> Callable:
            switch = switches[i % len(switches)]

            async def both() -> None:
                await asyncio.gather(
                    self._run(routers[i], stage, router_op),
                    self._run(switch, stage, switch_op, link=i),
                )

            return both

        total_start = time.perf_counter()
        try:
            started = time.perf_counter()
            if not self.per_node:
                shared = Dynamips(self.executable, self.workdir, 1, self.ilt)
                self.processes.append(shared)
                self.pool.put_nowait(await shared.spawn())
                for _ in range(2 * self.concurrency - 1):
                    connection = await shared.connect()
                    # one at a time: dynamips listens with a backlog of 5, and a dropped SYN
                    # costs a 1 s retransmission
                    await send(connection, "hypervisor version")
                    self.pool.put_nowait(connection)
            phases["project"] = round(time.perf_counter() - started, 4)
            jobs = [lambda n=n: self._create(n, "create_router") for n in routers]
            jobs += [lambda n=n: self._create(n, "create_switch") for n in switches]
            await phase("build", jobs)
            await phase(
                "link",
                [pair(i, "link", "add_router_nio", "add_switch_nio") for i in range(self.routers)],
            )
            await phase(
                "unlink",
                [
                    pair(i, "unlink", "remove_router_nio", "remove_switch_nio")
                    for i in range(self.routers)
                ],
            )
            jobs = [lambda n=n: self._delete(n, "delete_router") for n in routers]
            jobs += [lambda n=n: self._delete(n, "delete_switch") for n in switches]
            await phase("delete", jobs)
            started = time.perf_counter()
            if not self.per_node:
                await self.processes[0].stop()
            phases["close"] = round(time.perf_counter() - started, 4)
        finally:
            for process in self.processes:
                await process.kill()
        return {
            "total_s": round(time.perf_counter() - total_start, 4),
            "phases_s": phases,
            "operations": {op: summarize(v) for op, v in self.timings.items()},
        }


async def spawn_and_stop(
    executable: str, workdir: Path, ilt: Path, samples: int
) -> dict[str, float]:
    """Medians of spawn + connect + version + working_dir (warm ILT cache), and of
    ``hypervisor stop`` until the exit, woken and not; plus the first spawn in a fresh
    folder (dynamips builds its instruction lookup tables there first)."""
    times: dict[str, list[float]] = defaultdict(list)
    started = time.perf_counter()
    cold = Dynamips(executable, workdir, 999, ilt)
    try:
        await cold.spawn()
        cold_ms = round((time.perf_counter() - started) * 1000, 2)
        await cold.stop()
    finally:
        await cold.kill()
    for index in range(2 * samples):
        wake = index % 2 == 0
        process = Dynamips(executable, workdir, 1000 + index, ilt)
        try:
            started = time.perf_counter()
            await process.spawn()
            times["spawn"].append(time.perf_counter() - started)
            started = time.perf_counter()
            await process.stop(wake=wake)
            times["stop_woken" if wake else "stop"].append(time.perf_counter() - started)
        finally:
            await process.kill()
    return {
        "spawn_connect_cold_ms": cold_ms,
        "spawn_connect_ms": summarize(times["spawn"])["p50_ms"],
        "hypervisor_stop_ms": summarize(times["stop"])["p50_ms"],
        "hypervisor_stop_woken_ms": summarize(times["stop_woken"])["p50_ms"],
    }


async def run_floor(
    executable: str,
    routers: int,
    switches: int,
    concurrency: int,
    *,
    samples: int = 5,
    repeat: int = 1,
) -> dict[str, Any]:
    templates = await record()
    result: dict[str, Any] = {
        "routers": routers,
        "switches": switches,
        "concurrency": concurrency,
        "commands": templates,
    }
    root = Path(tempfile.mkdtemp(prefix="dynamips_mgr_floor_"))
    try:
        ilt = root / "ilt"
        ilt.mkdir()
        result.update(await spawn_and_stop(executable, root, ilt, samples))  # warms the ILT
        for mode, per_node in (("per_node", True), ("one_process", False)):
            runs = []
            for attempt in range(repeat):
                workdir = root / f"{mode}{attempt}"
                workdir.mkdir()
                replay = Replay(
                    templates,
                    executable,
                    routers,
                    switches,
                    concurrency,
                    per_node=per_node,
                    workdir=workdir,
                    ilt=ilt,
                )
                runs.append(await replay.run())
            result[mode] = median_run(runs)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return result


def format_report(result: dict[str, Any]) -> str:
    lines = [
        f"floor: {result['routers']} routers, {result['switches']} switches, "
        f"concurrency {result['concurrency']}",
        f"spawn+connect {result['spawn_connect_ms']} ms "
        f"(first in a fresh folder: {result['spawn_connect_cold_ms']} ms), "
        f"hypervisor stop {result['hypervisor_stop_ms']} ms, woken "
        f"{result['hypervisor_stop_woken_ms']} ms (medians)",
    ]
    for mode in ("per_node", "one_process"):
        data = result[mode]
        lines.append(
            f"{mode}: total {data['total_s']:.3f} s; "
            + ", ".join(f"{k} {v:.3f} s" for k, v in data["phases_s"].items())
        )
        for op, stats in data["operations"].items():
            lines.append(
                f"  {op:<26}{stats['count']:>6}{stats['p50_ms']:>9.2f}{stats['p95_ms']:>9.2f}"
                f"{stats['max_ms']:>9.2f}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser)
    parser.add_argument("--samples", type=int, default=5, help="spawn/stop samples")
    parser.add_argument("--show-commands", action="store_true", help="print the templates")
    args = parser.parse_args(argv)
    result = asyncio.run(
        run_floor(
            args.dynamips,
            args.routers,
            args.switches,
            args.concurrency,
            samples=args.samples,
            repeat=args.repeat,
        )
    )
    if args.json:
        print(json.dumps(result))
        return
    if args.show_commands:
        for role, phases in result["commands"].items():
            for phase, lines in phases.items():
                for line in lines:
                    print(f"{role:<7}{phase:<8}{line}")
    print(format_report(result))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
