"""Automatic idle-PC: find a proposal that brings the router's CPU use under a threshold.

Better than the original (which slept a fixed 20 s, then measured whole CPU seconds over 3 s
windows): the router's boot is awaited by watching its console (a prompt, IOS' "Press RETURN",
or output followed by silence) under a deadline; each candidate is measured with psutil over
``idlepc_measure_seconds``; on failure the router's previous idle-PC is restored; the router is
returned to the state it was found in (stopped or suspended) only if the search changed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from typing import TYPE_CHECKING

import psutil

from ..errors import Conflict
from .router import INACTIVE, SUSPENDED

if TYPE_CHECKING:
    from .router import Router

# dynamips' own greeting on every console connection (not output of the router)
GREETING_END = b"Press ENTER to get the prompt.\r\n"
# an IOS (or the synthetic image) that finished booting
READY = re.compile(rb"Press RETURN to get started|[\w.()-]+[>#]\s*$")


async def wait_for_console_ready(port: int, deadline: float, quiet: float = 2.0) -> bool:
    """Wait until the router's console shows it booted, or the deadline passes.

    Booted = the output ends with a prompt (``Router>``, ``R1#``) or shows IOS'
    "Press RETURN to get started", or it printed something and then stayed silent for
    ``quiet`` seconds. Returns whether it looked booted before ``deadline``.
    """
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), max(0.1, deadline - time.monotonic())
        )
    except (OSError, TimeoutError):
        return False
    output = b""
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                data = await asyncio.wait_for(reader.read(4096), min(quiet, remaining))
            except TimeoutError:
                if output.strip():
                    return True  # printed, then silent
                continue
            if not data:
                return False
            output = (output + data)[-8192:]
            if GREETING_END in output:
                output = output.split(GREETING_END, 1)[1]
            if READY.search(output):
                return True
        return False
    finally:
        writer.close()


def cpu_seconds(pid: int) -> float:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error as err:
        raise Conflict(f"Cannot measure the CPU use of dynamips (pid {pid}): {err}") from None
    return times.user + times.system


async def measure_cpu_percent(pid: int, window: float, threshold: float | None = None) -> float:
    """CPU use of process ``pid`` over ``window`` seconds, in percent of one core.

    With a ``threshold``, the reading is returned as soon as it is clearly on one side of
    it (under half of it, or over 1.3 times it) after a third of the window: an idle router
    with a good idle-PC uses ~2 %, one without uses a whole core, so this rarely waits long.
    """
    start_cpu, start = cpu_seconds(pid), time.monotonic()
    step = window / 10
    while True:
        await asyncio.sleep(step)
        elapsed = time.monotonic() - start
        usage = (cpu_seconds(pid) - start_cpu) * 100 / elapsed
        if elapsed >= window:
            return usage
        if threshold is not None and elapsed >= window / 3:
            if usage < threshold / 2 or usage > threshold * 1.3:
                return usage


async def auto_idlepc(router: Router) -> str:
    """Try each proposal, keep the first whose CPU use is under the threshold."""
    config = router.manager.config
    previous = router.settings["idlepc"]
    status = await router.get_status() if router.hypervisor and router.hypervisor.alive else 0
    restore = {INACTIVE: router.stop, SUSPENDED: router.suspend}.get(status)
    found = ""
    try:
        if status in (INACTIVE, SUSPENDED):
            await router.start()  # a suspended router is resumed
        if status == INACTIVE:
            deadline = time.monotonic() + config.dynamips("idlepc_boot_timeout")
            await wait_for_console_ready(router.manager.console_target(router), deadline)
        proposals = await router.idlepc_proposals()
        if not proposals:
            raise Conflict("No Idle-PC values found")
        assert router.hypervisor is not None and router.hypervisor.pid is not None
        for proposal in proposals:
            value = proposal.split()[0]
            await router.set_idlepc(value, True)
            window, threshold = (
                config.dynamips("idlepc_measure_seconds"),
                config.dynamips("idlepc_threshold"),
            )
            usage = await measure_cpu_percent(router.hypervisor.pid, window, threshold)
            if usage < threshold:
                found = value
                return value
        raise Conflict("Sorry, no idle-pc value was suitable")
    finally:
        if not found:  # leave the router's idle-PC as it was
            with contextlib.suppress(Conflict):
                await router.set_idlepc(previous or "0x0")
            router.settings["idlepc"] = previous
        if restore is not None:
            await restore()
