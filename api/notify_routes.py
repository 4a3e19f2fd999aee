"""Routes for events, webhook endpoints, devices and inbound webhooks.

Outbound: clients poll ``/v1/events`` or register endpoints the notifier
actor delivers to. Inbound: banks and processors POST signed events to
``/v1/webhooks/{provider}``; each one is stored (accepted or refused, with
why) before anything acts on it.
"""

from __future__ import annotations

import logging
from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec
from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import Response

from paynode.actors.notify.destinations import DestinationError, check_url
from paynode.api import contract, event_cursor
from paynode.api import problems as p
from paynode.api.audit_writer import audit
from paynode.api.auth.scopes import Principal
from paynode.api.auth.tokens import new_id
from paynode.api.deps import Context, Ctx, check_owner, require
from paynode.api.http import SMALL_BODY_LIMIT, decode_body, json_response, public
from paynode.api.notify_schemas import (
    DeliveryOut,
    DeliveryPage,
    EventOut,
    EventPage,
    RetryOut,
    RotateSecretIn,
    WebhookEndpointIn,
    WebhookEndpointList,
    WebhookEndpointOut,
    WebhookEndpointPatch,
    WebhookEndpointWithSecret,
)
from paynode.domain.notify.outbox import START, Position, Source
from paynode.domain.notify.signature import new_secret
from paynode.storage import notify, outbox
from paynode.storage.events import EVENT_TYPES, StoredEvent, id_at, parse_event_id

log = logging.getLogger("paynode.api.notify")
router = APIRouter(tags=["notifications"])
_SCAN_LIMIT = 10_000  # events looked at per list request (a user's filter may keep few)


def _event_out(e: StoredEvent) -> EventOut:
    return EventOut(e.event.id, e.event.type, e.event.created, e.event.data)


def _may_see(principal: Principal, e: StoredEvent) -> bool:
    return principal.admin or (principal.user_id is not None and principal.user_id in e.users)


# -- events ---------------------------------------------------------------------------


