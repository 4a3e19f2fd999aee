"""API keys: created (the secret shown once), listed, revoked (every front drops it at once)."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from paynode.api import contract
from paynode.api import problems as p
from paynode.api.audit_writer import audit
from paynode.api.auth import tokens
from paynode.api.auth.scopes import Principal
from paynode.api.deps import Ctx, require
from paynode.api.http import SMALL_BODY_LIMIT, decode_body, json_response
from paynode.api.identity_schemas import (
    ApiKeyIn,
    ApiKeyOut,
    ApiKeyPage,
)
from paynode.storage import identity

router = APIRouter()
_KEY_ID = re.compile(r"pk_[0-9a-f]{32}\Z")


# -- API keys -----------------------------------------------------------------------------


def _key_out(row: identity.ApiKeyRow, key: str | None = None) -> ApiKeyOut:
    return ApiKeyOut(
        row.id, row.name, row.scopes, row.owner_user_id, row.created_at, row.revoked_at, key
    )


@router.post(
    "/v1/api-keys",
    openapi_extra=contract.body(ApiKeyIn),
    responses=contract.replies(
        {201: (ApiKeyOut, "Created; `key` is shown only now")}, contract.authed(400, 404, 413, 422)
    ),
    status_code=201,
    tags=["api-keys"],
)
async def create_api_key(
    request: Request, ctx: Ctx, principal: Annotated[Principal, Depends(require("api_keys:write"))]
) -> Response:
    body = await decode_body(request, ApiKeyIn, SMALL_BODY_LIMIT)
    scopes = sorted(set(body.scopes))
    if not principal.admin and not set(scopes) <= principal.scopes:
        raise p.ApiError(p.SCOPE_NOT_GRANTABLE)
    owner = body.owner_user_id
    if not principal.admin:
        if owner is not None and owner != principal.user_id:
            raise p.ApiError(p.FORBIDDEN, field="$.owner_user_id")
        owner = principal.user_id
    elif owner is None and "admin" not in scopes:
        # A non-admin key acts as a user; without one it could act on nothing.
        raise p.ApiError(p.MISSING_FIELD, "a key without admin needs an owner", "$.owner_user_id")
    key_id, secret, key = tokens.new_secret("pk")
    async with ctx.engine.begin() as conn:
        if owner is not None and not await identity.user_exists(conn, owner):
            raise p.ApiError(p.USER_NOT_FOUND, field="$.owner_user_id")
        await identity.create_api_key(
            conn, key_id=key_id, secret_hash=tokens.secret_hash(secret), name=body.name,
            scopes=scopes, owner_user_id=owner, created_by=principal.id,
        )  # fmt: skip
        stored = await identity.get_api_key(conn, key_id)
        await audit(conn, request, principal, "api_key.create", key_id,
                    after={"scopes": scopes, "owner_user_id": owner})  # fmt: skip
    assert stored is not None
    return json_response(_key_out(stored, key), 201)


@router.get(
    "/v1/api-keys",
    responses=contract.replies(
        {200: (ApiKeyPage, "Your keys (admins: all), no secrets")}, contract.authed()
    ),
    tags=["api-keys"],
)
async def list_api_keys(
    ctx: Ctx, principal: Annotated[Principal, Depends(require("api_keys:write"))]
) -> Response:
    owner = None if principal.admin else principal.user_id
    if owner is None and not principal.admin:
        return json_response(ApiKeyPage([]))
    async with ctx.engine.connect() as conn:
        rows = await identity.list_api_keys(conn, owner, limit=1000)
    return json_response(ApiKeyPage([_key_out(r) for r in rows]))


@router.delete(
    "/v1/api-keys/{key_id}",
    responses={204: {"description": "Revoked"}, **contract.replies({}, contract.authed(404))},
    status_code=204,
    tags=["api-keys"],
)
async def revoke_api_key(
    key_id: str,
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("api_keys:write"))],
) -> Response:
    if not _KEY_ID.match(key_id):
        raise p.ApiError(p.API_KEY_NOT_FOUND)
    async with ctx.engine.begin() as conn:
        row = await identity.get_api_key(conn, key_id)
        if row is None:
            raise p.ApiError(p.API_KEY_NOT_FOUND)
        if not principal.admin and row.owner_user_id != principal.user_id:
            raise p.ApiError(p.FORBIDDEN)
        await identity.revoke_api_key(conn, key_id)
        await audit(conn, request, principal, "api_key.revoke", key_id)
    ctx.auth.forget_api_key(key_id)
    return Response(status_code=204)
