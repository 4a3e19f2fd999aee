"""Inbound webhooks: a provider's signed events, verified, stored and handed to their handler."""

from __future__ import annotations

import logging
from typing import Annotated, Literal, NoReturn

import msgspec
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from paynode.api import contract
from paynode.api import problems as p
from paynode.api.auth.scopes import Principal
from paynode.api.deps import Ctx, require
from paynode.api.http import json_response, read_body
from paynode.api.inbound import dispatch
from paynode.api.notify_schemas import (
    InboundAck,
    InboundEvent,
    InboundRecordOut,
    InboundRecordPage,
)
from paynode.domain.notify.signature import HEADER, SignatureError, verify_signature
from paynode.storage import notify

log = logging.getLogger("paynode.api.notify")
router = APIRouter(tags=["notifications"])


# -- inbound webhooks ----------------------------------------------------------------------


@router.post(
    "/v1/webhooks/{provider}",
    openapi_extra={
        **contract.body(InboundEvent),
        "parameters": [
            {
                "name": HEADER,
                "in": "header",
                "required": True,
                "schema": {"type": "string"},
                "description": "t=<unix>,v1=<hex HMAC-SHA256 of '<t>.<raw body>'>",
            }
        ],
    },
    responses=contract.replies(
        {200: (InboundAck, "Accepted and stored")}, (400, 401, 404, 409, 413, 422, 429)
    ),
)
async def inbound_webhook(
    provider: str,
    request: Request,
    ctx: Ctx,
    _: Annotated[None, Depends(contract.signed_by_provider)],
) -> Response:
    """A provider's signed event. Authenticated by its signature, not a bearer token."""
    secret = ctx.settings.providers().get(provider)
    raw = await read_body(request, notify.INBOUND_MAX_BYTES)
    envelope = _lenient(raw)
    event_id = envelope.get("id") if isinstance(envelope.get("id"), str) else None
    event_type = envelope.get("type") if isinstance(envelope.get("type"), str) else None

    async def refuse(code: str, signed_at: int | None = None) -> NoReturn:
        async with ctx.engine.begin() as conn:
            # provider is NOT NULL: a name with nothing storable in it (only NULs) is "".
            await notify.record_inbound(
                conn, ctx.keys, _storable(provider, 64) or "", _storable(event_id, 200),
                _storable(event_type, 100), signed_at, "refused", code, raw,
            )  # fmt: skip
        raise p.ApiError(code)

    if secret is None:
        await refuse(p.UNKNOWN_PROVIDER)
    try:
        signed_at = verify_signature(
            secret, request.headers.get(HEADER, ""), raw, ctx.settings.inbound.tolerance_s
        )
    except SignatureError as e:
        await refuse(e.code)
    try:
        event = msgspec.json.decode(raw, type=InboundEvent)
    except (msgspec.ValidationError, msgspec.DecodeError):
        await refuse(p.INVALID_WEBHOOK_BODY, signed_at=signed_at)
    try:
        async with ctx.engine.begin() as conn:
            row_id = await notify.record_inbound(
                conn, ctx.keys, provider, event.id, event.type, signed_at, "accepted", None, raw
            )
    except notify.InboundReplayed:
        # Accepted before but never handled (we failed mid-way): handle it now.
        async with ctx.engine.connect() as conn:
            pending = await notify.unhandled_inbound(conn, provider, event.id)
        if pending is None:
            await refuse(p.WEBHOOK_REPLAYED, signed_at=signed_at)
        row_id = pending
    handled_by = await dispatch(ctx, provider, event)
    # Done, even with no handler ("none": kept for one registered later to replay).
    async with ctx.engine.begin() as conn:
        await notify.mark_inbound_handled(conn, row_id, handled_by or "none")
    return json_response(InboundAck(row_id, "accepted", handled_by))


@router.get(
    "/v1/webhooks/inbound",
    responses=contract.replies(
        {200: (InboundRecordPage, "What providers sent us, newest first")}, (401, 403, 422, 429)
    ),
)
async def list_inbound_webhooks(
    ctx: Ctx,
    _: Annotated[Principal, Depends(require("admin"))],
    provider: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[Literal["accepted", "refused"] | None, Query()] = None,
    before: Annotated[int | None, Query(ge=1)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Response:
    """The inbound webhook log (operators): every event a provider sent, accepted with
    the handler that took it, or refused with the reason."""
    async with ctx.engine.connect() as conn:
        rows = await notify.list_inbound(conn, provider, status, before, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    out = [InboundRecordOut(**dict(zip(notify.INBOUND_COLUMNS, r, strict=True))) for r in rows]
    return json_response(InboundRecordPage(out, rows[-1][0] if more and rows else None))


def _storable(text: str | None, limit: int) -> str | None:
    """Untrusted text cut to ``limit`` and without NUL (PostgreSQL text cannot hold it)."""
    return (text or "").replace("\x00", "")[:limit] or None


def _lenient(raw: bytes) -> dict:
    """The envelope's fields for the record of a refusal (never trusted for anything else)."""
    try:
        value = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}
