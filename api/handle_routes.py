"""@handles: claimed, resolved, released (the directory actor holds every live one)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from paynode.actors.handles import decode_claimed, decode_handles
from paynode.api import contract
from paynode.api import problems as p
from paynode.api.auth.scopes import Principal
from paynode.api.deps import Context, Ctx, check_owner, require
from paynode.api.http import SMALL_BODY_LIMIT, decode_body, json_response
from paynode.api.rails_schemas import (
    HandleIn,
    HandleOut,
)
from paynode.domain.ledger.model import Code
from paynode.domain.rails.handles_rules import HandleError, normalize_handle

router = APIRouter(tags=["payments"])


def normalized(raw: str, field: str) -> str:
    try:
        return normalize_handle(raw)
    except HandleError as e:
        raise p.ApiError(e.code, str(e), field) from None


async def lookup(ctx: Context, name: str):
    (found,) = decode_handles(await ctx.handles.resolve.remote([name]))
    return found


# -- handles ------------------------------------------------------------------------------


@router.post(
    "/v1/handles",
    openapi_extra=contract.body(HandleIn),
    responses=contract.replies({201: (HandleOut, "Claimed")}, (400, 401, 403, 409, 413, 422, 429)),
    status_code=201,
)
async def claim_handle(
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("handles:write"))],
) -> Response:
    body = await decode_body(request, HandleIn, SMALL_BODY_LIMIT)
    name = normalized(body.handle, "$.handle")
    spec = (await ctx.client.resolve({body.account_id})).get(body.account_id)
    if spec is None:
        raise p.ApiError(Code.ACCOUNT_NOT_FOUND, field="$.account_id")
    check_owner(principal, spec.owner)
    claimed = decode_claimed(await ctx.handles.claim.remote(name, spec.id, spec.owner))
    if claimed.code or claimed.handle is None:
        raise p.ApiError(p.HANDLE_TAKEN, field="$.handle")
    h = claimed.handle
    return json_response(HandleOut(h.handle, h.account_id, h.created_at), 201)


@router.get(
    "/v1/handles/{handle}",
    responses=contract.replies({200: (HandleOut, "Whom to pay")}, (401, 403, 404, 422, 429)),
)
async def resolve_handle(
    handle: str, ctx: Ctx, _: Annotated[Principal, Depends(require("handles:read"))]
) -> Response:
    found = await lookup(ctx, normalized(handle, "handle"))
    if found is None:
        raise p.ApiError(p.HANDLE_NOT_FOUND)
    return json_response(HandleOut(found.handle, found.account_id, found.created_at))


@router.delete(
    "/v1/handles/{handle}",
    responses={204: {"description": "Released"}, **contract.replies({}, (401, 403, 404, 422, 429))},
    status_code=204,
)
async def release_handle(
    handle: str,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("handles:write"))],
) -> Response:
    name = normalized(handle, "handle")
    found = await lookup(ctx, name)
    if found is None:
        raise p.ApiError(p.HANDLE_NOT_FOUND)
    check_owner(principal, found.owner_user_id)
    await ctx.handles.release.remote(name)
    return Response(status_code=204)
