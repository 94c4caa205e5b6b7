"""Version, interfaces, config reload, shutdown and the capture file stream."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import netifaces
from aiohttp import web

from ... import API_VERSION, __version__
from ...errors import Conflict, Forbidden, NotFound
from ...projects import Project
from ..routing import ApiRequest, route


@route("GET", "/version", summary="Server version", output="version.output")
async def get_version(req: ApiRequest):
    return {
        "version": API_VERSION,
        "local": req.state.config.server("local"),
        "server": f"dynamips_mgr {__version__}",
    }


@route(
    "POST",
    "/version",
    summary="Check the client version",
    input="version.input",
    output="version.output",
    errors=(400, 409),
)
async def check_version(req: ApiRequest):
    if req.body["version"] != API_VERSION:
        raise Conflict(
            f"Client version {req.body['version']} differs with server version {API_VERSION}"
        )
    return {"version": API_VERSION}


def _interfaces() -> list[dict[str, str]]:
    result = []
    for name in sorted(netifaces.interfaces()):
        addresses = netifaces.ifaddresses(name)
        ipv4 = [a.get("addr", "") for a in addresses.get(netifaces.AF_INET, [])]
        links = [a.get("addr", "") for a in addresses.get(netifaces.AF_LINK, [])]
        result.append(
            {
                "id": name,
                "name": name,
                "ip_address": ipv4[-1] if ipv4 else "",
                "mac_address": links[0] if links else "",
            }
        )
    return result


@route("GET", "/interfaces", summary="Host network interfaces", output="server.interfaces")
async def list_interfaces(req: ApiRequest):
    return await asyncio.to_thread(_interfaces)


def _local_only(req: ApiRequest, message: str) -> None:
    if not req.state.config.server("local"):
        raise Forbidden(message)


@route(
    "POST",
    "/config/reload",
    summary="Re-read the configuration file (local only)",
    status=201,
    errors=(403, 409),
)
async def reload_config(req: ApiRequest):
    _local_only(req, "You can only reload the configuration for a local server")
    try:
        await asyncio.to_thread(req.state.config.reload)
    except Exception as err:  # a broken file must not kill the running server
        raise Conflict(str(err)) from None


@route(
    "POST",
    "/server/shutdown",
    summary="Close every project and stop (local only)",
    status=201,
    errors=(403,),
)
async def shutdown(req: ApiRequest):
    _local_only(req, "You can only stop a local server")
    await req.state.projects.close_all()
    req.state.shutdown.set()


def _confined_capture(req: ApiRequest, location: str) -> tuple[Project, Path]:
    if not location.endswith(".pcap"):
        raise Forbidden("Only .pcap file are allowed")
    try:
        path = Path(os.path.realpath(location))
    except (OSError, ValueError):  # NUL byte, name too long...
        raise Forbidden(f"The location {location} is not allowed") from None
    for project in req.state.projects.projects.values():
        if path.is_relative_to(project.path.resolve()):
            return project, path
    raise Forbidden("Only capture files of an open project can be streamed")


@route(
    "GET",
    "/files/stream",
    summary="Follow a capture file",
    input="server.file_stream",
    stream=True,
    errors=(403, 404),
)
async def stream_file(req: ApiRequest):
    project, path = _confined_capture(req, req.body["location"])
    try:
        handle = await asyncio.to_thread(open, path, "rb")
    except FileNotFoundError:
        raise NotFound("404: Not Found") from None
    except OSError as err:
        raise Conflict(str(err)) from None
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.enable_chunked_encoding()
    await response.prepare(req.request)
    with handle, contextlib.suppress(ConnectionError):
        transport = req.request.transport
        while not project.closed and transport is not None and not transport.is_closing():
            data = await asyncio.to_thread(handle.read, 65536)
            if data:
                await response.write(data)
            else:
                await asyncio.sleep(0.1)  # tail-follow the capture file
    return response
