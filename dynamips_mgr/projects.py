"""Projects: folders, confined file access, notifications and lifecycle hooks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

from .errors import BadRequest, Conflict, Forbidden, NotFound
from .ports import PortManager

log = logging.getLogger(__name__)
TEMPORARY_MARKER = ".gns3_temporary"


class ProjectHooks(Protocol):
    """What a module (here: the Dynamips manager) does at project events."""

    async def project_closing(self, project: Project) -> None: ...
    async def project_closed(self, project: Project) -> None: ...
    async def project_moved(self, project: Project) -> None: ...
    async def project_committed(self, project: Project) -> None: ...


def check_uuid(value: Any, label: str) -> str:
    try:
        uuid.UUID(str(value))
    except ValueError:
        raise BadRequest(f"{label} {value} is not a valid UUID") from None
    return str(value)


class Project:
    def __init__(
        self, project_id: str, name: str | None, path: Path, location: Path, temporary: bool
    ) -> None:
        self.id = project_id
        self.name = name
        self.path = path
        self.location = location
        self.temporary = temporary
        self.listeners: set[asyncio.Queue] = set()
        self.closed = False

    # -- folders -----------------------------------------------------------------------
    @property
    def module_dir(self) -> Path:
        """``project-files/dynamips``: the hypervisors' working directory."""
        return self.path / "project-files" / "dynamips"

    @property
    def captures_dir(self) -> Path:
        return self.path / "project-files" / "captures"

    def json(self) -> dict[str, Any]:
        return {
            "project_id": self.id,
            "name": self.name,
            "path": str(self.path),
            "location": str(self.location),
            "temporary": self.temporary,
        }

    def write_temporary_marker(self) -> None:
        marker = self.path / TEMPORARY_MARKER
        if self.temporary:
            marker.write_text("1")
        else:
            with contextlib.suppress(FileNotFoundError):
                marker.unlink()

    def resolve(self, relative: str) -> Path:
        """A path inside the project, refusing anything that would leave it."""
        if not relative or os.path.isabs(relative) or relative.startswith(("/", "\\")):
            raise Forbidden("Only paths relative to the project folder are allowed")
        parts = Path(relative).parts
        if ".." in parts or any(p.startswith(".") for p in parts) or "\0" in relative:
            raise Forbidden(f"The path {relative} is not allowed")
        try:
            root = self.path.resolve()
            target = (root / relative).resolve()
        except (OSError, RuntimeError) as err:  # name too long, symlink loop...
            raise NotFound(f"The path {relative} cannot be resolved: {err}") from None
        if not target.is_relative_to(root):
            raise Forbidden(f"The path {relative} is outside the project folder")
        return target

    # -- notifications -----------------------------------------------------------------
    def emit(self, action: str, event: dict[str, Any]) -> None:
        for queue in list(self.listeners):
            queue.put_nowait({"action": action, "event": event})

    @contextlib.asynccontextmanager
    async def listen(self) -> AsyncIterator[asyncio.Queue]:
        queue: asyncio.Queue = asyncio.Queue()
        self.listeners.add(queue)
        try:
            yield queue
        finally:
            self.listeners.discard(queue)


class ProjectManager:
    """Open projects of one app; fans lifecycle events out to the modules."""

    def __init__(self, location: Path, ports: PortManager, *, local: bool) -> None:
        self.location = location
        self.ports = ports
        self.local = local
        self.projects: dict[str, Project] = {}
        self.modules: list[ProjectHooks] = []

    def get(self, project_id: str) -> Project:
        check_uuid(project_id, "Project ID")
        try:
            return self.projects[project_id]
        except KeyError:
            raise NotFound(f"Project ID {project_id} doesn't exist") from None

    def remove_stale_temporary(self) -> None:
        """Delete leftovers of temporary projects from an earlier crash."""
        if not self.location.is_dir():
            return
        for child in self.location.iterdir():
            if (child / TEMPORARY_MARKER).is_file():
                shutil.rmtree(child, ignore_errors=True)

    async def create(self, body: dict[str, Any]) -> Project:
        project_id = body.get("project_id") or str(uuid.uuid4())
        check_uuid(project_id, "Project ID")
        if project_id in self.projects:
            return self.projects[project_id]
        name = body.get("name")
        _check_name(name)
        path_text = body.get("path")
        if path_text:
            if not self.local:
                raise Forbidden(
                    "You are not allowed to set the project directory path on a remote server"
                )
            path = Path(os.path.normpath(os.path.expanduser(path_text))).absolute()
        else:
            path = self.location / project_id
        _check_path(path)
        project = Project(project_id, name, path, self.location, bool(body.get("temporary")))
        await asyncio.to_thread(_make_project_dir, project)
        self.projects[project_id] = project
        return project

    async def update(self, project: Project, body: dict[str, Any]) -> Project:
        if "name" in body:
            _check_name(body["name"])
        new_path = body.get("path")
        if new_path:
            path = Path(os.path.normpath(os.path.expanduser(new_path))).absolute()
            if path != project.path:
                if not self.local:
                    raise Forbidden("You are not allowed to modify the project directory path")
                _check_path(path)
                if not os.path.isdir(path):  # False for any OSError (e.g. name too long)
                    raise Conflict(f"The project directory {path} does not exist")
                old, project.path = project.path, path
                for module in self.modules:
                    await module.project_moved(project)
                if project.temporary:
                    await asyncio.to_thread(shutil.rmtree, old, True)
        if "name" in body:
            project.name = body["name"]
        if "temporary" in body:
            project.temporary = bool(body["temporary"])
        try:
            await asyncio.to_thread(project.write_temporary_marker)
        except OSError as err:
            raise Conflict(f"Could not update the temporary marker: {err}") from None
        return project

    async def commit(self, project: Project) -> None:
        for module in self.modules:
            await module.project_committed(project)

    async def close(self, project: Project, *, delete: bool = False) -> None:
        """Close (and optionally delete) a project: nodes, processes, ports, files."""
        if project.closed:
            return
        project.closed = True
        try:
            for module in self.modules:
                await module.project_closing(project)
            for proto, port in self.ports.release_owner(project.id):
                log.warning("project %s: %s port %s was still reserved", project.id, proto, port)
            for module in self.modules:
                await module.project_closed(project)
            if delete or project.temporary:
                try:
                    await asyncio.to_thread(shutil.rmtree, project.path)
                except FileNotFoundError:
                    pass
                except OSError as err:
                    raise Conflict(f"Could not delete the project directory: {err}") from None
        finally:
            self.projects.pop(project.id, None)
            project.emit("project.closed", {"project_id": project.id})

    async def close_all(self) -> None:
        for project in list(self.projects.values()):
            try:
                await self.close(project)
            except Exception:
                log.exception("closing project %s failed", project.id)


def _check_name(name: Any) -> None:
    if isinstance(name, str) and ("/" in name or "\\" in name):
        raise Forbidden("Name can not contain path separator")


def _check_path(path: Path) -> None:
    if '"' in str(path) or any(ord(c) < 32 for c in str(path)):
        raise Forbidden(
            'You are not allowed to use " or control characters in the project '
            "directory path. It's not supported by Dynamips."
        )


def _make_project_dir(project: Project) -> None:
    try:
        project.module_dir.mkdir(parents=True, exist_ok=True)
        project.write_temporary_marker()
    except OSError as err:
        raise Conflict(f"Could not create project directory: {err}") from None