@router.get(
    "/v1/events",
    responses=contract.replies({200: (EventPage, "Oldest first")}, (400, 401, 403, 422, 429)),
)
async def list_events(
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("events:read"))],
    after: Annotated[
        str | None,
        Query(
            max_length=event_cursor.MAX_AFTER,
            description="An event id you may see, or the next_after of the previous page",
        ),
    ] = None,
    type: Annotated[
        str | None, Query(max_length=1000, description="Comma-separated event types")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    types = [t for t in (type or "").split(",") if t]
    if any(t not in EVENT_TYPES for t in types):
        raise p.ApiError(p.INVALID_FIELD, "unknown event type", "type")
    user = None if principal.admin else principal.user_id
    async with ctx.engine.connect() as conn:
        position = START if not after else await _resume_at(ctx, conn, principal, after)
        # An admin's page is the next events; a user's is theirs among the next
        # _SCAN_LIMIT, so one request never reads an unbounded stretch.
        scan = limit + 1 if user is None else _SCAN_LIMIT
        users = None if user is None else [user]
        events, last, scanned = await outbox.read_events(conn, position, scan, types, users)
    if len(events) > limit:
        page, more = events[:limit], True
        next_after: str | None = page[-1].event.id
    else:
        page, more = events, scanned == scan and user is not None
        next_after = after if last is None else _cursor_at(ctx, principal, last, page)
    return json_response(EventPage([_event_out(e) for e in page], next_after, more))


async def _resume_at(
    ctx: Context, conn: AsyncConnection, principal: Principal, after: str
) -> Position:
    """Where a page after ``after`` starts; refused unless the caller may be there."""
    found: Position | None = None
    if after.startswith(event_cursor.PREFIX):
        found = event_cursor.open_(ctx.keys, after, _reader(principal))
    elif (ref := parse_event_id(after)) is not None and ref.source == Source.EVENTS:
        # A stored id is unguessable (and earlier pages handed out others' ids as
        # cursors): anyone may resume after one, as before derived ids existed.
        found = await outbox.event_position(conn, ref)
    elif ref is not None:
        # A derived id names an account or transfer: only one the caller may see,
        # or it would tell whether another customer's id exists.
        event = await outbox.get_event(conn, ref)
        found = event.position if event is not None and _may_see(principal, event) else None
    if found is None:
        raise p.ApiError(p.INVALID_CURSOR, "after must be an event id you have seen")
    return found


def _reader(principal: Principal) -> str:
    return principal.user_id or "admin"


def _cursor_at(ctx: Context, principal: Principal, last: Position, page: list[StoredEvent]) -> str:
    """``next_after`` for a page whose scan ended at ``last``."""
    if principal.admin or (page and page[-1].position == last):
        return id_at(last)
    # The last event scanned is not the caller's: its id would name someone else's row.
    return event_cursor.seal(ctx.keys, last, _reader(principal))


@router.get(
    "/v1/events/{event_id}",
    responses=contract.replies({200: (EventOut, "The event")}, (401, 403, 404, 429)),
)
async def get_event(
    event_id: str, ctx: Ctx, principal: Annotated[Principal, Depends(require("events:read"))]
) -> Response:
    ref = parse_event_id(event_id)
    if ref is None:
        raise p.ApiError(p.EVENT_NOT_FOUND)
    async with ctx.engine.connect() as conn:
        found = await outbox.get_event(conn, ref)
    if found is None or not _may_see(principal, found):
        raise p.ApiError(p.EVENT_NOT_FOUND)  # another user's event does not exist for you
    return json_response(_event_out(found))


# -- webhook endpoints ---------------------------------------------------------------------


def _endpoint_out(e: notify.Endpoint) -> WebhookEndpointOut:
    return WebhookEndpointOut(
        id=e.id,
        url=e.url,
        events=e.events,
        max_in_flight=e.max_in_flight,
        enabled=e.enabled,
        owner_user_id=e.owner_user_id,
        created_at=e.created_at,
        updated_at=e.updated_at,
        previous_secret_valid_until=e.secret_rotating_until,
    )


def _with_secret(e: notify.Endpoint, secret: str) -> WebhookEndpointWithSecret:
    return WebhookEndpointWithSecret(**msgspec.structs.asdict(_endpoint_out(e)), secret=secret)


def _checked_url(ctx: Context, url: str) -> str:
    try:
        return check_url(url, ctx.settings.webhook.allow_private)
    except DestinationError as e:
        raise p.ApiError(e.code, e.detail, "$.url") from None


async def _own_endpoint(ctx: Context, principal: Principal, endpoint_id: str) -> notify.Endpoint:
    async with ctx.engine.connect() as conn:
        found = await notify.get_endpoint(conn, endpoint_id) if len(endpoint_id) <= 64 else None
    if found is None:
        raise p.ApiError(p.WEBHOOK_ENDPOINT_NOT_FOUND)
    check_owner(principal, found.owner_user_id or "")
    return found


async def reload_notifier(ctx: Context) -> None:
    """Tell the notifier now; it also re-reads every few seconds if this call is lost."""
    try:
        await ctx.notifier.reload.remote()
    except Exception as e:  # the change is committed; the notifier's own poll picks it up
        log.warning("notifier reload failed: %s", type(e).__name__)


@router.post(
    "/v1/webhook-endpoints",
    openapi_extra=contract.body(WebhookEndpointIn),
    responses=contract.replies(
        {201: (WebhookEndpointWithSecret, "Created; the secret is shown only now")},
        (400, 401, 403, 413, 422, 429),
    ),
    status_code=201,
)
async def create_endpoint(
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("webhooks:write"))],
) -> Response:
    body = await decode_body(request, WebhookEndpointIn, SMALL_BODY_LIMIT)
    url = _checked_url(ctx, body.url)
    secret = new_secret()
    # An admin credential's endpoint hears every event; a user's, only theirs.
    owner = None if principal.admin else principal.user_id
    async with ctx.engine.begin() as conn:
        created = await notify.create_endpoint(
            conn, ctx.keys, new_id("we"), owner, url, sorted(set(body.events)),
            body.max_in_flight, secret,
        )  # fmt: skip
        await audit(conn, request, principal, "webhook_endpoint.create", created.id,
                    after={"host": urlsplit(url).hostname, "events": created.events})  # fmt: skip
    await reload_notifier(ctx)
    return json_response(_with_secret(created, secret), 201)


@router.get(
    "/v1/webhook-endpoints",
    responses=contract.replies({200: (WebhookEndpointList, "Yours")}, (401, 403, 429)),
)
async def list_endpoints(
    ctx: Ctx, principal: Annotated[Principal, Depends(require("webhooks:read"))]
) -> Response:
    async with ctx.engine.connect() as conn:
        found = await notify.list_endpoints(conn, principal.user_id, principal.admin)
    return json_response(WebhookEndpointList([_endpoint_out(e) for e in found]))


@router.get(
    "/v1/webhook-endpoints/{endpoint_id}",
    responses=contract.replies({200: (WebhookEndpointOut, "The endpoint")}, (401, 403, 404, 429)),
)
async def get_endpoint(
    endpoint_id: str,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("webhooks:read"))],
) -> Response:
    return json_response(_endpoint_out(await _own_endpoint(ctx, principal, endpoint_id)))


