"""Issue 10: the bench scripts work (tiny runs; the figures themselves are in bench/README.md).

Each script runs as a user runs it, with its own server (``--spawn``) and the real dynamips
when installed (else the fake hypervisor executable). ``TMPDIR`` points into the test's folder,
so every file the scripts make is there and any process they left behind would name it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.conftest import REAL_DYNAMIPS, FakeDynamips, needs_dynamips

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def executable(tmp_path: Path) -> str:
    return REAL_DYNAMIPS or str(FakeDynamips(tmp_path / "fake").path)


def run(script: str, tmp_path: Path, args: str, executable: str) -> dict:
    scratch = tmp_path / "tmp"
    scratch.mkdir(exist_ok=True)
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args.split(), "--dynamips", executable, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TMPDIR": str(scratch)},
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    leftovers = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if str(scratch) in " ".join(p.info["cmdline"] or [])
    ]
    assert leftovers == [], f"{script} left processes behind: {leftovers}"
    return json.loads(done.stdout)


def test_lab_builds_links_and_tears_down(tmp_path, executable):
    result = run("lab.py", tmp_path, "--spawn --routers 2 --switches 1 --concurrency 2", executable)
    assert list(result["phases_s"]) == ["project", "build", "link", "unlink", "delete", "close"]
    ops = result["operations"]
    counts = {op: stats["count"] for op, stats in ops.items()}
    assert counts == {
        "version": 1,
        "create_project": 1,
        "create_router": 2,
        "create_switch": 1,
        "allocate_udp": 4,
        "add_router_nio": 2,
        "add_switch_nio": 2,
        "remove_router_nio": 2,
        "remove_switch_nio": 2,
        "delete_router": 2,
        "delete_switch": 1,
        "close_project": 1,
    }
    assert 0 < ops["create_router"]["p50_ms"] <= ops["create_router"]["max_ms"]
    memory = result["memory_after_link"]
    assert memory["children"] >= 3 and memory["server_rss_mib"] > 10
    assert result["total_s"] >= sum(result["phases_s"].values()) * 0.99


def test_floor_replays_what_the_server_sent(tmp_path, executable):
    result = run("floor.py", tmp_path, "--routers 2 --switches 1 --samples 1", executable)
    router = result["commands"]["router"]
    assert router["build"][0] == 'vm create "{name}" {dyn} c7200'
    assert "nio create_udp {nio} {a} 127.0.0.1 {b}" in router["link"]
    assert result["commands"]["switch"]["build"] == ['ethsw create "{name}"']
    for mode in ("per_node", "one_process"):
        assert result[mode]["operations"]["create_router"]["count"] == 2
        assert result[mode]["operations"]["add_switch_nio"]["count"] == 2
    assert result["spawn_connect_ms"] > 0 and result["hypervisor_stop_ms"] > 0


def test_overhead_compares_each_route_with_its_command(tmp_path, executable):
    result = run("overhead.py", tmp_path, "--spawn --requests 10", executable)
    assert set(result["one_command"]) == {"nio_stats", "rename_switch", "suspend_stopped_router"}
    for row in result["one_command"].values():
        assert row["server_p50_ms"] > row["floor_p50_ms"] > 0
    assert set(result["no_command"]) == {"version", "show_router", "allocate_udp"}


async def test_router_leaving_a_shared_process_takes_its_nios(api):
    """``[Dynamips] nodes_per_hypervisor`` (issue 10): a router deleted from a process that
    lives on deletes its NIOs there too (their UDP sockets), as devices do."""
    api.state.dynamips.config.values[("Dynamips", "nodes_per_hypervisor")] = 2
    pid = await api.project()
    r1, r2 = await api.router(pid, name="R1"), await api.router(pid, name="R2")
    routers = api.state.dynamips.routers
    shared = routers[r1["vm_id"]].hypervisor
    assert routers[r2["vm_id"]].hypervisor is shared
    lport, rport = await api.udp_port(pid), await api.udp_port(pid)
    vm = f"/projects/{pid}/dynamips/vms/{r1['vm_id']}"
    nio = {"type": "nio_udp", "lport": lport, "rhost": "127.0.0.1", "rport": rport}
    reply = await api.post(f"{vm}/adapters/0/ports/0/nio", nio)
    assert reply.status == 201, reply.body
    nio = routers[r1["vm_id"]].nios[(0, 0)].name
    before = len(api.fake.commands(shared.port))

    assert (await api.delete(vm)).status == 204
    assert api.fake.commands(shared.port)[before:][-2:] == ['vm delete "R1"', f"nio delete {nio}"]
    survivor = routers[r2["vm_id"]]
    assert shared.alive and survivor.hypervisor is shared
    assert await survivor.send("nio list") == []
    assert await survivor.send("vm list") == ["R2 (c7200)"]
    assert not api.state.ports.in_use("udp", lport)


async def test_nodes_created_together_share_a_process_once_it_is_ready(api):
    """``nodes_per_hypervisor`` > 1 with concurrent creates (issue 10): a node joining a shared
    process that is still starting waits for it, instead of failing "Not connected"."""
    api.state.dynamips.config.values[("Dynamips", "nodes_per_hypervisor")] = 3
    pid = await api.project()
    created = await asyncio.gather(
        api.router(pid, name="R1"), api.router(pid, name="R2"), api.device(pid, name="SW1")
    )
    dynamips = api.state.dynamips
    nodes = [
        dynamips.routers.get(c.get("vm_id")) or dynamips.devices[c["device_id"]] for c in created
    ]
    assert len({node.hypervisor for node in nodes}) == 1
    assert sorted(await nodes[0].send("vm list")) == ["R1 (c7200)", "R2 (c7200)"]


@needs_dynamips
async def test_dynamips_tables_are_built_once_outside_the_projects(real_api, tmp_path, monkeypatch):
    """dynamips builds its instruction tables (``ilt_*``, ~0.3 s of CPU) in the folder it
    starts in: the server starts it in a cache folder, so that happens once, not once per
    project (issue 10), and the project folder never sees them."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    api = real_api
    first = await api.project(name="one")
    await asyncio.gather(api.router(first, name="R1"), api.router(first, name="R2"))
    tables = sorted((cache / "dynamips_mgr").glob("ilt_*"))
    assert len(tables) == 4
    built = {table: table.stat().st_mtime_ns for table in tables}
    second = await api.project(name="two")
    await api.router(second, name="R1")
    assert {table: table.stat().st_mtime_ns for table in tables} == built
    for project_id in (first, second):
        module_dir = api.state.projects.get(project_id).module_dir
        assert list(module_dir.glob("ilt_*")) == []
