"""Devices that receive push notifications: registered, listed, changed, deleted."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from paynode.api import contract
from paynode.api import problems as p
from paynode.api.auth.scopes import Principal
from paynode.api.auth.tokens import new_id
from paynode.api.deps import Context, Ctx, check_owner, require
from paynode.api.http import SMALL_BODY_LIMIT, decode_body, json_response
from paynode.api.notify_routes import deleted, reload_notifier
from paynode.api.notify_schemas import (
    DeviceIn,
    DeviceList,
    DeviceOut,
    DevicePatch,
)
from paynode.storage import notify

log = logging.getLogger("paynode.api.notify")
router = APIRouter(tags=["notifications"])


# -- devices -------------------------------------------------------------------------------


def _device_user(principal: Principal) -> str:
    if principal.user_id is None:
        raise p.ApiError(p.FORBIDDEN, "devices belong to users; use a user's credential")
    return principal.user_id


def _device_out(d: notify.Device) -> DeviceOut:
    return DeviceOut(
        id=d.id, platform=d.platform, token_last4=d.token_last4, events=d.events,
        created_at=d.created_at,
    )  # fmt: skip


@router.post(
    "/v1/devices",
    openapi_extra=contract.body(DeviceIn),
    responses=contract.replies(
        {201: (DeviceOut, "Registered"), 200: (DeviceOut, "Already registered; events updated")},
        (400, 401, 403, 413, 422, 429),
    ),
    status_code=201,
)
async def register_device(
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("devices:write"))],
) -> Response:
    user = _device_user(principal)
    body = await decode_body(request, DeviceIn, SMALL_BODY_LIMIT)
    async with ctx.engine.begin() as conn:
        device, created = await notify.register_device(
            conn, ctx.keys, new_id("dev"), user, body.platform, body.token,
            sorted(set(body.events)),
        )  # fmt: skip
    await reload_notifier(ctx)
    return json_response(_device_out(device), 201 if created else 200)


@router.get(
    "/v1/devices",
    responses=contract.replies({200: (DeviceList, "Your devices")}, (401, 403, 429)),
)
async def list_devices(
    ctx: Ctx, principal: Annotated[Principal, Depends(require("devices:read"))]
) -> Response:
    user = _device_user(principal)
    async with ctx.engine.connect() as conn:
        found = await notify.list_devices(conn, ctx.keys, user)
    return json_response(DeviceList([_device_out(d) for d in found]))


async def _own_device(ctx: Context, principal: Principal, device_id: str) -> notify.Device:
    async with ctx.engine.connect() as conn:
        found = await notify.get_device(conn, ctx.keys, device_id) if len(device_id) <= 64 else None
    if found is None:
        raise p.ApiError(p.DEVICE_NOT_FOUND)
    check_owner(principal, found.user_id)
    return found


@router.patch(
    "/v1/devices/{device_id}",
    openapi_extra=contract.body(DevicePatch),
    responses=contract.replies({200: (DeviceOut, "Updated")}, (400, 401, 403, 404, 413, 422, 429)),
)
async def update_device(
    device_id: str,
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("devices:write"))],
) -> Response:
    await _own_device(ctx, principal, device_id)
    body = await decode_body(request, DevicePatch, SMALL_BODY_LIMIT)
    async with ctx.engine.begin() as conn:
        updated = await notify.update_device_events(
            conn, ctx.keys, device_id, sorted(set(body.events))
        )
    if updated is None:
        raise p.ApiError(p.DEVICE_NOT_FOUND)
    await reload_notifier(ctx)
    return json_response(_device_out(updated))


@router.delete(
    "/v1/devices/{device_id}",
    responses={204: {"description": "Unregistered"}, **contract.replies({}, (401, 403, 404, 429))},
    status_code=204,
)
async def delete_device(
    device_id: str,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("devices:write"))],
) -> Response:
    await _own_device(ctx, principal, device_id)
    return await deleted(ctx, notify.delete_device, device_id, p.DEVICE_NOT_FOUND)
