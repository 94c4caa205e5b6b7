"""Turning exceptions into the error bodies a GNS3 1.5 client expects, in one place."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from aiohttp import web

from .. import API_VERSION
from ..errors import ServerError
from .routing import BODY_KEY, ROUTE_KEY

log = logging.getLogger(__name__)
JSON_TYPE = "application/json"


def json_response(data: Any, status: int = 200) -> web.Response:
    """Content-Type exactly ``application/json`` (no charset: the 1.5 GUI needs that)."""
    body = json.dumps(data, indent=4, sort_keys=True).encode()
    return web.Response(body=body, status=status, headers={"Content-Type": JSON_TYPE})


def error_response(request: web.Request, status: int, message: str) -> web.Response:
    data: dict[str, Any] = {"status": status, "message": message}
    if status == 400:
        route = request.get(ROUTE_KEY)
        data["path"] = route.full_path if route else request.path
        data["request"] = request.get(BODY_KEY, {})
        data["method"] = request.method
    return json_response(data, status)


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except ServerError as err:
        return error_response(request, err.status, err.message)
    except web.HTTPException as err:
        if err.status < 400:
            raise
        # the framework's own errors (no such route: 404, wrong method: 405) get the same
        # JSON error body as every other error
        response = error_response(request, err.status, err.text or err.reason)
        if "Allow" in err.headers:
            response.headers["Allow"] = err.headers["Allow"]
        return response
    except Exception as err:
        log.exception("internal error on %s %s", request.method, request.path)
        return error_response(request, 500, f"Internal server error: {type(err).__name__}: {err}")


async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Headers of every reply: the route template, the server name, CORS."""
    route = request.get(ROUTE_KEY)
    if route is not None:
        response.headers["X-Route"] = route.full_path
    response.headers["Server"] = (
        f"Python/{sys.version_info[0]}.{sys.version_info[1]} GNS3/{API_VERSION}"
    )
    response.headers["Access-Control-Allow-Origin"] = "*"
