"""Issue 3 §3 (C18): one dynamips process — find, spawn on loopback, version gate, crash
detection, stop/terminate/kill and reaping — with the fake executable and the real dynamips.

Every process a test starts is stopped by the ``hypervisors`` fixture, which then fails the
test if any of them is still there (zombies included).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import sys
import time
from pathlib import Path

import psutil
import pytest

from dynamips_mgr.dynamips.hypervisor import process as process_module
from dynamips_mgr.dynamips.hypervisor.errors import HypervisorUnavailable
from dynamips_mgr.dynamips.hypervisor.process import Hypervisor, find_dynamips
from dynamips_mgr.errors import Conflict
from tests.conftest import REAL_DYNAMIPS, needs_dynamips, wait_for


class FakeExecutable:
    """A wrapper script with dynamips' command line that runs the fake (options baked in)."""

    def __init__(self, root: Path, *options: str) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.records = root / "records"
        self.records.mkdir(exist_ok=True)
        self.faults = root / "faults.json"
        self.faults.write_text("[]")
        self.path = root / "dynamips"
        extra = " ".join(options)
        self.path.write_text(
            f"#!/bin/sh\nexec {sys.executable} -m dynamips_mgr.testing.fake_hypervisor "
            f'--record-dir {self.records} --faults {self.faults} {extra} "$@"\n'
        )
        self.path.chmod(self.path.stat().st_mode | stat.S_IEXEC)

    def inject(self, pattern: str, action: str, **options) -> None:
        faults = json.loads(self.faults.read_text())
        self.faults.write_text(
            json.dumps([*faults, {"pattern": pattern, "action": action, **options}])
        )

    def commands(self, port: int) -> list[str]:
        path = self.records / f"{port}.log"
        return path.read_text().splitlines() if path.exists() else []


def gone(pid: int) -> bool:
    """Exited and reaped (a zombie is not gone)."""
    return not psutil.pid_exists(pid)


@pytest.fixture
async def hypervisors(tmp_path: Path):
    """Make Hypervisor objects; all stopped at the end, and none may outlive the test."""
    made: list[Hypervisor] = []

    def make(executable: str | Path, **options) -> Hypervisor:
        options = {"command_timeout": 5.0, "connect_timeout": 10.0, "stop_timeout": 2.0, **options}
        hypervisor = Hypervisor(str(executable), tmp_path / "work", hv_id=len(made) + 1, **options)
        made.append(hypervisor)
        return hypervisor

    yield make
    pids = [h.pid for h in made if h.pid]
    for hypervisor in made:
        await hypervisor.stop()
    leaked = [pid for pid in pids if not gone(pid)]
    for pid in leaked:
        os.kill(pid, signal.SIGKILL)
    assert not leaked, f"processes outlived the test: {leaked}"


async def start_watched(hypervisor: Hypervisor) -> list[int]:
    """Start ``hypervisor``; the list returned collects the return codes its watcher reports."""
    exits: list[int] = []
    hypervisor.on_exit.append(lambda hv, code: exits.append(code))
    await hypervisor.start()
    return exits


def listening_addresses(pid: int) -> set[str]:
    connections = psutil.Process(pid).net_connections(kind="inet")
    return {c.laddr.ip for c in connections if c.status == psutil.CONN_LISTEN}


# -- finding the executable ------------------------------------------------------------------
def test_find_dynamips_gives_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(Conflict, match="Could not find Dynamips"):
        find_dynamips("dynamips-that-does-not-exist")
    with pytest.raises(Conflict, match="Could not find Dynamips"):
        find_dynamips(str(tmp_path / "missing" / "dynamips"))
    with pytest.raises(Conflict, match=f"Dynamips {tmp_path} is not accessible"):
        find_dynamips(str(tmp_path))
    plain = tmp_path / "dynamips"
    plain.write_text("#!/bin/sh\n")
    with pytest.raises(Conflict, match=f"Dynamips {plain} is not executable") as caught:
        find_dynamips(str(plain))
    assert caught.value.status == 409
    plain.chmod(0o755)
    assert find_dynamips(str(plain)) == str(plain)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_dynamips("dynamips") == str(plain)  # a bare name is looked up on PATH


# -- with the fake executable ----------------------------------------------------------------
async def test_start_listens_on_loopback_and_hands_shake(tmp_path, hypervisors):
    fake = FakeExecutable(tmp_path / "fake")
    hypervisor = hypervisors(fake.path)
    await hypervisor.start()
    assert hypervisor.alive and hypervisor.version == "0.2.14"
    assert fake.commands(hypervisor.port) == [
        "hypervisor version",
        f'hypervisor working_dir "{tmp_path / "work"}"',
    ]
    cmdline = psutil.Process(hypervisor.pid).cmdline()
    assert cmdline[-4:] == ["-l", hypervisor.log_file.name, "-H", f"127.0.0.1:{hypervisor.port}"]
    assert listening_addresses(hypervisor.pid) == {"127.0.0.1"}
    assert await hypervisor.send("vm list") == []


