"""JSON Schema files of ``schemas/``: loaded and compiled once, then used to validate."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry
from referencing.jsonschema import DRAFT7

from ..errors import BadRequest


def schema_dir() -> Path:
    """``schemas/`` of a source checkout, or the copy shipped inside the wheel."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "schemas", package.parent / "schemas"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("the schemas folder is missing")


@cache
def documents() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(schema_dir().glob("*.json"))}


@cache
def registry() -> Registry:
    return Registry().with_resources(
        (name, DRAFT7.create_resource(doc)) for name, doc in documents().items()
    )


def schema(ref: str) -> dict[str, Any]:
    """``"vm.create"`` -> the ``create`` schema of ``schemas/vm.json``."""
    file_name, key = ref.split(".", 1)
    return documents()[f"{file_name}.json"][key]


@cache
def validator(ref: str) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(schema(ref), registry=registry())


def validate(ref: str, data: Any) -> None:
    """Raise BadRequest with the validator's message and the failing field."""
    error = jsonschema.exceptions.best_match(validator(ref).iter_errors(data))
    if error is None:
        return
    field = ".".join(str(p) for p in error.absolute_path)
    where = f" (field '{field}')" if field else ""
    dump = json.dumps(error.schema, sort_keys=True)
    raise BadRequest(f"Invalid JSON: {error.message}{where} in schema: {dump}")
