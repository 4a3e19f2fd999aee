"""The send API and users' notification preferences.

``POST /v1/notifications`` records a notification and one message per channel
in one transaction, then wakes the notifier, whose delivery loop
(actors/notify/messages.py) applies the user's preferences and sends. Sending
reaches any user, so it takes an operator scope (``notifications:write``) or
admin; preferences are the user's own (or an admin's to set).
"""

from __future__ import annotations

import functools
import logging
import re
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
from paynode.api.notification_schemas import (
    BATCH_BODY_LIMIT,
    MAX_DATA_BYTES,
    MAX_VALUE_CHARS,
    NotificationBatchIn,
    NotificationBatchOut,
    NotificationIn,
    NotificationOut,
    ReplayOut,
)
from paynode.domain.notify.preferences import InvalidPreferences, Preferences, channels_for, check
from paynode.domain.notify.templates import TemplateError, Templates
from paynode.domain.notify.templates import load as load_templates
from paynode.storage import identity
from paynode.storage import notifications as store

log = logging.getLogger("paynode.api.notifications")
router = APIRouter(tags=["notifications"])
_USER_ID = re.compile(r"usr_[0-9a-f]{32}\Z")


@functools.cache
def _templates() -> Templates:
    return load_templates()


def _out(n: store.Notification) -> NotificationOut:
    return msgspec.convert(n, NotificationOut, from_attributes=True)


def _check_data(i: int | None, body: NotificationIn) -> None:
    """Refuse what could not be rendered, before anything is written."""
    where = "" if i is None else f"notifications[{i}]."
    if body.template not in _templates().names():
        raise p.ApiError(p.UNKNOWN_TEMPLATE, f"no template {body.template!r}", f"{where}template")
    for k, v in body.data.items():
        if isinstance(v, str) and len(v) > MAX_VALUE_CHARS:
            raise p.ApiError(p.INVALID_FIELD, f"at most {MAX_VALUE_CHARS} characters",
                             f"{where}data.{k}")  # fmt: skip
    if len(msgspec.json.encode(body.data)) > MAX_DATA_BYTES:
        raise p.ApiError(p.INVALID_FIELD, f"at most {MAX_DATA_BYTES} bytes", f"{where}data")
    try:
        _templates().render(body.template, "en", body.data)
    except TemplateError as e:
        raise p.ApiError(p.TEMPLATE_DATA_MISSING, str(e), f"{where}data") from None


async def _new(
    ctx: Context, conn, body: NotificationIn, principal: Principal
) -> store.NewNotification:
    prefs = await store.preferences(conn, body.user_id)
    return store.NewNotification(
        id=body.id or new_id("ntf"),
        user_id=body.user_id,
        template=body.template,
        type=body.type or body.template,
        data=dict(body.data),
        urgent=body.urgent,
        channels=list(channels_for(prefs, body.channels)),
        created_by=principal.id,
    )


async def _create_all(
    ctx: Context, request: Request, principal: Principal, bodies: list[NotificationIn]
) -> tuple[list[store.Notification], int]:
    """Every notification in one transaction: all of them or none."""
    ids = [b.id for b in bodies if b.id is not None]
    if len(ids) != len(set(ids)):
        raise p.ApiError(p.INVALID_FIELD, "an id appears twice in the batch", "notifications")
    out, created = [], 0
    async with ctx.engine.begin() as conn:
        users = {b.user_id for b in bodies}
        for u in sorted(users):
            if not _USER_ID.match(u) or not await identity.user_exists(conn, u):
                raise p.ApiError(p.USER_NOT_FOUND, f"no user {u[:64]}", "user_id")
        for b in bodies:
            new = await _new(ctx, conn, b, principal)
            try:
                n, was_new = await store.create(conn, new)
            except store.Conflict:
                raise p.ApiError(p.NOTIFICATION_EXISTS, field="id") from None
            out.append(n)
            created += int(was_new)
        if created:
            await audit(conn, request, principal, "notification.send", out[0].id,
                        after={"count": created})  # fmt: skip
    if created:
        await _wake(ctx)
    return out, created


async def _wake(ctx: Context) -> None:
    try:
        await ctx.notifier.wake_messages.remote()
    except Exception as e:  # the loop polls anyway: a lost wake-up delays, never loses
        log.warning("notifier not woken: %s", type(e).__name__)


