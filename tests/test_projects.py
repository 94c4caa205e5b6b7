"""Issue 2 item 5: project routes (api.md §5, manager.md §2 and §5)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.conftest import Notifications, hypervisor_port, process_gone, wait_for

PROJECT_KEYS = {"project_id", "name", "path", "location", "temporary"}


async def test_create_honours_the_client_id_and_returns_the_same_project_again(api, tmp_path):
    project_id = str(uuid.uuid4())
    reply = await api.post("/projects", {"name": "lab", "project_id": project_id})
    assert reply.status == 201
    location = tmp_path / "projects"
    assert reply.body == {
        "project_id": project_id,
        "name": "lab",
        "path": str(location / project_id),
        "location": str(location),
        "temporary": False,
    }
    assert (location / project_id / "project-files" / "dynamips").is_dir()
    again = await api.post("/projects", {"name": "other", "project_id": project_id})
    assert (again.status, again.body) == (201, reply.body)  # unchanged
    listing = await api.get("/projects")
    assert listing.body == [reply.body]
    show = await api.get(f"/projects/{project_id}")
    assert (show.status, show.body) == (200, reply.body)


async def test_create_without_anything_gives_a_fresh_id(api):
    reply = await api.post("/projects")
    assert reply.status == 201
    assert set(reply.body) == PROJECT_KEYS
    assert str(uuid.UUID(reply.body["project_id"])) == reply.body["project_id"]
    assert reply.body["name"] is None and reply.body["temporary"] is False


async def test_a_path_is_only_accepted_on_a_local_server(api, make_api, tmp_path):
    mine = tmp_path / "mine"
    reply = await api.post("/projects", {"name": "lab", "path": str(mine)})
    assert reply.status == 201
    assert reply.body["path"] == str(mine)
    assert (mine / "project-files" / "dynamips").is_dir()

    remote = await make_api(local=False)
    elsewhere = tmp_path / "elsewhere"
    reply = await remote.post("/projects", {"name": "lab", "path": str(elsewhere)})
    assert reply.status == 403
    assert "remote server" in reply.body["message"]
    assert not elsewhere.exists()  # D7: checked before anything is created
    assert remote.state.projects.projects == {}
    # what a GUI sends a remote server for a temporary project
    reply = await remote.post("/projects", {"name": "unsaved", "temporary": True, "path": None})
    assert reply.status == 201


@pytest.mark.parametrize("name", ['with"quote', "with\ncontrol"])
async def test_a_quote_in_the_path_is_refused_before_anything_is_created(api, tmp_path, name):
    target = tmp_path / name
    reply = await api.post("/projects", {"name": "lab", "path": str(target)})
    assert reply.status == 403
    assert "not allowed" in reply.body["message"]
    assert not target.exists()
    assert api.state.projects.projects == {}


async def test_temporary_marker_follows_the_flag(api):
    reply = await api.post("/projects", {"name": "unsaved", "temporary": True})
    path = Path(reply.body["path"])
    assert reply.body["temporary"] is True
    assert (path / ".gns3_temporary").read_text() == "1"
    reply = await api.put(f"/projects/{reply.body['project_id']}", {"temporary": False})
    assert reply.body["temporary"] is False
    assert not (path / ".gns3_temporary").exists()
    reply = await api.put(f"/projects/{reply.body['project_id']}", {"temporary": True})
    assert (path / ".gns3_temporary").read_text() == "1"


async def test_update_names(api):
    pid = await api.project(name="lab")
    for bad in ("a/b", "a\\b"):
        reply = await api.put(f"/projects/{pid}", {"name": bad})
        assert reply.status == 403
        assert reply.body == {"message": "Name can not contain path separator", "status": 403}
    assert (await api.get(f"/projects/{pid}")).body["name"] == "lab"
    reply = await api.put(f"/projects/{pid}", {"name": "lab2"})
    assert (reply.status, reply.body["name"]) == (200, "lab2")
    # A10: null names are accepted (the original answered 500)
    reply = await api.put(f"/projects/{pid}", {"name": None})
    assert (reply.status, reply.body["name"]) == (200, None)
    reply = await api.put(f"/projects/{pid}", {})
    assert (reply.status, reply.body["name"]) == (200, None)
    reply = await api.put(f"/projects/{pid}", {"name": "\u2603 lab \u00e9"})
    assert (reply.status, reply.body["name"]) == (200, "\u2603 lab \u00e9")


async def test_save_as_moves_every_hypervisor_and_deletes_the_old_temporary_folder(api, tmp_path):
    reply = await api.post("/projects", {"name": "unsaved", "temporary": True})
    pid, old = reply.body["project_id"], Path(reply.body["path"])
    router = await api.router(pid)
    switch = await api.device(pid)
    ports = {hypervisor_port(api, router["vm_id"]), hypervisor_port(api, switch["device_id"])}
    assert len(ports) == 2
    new = tmp_path / "saved" / "lab1"
    new.mkdir(parents=True)  # the GUI moves the files itself, then tells the server

    reply = await api.put(
        f"/projects/{pid}", {"name": "lab1", "temporary": False, "path": str(new)}
    )
    assert reply.status == 200
    assert (reply.body["path"], reply.body["temporary"]) == (str(new), False)
    expected = f'hypervisor working_dir "{new}/project-files/dynamips"'
    for port in ports:
        assert api.fake.commands(port)[-1] == expected
    assert (new / "project-files" / "dynamips").is_dir()
    assert not old.exists()
    assert not (new / ".gns3_temporary").exists()


async def test_path_changes_that_are_refused(api, make_api, tmp_path):
    pid = await api.project()
    before = (await api.get(f"/projects/{pid}")).body
    for path, status in (
        (tmp_path / "missing", 409),
        (tmp_path / 'with"quote', 403),
        (tmp_path / ("x" * 300), 409),
    ):
        reply = await api.put(f"/projects/{pid}", {"path": str(path)})
        assert reply.status == status, reply.body
    assert (await api.get(f"/projects/{pid}")).body == before

    remote = await make_api(local=False)
    pid = await remote.project()
    reply = await remote.put(f"/projects/{pid}", {"path": str(tmp_path)})
    assert reply.body == {
        "message": "You are not allowed to modify the project directory path",
        "status": 403,
    }
    # sending the current path back is not a change
    current = (await remote.get(f"/projects/{pid}")).body["path"]
    assert (await remote.put(f"/projects/{pid}", {"path": current})).status == 200


async def test_commit(api):
    pid = await api.project()
    reply = await api.post(f"/projects/{pid}/commit", {})
    assert (reply.status, reply.text) == (204, "")
    unknown = str(uuid.uuid4())
    assert (await api.post(f"/projects/{unknown}/commit")).status == 404


async def test_close_with_two_listeners_keeps_the_project_open(api):
    pid = await api.project(temporary=True)
    switch = await api.device(pid)
    hv_pid = api.state.dynamips.devices[switch["device_id"]].hypervisor.pid
    udp = await api.udp_port(pid)
    path = Path((await api.get(f"/projects/{pid}")).body["path"])

    async with Notifications(api, pid) as first:
        async with Notifications(api, pid):
            reply = await api.post(f"/projects/{pid}/close", {})
            assert (reply.status, reply.text) == (204, "")
            assert (await api.get(f"/projects/{pid}")).status == 200
            assert api.state.ports.in_use("udp", udp)
        # one listener left (the server notices the other one went away): close closes
        project = api.state.projects.projects[pid]
        await wait_for(lambda: len(project.listeners) == 1)
        reply = await api.post(f"/projects/{pid}/close", {})
        assert reply.status == 204
        await first.expect("project.closed", project_id=pid)
        await wait_for(lambda: first._task.done())  # the stream ended
    assert (await api.get(f"/projects/{pid}")).status == 404
    assert not api.state.ports.in_use("udp", udp)
    assert process_gone(hv_pid)
    assert not path.exists()  # temporary: folder removed
    assert switch["device_id"] not in api.state.dynamips.devices


async def test_close_without_listeners_keeps_a_saved_project_folder(api):
    pid = await api.project()
    path = Path((await api.get(f"/projects/{pid}")).body["path"])
    assert (await api.post(f"/projects/{pid}/close")).status == 204
    assert (await api.get(f"/projects/{pid}")).status == 404
    assert path.is_dir()
    assert (await api.post(f"/projects/{pid}/close")).status == 404


async def test_delete_removes_the_folder(api):
    pid = await api.project()
    switch = await api.device(pid)
    hv_pid = api.state.dynamips.devices[switch["device_id"]].hypervisor.pid
    path = Path((await api.get(f"/projects/{pid}")).body["path"])
    (path / "notes.txt").write_text("keep?")
    reply = await api.delete(f"/projects/{pid}")
    assert (reply.status, reply.text) == (204, "")
    assert not path.exists()
    assert process_gone(hv_pid)
    assert (await api.get(f"/projects/{pid}")).status == 404
    assert (await api.delete(f"/projects/{pid}")).status == 404


async def test_server_start_removes_leftover_temporary_projects(make_api, tmp_path):
    location = tmp_path / "projects"
    leftover, saved = location / str(uuid.uuid4()), location / str(uuid.uuid4())
    for folder in (leftover, saved):
        (folder / "project-files" / "dynamips").mkdir(parents=True)
    (leftover / ".gns3_temporary").write_text("1")
    (location / "stray-file").write_text("not a project")
    await make_api()
    assert not leftover.exists()
    assert saved.is_dir()
    assert (location / "stray-file").is_file()


@pytest.mark.parametrize(
    ("method", "suffix", "raw"),
    [
        ("POST", "", b"[]"),
        ("POST", "", b'{"name": ["x"]}'),
        ("POST", "", b'{"temporary": 1e999}'),
        ("POST", "", b'{"project_id": 12345}'),
        ("POST", "", b'{"path": ""}'),
        ("POST", "", b'{"path": "/proc/forbidden/x"}'),
        ("PUT", "/{pid}", b'{"path": 5}'),
        ("PUT", "/{pid}", b'{"temporary": null}'),
        ("PUT", "/{pid}", b'{"name": ""}'),
        ("PUT", "/{pid}", b'{"path": "/etc/hostname"}'),
        ("PUT", "/{pid}", b"null"),
        ("POST", "/{pid}/close", b"[1]"),
        ("POST", "/{pid}/commit", b'"x"'),
        ("GET", "/{pid}/notifications", b"{"),
        ("PUT", "/{pid}", b'{"path": "\\u0000"}'),
    ],
)
async def test_odd_input_is_a_clear_4xx(api, method, suffix, raw):
    pid = await api.project()
    before = (await api.get("/projects")).body
    reply = await api.request(method, "/projects" + suffix.format(pid=pid), raw=raw)
    assert 400 <= reply.status < 500, reply.text
    assert reply.headers["Content-Type"] == "application/json"
    assert isinstance(reply.body["message"], str) and reply.body["message"]
    assert (await api.get("/projects")).body == before


async def test_two_apps_in_one_process_share_nothing(api, make_api):
    """Item 3: create_app builds its own project, port and Dynamips managers."""
    other = await make_api()
    pid = await api.project()
    assert (await other.get(f"/projects/{pid}")).status == 404
    assert api.state.projects is not other.state.projects
    assert api.state.ports is not other.state.ports
    assert api.state.dynamips is not other.state.dynamips
    port = await api.udp_port(pid)
    assert api.state.ports.in_use("udp", port) and not other.state.ports.in_use("udp", port)
