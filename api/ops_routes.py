"""Operations: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter
from starlette.responses import Response

from paynode.actors.analytics import decode_stats as decode_analytics
from paynode.actors.checkpointer import decode_stats as decode_checkpoint
from paynode.actors.notifier import decode_stats as decode_notifier
from paynode.actors.reconciler import decode_status as decode_recon
from paynode.api import contract
from paynode.api.deps import Ctx
from paynode.api.http import json_response
from paynode.api.metrics import CONTENT_TYPE, exposition, front_families, helper_families
from paynode.api.schemas import Health, Readiness
from paynode.domain.ledger.wire import decode_stats

router = APIRouter()

CHECK_TIMEOUT_S = 3.0  # each readiness check and each actor's figures


@router.get("/health", responses=contract.replies({200: (Health, "The process is up")}))
async def health() -> Response:
    return json_response(Health("ok"))


@router.get(
    "/ready",
    responses=contract.replies(
        {200: (Readiness, "Shards and PostgreSQL reachable"), 503: (Readiness, "Not ready")}
    ),
)
async def ready(ctx: Ctx) -> Response:
    async def db() -> bool:
        async with ctx.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
        return True

    checks = [db(), *(h.ping.remote() for h in ctx.client.shards)]
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*checks, return_exceptions=True), timeout=CHECK_TIMEOUT_S
        )
    except TimeoutError:
        results = [False] * len(checks)
    ok = [r is True for r in results]
    body = Readiness("ready" if all(ok) else "not_ready", ok[0], ok[1:])
    return json_response(body, 200 if all(ok) else 503)


@router.get("/metrics", response_class=Response)
async def prometheus(ctx: Ctx) -> Response:
    calls = [h.stats.remote() for h in ctx.client.shards]
    calls += [ctx.analytics.stats.remote(), ctx.reconciler.status.remote(),
              ctx.notifier.stats.remote(), ctx.checkpointer.stats.remote()]  # fmt: skip

    async def bounded(call: Any) -> Any:
        # Each on its own clock: one busy actor must not blank the others' figures.
        try:
            return await asyncio.wait_for(call, CHECK_TIMEOUT_S)
        except Exception:  # a dead or busy actor: its series is absent this scrape
            return None

    raw = await asyncio.gather(*(bounded(c) for c in calls))
    *shard_raw, analytics_raw, recon_raw, notifier_raw, checkpoint_raw = raw
    stats = [decode_stats(r) if isinstance(r, bytes) else None for r in shard_raw]
    families = front_families(ctx.metrics, ctx.client.queue_depths(), stats)
    families += helper_families(
        decode_analytics(analytics_raw) if isinstance(analytics_raw, bytes) else None,
        decode_recon(recon_raw) if isinstance(recon_raw, bytes) else None,
        decode_notifier(notifier_raw) if isinstance(notifier_raw, bytes) else None,
        decode_checkpoint(checkpoint_raw) if isinstance(checkpoint_raw, bytes) else None,
    )
    families += ctx.risk_stats.families()
    return Response(exposition(families), media_type=CONTENT_TYPE)
