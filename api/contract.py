"""OpenAPI from the msgspec types: the schema clients and fuzzers see is the validator.

Routes take raw bodies (decoded by msgspec, not pydantic), so FastAPI cannot
infer their schemas; each route declares them with :func:`body` and
:func:`replies`, and :func:`install` merges msgspec's JSON Schema components
into ``/openapi.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from paynode.api.ach_schemas import ACH_TYPES
from paynode.api.billing_schemas import BILLING_TYPES
from paynode.api.card_schemas import CARD_TYPES
from paynode.api.dispute_schemas import DISPUTE_TYPES
from paynode.api.fx_schemas import FX_TYPES
from paynode.api.identity_schemas import IDENTITY_TYPES
from paynode.api.link_schemas import LINK_TYPES
from paynode.api.monitor_schemas import MONITOR_TYPES
from paynode.api.notification_schemas import NOTIFICATION_TYPES
from paynode.api.notify_schemas import NOTIFY_TYPES
from paynode.api.problems import PROBLEM_JSON
from paynode.api.rails_schemas import RAILS_TYPES
from paynode.api.recon_schemas import RECON_TYPES
from paynode.api.risk_schemas import RISK_TYPES
from paynode.api.rtp_schemas import RTP_TYPES
from paynode.api.schedule_schemas import SCHEDULE_TYPES
from paynode.api.schemas import PUBLIC_TYPES, Problem

_REF = "#/components/schemas/{name}"
SIGNED = "provider-signature"  # no bearer: the body's HMAC signature authenticates it


def signed_by_provider() -> None:
    """A route dependency that only marks the route in the contract (the route verifies)."""


signed_by_provider.required_scope = SIGNED  # type: ignore[attr-defined]


def _ref(t: type) -> dict[str, str]:
    return {"$ref": _REF.format(name=t.__name__)}


def body(t: type) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref(t)}},
        }
    }


def _problem_for_validation(schema: dict[str, Any]) -> None:
    """Where FastAPI documented its own 422 (path or query parameters), say what we send."""
    for operation in (op for item in schema.get("paths", {}).values() for op in item.values()):
        reply = operation.get("responses", {}).get("422")
        if reply is not None and PROBLEM_JSON not in reply.get("content", {}):
            operation["responses"]["422"] = replies({}, (422,))[422]


def authed(*more: int) -> tuple[int, ...]:
    """The error statuses of a route behind a credential (401, 403, 429), and ``more``."""
    return (401, 403, 429, *more)


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


def required_scopes(app: FastAPI) -> dict[tuple[str, str], str]:
    """(method, path) -> the scope a route requires: a scope name, "any" or "none"."""
    out = {}
    routes = list(app.routes)
    while routes:
        route = routes.pop(0)
        # FastAPI >= 0.160 keeps included routers whole (no prefix is used here).
        nested = getattr(route, "original_router", None)
        if nested is not None:
            routes.extend(nested.routes)
        if not isinstance(route, APIRoute):
            continue
        found = "none"
        for dep in route.dependant.dependencies:
            found = getattr(dep.call, "required_scope", found)
        for method in route.methods or ():
            out[(method, route.path)] = found
    return out


def _document_scopes(app: FastAPI, schema: dict[str, Any]) -> None:
    for (method, path), scope in required_scopes(app).items():
        op = schema["paths"].get(path, {}).get(method.lower())
        if op is None:
            continue
        op["x-required-scope"] = scope
        if scope in ("none", SIGNED):
            op.pop("security", None)
            op["security"] = []  # explicitly public


def _hot_operations(schema: dict[str, Any], routes: Sequence[Any]) -> None:
    """Routes served outside FastAPI (api/transfers.py), documented from their declaration."""
    for r in routes:
        operation = {
            "summary": r.summary,
            "operationId": f"{r.method.lower()}_{r.path.strip('/').replace('/', '_')}",
            **body(r.body),
            "responses": {str(k): v for k, v in replies(r.replies, r.errors).items()},
            "security": [{"HTTPBearer": []}],
            "x-required-scope": r.scope,
        }
        schema["paths"].setdefault(r.path, {})[r.method.lower()] = operation


IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": (
        "Run this request once per key (per credential, for 24 hours): the same request "
        "again gets the first answer with `Idempotent-Replayed: true`; another request "
        "under the key is 409 `idempotency_key_reused`, one while the first still runs "
        "409 `idempotency_key_in_use` (retry). 5xx and 429 answers are not kept."
    ),
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
}


def _document_idempotency(schema: dict[str, Any]) -> None:
    """Every POST behind a credential takes the header (api/idempotency.py), and may
    answer what it adds: 400 (a malformed key), 409, and 503 (its store unreachable)."""
    for item in schema.get("paths", {}).values():
        op = item.get("post")
        if op is None or op.get("security") == []:
            continue  # public: the header is refused there (no credential to keep it by)
        op.setdefault("parameters", []).append(IDEMPOTENCY_KEY)
        for status in (400, 409, 503):
            op["responses"].setdefault(str(status), replies({}, (status,))[status])


def install(app: FastAPI, hot_routes: Sequence[Any] = ()) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description,
                routes=app.routes,
            )  # fmt: skip
            _hot_operations(schema, hot_routes)
            _, components = msgspec.json.schema_components(
                PUBLIC_TYPES
                + IDENTITY_TYPES
                + RECON_TYPES
                + NOTIFY_TYPES
                + RAILS_TYPES
                + RTP_TYPES
                + DISPUTE_TYPES
                + ACH_TYPES
                + RISK_TYPES
                + SCHEDULE_TYPES
                + FX_TYPES
                + MONITOR_TYPES
                + LINK_TYPES
                + NOTIFICATION_TYPES
                + CARD_TYPES
                + BILLING_TYPES,
                ref_template=_REF,
            )
            schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
            _document_scopes(app, schema)
            _document_idempotency(schema)
            # FastAPI's default 422 (pydantic) never happens here: we answer with Problem.
            schema["components"]["schemas"].pop("HTTPValidationError", None)
            schema["components"]["schemas"].pop("ValidationError", None)
            _problem_for_validation(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
