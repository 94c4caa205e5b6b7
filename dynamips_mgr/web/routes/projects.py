"""Project routes: lifecycle, notifications, confined file access, UDP ports."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import time

import psutil
from aiohttp import web

from ...errors import Conflict, Forbidden, NotFound
from ..errors import JSON_TYPE
from ..routing import ApiRequest, route

log = logging.getLogger(__name__)
P = "/projects/{project_id}"
PING_INTERVAL = 5.0
DISCONNECT_CHECK = 0.2


def _project(req: ApiRequest):
    return req.state.projects.get(req.params["project_id"])


@route("GET", "/projects", summary="List open projects", output="project.list")
async def list_projects(req: ApiRequest):
    return [p.json() for p in req.state.projects.projects.values()]


@route(
    "POST",
    "/projects",
    summary="Create (or return) a project",
    input="project.create",
    output="project.object",
    status=201,
    errors=(400, 403, 409),
)
async def create_project(req: ApiRequest):
    return (await req.state.projects.create(req.body)).json()


@route("GET", P, summary="Show a project", output="project.object", errors=(400, 404))
async def show_project(req: ApiRequest):
    return _project(req).json()


@route(
    "PUT",
    P,
    summary="Update a project",
    input="project.update",
    output="project.object",
    errors=(400, 403, 404, 409),
)
async def update_project(req: ApiRequest):
    return (await req.state.projects.update(_project(req), req.body)).json()


@route(
    "POST",
    P + "/commit",
    summary="Save configs, destroy deleted routers",
    status=204,
    errors=(400, 404),
)
async def commit_project(req: ApiRequest):
    await req.state.projects.commit(_project(req))


@route("POST", P + "/close", summary="Close a project", status=204, errors=(400, 404))
async def close_project(req: ApiRequest):
    project = _project(req)
    if len(project.listeners) > 1:
        log.warning(
            "project %s not closed: %d clients still listen to it",
            project.id,
            len(project.listeners),
        )
        return
    await req.state.projects.close(project)


@route(
    "DELETE", P, summary="Close a project and delete its folder", status=204, errors=(400, 404, 409)
)
async def delete_project(req: ApiRequest):
    await req.state.projects.close(_project(req), delete=True)


def _ping() -> dict:
    return {
        "action": "ping",
        "event": {
            "cpu_usage_percent": psutil.cpu_percent(interval=None),
            "memory_usage_percent": psutil.virtual_memory().percent,
        },
    }


@route(
    "GET",
    P + "/notifications",
    summary="Stream of project events (JSON lines)",
    stream=True,
    errors=(400, 404),
)
async def notifications(req: ApiRequest):
    project = _project(req)
    response = web.StreamResponse(headers={"Content-Type": JSON_TYPE})
    response.enable_chunked_encoding()
    await response.prepare(req.request)
    transport = req.request.transport
    async with project.listen() as queue:
        with contextlib.suppress(ConnectionError):
            await _write_line(response, _ping())
            last_write = time.monotonic()
            # wake up often enough to notice a client that went away: the number of listeners
            # decides whether a close really closes the project
            while transport is not None and not transport.is_closing():
                try:
                    message = await asyncio.wait_for(queue.get(), DISCONNECT_CHECK)
                except TimeoutError:
                    if req.state.projects.projects.get(project.id) is not project:
                        break  # closed before this stream started listening
                    if time.monotonic() - last_write < PING_INTERVAL:
                        continue
                    message = _ping()
                await _write_line(response, message)
                last_write = time.monotonic()
                if message.get("action") == "project.closed":
                    break
    return response


async def _write_line(response: web.StreamResponse, message: dict) -> None:
    await response.write((json.dumps(message, sort_keys=True) + "\n").encode())


def _file_list(root) -> list[dict[str, str]]:
    result = []
    for folder, _dirs, files in os.walk(root):
        for name in files:
            if name.endswith(".ghost"):
                continue
            path = os.path.join(folder, name)
            try:
                digest = hashlib.md5()
                with open(path, "rb") as handle:
                    for block in iter(lambda h=handle: h.read(1 << 20), b""):
                        digest.update(block)
            except OSError:
                continue
            result.append(
                {
                    "path": os.path.relpath(path, root).replace(os.sep, "/"),
                    "md5sum": digest.hexdigest(),
                }
            )
    return result


@route(
    "GET",
    P + "/files",
    summary="Files of a project with their MD5",
    errors=(400, 404),
    output="project.file_list",
)
async def list_files(req: ApiRequest):
    return await asyncio.to_thread(_file_list, _project(req).path)


@route(
    "GET",
    P + "/files/{path:.+}",
    summary="Read a project file",
    stream=True,
    errors=(400, 403, 404),
)
async def read_file(req: ApiRequest):
    path = _project(req).resolve(req.params["path"])
    try:
        handle = await asyncio.to_thread(open, path, "rb")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise NotFound("404: Not Found") from None
    except PermissionError:
        raise Forbidden("403: Forbidden") from None
    except OSError as err:
        raise Conflict(f"Could not read {req.params['path']}: {err}") from None
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.enable_chunked_encoding()
    await response.prepare(req.request)
    with handle:
        while data := await asyncio.to_thread(handle.read, 65536):
            await response.write(data)
    return response


@route(
    "POST", P + "/files/{path:.+}", summary="Write a project file", raw=True, errors=(400, 403, 404)
)
async def write_file(req: ApiRequest):
    path = _project(req).resolve(req.params["path"])
    if not os.path.isdir(path.parent):
        raise NotFound(f"Folder {path.parent.name} does not exist in the project")
    temporary = path.with_name(f".{path.name}.upload")
    try:
        handle = await asyncio.to_thread(open, temporary, "wb")
        with handle:
            async for chunk in req.request.content.iter_chunked(65536):
                await asyncio.to_thread(handle.write, chunk)
        os.replace(temporary, path)
    except PermissionError:
        raise Forbidden("403: Forbidden") from None
    except OSError as err:
        raise Conflict(f"Could not write {req.params['path']}: {err}") from None
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink()
    return web.Response(status=200)


@route(
    "POST",
    P + "/ports/udp",
    summary="Reserve a UDP port for a link",
    status=201,
    output="project.udp_port",
    errors=(400, 404, 409),
)
async def allocate_udp(req: ApiRequest):
    project = _project(req)
    port = req.state.ports.allocate("udp", project.id)
    return {"udp_port": port}