@pytest.mark.parametrize("version", ["0.2.10-amd64", "garbage", "0.1.99"])
async def test_version_gate_refuses_and_stops_the_process(tmp_path, hypervisors, version):
    fake = FakeExecutable(tmp_path / "fake", "--version", version)
    hypervisor = hypervisors(fake.path)
    with pytest.raises(Conflict) as caught:
        await hypervisor.start()
    detected = version.split("-")[0]
    assert caught.value.message == (
        f"Dynamips version must be >= 0.2.11, detected version is {detected}"
    )
    assert hypervisor.returncode == 0 and gone(hypervisor.pid)  # stopped, and reaped
    assert fake.commands(hypervisor.port) == ["hypervisor version", "hypervisor stop"]


async def test_oldest_accepted_version(tmp_path, hypervisors):
    hypervisor = hypervisors(FakeExecutable(tmp_path / "fake", "--version", "0.2.11-x86").path)
    await hypervisor.start()
    assert hypervisor.version_tuple == (0, 2, 11)


async def test_a_hypervisor_that_never_answers_fails_the_start_in_bounded_time(
    tmp_path, hypervisors
):
    fake = FakeExecutable(tmp_path / "fake")
    fake.inject("hypervisor version", "hang")
    hypervisor = hypervisors(fake.path, connect_timeout=1.0, command_timeout=30.0)
    started = time.monotonic()
    with pytest.raises(HypervisorUnavailable, match="did not answer at start"):
        await hypervisor.start()
    assert time.monotonic() - started < 1.0 + 1.5  # the deadline, then SIGTERM
    assert gone(hypervisor.pid)


