"""The route table: one declaration per route, used to serve it and to describe it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Handler = Callable[["ApiRequest"], Awaitable[Any]]
STATE: web.AppKey[Any] = web.AppKey("state", object)
ROUTE_KEY: web.RequestKey[Any] = web.RequestKey("route", object)
BODY_KEY: web.RequestKey[Any] = web.RequestKey("api_body", object)


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # without the /v1 prefix
    handler: Handler
    summary: str
    input: str | None = None  # schema reference, e.g. "vm.create"
    output: str | None = None
    status: int = 200
    errors: tuple[int, ...] = ()
    raw: bool = False  # body is bytes, not JSON
    stream: bool = False  # handler writes its own streaming response
    prefix: str = "/v1"

    @property
    def full_path(self) -> str:
        return self.prefix + self.path


ROUTES: list[Route] = []


def route(method: str, path: str, *, summary: str, **options: Any) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        ROUTES.append(Route(method, path, handler, summary, **options))
        return handler

    return register


@dataclass
class ApiRequest:
    """What a handler needs: path parameters, the validated body, the app's services."""

    request: web.Request
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def params(self) -> dict[str, str]:
        return dict(self.request.match_info)

    @property
    def state(self) -> Any:
        return self.request.app[STATE]