@router.post(
    "/v1/notifications",
    openapi_extra=contract.body(NotificationIn),
    responses=contract.replies(
        {201: (NotificationOut, "Queued"), 200: (NotificationOut, "Already queued (same id)")},
        contract.authed(400, 404, 409, 413, 422),
    ),
    status_code=201,
)
async def send_notification(
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("notifications:write"))],
) -> Response:
    body = await decode_body(request, NotificationIn, SMALL_BODY_LIMIT)
    _check_data(None, body)
    found, created = await _create_all(ctx, request, principal, [body])
    return json_response(_out(found[0]), 201 if created else 200)


@router.post(
    "/v1/notifications/batch",
    openapi_extra=contract.body(NotificationBatchIn),
    responses=contract.replies(
        {201: (NotificationBatchOut, "Queued (all or none)")},
        contract.authed(400, 404, 409, 413, 422),
    ),
    status_code=201,
)
async def send_batch(
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("notifications:write"))],
) -> Response:
    body = await decode_body(request, NotificationBatchIn, BATCH_BODY_LIMIT)
    for i, n in enumerate(body.notifications):
        _check_data(i, n)
    found, created = await _create_all(ctx, request, principal, body.notifications)
    return json_response(NotificationBatchOut(data=[_out(n) for n in found], created=created), 201)


@router.get(
    "/v1/notifications/{notification_id}",
    responses=contract.replies(
        {200: (NotificationOut, "With its messages and their attempts")}, contract.authed(404)
    ),
)
async def get_notification(
    notification_id: str,
    ctx: Ctx,
    _: Annotated[Principal, Depends(require("notifications:read"))],
) -> Response:
    found = None
    if len(notification_id) <= 128:
        async with ctx.engine.connect() as conn:
            found = await store.get(conn, notification_id)
    if found is None:
        raise p.ApiError(p.NOTIFICATION_NOT_FOUND)
    return json_response(_out(found))


@router.post(
    "/v1/notifications/messages/{message_id}/replay",
    responses=contract.replies(
        {200: (ReplayOut, "Pending again, due now")}, contract.authed(404, 409)
    ),
)
async def replay_message(
    message_id: str,
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("notifications:write"))],
) -> Response:
    if not message_id.isdigit() or len(message_id) > 18:
        raise p.ApiError(p.NOTIFICATION_MESSAGE_NOT_FOUND)
    async with ctx.engine.begin() as conn:
        before, replayed = await store.replay(conn, int(message_id))
        if before is None:
            raise p.ApiError(p.NOTIFICATION_MESSAGE_NOT_FOUND)
        if replayed is None:
            raise p.ApiError(p.NOTIFICATION_MESSAGE_NOT_REPLAYABLE, f"it is {before}")
        await audit(conn, request, principal, "notification.replay", message_id,
                    before={"status": before})  # fmt: skip
    await _wake(ctx)
    return json_response(ReplayOut(id=replayed.id, notification_id=replayed.notification_id,
                                   status=replayed.status))  # fmt: skip


# -- preferences ----------------------------------------------------------------------


def _own_user(principal: Principal, user_id: str) -> None:
    """403 for another user's id (whether or not it exists); 404 for ids that cannot exist."""
    if not _USER_ID.match(user_id):
        raise p.ApiError(p.USER_NOT_FOUND)
    check_owner(principal, user_id)


@router.get(
    "/v1/users/{user_id}/notification-preferences",
    responses=contract.replies(
        {200: (Preferences, "Yours, or the defaults")}, contract.authed(404)
    ),
    tags=["users"],
)
async def get_preferences(
    user_id: str, ctx: Ctx, principal: Annotated[Principal, Depends(require("users:read"))]
) -> Response:
    _own_user(principal, user_id)
    async with ctx.engine.connect() as conn:
        if not await identity.user_exists(conn, user_id):
            raise p.ApiError(p.USER_NOT_FOUND)
        prefs = await store.preferences(conn, user_id)
    return json_response(prefs)


@router.put(
    "/v1/users/{user_id}/notification-preferences",
    openapi_extra=contract.body(Preferences),
    responses=contract.replies({200: (Preferences, "Stored")}, contract.authed(400, 404, 413, 422)),
    tags=["users"],
)
async def put_preferences(
    user_id: str,
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("users:write"))],
) -> Response:
    _own_user(principal, user_id)
    prefs = await decode_body(request, Preferences, SMALL_BODY_LIMIT)
    try:
        check(prefs)
    except InvalidPreferences as e:
        raise p.ApiError(p.INVALID_FIELD, str(e), e.field) from None
    async with ctx.engine.begin() as conn:
        if not await identity.user_exists(conn, user_id):
            raise p.ApiError(p.USER_NOT_FOUND)
        await store.save_preferences(conn, user_id, prefs)
    # Messages waiting (quiet hours) are re-decided with the new preferences when due.
    return json_response(prefs)
