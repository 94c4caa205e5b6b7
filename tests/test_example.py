"""Issue 8: examples/lab.py runs against a real server process and leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.conftest import REAL_DYNAMIPS, free_port, needs_dynamips

pytestmark = needs_dynamips
ROOT = Path(__file__).resolve().parent.parent


def dynamips_children(pid: int) -> list[psutil.Process]:
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]


@pytest.fixture
def server(tmp_path: Path):
    """``python -m dynamips_mgr`` with its own config, on a free port; stopped by SIGTERM."""
    port = free_port()
    base = 20000 + (port % 40) * 250
    config = tmp_path / "server.ini"
    config.write_text(
        f"[Server]\nhost = 127.0.0.1\nport = {port}\nlocal = true\n"
        f"images_path = {tmp_path / 'images'}\nprojects_path = {tmp_path / 'projects'}\n"
        f"console_start_port_range = {base}\nconsole_end_port_range = {base + 249}\n"
        f"udp_start_port_range = {base + 10000}\nudp_end_port_range = {base + 10249}\n"
        f"[Dynamips]\ndynamips_path = {REAL_DYNAMIPS}\n"
    )
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dynamips_mgr",
            "--config",
            str(config),
            "--log",
            str(tmp_path / "server.txt"),
        ],
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while True:
        try:
            urllib.request.urlopen(url + "/v1/version", timeout=1).close()
            break
        except OSError:
            assert process.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.1)
    try:
        yield url, process
    finally:
        leftovers = dynamips_children(process.pid)
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for child in leftovers:  # only processes this server started
            if child.is_running():
                child.kill()
        log.close()


def test_the_example_builds_boots_and_closes_a_lab(server, tmp_path):
    url, process = server
    began = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "lab.py"), "--server", url],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    elapsed = time.monotonic() - began
    print(result.stdout)
    print(f"example runtime: {elapsed:.1f} s")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SYNTH-IOS READY") == 3
    assert "auto idle-PC for R1: 0x600090" in result.stdout
    assert "uploaded synth-c7200.image" in result.stdout
    assert elapsed < 120
    assert dynamips_children(process.pid) == []  # the project close stopped every process
    process.terminate()
    assert process.wait(15) == 0
