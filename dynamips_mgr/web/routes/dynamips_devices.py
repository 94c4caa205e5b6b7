"""Dynamips device routes: Ethernet switch/hub, ATM and Frame Relay switches."""

from __future__ import annotations

from ...dynamips.devices import Device, EthernetSwitch
from ...errors import BadRequest
from ..routing import ApiRequest, route
from .node_ports import register_port_routes

DEVICES = "/projects/{project_id}/dynamips/devices"
DEVICE = DEVICES + "/{device_id}"
PORT = DEVICE + "/ports/{port_number:\\d+}"
ID_ERRORS = (400, 404, 409)


def _device(req: ApiRequest, *, check_project: bool = True) -> Device:
    project_id = req.params["project_id"] if check_project else None
    return req.state.dynamips.get_device(project_id, req.params["device_id"])


@route(
    "POST",
    DEVICES,
    summary="Create a device",
    input="device.create",
    output="device.object",
    status=201,
    errors=ID_ERRORS,
)
async def create_device(req: ApiRequest):
    project = req.state.projects.get(req.params["project_id"])
    return (await req.state.dynamips.create_device(project, req.body)).json()


@route("GET", DEVICE, summary="Show a device", output="device.object", errors=ID_ERRORS)
async def show_device(req: ApiRequest):
    return _device(req).json()


@route(
    "PUT",
    DEVICE,
    summary="Rename a device or change switch ports",
    input="device.update",
    output="device.object",
    errors=ID_ERRORS,
)
async def update_device(req: ApiRequest):
    device = _device(req)
    ports = req.body.get("ports")
    if ports and not isinstance(device, EthernetSwitch):
        raise BadRequest(f"ports can only be set on an Ethernet switch, not {device.device_type}")
    if ports:
        device.check_ports(ports)  # refused before the rename, so nothing is half done
    if "name" in req.body and req.body["name"] != device.name:
        await device.rename(req.body["name"])
    if ports:
        await device.update_ports(ports)
    return device.json()


@route("DELETE", DEVICE, summary="Delete a device", status=204, errors=ID_ERRORS)
async def delete_device(req: ApiRequest):
    await req.state.dynamips.delete_device(_device(req, check_project=False))


@route(
    "POST",
    PORT + "/nio",
    summary="Connect a device port",
    input="device.nio",
    output="nio.object",
    status=201,
    errors=ID_ERRORS,
)
async def add_device_nio(req: ApiRequest):
    body = req.body
    nio = await _device(req).add_nio(
        int(req.params["port_number"]), body["nio"], body.get("port_settings"), body.get("mappings")
    )
    return nio.json()


register_port_routes(PORT, lambda req: (_device(req), int(req.params["port_number"])), "device")
