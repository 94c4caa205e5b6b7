"""Issue 9: the OpenAPI document is valid, covers every served route, and the replies of a
walk through every operation (successes and errors) match what it declares."""

from __future__ import annotations

import asyncio
import json
import re

import jsonschema
from openapi_spec_validator import validate

from dynamips_mgr import API_VERSION
from dynamips_mgr.web.routes.openapi import document
from tests.conftest import Api, Reply, wait_for

PARAM = re.compile(r"{(\w+)(?::[^}]*)?}")


def operations(doc: dict) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}


class Contract:
    """Checks replies against the document; remembers which operations were seen."""

    def __init__(self, doc: dict) -> None:
        self.doc = doc
        self.seen: set[tuple[str, str]] = set()
        self.statuses: set[tuple[str, str, int]] = set()

    def schema_validator(self, schema: dict) -> jsonschema.Draft202012Validator:
        root = {**schema, "components": self.doc["components"]}
        return jsonschema.Draft202012Validator(root)

    def check(self, method: str, reply: Reply) -> Reply:
        template = reply.headers.get("X-Route")
        if template is None:  # no route matched: a framework 404/405, still a JSON error
            assert reply.status in (404, 405), reply.status
            self.check_error(reply)
            return reply
        path = PARAM.sub(lambda m: "{" + m.group(1) + "}", template)
        operation = self.doc["paths"][path][method.lower()]
        self.seen.add((method, path))
        self.statuses.add((method, path, reply.status))
        declared = operation["responses"].get(str(reply.status))
        assert declared is not None, f"{method} {path}: status {reply.status} is not declared"
        content = declared.get("content")
        if not content:
            assert reply.text == "", f"{method} {path}: body on a body-less reply"
            return reply
        media = reply.headers["Content-Type"].split(";")[0]
        assert media in content, f"{method} {path}: {media} not in {list(content)}"
        schema = content[media].get("schema")
        if schema is not None:
            self.schema_validator(schema).validate(reply.body)
        if reply.status >= 400:
            self.check_error(reply)
        return reply

    @staticmethod
    def check_error(reply: Reply) -> None:
        assert reply.headers["Content-Type"] == "application/json"
        assert reply.body["status"] == reply.status
        assert isinstance(reply.body["message"], str) and reply.body["message"]


class Walker:
    """``api`` calls whose replies all go through the contract check."""

    def __init__(self, api: Api, contract: Contract) -> None:
        self.api, self.contract = api, contract

    async def __call__(self, method: str, path: str, body=None, expect: int | None = None, **kw):
        reply = await self.api.request(method, path, body, **kw)
        if expect is not None:
            assert reply.status == expect, (method, path, reply.status, reply.body)
        return self.contract.check(method, reply)


async def test_document_is_valid_and_covers_every_served_route(api):
    reply = await api.get("/v1/openapi.json")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json"
    doc = reply.body
    assert doc == json.loads(json.dumps(document()))
    assert doc["openapi"].startswith("3.1")
    validate(doc)  # openapi-spec-validator (OpenAPI 3.1 + JSON Schema 2020-12)

    served = {
        (route.method, route.resource.canonical)
        for route in api.app.router.routes()
        if route.method != "HEAD"
    }
    assert served == operations(doc)
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    for path, ops in doc["paths"].items():
        for op in ops.values():
            declared = {p["name"] for p in op.get("parameters", ()) if p["in"] == "path"}
            assert declared == set(re.findall(r"{(\w+)}", path)), path
            for status, response in op["responses"].items():
                if int(status) >= 400:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/server.error"}


async def test_docs_page_lists_every_operation_without_external_resources(api):
    reply = await api.get("/docs")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/html")
    for method, path in operations(document()):
        assert f"<td>{method}</td><td><code>{path}</code></td>" in reply.text
    assert "http://" not in reply.text and "https://" not in reply.text
    assert "<script" not in reply.text


