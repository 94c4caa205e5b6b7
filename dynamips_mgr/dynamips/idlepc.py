"""Automatic idle-PC: find a proposal that brings the router's CPU use under a threshold."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

import psutil

from ..errors import Conflict

if TYPE_CHECKING:
    from .router import Router


async def wait_for_quiet_console(port: int, deadline: float, quiet: float = 1.0) -> None:
    """Wait until the console has printed something and then stayed silent for ``quiet``."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), max(0.1, deadline - time.monotonic())
        )
    except (OSError, TimeoutError):
        return
    seen = False
    try:
        while time.monotonic() < deadline:
            try:
                data = await asyncio.wait_for(reader.read(4096), quiet)
            except TimeoutError:
                if seen:
                    return
                continue
            if not data:
                return
            seen = seen or any(32 <= byte < 127 for byte in data)
    finally:
        writer.close()


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


async def measure_cpu_percent(pid: int, window: float) -> float:
    """CPU use of process ``pid`` over ``window`` seconds, in percent of one core."""
    start_cpu, start = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(window)
    return (cpu_seconds(pid) - start_cpu) * 100 / (time.monotonic() - start)


async def auto_idlepc(router: Router) -> str:
    """Try each proposal, keep the first whose CPU use is under the threshold."""
    config = router.manager.config
    previous = router.settings["idlepc"]
    started_here = not await router.is_running()
    if started_here:
        await router.start()
        deadline = time.monotonic() + config.dynamips("idlepc_boot_timeout")
        await wait_for_quiet_console(router.manager.console_target(router), deadline)
    try:
        proposals = await router.idlepc_proposals()
        if not proposals:
            raise Conflict("No Idle-PC values found")
        assert router.hypervisor is not None and router.hypervisor.pid is not None
        for proposal in proposals:
            value = proposal.split()[0]
            await router.set_idlepc(value, True)
            window = config.dynamips("idlepc_measure_seconds")
            usage = await measure_cpu_percent(router.hypervisor.pid, window)
            if usage < config.dynamips("idlepc_threshold"):
                return value
        with contextlib.suppress(Conflict):
            await router.set_idlepc(previous or "0x0", True)
        raise Conflict("Sorry, no idle-pc value was suitable")
    finally:
        if started_here:
            await router.stop()
