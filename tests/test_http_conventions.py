"""Issue 2 item 4: the HTTP conventions of the GNS3 1.5 server (api.md §1-2)."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import uuid

import pytest

from tests.conftest import hypervisor_port, wait_for

ERROR_KEYS_400 = {"message", "status", "path", "request", "method"}
UNKNOWN = "0b9e1b64-1f1a-4a3b-8a53-0c6b4d1e2f3a"


def sorted_keys(text: str) -> bool:
    """True when every JSON object of ``text`` lists its keys in sorted order."""
    ok = True

    def check(pairs):
        nonlocal ok
        keys = [k for k, _ in pairs]
        ok = ok and keys == sorted(keys)
        return dict(pairs)

    json.loads(text, object_pairs_hook=check)
    return ok


@pytest.mark.parametrize(
    "raw",
    [b"{bad", b'{"name": "a",}', b"[1, 2]", b'"text"', b"\xff\xfe{}", b"[" * 100_000],
    ids=["syntax", "trailing-comma", "array", "string", "not-utf8", "deep-nesting"],
)
async def test_bad_json_is_400_with_the_five_key_shape(api, raw):
    reply = await api.post("/projects", raw=raw)
    assert reply.status == 400
    assert reply.headers["Content-Type"] == "application/json"
    assert set(reply.body) == ERROR_KEYS_400
    assert reply.body["status"] == 400
    assert reply.body["message"].startswith("Invalid JSON")
    assert reply.body["path"] == "/v1/projects"
    assert reply.body["method"] == "POST"
    assert reply.body["request"] == {"malformed_json": raw.decode("utf-8", "replace")}
    assert api.state.projects.projects == {}


async def test_the_400_path_is_the_route_template(api):
    pid = await api.project()
    reply = await api.put(f"/projects/{pid}", raw=b"{nope")
    assert reply.status == 400
    assert reply.body["path"] == "/v1/projects/{project_id}"
    assert reply.body["method"] == "PUT"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": 5}, "name"),
        ({"name": ""}, "name"),
        ({"temporary": "yes"}, "temporary"),
        ({"project_id": "not-a-uuid"}, "project_id"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_a_schema_failure_is_400_naming_the_field(api, body, field):
    reply = await api.post("/projects", body)
    assert reply.status == 400
    assert set(reply.body) == ERROR_KEYS_400
    assert reply.body["message"].startswith("Invalid JSON: ")
    assert field in reply.body["message"]
    assert reply.body["request"] == body
    assert api.state.projects.projects == {}


async def test_query_parameters_are_merged_into_the_body(api):
    reply = await api.post("/projects?foo=1", {"name": "x"})
    assert reply.status == 400
    assert "foo" in reply.body["message"]
    assert reply.body["request"] == {"name": "x", "foo": "1"}
    # a query value replaces the body's, and the first of repeated names wins
    reply = await api.post("/projects?name=first&name=second", {"name": "body"})
    assert reply.status == 201
    assert reply.body["name"] == "first"


async def test_every_json_reply_has_the_exact_content_type_and_sorted_indented_keys(api):
    pid = await api.project(temporary=True)
    replies = {
        200: await api.get("/version"),
        201: await api.post("/projects", {"name": "other"}),
        400: await api.post("/projects", {"name": 5}),
        403: await api.put(f"/projects/{pid}", {"name": "a/b"}),
        404: await api.get(f"/projects/{UNKNOWN}"),
        409: await api.post("/version", {"version": "1.4.0"}),
    }
    for status, reply in replies.items():
        assert reply.status == status
        assert reply.headers["Content-Type"] == "application/json", status
        assert sorted_keys(reply.text), reply.text
        assert reply.text.startswith('{\n    "'), reply.text  # 4-space indentation
    listing = await api.get("/projects")
    assert listing.headers["Content-Type"] == "application/json"
    assert sorted_keys(listing.text)


async def test_unknown_and_invalid_ids_use_the_original_wording(api):
    pid = await api.project()
    cases = [
        (f"/projects/{UNKNOWN}", 404, f"Project ID {UNKNOWN} doesn't exist"),
        ("/projects/nope", 400, "Project ID nope is not a valid UUID"),
        (f"/projects/{UNKNOWN}/dynamips/vms/nope", 404, f"Project ID {UNKNOWN} doesn't exist"),
        ("/projects/nope/dynamips/vms/nope", 400, "Project ID nope is not a valid UUID"),
        (f"/projects/{pid}/dynamips/vms/nope", 400, "VM ID nope is not a valid UUID"),
        (f"/projects/{pid}/dynamips/vms/{UNKNOWN}", 404, f"VM ID {UNKNOWN} doesn't exist"),
        # A1: the original answered 500 here (a broken message template)
        (f"/projects/{pid}/dynamips/devices/nope", 400, "Device ID nope is not a valid UUID"),
        (f"/projects/{pid}/dynamips/devices/{UNKNOWN}", 404, f"Device ID {UNKNOWN} doesn't exist"),
    ]
    for path, status, message in cases:
        reply = await api.get(path)
        assert (reply.status, reply.body["message"]) == (status, message), path
        assert reply.body["status"] == status
        assert set(reply.body) == (ERROR_KEYS_400 if status == 400 else {"message", "status"})
        assert reply.headers["Content-Type"] == "application/json"
    # the same checks on the other methods of a device route (A1 was on every device route)
    for method in ("PUT", "DELETE"):
        reply = await api.request(method, f"/projects/{pid}/dynamips/devices/nope", {})
        assert reply.status == 400, method


async def test_unknown_paths_and_methods_are_the_framework_404_and_405(api):
    assert (await api.get("/nothing-here")).status == 404
    reply = await api.request("PATCH", "/version")
    assert reply.status == 405
    reply = await api.request("DELETE", "/projects")
    assert reply.status == 405
    async with api.session.get(api.base + "/version") as reply:  # no route outside /v1
        assert reply.status == 404


async def test_headers_of_every_reply(api):
    server = f"Python/{sys.version_info[0]}.{sys.version_info[1]} GNS3/1.5.4"
    pid = await api.project()
    for path, route in (
        ("/version", "/v1/version"),
        (f"/projects/{pid}", "/v1/projects/{project_id}"),
        (f"/projects/{UNKNOWN}", "/v1/projects/{project_id}"),  # error replies too
        (f"/projects/{pid}/dynamips/vms/nope", "/v1/projects/{project_id}/dynamips/vms/{vm_id}"),
    ):
        reply = await api.get(path)
        assert reply.headers["X-Route"] == route
        assert reply.headers["Server"] == server
        assert reply.headers["Access-Control-Allow-Origin"] == "*"
    reply = await api.get("/nothing-here")
    assert reply.headers["Server"] == server
    assert reply.headers["Access-Control-Allow-Origin"] == "*"


async def test_requests_for_one_node_run_in_arrival_order_others_concurrently(api):
    pid = await api.project()
    router = await api.router(pid)
    other = await api.router(pid, name="R9")
    vm = f"/projects/{pid}/dynamips/vms/{router['vm_id']}"
    port = hypervisor_port(api, router["vm_id"])
    api.fake.inject(r"^vm rename", "delay", seconds=1.0, times=1)

    first = asyncio.ensure_future(api.put(vm, {"name": "R2"}))
    await wait_for(lambda: 'vm rename "R1" "R2"' in api.fake.commands(port))
    waiting = api.state.locks._users  # requests holding or queued for each node's lock
    second = asyncio.ensure_future(api.put(vm, {"name": "R3"}))
    await wait_for(lambda: waiting.get(router["vm_id"]) == 2)
    same_get = asyncio.ensure_future(api.get(vm))
    await wait_for(lambda: waiting.get(router["vm_id"]) == 3)
    # another router and the project answer while the first PUT is still waiting: no global lock
    elsewhere = await api.get(f"/projects/{pid}/dynamips/vms/{other['vm_id']}")
    project = await api.get(f"/projects/{pid}")
    assert (elsewhere.status, project.status) == (200, 200)
    assert not first.done() and not second.done() and not same_get.done()

    results = await asyncio.gather(first, second, same_get)
    assert [r.status for r in results] == [200, 200, 200]
    assert results[0].body["name"] == "R2"
    assert results[1].body["name"] == "R3"  # the second PUT saw the first one's result
    assert results[2].body["name"] == "R3"
    renames = [c for c in api.fake.commands(port) if c.startswith("vm rename")]
    assert renames == ['vm rename "R1" "R2"', 'vm rename "R2" "R3"']
    assert api.state.locks._locks == {}  # locks are dropped once nobody waits


AUTH = {"auth": True, "user": "admin", "password": "secret"}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def test_basic_auth_when_auth_and_user_are_set(make_api):
    api = await make_api(**AUTH)
    wrong = [
        {},
        basic("admin", "wrong"),
        basic("other", "secret"),
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": "Bearer abc"},
        {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe").decode()},
        {"Authorization": "Basic \u00e9t\u00e9"},
    ]
    for headers in wrong:
        for method, path in (("GET", "/version"), ("POST", f"/projects/{UNKNOWN}/files/a.txt")):
            reply = await api.request(method, path, headers=headers)
            assert reply.status == 401, (headers, path)
            assert reply.headers["WWW-Authenticate"] == 'Basic realm="GNS3 server"'
            assert reply.text == ""
    assert api.state.projects.projects == {}
    reply = await api.get("/version", headers=basic("admin", "secret"))
    assert reply.status == 200
    reply = await api.post("/projects", {"name": "x"}, headers=basic("admin", "secret"))
    assert reply.status == 201


async def test_auth_without_a_user_name_is_no_auth(make_api):
    api = await make_api(auth=True, user="", password="secret")
    assert (await api.get("/version")).status == 200
    api = await make_api(auth=False, user="admin", password="secret")
    assert (await api.get("/version")).status == 200


async def test_ids_are_checked_in_the_documented_places(api):
    """Project and device lookups never answer 500, whatever the id looks like."""
    for bad in ("%E2%98%83", "%00", "x" * 300, str(uuid.uuid4()).replace("-", "")):
        for path in (f"/projects/{bad}", f"/projects/{bad}/dynamips/devices/{bad}"):
            reply = await api.get(path)
            assert reply.status in (400, 404), (path, reply.status, reply.text)