@router.patch(
    "/v1/webhook-endpoints/{endpoint_id}",
    openapi_extra=contract.body(WebhookEndpointPatch),
    responses=contract.replies(
        {200: (WebhookEndpointOut, "Updated")}, (400, 401, 403, 404, 413, 422, 429)
    ),
)
async def update_endpoint(
    endpoint_id: str,
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("webhooks:write"))],
) -> Response:
    await _own_endpoint(ctx, principal, endpoint_id)
    body = await decode_body(request, WebhookEndpointPatch, SMALL_BODY_LIMIT)
    changes = {k: v for k, v in msgspec.structs.asdict(body).items() if v is not msgspec.UNSET}
    if "url" in changes:
        changes["url"] = _checked_url(ctx, changes["url"])
    if "events" in changes:
        changes["events"] = sorted(set(changes["events"]))
    async with ctx.engine.begin() as conn:
        updated = (
            await notify.update_endpoint(conn, endpoint_id, changes)
            if changes
            else await notify.get_endpoint(conn, endpoint_id)
        )
        if updated is not None and changes:
            await audit(conn, request, principal, "webhook_endpoint.update", endpoint_id,
                        after={"changed": sorted(changes), "enabled": updated.enabled})  # fmt: skip
    if updated is None:
        raise p.ApiError(p.WEBHOOK_ENDPOINT_NOT_FOUND)
    await reload_notifier(ctx)
    return json_response(_endpoint_out(updated))


@router.delete(
    "/v1/webhook-endpoints/{endpoint_id}",
    responses={
        204: {"description": "Deleted; no further deliveries"},
        **contract.replies({}, (401, 403, 404, 429)),
    },
    status_code=204,
)
async def delete_endpoint(
    endpoint_id: str,
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("webhooks:write"))],
) -> Response:
    await _own_endpoint(ctx, principal, endpoint_id)
    return await deleted(ctx, notify.delete_endpoint, endpoint_id, p.WEBHOOK_ENDPOINT_NOT_FOUND,
                          (request, principal, "webhook_endpoint.delete"))  # fmt: skip


async def deleted(
    ctx: Context, delete, object_id: str, missing: str,
    audited: tuple[Request, Principal, str] | None = None,
) -> Response:  # fmt: skip
    """Delete (soft) in one transaction (with its audit record), tell the notifier, 204."""
    async with ctx.engine.begin() as conn:
        if not await delete(conn, object_id):
            raise p.ApiError(missing)
        if audited is not None:
            await audit(conn, *audited, object_id)
    await reload_notifier(ctx)
    return Response(status_code=204)


@router.post(
    "/v1/webhook-endpoints/{endpoint_id}/rotate-secret",
    openapi_extra=contract.body(RotateSecretIn),
    responses=contract.replies(
        {200: (WebhookEndpointWithSecret, "The new secret, shown only now")},
        (400, 401, 403, 404, 413, 422, 429),
    ),
)
async def rotate_secret(
    endpoint_id: str,
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("webhooks:write"))],
) -> Response:
    await _own_endpoint(ctx, principal, endpoint_id)
    body = await decode_body(request, RotateSecretIn, SMALL_BODY_LIMIT)
    secret = new_secret()
    async with ctx.engine.begin() as conn:
        rotated = await notify.rotate_secret(conn, ctx.keys, endpoint_id, secret, body.overlap_s)
        if rotated is not None:
            await audit(conn, request, principal, "webhook_endpoint.rotate_secret", endpoint_id,
                        after={"overlap_s": body.overlap_s})  # fmt: skip
    if rotated is None:
        raise p.ApiError(p.WEBHOOK_ENDPOINT_NOT_FOUND)
    await reload_notifier(ctx)
    return json_response(_with_secret(rotated, secret))


@router.get(
    "/v1/webhook-endpoints/{endpoint_id}/deliveries",
    responses=contract.replies(
        {200: (DeliveryPage, "Oldest first, with every attempt")}, (401, 403, 404, 422, 429)
    ),
)
async def list_deliveries(
    endpoint_id: str,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("webhooks:read"))],
    status: Annotated[Literal["pending", "delivered", "dead"] | None, Query()] = None,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Response:
    await _own_endpoint(ctx, principal, endpoint_id)
    async with ctx.engine.connect() as conn:
        rows = await notify.list_deliveries(conn, endpoint_id, after, limit + 1, status)
    more = len(rows) > limit
    rows = rows[:limit]
    out = [public(DeliveryOut, r)
           for r in rows]  # fmt: skip
    return json_response(DeliveryPage(out, rows[-1].id if more and rows else None))


@router.post(
    "/v1/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}/retry",
    responses=contract.replies(
        {202: (RetryOut, "Queued for one more attempt now")}, (401, 403, 404, 429)
    ),
    status_code=202,
)
async def retry_delivery(
    endpoint_id: str,
    delivery_id: int,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("webhooks:write"))],
) -> Response:
    await _own_endpoint(ctx, principal, endpoint_id)
    if not 0 < delivery_id < 2**62:
        raise p.ApiError(p.DELIVERY_NOT_FOUND)
    async with ctx.engine.begin() as conn:
        queued = await notify.retry_delivery(
            conn, endpoint_id, delivery_id, ctx.settings.webhook.max_attempts
        )
    if not queued:
        raise p.ApiError(p.DELIVERY_NOT_FOUND)
    try:
        await ctx.notifier.wake.remote(endpoint_id)
    except Exception as e:  # queued in PostgreSQL; the worker finds it on its next pass
        log.warning("notifier wake failed: %s", type(e).__name__)
    return json_response(RetryOut(delivery_id, "pending"), 202)
