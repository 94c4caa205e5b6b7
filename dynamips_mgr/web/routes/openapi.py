"""An OpenAPI 3.1 document generated from the route table and ``schemas/``, and /docs."""

from __future__ import annotations

import copy
import html
import re
from typing import Any

from aiohttp import web

from ... import API_VERSION, __version__
from .. import schemas
from ..routing import ROUTES, ApiRequest, Route, route

PARAM = re.compile(r"{(\w+)(?::[^}]*)?}")
ERROR_TEXT = {
    400: "Invalid request",
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    409: "Conflict",
}
STREAM_MEDIA = {"notifications": "application/json", "docs": "text/html"}
PARAM_SCHEMAS = {
    "adapter_number": {"type": "integer", "minimum": 0},
    "port_number": {"type": "integer", "minimum": 0},
    "project_id": {"type": "string", "format": "uuid"},
    "vm_id": {"type": "string", "format": "uuid"},
    "device_id": {"type": "string", "format": "uuid"},
    "path": {"type": "string"},
}


def _component(ref: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{ref}"}


def _rewrite_refs(node: Any) -> Any:
    """``nio.json#/device_nio`` -> ``#/components/schemas/nio.device_nio``."""
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str) and ".json#/" in node["$ref"]:
            file_name, pointer = node["$ref"].split(".json#/")
            return _component(f"{file_name}.{pointer}")
        return {k: _rewrite_refs(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite_refs(v) for v in node]
    return node


def _operation(r: Route) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": r.summary, "operationId": r.handler.__name__, "responses": {}}
    params = PARAM.findall(r.path)
    if params:
        op["parameters"] = [
            {
                "name": p,
                "in": "path",
                "required": True,
                "schema": PARAM_SCHEMAS.get(p, {"type": "string"}),
            }
            for p in params
        ]
    if r.input and r.method == "GET":  # GET input comes in the query string (merged)
        schema = schemas.schema(r.input)
        op.setdefault("parameters", []).extend(
            {
                "name": name,
                "in": "query",
                "required": name in schema.get("required", ()),
                "schema": _rewrite_refs(copy.deepcopy(value)),
            }
            for name, value in schema["properties"].items()
        )
    elif r.input:
        op["requestBody"] = {
            # an absent body is read as {}: required only when {} is not valid
            "required": not schemas.validator(r.input).is_valid({}),
            "content": {"application/json": {"schema": _component(r.input)}},
        }
    elif r.raw:
        op["requestBody"] = {
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            }
        }
    status = str(r.status if not (r.status == 200 and r.output is None and not r.stream) else 200)
    if r.stream:
        media = STREAM_MEDIA.get(r.handler.__name__, "application/octet-stream")
        op["responses"]["200"] = {"description": "A stream", "content": {media: {}}}
    elif r.output:
        op["responses"][status] = {
            "description": "Success",
            "content": {"application/json": {"schema": _component(r.output)}},
        }
    else:
        op["responses"][status] = {"description": "Success, no body"}
    codes = set(r.errors)
    if r.input or params:
        codes.add(400)
    if params:  # a malformed path parameter may not match the route at all
        codes.add(404)
    for code in sorted(codes):
        op["responses"][str(code)] = {
            "description": ERROR_TEXT.get(code, "Error"),
            "content": {"application/json": {"schema": _component("server.error")}},
        }
    return op


def document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for r in ROUTES:
        path = PARAM.sub(lambda m: "{" + m.group(1) + "}", r.full_path)
        paths.setdefault(path, {})[r.method.lower()] = _operation(r)
    components = {}
    for file_name, doc in schemas.documents().items():
        for key, value in doc.items():
            components[f"{file_name[:-5]}.{key}"] = _rewrite_refs(copy.deepcopy(value))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "dynamips_mgr (GNS3 v1 API for Dynamips)",
            "version": f"{API_VERSION} ({__version__})",
        },
        "paths": paths,
        "components": {"schemas": components},
    }


@route(
    "GET", "/openapi.json", summary="This API as an OpenAPI 3.1 document", output="server.openapi"
)
async def openapi(req: ApiRequest):
    return document()


@route("GET", "/docs", summary="The API as a plain HTML page", prefix="", stream=True)
async def docs(req: ApiRequest):
    rows = []
    for path, methods in document()["paths"].items():
        for method, op in methods.items():
            codes = ", ".join(op["responses"])
            rows.append(
                f"<tr><td>{method.upper()}</td><td><code>{html.escape(path)}</code></td>"
                f"<td>{html.escape(op['summary'])}</td><td>{codes}</td></tr>"
            )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>dynamips_mgr API</title>"
        "<style>body{font-family:sans-serif}td{padding:2px 8px;border-bottom:1px solid #ddd}"
        "</style></head><body><h1>dynamips_mgr API</h1><p>Machine-readable: "
        "<a href='/v1/openapi.json'>/v1/openapi.json</a></p><table>"
        "<tr><th>Method</th><th>Path</th><th>What</th><th>Status codes</th></tr>"
        + "".join(rows)
        + "</table></body></html>"
    )
    return web.Response(text=page, content_type="text/html")
