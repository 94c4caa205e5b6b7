"""Port routes shared by routers and devices: disconnect, filters, stats, captures."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from ..routing import ApiRequest, route

Locate = Callable[[ApiRequest], tuple[Any, Hashable]]  # -> (node, port key)
ERRORS = (400, 404, 409)


def _positional(key: Hashable) -> tuple:
    """A router port key is (adapter, port); a device port key is the port number."""
    return key if isinstance(key, tuple) else (key,)


def register_port_routes(port_path: str, locate: Locate, kind: str) -> None:
    """Register the routes of ``port_path`` (a router adapter port or a device port)."""

    async def remove_nio(req: ApiRequest):
        node, key = locate(req)
        await node.remove_nio(*_positional(key))

    async def nio_filters(req: ApiRequest):
        node, key = locate(req)
        return (await node.update_nio_filters(key, req.body["filters"])).json()

    async def nio_stats(req: ApiRequest):
        node, key = locate(req)
        return await node.nio_stats(key)

    async def start_capture(req: ApiRequest):
        node, key = locate(req)
        link_type = node.port_link_type(key)  # also refuses a port the node lacks
        path = await node.start_capture(
            key, req.body["capture_file_name"], req.body.get("data_link_type") or link_type
        )
        return {"pcap_file_path": path}

    async def stop_capture(req: ApiRequest):
        node, key = locate(req)
        node.port_link_type(key)
        await node.stop_capture(key)

    table = (
        ("DELETE", "/nio", remove_nio, f"Disconnect a {kind} port", {"status": 204}),
        ("PUT", "/nio/filters", nio_filters,
         "Set packet loss on a connected port (extension)",
         {"input": "nio.filters", "output": "nio.object"}),
        ("GET", "/nio/stats", nio_stats, "Packet counters of a connected port (extension)",
         {"output": "nio.stats"}),
        ("POST", "/start_capture", start_capture, f"Capture a {kind} port to a pcap file",
         {"input": "nio.capture", "output": "nio.capture_result"}),
        ("POST", "/stop_capture", stop_capture, "Stop a capture", {"status": 204}),
    )  # fmt: skip
    for method, suffix, handler, summary, options in table:
        handler.__name__ = f"{kind}_{handler.__name__}"
        route(method, port_path + suffix, summary=summary, errors=ERRORS, **options)(handler)
