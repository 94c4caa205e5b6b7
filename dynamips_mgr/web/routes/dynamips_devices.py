"""Dynamips device routes: Ethernet switch/hub, ATM and Frame Relay switches."""

from __future__ import annotations

from ...dynamips.devices import Device, EthernetSwitch
from ...errors import BadRequest
from ..routing import ApiRequest, route

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


@route("DELETE", PORT + "/nio", summary="Disconnect a device port", status=204, errors=ID_ERRORS)
async def remove_device_nio(req: ApiRequest):
    await _device(req).remove_nio(int(req.params["port_number"]))


@route(
    "PUT",
    PORT + "/nio/filters",
    summary="Set packet loss on a connected port (extension)",
    input="nio.filters",
    output="nio.object",
    errors=ID_ERRORS,
)
async def device_nio_filters(req: ApiRequest):
    device = _device(req)
    return (
        await device.update_nio_filters(int(req.params["port_number"]), req.body["filters"])
    ).json()


@route(
    "GET",
    PORT + "/nio/stats",
    summary="Packet counters of a connected port (extension)",
    output="nio.stats",
    errors=ID_ERRORS,
)
async def device_nio_stats(req: ApiRequest):
    return await _device(req).nio_stats(int(req.params["port_number"]))


@route(
    "POST",
    PORT + "/start_capture",
    summary="Capture a device port to a pcap file",
    input="nio.capture",
    output="nio.capture_result",
    errors=ID_ERRORS,
)
async def start_device_capture(req: ApiRequest):
    device = _device(req)
    link_type = req.body.get("data_link_type") or device.link_type
    path = await device.start_capture(
        int(req.params["port_number"]), req.body["capture_file_name"], link_type
    )
    return {"pcap_file_path": path}


@route("POST", PORT + "/stop_capture", summary="Stop a capture", status=204, errors=ID_ERRORS)
async def stop_device_capture(req: ApiRequest):
    await _device(req).stop_capture(int(req.params["port_number"]))