async def test_lost_port_race_is_retried(tmp_path, hypervisors, monkeypatch):
    """E2: the chosen port got taken before dynamips bound it: another port is tried."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        ports = iter([holder.getsockname()[1]])
        original = process_module._free_loopback_port
        monkeypatch.setattr(
            process_module, "_free_loopback_port", lambda host: next(ports, None) or original(host)
        )
        fake = FakeExecutable(tmp_path / "fake")
        hypervisor = hypervisors(fake.path)
        await hypervisor.start()
        assert hypervisor.port != holder.getsockname()[1]
        assert await hypervisor.send("hypervisor version") == ["0.2.14-amd64"]


FAULTS = {  # action: (fault options, what the client sees)
    "error": ({"reply": "209-refused by the fake"}, "refused by the fake"),
    "delay": ({"seconds": 0.3}, ["R1 (c7200)"]),
    "split": ({}, ["R1 (c7200)"]),
    "drop": ({}, "connection closed by dynamips, Dynamips process running: True"),
    "exit": ({"exit_code": 3}, "Dynamips process running: False"),
    "garbage": ({}, "unexpected line from dynamips: 'this is not a reply'"),
    "hang": ({}, "did not answer 'vm list'"),
}


@pytest.mark.parametrize("action", sorted(FAULTS))
async def test_every_fault_action_works_in_the_executable(tmp_path, hypervisors, action):
    options, expected = FAULTS[action]
    fake = FakeExecutable(tmp_path / "fake")
    hypervisor = hypervisors(fake.path, command_timeout=1.0)
    await hypervisor.start()
    await hypervisor.send("vm create", "R1", 1, "c7200")
    fake.inject("^vm list$", action, times=1, **options)
    started = time.monotonic()
    if isinstance(expected, list):
        assert await hypervisor.send("vm list") == expected
    else:
        with pytest.raises(Conflict) as caught:
            await hypervisor.send("vm list")
        assert expected in caught.value.message
    elapsed = time.monotonic() - started
    assert elapsed < (1.5 if action == "hang" else 1.0)
    if action == "delay":
        assert elapsed >= 0.3
    assert fake.commands(hypervisor.port)[-1] == "vm list"
    if action == "exit":
        await wait_for(lambda: hypervisor.returncode == 3, 5)


async def test_crash_during_a_command_is_reported_within_a_second(tmp_path, hypervisors):
    fake = FakeExecutable(tmp_path / "fake")
    hypervisor = hypervisors(fake.path)
    exits = await start_watched(hypervisor)
    fake.inject('vm create "R1"', "exit", exit_code=-11)
    started = time.monotonic()
    with pytest.raises(HypervisorUnavailable) as caught:
        await hypervisor.send("vm create", "R1", 1, "c7200")
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, elapsed
    message = caught.value.message
    assert "during 'vm create \"R1\" 1 c7200'" in message
    assert "Dynamips process running: False" in message
    assert "process output:" in message and 'exec_cmd: vm create "R1" 1 c7200' in message
    await wait_for(lambda: exits, 5)
    assert exits == [-11] and hypervisor.returncode == -11
    started = time.monotonic()
    with pytest.raises(HypervisorUnavailable, match="process exited with return code -11"):
        await hypervisor.send("vm list")
    assert time.monotonic() - started < 0.1
    assert exits == [-11]  # the watcher fires once


async def test_unexpected_exit_between_commands_is_noticed(tmp_path, hypervisors):
    hypervisor = hypervisors(FakeExecutable(tmp_path / "fake").path)
    exits = await start_watched(hypervisor)
    os.kill(hypervisor.pid, signal.SIGSEGV)
    await wait_for(lambda: exits, 5)
    assert exits == [-signal.SIGSEGV]
    with pytest.raises(HypervisorUnavailable, match="running: False"):
        await hypervisor.send("vm list")


async def test_stop_sends_hypervisor_stop_and_reaps(tmp_path, hypervisors):
    fake = FakeExecutable(tmp_path / "fake")
    hypervisor = hypervisors(fake.path)
    exits = await start_watched(hypervisor)
    assert hypervisor.stdout_file.exists()
    pid = hypervisor.pid
    started = time.monotonic()
    await hypervisor.stop()
    assert time.monotonic() - started < 1.0
    assert fake.commands(hypervisor.port)[-1] == "hypervisor stop"
    assert hypervisor.returncode == 0 and gone(pid)
    assert not hypervisor.stdout_file.exists()
    assert exits == []  # a requested stop is not a crash
    with pytest.raises(HypervisorUnavailable):
        await hypervisor.send("vm list")


async def test_process_ignoring_stop_is_killed_after_stop_timeout(tmp_path, hypervisors):
    """C18: a wedged dynamips (answers ``hypervisor stop``, ignores SIGTERM) is killed."""
    fake = FakeExecutable(tmp_path / "fake", "--ignore-stop")
    hypervisor = hypervisors(fake.path, stop_timeout=0.5)
    await hypervisor.start()
    pid = hypervisor.pid
    started = time.monotonic()
    await hypervisor.stop()
    elapsed = time.monotonic() - started
    assert 0.5 + 1.0 <= elapsed < 0.5 + 1.0 + 1.5, elapsed  # grace, SIGTERM wait, SIGKILL
    assert fake.commands(hypervisor.port)[-1] == "hypervisor stop"
    assert hypervisor.returncode == -signal.SIGKILL and gone(pid)


async def test_process_that_does_not_answer_stop_is_terminated(tmp_path, hypervisors):
    fake = FakeExecutable(tmp_path / "fake")
    hypervisor = hypervisors(fake.path, stop_timeout=0.5, command_timeout=0.5)
    await hypervisor.start()
    fake.inject("hypervisor stop", "hang")
    started = time.monotonic()
    await hypervisor.stop()
    assert time.monotonic() - started < 0.5 + 1.0
    assert hypervisor.returncode == -signal.SIGTERM and gone(hypervisor.pid)


# -- with the real dynamips ------------------------------------------------------------------
@needs_dynamips
async def test_real_dynamips_start_stop_and_crash(tmp_path, hypervisors, record_property):
    assert REAL_DYNAMIPS is not None
    first = hypervisors(REAL_DYNAMIPS)
    await first.start()
    assert first.version == "0.2.14"
    assert listening_addresses(first.pid) == {"127.0.0.1"}
    started = time.monotonic()
    await first.stop()
    stop_time = time.monotonic() - started
    record_property("real_stop_seconds", round(stop_time, 3))
    assert first.returncode == 0 and stop_time < 2.0

    second = hypervisors(REAL_DYNAMIPS)
    exits = await start_watched(second)
    await second.send("vm create", "R1", 1, "c7200")
    started = time.monotonic()
    with pytest.raises(HypervisorUnavailable) as caught:
        # dynamips 0.2.14 dereferences the missing CPU of a never-started VM: SIGSEGV
        await second.send("vm slot_oir_start", "R1", 1, 0)
    detection = time.monotonic() - started
    record_property("real_crash_detection_seconds", round(detection, 3))
    assert detection < 1.0
    assert "Dynamips process running: False" in caught.value.message
    assert "exec_cmd: vm slot_oir_start R1 1 0" in caught.value.message  # its log's tail
    await wait_for(lambda: exits, 5)
    assert exits == [-signal.SIGSEGV]
