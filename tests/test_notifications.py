"""Issue 2 item 5: the project notification stream (api.md §5.9, gui-traffic.md §2.2)."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid

from dynamips_mgr.web.routes import projects as project_routes
from tests.conftest import Notifications, wait_for


async def next_line(response) -> dict:
    line = await asyncio.wait_for(response.content.readline(), 10)
    assert line.endswith(b"\n"), line
    return json.loads(line)


async def test_ping_right_away_then_events_as_json_lines_until_close(api, monkeypatch):
    monkeypatch.setattr(project_routes, "PING_INTERVAL", 0.3)
    pid = await api.project()
    response = await api.session.get(f"{api.base}/v1/projects/{pid}/notifications", data="{}")
    try:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        assert "Content-Length" not in response.headers
        first = await next_line(response)
        assert first["action"] == "ping"
        assert set(first["event"]) == {"cpu_usage_percent", "memory_usage_percent"}
        assert all(isinstance(v, float) and 0 <= v <= 100 for v in first["event"].values())

        api.state.projects.get(pid).emit("log.warning", {"message": "careful"})
        assert await next_line(response) == {
            "action": "log.warning",
            "event": {"message": "careful"},
        }
        assert (await next_line(response))["action"] == "ping"  # periodic ping when idle

        assert (await api.post(f"/projects/{pid}/close")).status == 204
        lines = [json.loads(line) for line in await asyncio.wait_for(_rest(response), 10)]
        assert lines[-1] == {"action": "project.closed", "event": {"project_id": pid}}
    finally:
        response.close()


async def _rest(response) -> list[bytes]:
    return [line async for line in response.content if line.strip()]


async def test_router_events_reach_the_stream(api):
    pid = await api.project()
    start, end = api.state.ports.ranges["tcp"]
    with socket.socket() as busy:  # a console port the router asks for but cannot have
        for port in range(start, end + 1):
            try:
                busy.bind(("127.0.0.1", port))
                break
            except OSError:
                continue
        busy.listen()
        async with Notifications(api, pid) as stream:
            router = await api.router(pid, console=port)
            warning = await stream.expect("log.warning")
            assert f"port {port}" in warning["message"] and "R1" in warning["message"]
            assert router["console"] != port
            reply = await api.post(f"/projects/{pid}/dynamips/vms/{router['vm_id']}/start")
            assert reply.status == 204, reply.body
            started = await stream.expect("vm.started", vm_id=router["vm_id"])
            assert started["name"] == "R1"
            reply = await api.post(f"/projects/{pid}/dynamips/vms/{router['vm_id']}/stop")
            assert reply.status == 204, reply.body
            await stream.expect("vm.stopped", vm_id=router["vm_id"])
            assert all("action" in event for event in stream.events)


async def test_a_stream_for_an_unknown_or_invalid_project(api):
    reply = await api.get(f"/projects/{uuid.uuid4()}/notifications")
    assert reply.status == 404
    assert reply.headers["Content-Type"] == "application/json"
    reply = await api.get("/projects/nope/notifications")
    assert reply.status == 400


async def test_a_client_that_goes_away_stops_counting_as_a_listener(api):
    pid = await api.project()
    project = api.state.projects.get(pid)
    async with Notifications(api, pid):
        async with Notifications(api, pid):
            assert len(project.listeners) == 2
        await wait_for(lambda: len(project.listeners) == 1, 3)
    await wait_for(lambda: not project.listeners, 3)
