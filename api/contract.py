"""OpenAPI from the msgspec types: the schema clients and fuzzers see is the validator.

Routes take raw bodies (decoded by msgspec, not pydantic), so FastAPI cannot
infer their schemas; each route declares them with :func:`body` and
:func:`replies`, and :func:`install` merges msgspec's JSON Schema components
into ``/openapi.json``.
"""

from __future__ import annotations

from typing import Any

import msgspec
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from .identity_schemas import IDENTITY_TYPES
from .problems import PROBLEM_JSON
from .schemas import PUBLIC_TYPES, Problem

_REF = "#/components/schemas/{name}"


def _ref(t: type) -> dict[str, str]:
    return {"$ref": _REF.format(name=t.__name__)}


def body(t: type) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref(t)}},
        }
    }


def replies(ok: dict[int, tuple[type, str]], errors: tuple[int, ...] = ()) -> dict[int | str, Any]:
    """Success bodies by status, plus problem+json for each error status."""
    out: dict[int | str, Any] = {
        status: {"description": desc, "content": {"application/json": {"schema": _ref(t)}}}
        for status, (t, desc) in ok.items()
    }
    for status in errors:
        out[status] = {
            "description": "Problem details with a stable `code`",
            "content": {PROBLEM_JSON: {"schema": _ref(Problem)}},
        }
    return out


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description,
                routes=app.routes,
            )  # fmt: skip
            _, components = msgspec.json.schema_components(
                PUBLIC_TYPES + IDENTITY_TYPES, ref_template=_REF
            )
            schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
            # FastAPI's default 422 (pydantic) never happens here: we answer with Problem.
            schema["components"]["schemas"].pop("HTTPValidationError", None)
            schema["components"]["schemas"].pop("ValidationError", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