async def test_every_reply_of_a_walk_through_every_operation_matches_the_document(api, tmp_path):
    """Successes and errors of every operation, with real objects of every kind."""
    doc = document()
    contract = Contract(doc)
    call = Walker(api, contract)
    api.state.config.values[("Dynamips", "idlepc_measure_seconds")] = 0.05

    # server-level routes
    await call("GET", "/version", expect=200)
    await call("POST", "/version", {"version": API_VERSION}, expect=200)
    await call("POST", "/version", {"version": "0.1"}, expect=409)
    await call("POST", "/version", {}, expect=400)
    await call("GET", "/interfaces", expect=200)
    await call("GET", "/openapi.json", expect=200)
    await call("GET", "/docs", expect=200)
    await call("POST", "/config/reload", expect=201)
    await call("GET", "/dynamips/vms", expect=200)
    await call(
        "POST", "/dynamips/vms/up.image", raw=b"\x7fELF\x01\x02\x01" + b"\0" * 64, expect=204
    )
    await call("GET", "/files/stream", params={"location": "/etc/passwd"}, expect=403)
    await call("GET", "/files/stream", params={"location": "/nowhere/x.pcap"}, expect=403)

    # projects
    reply = await call("POST", "/projects", {"name": "walk", "temporary": False}, expect=201)
    pid = reply.body["project_id"]
    p = f"/projects/{pid}"
    await call("POST", "/projects", {"project_id": "zz"}, expect=400)
    await call("GET", "/projects", expect=200)
    await call("GET", p, expect=200)
    await call("PUT", p, {"name": "walk2"}, expect=200)
    await call("PUT", p, {"path": str(tmp_path / "nowhere")}, expect=409)
    await call("GET", "/projects/not-a-uuid", expect=400)
    await call("GET", "/projects/00000000-0000-4000-8000-000000000000", expect=404)

    # routers of every platform, each with what makes its object different
    bodies = {
        "c7200": {"slot1": "PA-FE-TX", "npe": "npe-400", "midplane": "vxr"},
        "c3725": {"slot1": "NM-1FE-TX", "wic0": "WIC-1T"},
        "c3745": {},
        "c2691": {"wic1": "WIC-2T"},
        "c3600": {"chassis": "3660", "slot1": "NM-4E"},
        "c2600": {"chassis": "2621XM", "wic0": "WIC-1T"},
        "c1700": {"chassis": "1751"},
    }
    routers = {}
    for index, (platform, extra) in enumerate(bodies.items()):
        body = {"name": f"R{index}", "platform": platform, "image": f"{platform}.image"}
        body |= {"ram": 128, "startup_config_content": "hostname %h\n", **extra}
        reply = await call("POST", f"{p}/dynamips/vms", body, expect=201)
        routers[platform] = f"{p}/dynamips/vms/{reply.body['vm_id']}"
    vm = routers["c7200"]
    await call("GET", vm, expect=200)
    await call("PUT", vm, {"ram": 256, "idlepc": "0x60606f54", "aux": None}, expect=400)
    await call("PUT", vm, {"ram": 256, "idlepc": "0x60606f54", "slot2": "PA-2FE-TX"}, expect=200)
    await call("PUT", vm, {"slot9": "PA-FE-TX"}, expect=400)
    await call(
        "POST",
        f"{p}/dynamips/vms",
        {"name": "X", "platform": "c9999", "image": "c7200.image", "ram": 1},
        expect=409,
    )
    await call("GET", f"{p}/dynamips/vms/not-a-uuid", expect=400)
    await call("GET", f"{p}/dynamips/vms/00000000-0000-4000-8000-000000000000", expect=404)
    await call("GET", f"{vm}/configs", expect=200)
    await call("POST", f"{vm}/configs/save", expect=200)

    # devices of every type
    devices = {}
    for kind in ("ethernet_switch", "ethernet_hub", "atm_switch", "frame_relay_switch"):
        reply = await call(
            "POST", f"{p}/dynamips/devices", {"name": kind[:6], "device_type": kind}, expect=201
        )
        devices[kind] = f"{p}/dynamips/devices/{reply.body['device_id']}"
    await call("POST", f"{p}/dynamips/devices", {"name": "x", "device_type": "nope"}, expect=409)
    await call("GET", f"{p}/dynamips/devices/not-a-uuid", expect=400)
    sw = devices["ethernet_switch"]
    await call("PUT", sw, {"name": "SWITCH"}, expect=200)

    # links: router 0/0 <-> switch port 1 (the switch reports its port 0..n settings)
    async def udp() -> int:
        return (await call("POST", f"{p}/ports/udp", expect=201)).body["udp_port"]

    a, b = await udp(), await udp()
    nio_a = {"type": "nio_udp", "lport": a, "rhost": "127.0.0.1", "rport": b}
    nio_b = {"type": "nio_udp", "lport": b, "rhost": "127.0.0.1", "rport": a}
    await call("POST", f"{vm}/adapters/0/ports/0/nio", nio_a, expect=201)
    await call("POST", f"{vm}/adapters/0/ports/0/nio", nio_a, expect=409)
    await call("POST", f"{vm}/adapters/0/ports/0/nio", {"type": "nio_udp"}, expect=400)
    await call("POST", f"{vm}/adapters/x/ports/0/nio", nio_a, expect=404)
    await call(
        "POST",
        f"{sw}/ports/0/nio",
        {"nio": nio_b, "port_settings": {"type": "qinq", "vlan": 20}},
        expect=201,
    )
    await call("PUT", sw, {"ports": [{"port": 0, "type": "dot1q", "vlan": 1}]}, expect=200)
    for kind, extra in (
        ("ethernet_hub", {}),
        ("atm_switch", {"mappings": {"1:0:100": "2:0:200"}}),
        ("frame_relay_switch", {"mappings": {"1:101": "2:102"}}),
    ):
        for port in (1, 2):
            nio = {"type": "nio_null"}
            await call(
                "POST", f"{devices[kind]}/ports/{port}/nio", {"nio": nio, **extra}, expect=201
            )
        await call("GET", devices[kind], expect=200)
    await call(
        "PUT",
        f"{vm}/adapters/0/ports/0/nio/filters",
        {"filters": {"frequency_drop": 5}},
        expect=200,
    )
    await call("PUT", f"{sw}/ports/0/nio/filters", {"filters": {}}, expect=200)
    await call("GET", f"{vm}/adapters/0/ports/0/nio/stats", expect=200)
    await call("GET", f"{sw}/ports/0/nio/stats", expect=200)
    await call("GET", f"{sw}/ports/5/nio/stats", expect=409)

    # captures, then the project's files
    await call(
        "POST",
        f"{vm}/adapters/0/ports/0/start_capture",
        {"capture_file_name": "../x.pcap"},
        expect=400,
    )
    reply = await call(
        "POST",
        f"{vm}/adapters/0/ports/0/start_capture",
        {"capture_file_name": "walk.pcap"},
        expect=200,
    )
    capture = reply.body["pcap_file_path"]
    await call(
        "POST",
        f"{sw}/ports/0/start_capture",
        {"capture_file_name": "sw.pcap", "data_link_type": "DLT_EN10MB"},
        expect=200,
    )
    async with api.session.get(
        api.base + "/v1/files/stream", params={"location": capture}
    ) as stream:
        assert stream.status == 200
        assert stream.headers["Content-Type"] == "application/octet-stream"
        with open(capture, "ab") as handle:  # the stream follows the file as it grows
            handle.write(b"walk")
        data = await asyncio.wait_for(stream.content.readexactly(4), 5)
        assert data in (b"walk", bytes.fromhex("d4c3b2a1"))
    contract.seen.add(("GET", "/v1/files/stream"))
    await call("POST", f"{vm}/adapters/0/ports/0/stop_capture", expect=204)
    await call("POST", f"{sw}/ports/0/stop_capture", expect=204)
    await call("POST", f"{sw}/ports/7/stop_capture", expect=409)
    await call("GET", f"{p}/files", expect=200)
    await call("POST", f"{p}/files/notes.txt", raw=b"hello", expect=200)
    reply = await call("GET", f"{p}/files/notes.txt", expect=200)
    assert reply.text == "hello"
    await call("GET", f"{p}/files/missing.txt", expect=404)
    await call("GET", f"{p}/files/..%2F..%2Fetc%2Fpasswd", expect=403)

    # notifications carry VM objects that match the document too
    events: list[dict] = []

    async def listen() -> None:
        async with api.session.get(api.base + f"/v1{p}/notifications") as stream:
            assert stream.headers["Content-Type"] == "application/json"
            async for line in stream.content:
                events.append(json.loads(line))

    listener = asyncio.create_task(listen())
    await wait_for(lambda: api.state.projects.projects[pid].listeners)
    contract.seen.add(("GET", "/v1/projects/{project_id}/notifications"))

    # lifecycle (the ELF-header test image "starts" in the fake), idle-PC
    await call("POST", f"{vm}/start", expect=204)
    await call("POST", f"{vm}/suspend", expect=204)
    await call("POST", f"{vm}/resume", expect=204)
    await call("PUT", vm, {"ram": 512}, expect=409)
    await call("GET", f"{vm}/idlepc_proposals", expect=200)
    await call("GET", f"{vm}/auto_idlepc", expect=200)
    await call("POST", f"{vm}/reload", expect=204)
    await call("GET", f"{vm}/configs", expect=200)
    await call("POST", f"{vm}/stop", expect=204)
    await call("GET", f"{vm}/idlepc_proposals", expect=409)
    started = [e for e in events if e["action"] in ("vm.started", "vm.stopped")]
    assert started, events
    validator = contract.schema_validator({"$ref": "#/components/schemas/vm.object"})
    for event in started:
        validator.validate(event["event"])

    # wrong method / unknown path: JSON errors too
    contract.check("PATCH", await api.request("PATCH", vm))
    contract.check("GET", await api.get("/v1/no/such/route"))

    # tear down: NIOs, nodes, commit, close
    await call("DELETE", f"{vm}/adapters/0/ports/0/nio", expect=204)
    await call("DELETE", f"{vm}/adapters/0/ports/0/nio", expect=409)
    await call("DELETE", f"{sw}/ports/0/nio", expect=204)
    for url in devices.values():
        await call("DELETE", url, expect=204)
    await call("DELETE", sw, expect=404)
    for url in routers.values():
        await call("DELETE", url, expect=204)
    await call("POST", f"{p}/commit", expect=204)
    await call("POST", f"{p}/close", expect=204)
    await listener
    await call("POST", f"{p}/close", expect=404)
    second = (await call("POST", "/projects", {"name": "other"}, expect=201)).body["project_id"]
    await call("DELETE", f"/projects/{second}", expect=204)
    await call("POST", "/server/shutdown", expect=201)

    assert operations(doc) - contract.seen == set()
    assert not api.state.dynamips.hypervisors.get(pid)
