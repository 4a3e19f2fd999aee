"""Balance monitors: made, listed, deleted. The account's shard evaluates them
(``actors/balance_watch.py``) and writes their events."""

from __future__ import annotations

import contextlib
from typing import Annotated

import msgspec
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from paynode.api import contract
from paynode.api import problems as p
from paynode.api.audit_writer import audit
from paynode.api.auth.scopes import Principal
from paynode.api.auth.tokens import new_id
from paynode.api.deps import Context, Ctx, check_owner, require
from paynode.api.http import SMALL_BODY_LIMIT, decode_body, json_response
from paynode.api.monitor_schemas import MonitorIn, MonitorList, MonitorOut
from paynode.domain.ledger.model import Code
from paynode.domain.ledger.monitors import Monitor
from paynode.storage import monitors as store

router = APIRouter(tags=["monitors"])


def _out(s: store.Stored) -> MonitorOut:
    state = "unknown" if s.crossed is None else ("crossed" if s.crossed else "clear")
    return MonitorOut(s.id, s.account_id, s.condition, s.threshold, state, s.created_at)  # type: ignore[arg-type]


@router.post(
    "/v1/balance-monitors",
    openapi_extra=contract.body(MonitorIn),
    responses=contract.replies(
        {201: (MonitorOut, "Watching")}, (400, 401, 403, 409, 413, 422, 429, 503)
    ),
    status_code=201,
)
async def create_monitor(
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("accounts:write"))],
) -> Response:
    body = await decode_body(request, MonitorIn, SMALL_BODY_LIMIT)
    spec = (await ctx.client.resolve({body.account_id})).get(body.account_id)
    if spec is None:
        raise p.ApiError(Code.ACCOUNT_NOT_FOUND, field="$.account_id")
    check_owner(principal, spec.owner)
    m = Monitor(
        id=new_id("bm"), account_id=spec.id, owner_user_id=spec.owner or None,
        condition=body.condition, threshold=body.threshold, crossed=None, seq=0,
    )  # fmt: skip
    async with ctx.engine.begin() as conn:
        stored = await store.create(conn, m)
        if stored is None:
            raise p.ApiError(p.TOO_MANY_MONITORS, f"at most {store.MAX_PER_ACCOUNT} an account")
        await audit(conn, request, principal, "monitor.create", m.id,
                    after={"condition": m.condition, "threshold": m.threshold})  # fmt: skip
    # Recorded first: a shard that restarts before it hears of it loads it from there.
    shard = ctx.client.shards[ctx.client.shard_of(spec.id)]
    try:
        await shard.watch.remote(msgspec.msgpack.encode(m))
    except Exception as e:  # the shard's next rebuild loads it; say so honestly
        detail = f"recorded as {m.id}; evaluated once its shard is back"
        raise p.ApiError(Code.STORAGE_UNAVAILABLE, detail) from e
    return json_response(_out(stored), 201)


async def _visible(ctx: Context, principal: Principal, monitor_id: str) -> store.Stored:
    async with ctx.engine.connect() as conn:
        found = await store.get(conn, monitor_id) if len(monitor_id) <= 64 else None
    if found is None or not (principal.admin or found.owner_user_id == principal.user_id):
        raise p.ApiError(p.MONITOR_NOT_FOUND)
    return found


@router.get(
    "/v1/balance-monitors",
    responses=contract.replies({200: (MonitorList, "Yours")}, (401, 403, 429)),
)
async def list_monitors(
    ctx: Ctx, principal: Annotated[Principal, Depends(require("accounts:read"))]
) -> Response:
    owner = None if principal.admin else (principal.user_id or "")
    async with ctx.engine.connect() as conn:
        found = await store.list_of(conn, owner, 1000)
    return json_response(MonitorList([_out(s) for s in found]))


@router.get(
    "/v1/balance-monitors/{monitor_id}",
    responses=contract.replies({200: (MonitorOut, "Its state")}, (401, 403, 404, 429)),
)
async def get_monitor(
    monitor_id: str, ctx: Ctx, principal: Annotated[Principal, Depends(require("accounts:read"))]
) -> Response:
    return json_response(_out(await _visible(ctx, principal, monitor_id)))


@router.delete(
    "/v1/balance-monitors/{monitor_id}",
    responses={204: {"description": "Deleted"}, **contract.replies({}, (401, 403, 404, 429))},
    status_code=204,
)
async def delete_monitor(
    monitor_id: str,
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("accounts:write"))],
) -> Response:
    found = await _visible(ctx, principal, monitor_id)
    async with ctx.engine.begin() as conn:
        await store.delete(conn, found.id)
        await audit(conn, request, principal, "monitor.delete", found.id)
    shard = ctx.client.shards[ctx.client.shard_of(found.account_id)]
    # Deleted in PostgreSQL first: a shard that missed this call records nothing more
    # for it (its writes require a live monitor) and forgets it at its next rebuild.
    with contextlib.suppress(Exception):
        await shard.unwatch.remote([found.id])
    return Response(status_code=204)
