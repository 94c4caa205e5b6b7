"""Dynamips router (VM) routes and the IOS image list/upload."""

from __future__ import annotations

import asyncio

from aiohttp import web

from ...dynamips.idlepc import auto_idlepc
from ...dynamips.router import Router
from ..routing import ApiRequest, route
from .node_ports import register_port_routes

VMS = "/projects/{project_id}/dynamips/vms"
VM = VMS + "/{vm_id}"
PORT = VM + "/adapters/{adapter_number:\\d+}/ports/{port_number:\\d+}"
ID_ERRORS = (400, 404, 409)


def _router(req: ApiRequest, *, check_project: bool = True) -> Router:
    params = req.params
    return req.state.dynamips.get_router(
        params["project_id"], params["vm_id"], check_project=check_project
    )


async def _json(router: Router) -> dict:
    await router.manager.images.md5(router.image)  # hashed in a thread, cached
    return router.json()


def _port(req: ApiRequest) -> tuple[int, int]:
    return int(req.params["adapter_number"]), int(req.params["port_number"])


@route("GET", "/dynamips/vms", summary="List IOS images", output="vm.images", errors=(409,))
async def list_images(req: ApiRequest):
    return await asyncio.to_thread(req.state.dynamips.images.list)


@route(
    "POST",
    "/dynamips/vms/{path}",
    summary="Upload an IOS image",
    raw=True,
    status=204,
    errors=(403, 409),
)
async def upload_image(req: ApiRequest):
    await req.state.dynamips.images.upload(
        req.params["path"], req.request.content.iter_chunked(65536)
    )


@route(
    "POST",
    VMS,
    summary="Create a router",
    input="vm.create",
    output="vm.object",
    status=201,
    errors=ID_ERRORS,
)
async def create_vm(req: ApiRequest):
    project = req.state.projects.get(req.params["project_id"])
    router = await req.state.dynamips.create_router(project, req.body)
    return await _json(router)


@route("GET", VM, summary="Show a router", output="vm.object", errors=ID_ERRORS)
async def show_vm(req: ApiRequest):
    return await _json(_router(req))


@route(
    "PUT", VM, summary="Update a router", input="vm.update", output="vm.object", errors=ID_ERRORS
)
async def update_vm(req: ApiRequest):
    router = _router(req)
    await router.apply(req.body)
    return await _json(router)


@route("DELETE", VM, summary="Delete a router", status=204, errors=ID_ERRORS)
async def delete_vm(req: ApiRequest):
    await req.state.dynamips.delete_router(_router(req, check_project=False))


def _lifecycle(action: str, summary: str) -> None:
    async def handler(req: ApiRequest):
        await getattr(_router(req), action)()

    handler.__name__ = f"{action}_vm"
    route("POST", f"{VM}/{action}", summary=summary, status=204, errors=ID_ERRORS)(handler)


for _action, _summary in (
    ("start", "Start a router"),
    ("stop", "Stop a router (saves configs)"),
    ("suspend", "Suspend a router"),
    ("resume", "Resume a router"),
    ("reload", "Stop then start a router"),
):
    _lifecycle(_action, _summary)


@route(
    "POST",
    PORT + "/nio",
    summary="Connect a router port",
    input="nio.input",
    output="nio.object",
    status=201,
    errors=ID_ERRORS,
)
async def add_vm_nio(req: ApiRequest):
    nio = await _router(req).add_nio(*_port(req), req.body)
    return nio.json()


register_port_routes(PORT, lambda req: (_router(req), _port(req)), "router")


@route(
    "GET",
    VM + "/configs",
    summary="Startup and private configs",
    output="vm.configs",
    errors=ID_ERRORS,
)
async def get_configs(req: ApiRequest):
    return await _router(req).get_configs()


@route("POST", VM + "/configs/save", summary="Save NVRAM configs to the files", errors=ID_ERRORS)
async def save_configs(req: ApiRequest):
    await _router(req).save_configs()
    return web.Response(status=200)


@route(
    "GET",
    VM + "/idlepc_proposals",
    summary="Idle-PC candidates of a running router",
    output="vm.idlepc_proposals",
    errors=ID_ERRORS,
)
async def idlepc_proposals(req: ApiRequest):
    return await _router(req).idlepc_proposals()


@route(
    "GET",
    VM + "/auto_idlepc",
    summary="Find a working idle-PC",
    output="vm.auto_idlepc",
    errors=ID_ERRORS,
)
async def get_auto_idlepc(req: ApiRequest):
    return {"idlepc": await auto_idlepc(_router(req))}
