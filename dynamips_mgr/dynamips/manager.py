"""The Dynamips manager (one per app): nodes, dynamips ids, hypervisors, ghosts, hooks."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import re
import shutil
import uuid
import weakref
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import Conflict, NotFound
from ..ports import PortManager
from ..projects import Project, ProjectManager, check_uuid
from .console_relay import ConsoleRelay
from .devices import DEVICE_TYPES, Device
from .hypervisor.errors import DynamipsError, HypervisorUnavailable
from .hypervisor.process import Hypervisor, find_dynamips
from .hypervisor.protocol import check_text
from .images import Images
from .node import Node
from .platforms import PLATFORMS
from .router import Router

log = logging.getLogger(__name__)
MAX_DYNAMIPS_ID = 4096
CLOSED_PROJECT_FILES = re.compile(
    r"^(.*\.ghost|.*_lock|ilt_.*|c\d{4}_i\d+_rommon_vars|c\d{4}_i\d+_log\.txt|"
    r"dynamips_i\d+_log\.txt|dynamips_i\d+_stdout\.txt)$"
)


def ghost_file_name(image: str, platform: str, ram: int) -> str:
    """``<image>-<ram>.ghost`` as the original names it; the platform is added when the
    image name does not already say it, so that one file never serves two platforms."""
    base = os.path.basename(image)
    if platform not in base:
        base = f"{base}-{platform}"
    return re.sub(r"[\\/:]", "-", f"{base}-{ram}.ghost")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class DynamipsManager:
    def __init__(self, config: Config, ports: PortManager, projects: ProjectManager) -> None:
        self.config = config
        self.ports = ports
        self.projects = projects
        self.images = Images(config.images_dir, local=config.server("local"))
        self.routers: dict[str, Router] = {}
        self.devices: dict[str, Device] = {}
        self.dynamips_ids: dict[str, set[int]] = {}
        self.deleted: dict[str, list[Router]] = {}
        self.hypervisors: dict[str, list[Hypervisor]] = {}
        self.ghosts: set[str] = set()
        self._ghost_locks: dict[str, asyncio.Lock] = {}  # one per ghost file
        # one "Ghost" instance at a time per process (a shared hypervisor may build two files)
        self._ghost_builders: weakref.WeakKeyDictionary[Hypervisor, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self._relays: dict[tuple[str, str], ConsoleRelay] = {}
        self._internal_ports: dict[tuple[str, str], int] = {}
        self._hv_counter = 0
        self._executable: str | None = None
        self._spawn_dir: Path | None = None
        self._spawn_dir_known = False
        self._tables_ready = False
        self._tables_lock = asyncio.Lock()
        self._starting: dict[Hypervisor, asyncio.Future] = {}  # shared processes not ready yet
        self.relay_consoles = not _is_loopback(ports.console_host)
        projects.modules.append(self)

    # -- lookups -----------------------------------------------------------------------
    def get_router(self, project_id: str, vm_id: str, *, check_project: bool = True) -> Router:
        project = self.projects.get(project_id)
        check_uuid(vm_id, "VM ID")
        router = self.routers.get(vm_id)
        if router is None:
            raise NotFound(f"VM ID {vm_id} doesn't exist")
        if check_project and router.project is not project:
            raise NotFound(f"Project ID {project_id} doesn't belong to VM {router.name}")
        return router

    def get_device(self, project_id: str | None, device_id: str) -> Device:
        project = self.projects.get(project_id) if project_id is not None else None
        check_uuid(device_id, "Device ID")
        device = self.devices.get(device_id)
        if device is None:
            raise NotFound(f"Device ID {device_id} doesn't exist")
        if project is not None and device.project is not project:
            raise NotFound(f"Project ID {project_id} doesn't belong to device {device.name}")
        return device

    def _node_id(self, project: Project, requested: Any, table: dict[str, Node]) -> str:
        if isinstance(requested, int) and not isinstance(requested, bool):
            self._convert_legacy_project(project)
            return str(uuid.uuid4())
        return requested or str(uuid.uuid4())

    def _convert_legacy_project(self, project: Project) -> None:
        """Pre-1.3 projects kept their files in ``<name>-files``: move them once (over the
        empty ``project-files`` folders made when the project was opened)."""
        if project.name:
            old = project.path / f"{project.name}-files"
            new = project.path / "project-files"
            unused = not self.hypervisors.get(project.id) and not any(
                p.is_file() for p in new.rglob("*")
            )
            if old.is_dir() and unused:
                try:
                    if new.exists():
                        shutil.rmtree(new)
                    old.rename(new)
                except OSError as err:
                    raise Conflict(
                        f"Could not move project files directory: {old} to {new} {err}"
                    ) from None
        project.module_dir.mkdir(parents=True, exist_ok=True)

    # -- dynamips ids ------------------------------------------------------------------
    def _take_dynamips_id(self, project: Project, requested: int | None) -> int:
        used = self.dynamips_ids.setdefault(project.id, set())
        if requested:
            if requested in used:
                raise Conflict(f"Dynamips identifier {requested} is already used by another router")
            if not 1 <= requested <= MAX_DYNAMIPS_ID:
                raise Conflict(f"Dynamips identifier {requested} is outside 1-{MAX_DYNAMIPS_ID}")
            used.add(requested)
            return requested
        for candidate in range(1, MAX_DYNAMIPS_ID + 1):
            if candidate not in used:
                used.add(candidate)
                return candidate
        raise Conflict("Maximum number of Dynamips instances reached")

    def _release_dynamips_id(self, router: Router) -> None:
        self.dynamips_ids.get(router.project.id, set()).discard(router.dynamips_id)

    # -- routers -----------------------------------------------------------------------
    async def create_router(self, project: Project, body: dict[str, Any]) -> Router:
        requested = body.get("vm_id")
        if isinstance(requested, str) and requested in self.routers:
            existing = self.routers[requested]
            if existing.project is not project:
                raise Conflict(f"VM ID {requested} already belongs to another project")
            return existing
        platform = body["platform"]
        if platform not in PLATFORMS:
            raise Conflict(f"Unknown router platform: {platform}")
        chassis = body.get("chassis")
        spec = PLATFORMS[platform]
        if chassis is not None and spec.default_chassis is None:
            raise Conflict(f"{platform} routers do not have chassis")
        if chassis is not None and chassis not in spec.chassis:
            raise Conflict(f"Unknown chassis {chassis} for platform {platform}")
        for field in ("name", "image", "system_id", "startup_config", "private_config"):
            if isinstance(body.get(field), str):  # C20: refused before anything is spawned
                check_text(field, body[field], allow_empty=field != "name")
        vm_id = self._node_id(project, requested, self.routers)
        dynamips_id = self._take_dynamips_id(project, body.get("dynamips_id"))
        router = Router(self, project, vm_id, body["name"], platform, dynamips_id, chassis)
        existing_files = await asyncio.to_thread(router.own_files)
        hypervisor = None
        try:
            self._reserve_consoles(router, body)
            self.routers[vm_id] = router
            router.hypervisor = hypervisor = await self.acquire_hypervisor(router)
            await router.create(
                {k: v for k, v in body.items() if k not in ("console", "aux", "chassis", "vm_id")}
            )
            await self.open_relays(router)
        except BaseException:
            # roll back (B1): process, ports, id and the files this attempt wrote
            self.routers.pop(vm_id, None)
            await router.close()
            created = await asyncio.to_thread(router.own_files)
            await asyncio.to_thread(router.remove_files, created - existing_files)
            if hypervisor is not None and not hypervisor.alive:
                for path in (hypervisor.log_file, hypervisor.stdout_file):
                    path.unlink(missing_ok=True)
            self._release_dynamips_id(router)
            raise
        return router

    async def delete_router(self, router: Router) -> None:
        """Close now; files and the dynamips id go at the next commit (or at close)."""
        self.routers.pop(router.id, None)
        await router.close()
        self.deleted.setdefault(router.project.id, []).append(router)

    def project_routers(self, project: Project) -> list[Router]:
        return [r for r in self.routers.values() if r.project is project]

    # -- consoles ----------------------------------------------------------------------
    def _reserve_consoles(self, router: Router, body: dict[str, Any]) -> None:
        router.console = self._reserve_console(router, body.get("console"), "console")
        if body.get("aux") is not None or self.config.dynamips("allocate_aux_console_ports"):
            router.aux = self._reserve_console(router, body.get("aux"), "aux")

    def _reserve_console(self, router: Router, requested: int | None, kind: str) -> int:
        owner = router.project.id
        if requested is not None:
            try:
                port = self.ports.reserve("tcp", requested, owner)
            except Conflict as err:
                port = self.ports.allocate("tcp", owner)
                router.emit(
                    "log.warning",
                    {
                        "message": (
                            f"{kind} port {requested} of {router.name} is not available "
                            f"({err.message}); using {port} instead"
                        )
                    },
                )
        else:
            port = self.ports.allocate("tcp", owner)
        if self.relay_consoles:
            internal = self.ports.allocate("tcp", owner, host="127.0.0.1")
            self._internal_ports[(router.id, kind)] = internal
        return port

    def console_target(self, router: Router, *, aux: bool = False) -> int:
        """The port dynamips listens on for this console (internal when relayed)."""
        kind = "aux" if aux else "console"
        public = router.aux if aux else router.console
        assert public is not None
        if self.relay_consoles:
            key = (router.id, kind)
            if key not in self._relays:
                self._relays[key] = ConsoleRelay(
                    self.ports.console_host, public, "127.0.0.1", self._internal_ports[key]
                )
            return self._internal_ports[key]
        return public

    async def open_relays(self, router: Router) -> None:
        for kind in ("console", "aux"):
            relay = self._relays.get((router.id, kind))
            if relay is not None:
                await relay.start()

    async def change_console(self, router: Router, port: int, *, aux: bool) -> None:
        kind = "aux" if aux else "console"
        old = router.aux if aux else router.console
        new = self.ports.reserve("tcp", port, router.project.id)
        await self._close_relay(router, kind)
        setattr(router, kind, new)
        command = "vm set_aux_tcp_port" if aux else "vm set_con_tcp_port"
        try:
            await router.send(command, router.name, self.console_target(router, aux=aux))
        except BaseException:
            self.ports.release("tcp", new)
            setattr(router, kind, old)
            raise
        self.ports.release("tcp", old)
        await self.open_relays(router)

    async def _close_relay(self, router: Router, kind: str) -> None:
        relay = self._relays.pop((router.id, kind), None)
        if relay is not None:
            await relay.close()

    def release_consoles(self, router: Router) -> None:
        for kind in ("console", "aux"):
            self.ports.release("tcp", getattr(router, kind))
            self.ports.release("tcp", self._internal_ports.pop((router.id, kind), None))
            relay = self._relays.pop((router.id, kind), None)
            if relay is not None:
                relay.close_nowait()
            setattr(router, kind, None)

    # -- devices -----------------------------------------------------------------------
    async def create_device(self, project: Project, body: dict[str, Any]) -> Device:
        requested = body.get("device_id")
        if isinstance(requested, str) and requested in self.devices:
            existing = self.devices[requested]
            if existing.project is not project:
                raise Conflict(f"Device ID {requested} already belongs to another project")
            return existing
        kind = DEVICE_TYPES.get(body["device_type"])
        if kind is None:
            raise Conflict(f"Unknown device type: {body['device_type']}")
        device_id = self._node_id(project, requested, self.devices)
        device = kind(self, project, device_id, body["name"])
        self.devices[device_id] = device
        try:
            await device.create()
        except BaseException:
            self.devices.pop(device_id, None)
            await device.close()
            raise
        return device

    async def delete_device(self, device: Device) -> None:
        self.devices.pop(device.id, None)
        await device.close()

    # -- hypervisors -------------------------------------------------------------------
    @property
    def executable(self) -> str:
        if self._executable is None:
            self._executable = find_dynamips(self.config.dynamips("dynamips_path"))
        return self._executable

    async def acquire_hypervisor(self, node: Node) -> Hypervisor:
        """A hypervisor for ``node``: a new process, or a shared one when configured."""
        pool = self.hypervisors.setdefault(node.project.id, [])
        share = self.config.dynamips("nodes_per_hypervisor")
        for hypervisor in pool:
            starting = self._starting.get(hypervisor)
            if (starting is not None or hypervisor.alive) and len(hypervisor.nodes) < share:
                hypervisor.nodes.add(node)
                if starting is not None:  # joined while it starts: ready once it is
                    try:
                        await asyncio.shield(starting)
                    except BaseException:
                        hypervisor.nodes.discard(node)
                        raise
                return hypervisor
        self._hv_counter += 1
        hypervisor = Hypervisor(
            self.executable,
            node.project.module_dir,
            hv_id=self._hv_counter,
            host="::1" if self.ports.host == "::1" else "127.0.0.1",
            command_timeout=self.config.dynamips("command_timeout"),
            connect_timeout=self.config.dynamips("connect_timeout"),
            stop_timeout=self.config.dynamips("stop_timeout"),
            spawn_dir=self.spawn_dir(),
        )
        hypervisor.nodes.add(node)
        hypervisor.on_exit.append(self._hypervisor_exited)
        pool.append(hypervisor)
        starting = self._starting[hypervisor] = asyncio.ensure_future(self._start(hypervisor))
        try:
            await starting
        except BaseException:
            if hypervisor in pool:
                pool.remove(hypervisor)
            raise
        finally:
            del self._starting[hypervisor]
        return hypervisor

    def spawn_dir(self) -> Path | None:
        """The folder dynamips starts in. At start-up dynamips loads its instruction lookup
        tables (``ilt_*``, ~2 MB) from its current folder, or spends ~0.3 s of CPU building
        them there: a per-user cache folder keeps them across projects and server runs (the
        original started in the project folder and deleted them at close). None when the
        cache folder is not writable: dynamips then starts in the project folder."""
        if not self._spawn_dir_known:
            base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
                os.path.expanduser("~"), ".cache"
            )
            path = Path(base) / "dynamips_mgr"
            try:
                path.mkdir(parents=True, exist_ok=True)
                writable = os.access(path, os.W_OK | os.X_OK)
            except OSError:
                writable = False
            self._spawn_dir, self._spawn_dir_known = (path if writable else None), True
        return self._spawn_dir

    async def _start(self, hypervisor: Hypervisor) -> None:
        """The first process of this server may have to build the tables: the others wait
        for it (it listens only once they are written), then start in parallel."""
        if not self._tables_ready and hypervisor.spawn_dir is not None:
            async with self._tables_lock:
                if not self._tables_ready:
                    await hypervisor.start()
                    self._tables_ready = True
                    return
        await hypervisor.start()

    async def release_hypervisor(self, node: Node) -> None:
        hypervisor, node.hypervisor = node.hypervisor, None
        if hypervisor is None:
            return
        hypervisor.nodes.discard(node)
        if not hypervisor.nodes:
            pool = self.hypervisors.get(node.project.id, [])
            if hypervisor in pool:
                pool.remove(hypervisor)
            await hypervisor.stop()

    def _hypervisor_exited(self, hypervisor: Hypervisor, returncode: int) -> None:
        nodes = list(hypervisor.nodes)
        for node in nodes:
            node.hypervisor_died(returncode)
        for pool in self.hypervisors.values():
            if hypervisor in pool:
                pool.remove(hypervisor)
        if nodes:
            names = ", ".join(sorted(n.name for n in nodes))
            nodes[0].emit(
                "log.error",
                {
                    "message": (
                        f"Dynamips hypervisor process has stopped, return code: {returncode} "
                        f"(hosting {names})\n{hypervisor.output_tail()}"
                    )
                },
            )

    # -- ghost IOS ---------------------------------------------------------------------
    async def prepare_ghost(self, router: Router) -> None:
        """Build the ghost file of (image, RAM) once, then make the router use it."""
        if not self.config.dynamips("ghost_ios_support") or not router.settings["mmap"]:
            return
        if router.settings.get("npe") == "npe-g2" or router.hypervisor is None:
            return
        name = ghost_file_name(router.image, router.platform, router.settings["ram"])
        path = router.hypervisor.working_dir / name
        lock = self._ghost_locks.setdefault(str(path), asyncio.Lock())
        async with lock:
            if str(path) not in self.ghosts or not path.exists():
                builder = self._ghost_builders.setdefault(router.hypervisor, asyncio.Lock())
                async with builder:
                    if await self._build_ghost(router, name):
                        self.ghosts.add(str(path))
        # only a file built completely here is used (a failed build may leave a partial one)
        if str(path) in self.ghosts and path.exists() and router.ghost_file != name:
            await router.send("vm set_ghost_status", router.name, 2)
            await router.send("vm set_ghost_file", router.name, name)
            router.ghost_file = name

    async def _build_ghost(self, router: Router, file_name: str) -> bool:
        created = False
        try:
            await router.send("vm create", "Ghost", 0, router.platform)
            created = True
            await router.send("vm set_ios", "Ghost", router.image)
            await router.send("vm set_ghost_status", "Ghost", 1)
            await router.send("vm set_ghost_file", "Ghost", file_name)
            await router.send("vm set_ram", "Ghost", router.settings["ram"])
            await router.send("vm start", "Ghost")
            await router.send("vm stop", "Ghost")
            return True
        except (DynamipsError, HypervisorUnavailable, Conflict) as err:
            log.warning("ghost IOS for %s not built: %s", router.name, err)
            return False
        finally:
            if created:
                try:
                    await router.send("vm clean_delete", "Ghost")
                except (DynamipsError, HypervisorUnavailable, Conflict):
                    with contextlib.suppress(DynamipsError, HypervisorUnavailable, Conflict):
                        await router.send("vm delete", "Ghost")

    # -- project hooks -----------------------------------------------------------------
    async def project_closing(self, project: Project) -> None:
        devices = [d for d in self.devices.values() if d.project is project]
        routers = self.project_routers(project)
        for node in (*devices, *routers):
            self.devices.pop(node.id, None)
            self.routers.pop(node.id, None)
        results = await asyncio.gather(
            *(n.close() for n in (*devices, *routers)), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                log.error("closing a node of project %s failed: %s", project.id, result)
        for router in self.deleted.pop(project.id, []):
            await router.destroy_files()

    async def project_closed(self, project: Project) -> None:
        for hypervisor in self.hypervisors.pop(project.id, []):
            await hypervisor.stop()
        await asyncio.to_thread(self._remove_closed_files, project.module_dir)
        self.ghosts = {g for g in self.ghosts if not Path(g).is_relative_to(project.path)}
        self.dynamips_ids.pop(project.id, None)

    def _remove_closed_files(self, folder: Path) -> None:
        try:
            entries = os.listdir(folder)
        except OSError:
            return
        for entry in entries:
            if CLOSED_PROJECT_FILES.match(entry):
                with contextlib.suppress(OSError):
                    os.remove(folder / entry)

    async def project_moved(self, project: Project) -> None:
        for hypervisor in self.hypervisors.get(project.id, []):
            await hypervisor.set_working_dir(project.module_dir)

    async def project_committed(self, project: Project) -> None:
        for router in self.deleted.pop(project.id, []):
            await router.destroy_files()
            self._release_dynamips_id(router)
        for router in self.project_routers(project):
            try:
                await router.save_configs()
            except Conflict as err:
                log.warning("saving configs of %s failed: %s", router.name, err)

    async def unload(self) -> None:
        """Stop every hypervisor still running (server shutdown)."""
        for pool in list(self.hypervisors.values()):
            for hypervisor in list(pool):
                await hypervisor.stop()
        self.hypervisors.clear()
