"""The HTTP front: wiring only.

``create_app`` returns the ASGI app uvicorn serves: the edge (``api/edge.py``:
counting, limits, the hot transfer routes of ``api/transfers.py``) in front of
a FastAPI app holding every other route, its error handlers
(``api/errors.py``) and the lifespan that opens the node's shared state
(``api/context.py``).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.routing import Route

from paynode.actors import tracing
from paynode.api import (
    ach_ops_routes,
    ach_routes,
    billing_routes,
    billing_service,
    card_routes,
    card_service,
    code_routes,
    contract,
    device_routes,
    dispute_routes,
    errors,
    fx_routes,
    handle_routes,
    identity_routes,
    inbound_routes,
    key_routes,
    ledger_routes,
    link_routes,
    monitor_routes,
    notification_routes,
    notify_routes,
    ops_routes,
    payment_service,
    rails_routes,
    recon_routes,
    risk_routes,
    rtp_routes,
    rtp_service,
    schedule_routes,
)
from paynode.api.context import Context, open_context
from paynode.api.edge import Edge
from paynode.api.idempotency import Idempotency
from paynode.api.metrics import FrontMetrics
from paynode.api.pages import page_headers
from paynode.api.transfers import ROUTES, TransferRoutes
from paynode.domain.settings import Settings
from paynode.storage.keyring import Keyring

# FastAPI >= 0.165 looks up OpenTelemetry providers on every request when the
# opentelemetry packages are importable (Ray brings them); /metrics is ours.
_NO_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)
ROUTERS = (
    ledger_routes, ops_routes, identity_routes, key_routes, recon_routes, notify_routes,
    device_routes, inbound_routes, handle_routes, rails_routes, ach_routes, risk_routes,
    schedule_routes, fx_routes, ach_ops_routes, monitor_routes, link_routes, rtp_routes,
    notification_routes, code_routes, card_routes, billing_routes,
    dispute_routes,
)  # fmt: skip


def create_app(settings: Settings, shard_names: list[str], keys: Keyring) -> Any:
    """The ASGI app. Ray must be initialized in this process (the actors are looked up)."""
    metrics = FrontMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_context(settings, shard_names, keys, metrics) as ctx:
            app.state.ctx = ctx
            # Every front finishes RTP payments the network answered late (or a crash left).
            rtp = (
                asyncio.create_task(rtp_service.follow(ctx))
                if ctx.rtp_network is not None and settings.rtp.recover_interval_ms > 0
                else None
            )
            # ... and card payments a slow processor or a crash left processing.
            card = (
                asyncio.create_task(card_service.follow(ctx))
                if ctx.card_processor is not None and settings.card.recover_interval_ms > 0
                else None
            )
            # ... and refunds a crash or an unanswering processor left processing.
            refunds = (
                asyncio.create_task(payment_service.follow_refunds(ctx))
                if settings.card.recover_interval_ms > 0
                else None
            )
            # ... and renewals, trials and dunning (card attempts need the processor).
            billing = (
                asyncio.create_task(billing_service.follow(ctx))
                if settings.billing.interval_ms > 0
                else None
            )
            try:
                yield
            finally:
                for task in (rtp, card, refunds, billing):
                    if task is not None:
                        task.cancel()
                if settings.trace_endpoint:
                    tracing.shutdown(settings.trace_endpoint)  # what is queued goes out

    app = FastAPI(
        title="paynode",
        version="1",
        description="Payment node: accounts and transfers in integer minor units.",
        lifespan=lifespan,
        **_NO_TELEMETRY,
    )
    contract.install(app, ROUTES)
    errors.install(app)
    for module in ROUTERS:
        app.include_router(module.router)

    def context() -> Context:
        return app.state.ctx

    hot = TransferRoutes(context).handlers
    # The edge serves these first; FastAPI knows them too, so that another method on
    # their paths is 405 (and GET /v1/transfers/batch still reaches /v1/transfers/{id}).
    for (method, path), handler in hot.items():
        app.router.routes.append(
            Route(path, endpoint=_Asgi(handler), methods=[method], include_in_schema=False)
        )
    idempotency = Idempotency(context, settings.http.max_body_bytes)
    edge: Any = Edge(app, hot, settings, metrics, idempotency, page_headers(app))
    if settings.http.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        edge = CORSMiddleware(
            edge,
            allow_origins=[o.strip() for o in settings.http.cors_origins.split(",") if o.strip()],
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
            expose_headers=["Retry-After", "Idempotent-Replayed"],
            max_age=600,
        )
    return edge


class _Asgi:
    """A handler Starlette must call as an ASGI app (it calls plain functions with a Request)."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.handler(scope, receive, send)
