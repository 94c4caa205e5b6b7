"""Errors of the hypervisor layer; both are 409 conflicts for the API."""

from __future__ import annotations

from ...errors import Conflict


class DynamipsError(Conflict):
    """dynamips answered a command with a 2xx error line."""

    def __init__(self, code: int, text: str, command: str) -> None:
        super().__init__(f"{text} (dynamips command: {command})")
        self.code = code
        self.text = text
        self.command = command


class HypervisorUnavailable(Conflict):
    """The hypervisor cannot be reached: not started, crashed, timed out or out of step."""
