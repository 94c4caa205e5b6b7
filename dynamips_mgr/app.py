"""``create_app(config)``: one isolated server (its own managers, ports and projects)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .config import Config
from .dynamips.manager import DynamipsManager
from .errors import BadRequest
from .ports import PortManager
from .projects import ProjectManager
from .web import schemas
from .web.errors import add_headers, error_middleware, json_response
from .web.routes import load_routes
from .web.routing import BODY_KEY, ROUTE_KEY, ROUTES, STATE, ApiRequest, Route

log = logging.getLogger(__name__)
LOCKED_PARAMS = ("vm_id", "device_id")


class KeyedLocks:
    """One FIFO lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = defaultdict(int)

    def hold(self, key: str) -> _Held:
        return _Held(self, key)


class _Held:
    def __init__(self, locks: KeyedLocks, key: str) -> None:
        self.locks, self.key = locks, key

    async def __aenter__(self) -> None:
        locks = self.locks
        locks._users[self.key] += 1
        lock = locks._locks.setdefault(self.key, asyncio.Lock())
        try:
            await lock.acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self.locks._locks[self.key].release()
        self._leave()

    def _leave(self) -> None:
        locks = self.locks
        locks._users[self.key] -= 1
        if locks._users[self.key] == 0:
            del locks._users[self.key]
            locks._locks.pop(self.key, None)


@dataclass
class AppState:
    config: Config
    ports: PortManager
    projects: ProjectManager
    dynamips: DynamipsManager
    locks: KeyedLocks = field(default_factory=KeyedLocks)
    shutdown: asyncio.Event = field(default_factory=asyncio.Event)


def _parse_body(request: web.Request, raw: bytes) -> dict[str, Any]:
    text = raw.decode("utf-8", "replace")
    try:
        # only an empty body means {}: anything else must be JSON (" " or "\x1d" is not)
        body = json.loads(raw.decode("utf-8")) if raw else {}
    except (ValueError, RecursionError) as err:  # bad UTF-8, bad JSON, absurd nesting
        request[BODY_KEY] = {"malformed_json": text}
        raise BadRequest(f"Invalid JSON {err}") from None
    if not isinstance(body, dict):
        request[BODY_KEY] = {"malformed_json": text}
        raise BadRequest("Invalid JSON: the request body must be a JSON object")
    return body


def _endpoint(route: Route):
    async def handle(request: web.Request) -> web.StreamResponse:
        request[ROUTE_KEY] = route
        body: dict[str, Any] = {}
        if not route.raw:
            raw = await request.read() if request.body_exists else b""
            body = _parse_body(request, raw)
            for key in request.query:
                body[key] = request.query.getone(key)
            request[BODY_KEY] = body
            if route.input:
                schemas.validate(route.input, body)
        api = ApiRequest(request, body)
        keys = [request.match_info[p] for p in LOCKED_PARAMS if p in request.match_info]
        if keys:
            async with request.app[STATE].locks.hold(keys[0]):
                result = await route.handler(api)
        else:
            result = await route.handler(api)
        if isinstance(result, web.StreamResponse):
            return result
        if result is None:
            return web.Response(status=route.status if route.status != 200 else 204)
        return json_response(result, route.status)

    return handle


@web.middleware
async def auth_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    config: Config = request.app[STATE].config
    user = config.server("user").strip()
    if config.server("auth") and user:
        expected = f"{user}:{config.server('password').strip()}"
        given = request.headers.get("Authorization", "")
        try:
            ok = given.startswith("Basic ") and base64.b64decode(given[6:]).decode() == expected
        except ValueError:  # bad base64, non-ASCII header, bad UTF-8
            ok = False
        if not ok:
            return web.Response(
                status=401,
                headers={"WWW-Authenticate": 'Basic realm="GNS3 server"', "Connection": "close"},
            )
    return await handler(request)


def create_app(config: Config) -> web.Application:
    """Build an app with its own port manager, project manager and Dynamips manager."""
    load_routes()
    ports = PortManager(
        config.server("host"),
        console_range=(
            config.server("console_start_port_range"),
            config.server("console_end_port_range"),
        ),
        udp_range=(config.server("udp_start_port_range"), config.server("udp_end_port_range")),
        remote_console=config.server("allow_remote_console"),
    )
    projects = ProjectManager(config.projects_location, ports, local=config.server("local"))
    dynamips = DynamipsManager(config, ports, projects)
    for ref in {r.input for r in ROUTES if r.input}:
        schemas.validator(ref)  # compile once, at start-up
    app = web.Application(middlewares=[auth_middleware, error_middleware], client_max_size=1024**3)
    app[STATE] = AppState(config, ports, projects, dynamips)
    for route in ROUTES:
        app.router.add_route(route.method, route.full_path, _endpoint(route))
    app.on_response_prepare.append(add_headers)
    app.on_startup.append(_on_startup)
    app.on_shutdown.append(_on_shutdown)
    return app


async def _on_startup(app: web.Application) -> None:
    await asyncio.to_thread(app[STATE].projects.remove_stale_temporary)


async def _on_shutdown(app: web.Application) -> None:
    state: AppState = app[STATE]
    await state.projects.close_all()
    await state.dynamips.unload()
