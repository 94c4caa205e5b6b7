"""Issue 2 items 5-6: project files (list, read, write, confinement: C28) and the capture stream."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest
import yarl

SECRET = b"TOP SECRET outside the project"


@pytest.fixture
async def project(api, tmp_path):
    """A project with some files, and a secret file next to (outside) it."""
    pid = await api.project()
    path = Path((await api.get(f"/projects/{pid}")).body["path"])
    configs = path / "project-files" / "dynamips" / "configs"
    configs.mkdir(parents=True)
    (configs / "i1_startup-config.cfg").write_bytes(b"hostname R1\n")
    (path / "project-files" / "dynamips" / "c7200-123.ghost").write_bytes(b"\0" * 64)
    (path / "topology.txt").write_bytes(b"notes")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    return pid, path, outside


async def raw_request(api, method: str, path: str, data: bytes | None = None):
    """A request whose URL is sent exactly as written (no client-side normalisation)."""
    url = yarl.URL(f"{api.base}/v1{path}", encoded=True)
    async with api.session.request(method, url, data=data) as reply:
        return reply.status, await reply.read()


async def test_list_gives_md5_of_every_file_but_ghosts(api, project):
    pid, _path, _ = project
    reply = await api.get(f"/projects/{pid}/files")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json"
    listed = {entry["path"]: entry["md5sum"] for entry in reply.body}
    assert listed == {
        "project-files/dynamips/configs/i1_startup-config.cfg": hashlib.md5(
            b"hostname R1\n"
        ).hexdigest(),
        "topology.txt": hashlib.md5(b"notes").hexdigest(),
    }


async def test_read_and_write_a_project_file(api, project):
    pid, path, _ = project
    reply = await api.get(
        f"/projects/{pid}/files/project-files/dynamips/configs/i1_startup-config.cfg"
    )
    assert (reply.status, reply.text) == (200, "hostname R1\n")
    assert reply.headers["Content-Type"] == "application/octet-stream"

    body = bytes(range(256)) * 1000
    reply = await api.post(f"/projects/{pid}/files/project-files/dynamips/new.bin", raw=body)
    assert reply.status == 200
    assert (path / "project-files" / "dynamips" / "new.bin").read_bytes() == body
    reply = await api.post(f"/projects/{pid}/files/topology.txt", raw=b"x")  # truncates
    assert reply.status == 200
    assert (path / "topology.txt").read_bytes() == b"x"
    assert not [p for p in path.rglob("*.upload")]  # no temporary left behind

    reply = await api.post(f"/projects/{pid}/files/no/such/folder.txt", raw=b"x")
    assert reply.status == 404
    assert not (path / "no").exists()
    for missing in ("nothing.txt", "project-files", "topology.txt/below"):
        assert (await api.get(f"/projects/{pid}/files/{missing}")).status == 404, missing


ESCAPES = [
    "/files//etc/hostname",
    "/files//{outside}/secret.txt",
    "/files/../../outside/secret.txt",
    "/files/project-files/../../../outside/secret.txt",
    "/files/project-files%2F..%2F..%2F..%2Foutside%2Fsecret.txt",
    "/files/%2E%2E/%2E%2E/outside/secret.txt",
    "/files/%2Fetc%2Fhostname",
    "/files/link-file",
    "/files/link-dir/secret.txt",
    "/files/project-files/up/outside/secret.txt",
    "/files/.gns3_temporary",
    "/files/a%00b",
]


def _links(path: Path, outside: Path) -> None:
    os.symlink(outside / "secret.txt", path / "link-file")
    os.symlink(outside, path / "link-dir")
    os.symlink("../..", path / "project-files" / "up")  # relative, resolves above the project


@pytest.mark.parametrize("escape", ESCAPES)
async def test_c28_reads_never_leave_the_project(api, project, escape):
    pid, path, outside = project
    _links(path, outside)
    status, body = await raw_request(
        api, "GET", f"/projects/{pid}" + escape.format(outside=outside)
    )
    assert status == 403, (status, body)
    assert SECRET not in body
    hostname = Path("/etc/hostname").read_bytes().strip() if Path("/etc/hostname").exists() else b""
    assert not hostname or hostname not in body.replace(pid.encode(), b"")


@pytest.mark.parametrize("escape", ESCAPES)
async def test_c28_writes_never_leave_the_project(api, project, escape, tmp_path):
    pid, path, outside = project
    _links(path, outside)
    escape = escape.replace("etc/hostname", f"{str(tmp_path)[1:]}/pwned.txt").replace(
        "etc%2Fhostname", "tmp%2Fpwned.txt"
    )
    before = {p: p.read_bytes() for p in outside.iterdir()}
    status, _ = await raw_request(
        api, "POST", f"/projects/{pid}" + escape.format(outside=outside), b"pwned"
    )
    assert status == 403, status
    assert {p: p.read_bytes() for p in outside.iterdir()} == before
    assert not (tmp_path / "pwned.txt").exists()
    assert not Path("/tmp/pwned.txt").exists()


async def _open_stream(api, location: str):
    return await api.session.get(f"{api.base}/v1/files/stream", params={"location": location})


async def test_stream_follows_a_capture_file_of_an_open_project(api, project):
    pid, path, _ = project
    captures = path / "project-files" / "captures"
    captures.mkdir(parents=True)
    capture = captures / "R1_0-0.pcap"
    capture.write_bytes(b"HEADER")
    response = await _open_stream(api, str(capture))
    try:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/octet-stream"
        assert await asyncio.wait_for(response.content.readexactly(6), 5) == b"HEADER"
        with capture.open("ab") as handle:
            handle.write(b"PACKET-1")
        assert await asyncio.wait_for(response.content.readexactly(8), 5) == b"PACKET-1"
    finally:
        response.close()  # disconnect
    # the project closes normally afterwards, and a stream of a closed project ends
    response = await _open_stream(api, str(capture))
    assert await asyncio.wait_for(response.content.readexactly(14), 5) == b"HEADERPACKET-1"
    assert (await api.post(f"/projects/{pid}/close")).status == 204
    assert await asyncio.wait_for(response.content.read(), 5) == b""
    response.close()


async def test_stream_refuses_anything_else(api, project):
    _pid, path, outside = project
    (outside / "foreign.pcap").write_bytes(b"foreign")
    os.symlink(outside / "foreign.pcap", path / "linked.pcap")
    for location, status in (
        (str(path / "topology.txt"), 403),  # not a .pcap
        (str(outside / "foreign.pcap"), 403),  # D4: outside every open project
        (str(path / "linked.pcap"), 403),  # a symlink resolving outside
        (f"{path}/../outside/foreign.pcap", 403),
        (str(path / "missing.pcap"), 404),
        ("a\0b.pcap", 403),
        ("/" + "x" * 5000 + ".pcap", 403),
    ):
        response = await _open_stream(api, location)
        body = await response.read()
        response.close()
        assert response.status == status, (location, body)
        assert b"foreign" not in body
        assert response.headers["Content-Type"] == "application/json"
    reply = await api.get("/files/stream")
    assert reply.status == 400 and "location" in reply.body["message"]
    reply = await api.get("/files/stream?location=x.pcap&extra=1")
    assert reply.status == 400 and "extra" in reply.body["message"]


async def test_odd_names_are_a_clear_4xx(api, project):
    pid, path, _ = project
    for name in ("a" * 300, "a/" * 2000 + "x", "%E2%98%83/x", "project-files/dynamips"):
        for method in ("GET", "POST"):
            status, body = await raw_request(api, method, f"/projects/{pid}/files/{name}", b"x")
            assert 400 <= status < 500, (method, name[:20], status, body[:200])
    status, _ = await raw_request(api, "POST", f"/projects/{pid}/files/%E2%98%83.txt", b"snow")
    assert status == 200
    assert (path / "\u2603.txt").read_bytes() == b"snow"
