"""Routes for reconciliation: run one now, see the status, list discrepancies."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from paynode.actors.analytics import decode_stats as decode_analytics
from paynode.actors.reconciler import decode_status, decode_summary
from paynode.api import contract
from paynode.api import problems as p
from paynode.api.auth.scopes import Principal
from paynode.api.deps import Ctx, require
from paynode.api.http import decode_body, json_response, public
from paynode.api.recon_schemas import (
    AnalyticsOut,
    DiscrepancyOut,
    DiscrepancyPage,
    ReconStatusOut,
    RunIn,
    RunOut,
)
from paynode.storage.schema import discrepancies

router = APIRouter(tags=["reconciliation"])
RUN_TIMEOUT_S = 300.0  # a full run reads the whole journal; beyond this the client gets 503


@router.post(
    "/v1/reconciliation/runs",
    openapi_extra=contract.body(RunIn),
    responses=contract.replies(
        {201: (RunOut, "The run, finished")}, (400, 401, 403, 413, 422, 429, 503)
    ),
    status_code=201,
)
async def run(
    request: Request,
    ctx: Ctx,
    _: Annotated[Principal, Depends(require("reconciliation:write"))],
) -> Response:
    body = await decode_body(request, RunIn, 1024)
    try:
        raw = await asyncio.wait_for(ctx.reconciler.run.remote(body.kind, "api"), RUN_TIMEOUT_S)
    except TimeoutError:
        raise p.ApiError(p.TIMEOUT, "the run goes on; see /v1/reconciliation/status") from None
    return json_response(public(RunOut, decode_summary(raw)), 201)


@router.get(
    "/v1/reconciliation/status",
    responses=contract.replies({200: (ReconStatusOut, "Runs and analytics lag")}, (401, 403, 429)),
)
async def status(
    ctx: Ctx, _: Annotated[Principal, Depends(require("reconciliation:read"))]
) -> Response:
    recon, analytics = await asyncio.gather(
        ctx.reconciler.status.remote(), ctx.analytics.stats.remote()
    )
    s, a = decode_status(recon), decode_analytics(analytics)
    last = None if s.last is None else public(RunOut, s.last)
    return json_response(
        ReconStatusOut(
            runs=s.runs,
            failures=s.failures,
            open_discrepancies=s.open_discrepancies,
            candidates=s.candidates,
            last_run=last,
            analytics=AnalyticsOut(
                a.watermark_txid,
                a.rows_published,
                a.segments_live,
                a.lag_last_s,
                a.lag_max_s,
                a.errors,
            ),
        )
    )


@router.get(
    "/v1/reconciliation/discrepancies",
    responses=contract.replies({200: (DiscrepancyPage, "Oldest first")}, (401, 403, 422, 429)),
)
async def list_discrepancies(
    ctx: Ctx,
    _: Annotated[Principal, Depends(require("reconciliation:read"))],
    state: Annotated[Literal["open", "resolved", "all"], Query()] = "open",
    kind: Annotated[str | None, Query(max_length=40)] = None,
    after: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    d = discrepancies
    q = sa.select(d).where(d.c.id > after).order_by(d.c.id).limit(limit + 1)
    if state == "open":
        q = q.where(d.c.resolved_at.is_(None))
    elif state == "resolved":
        q = q.where(d.c.resolved_at.is_not(None))
    if kind is not None:
        q = q.where(d.c.kind == kind)
    async with ctx.engine.connect() as conn:
        found: Iterable[tuple[Any, ...]] = await conn.execute(q)
        rows = [DiscrepancyOut(*r) for r in found]
    more = len(rows) > limit
    rows = rows[:limit]
    return json_response(DiscrepancyPage(rows, rows[-1].id if more and rows else None))
