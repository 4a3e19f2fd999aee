"""Bank linking through an account aggregator (Plaid's model), and its webhooks.

The flow: ``POST /v1/link/tokens`` gives the client a link token; the user logs
in at their bank in the aggregator's Link (here ``POST /v1/link/sandbox/public-token``
stands in for it) and the client gets a public token; ``POST /v1/link/exchange``
trades it, server to server, for the item's access token (sealed, never shown)
and the item's accounts, stored as bank accounts already ``verified``
(``verification_method`` ``instant``: the bank told the aggregator the numbers,
no micro-deposits).

The aggregator's webhooks (``POST /v1/webhooks/aggsim``, verified and stored by
``api/inbound_routes.py``) are acted on here (``domain/rails/link.py`` says how):
``ITEM_LOGIN_REQUIRED`` stops new payments with the item's accounts until the
user re-links (a link token made with ``item_id``), balance updates are read
from the aggregator, a revoked consent closes the accounts; each tells the user
with a ``bank_link.*`` event.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from paynode.actors.aggregator_sim import PROVIDER
from paynode.api import contract, inbound, risk_gate
from paynode.api import problems as p
from paynode.api.ach_routes import bank_out
from paynode.api.audit_writer import audit
from paynode.api.auth.scopes import Principal
from paynode.api.auth.tokens import new_id
from paynode.api.deps import Context, Ctx, require
from paynode.api.http import SMALL_BODY_LIMIT, decode_body, json_response
from paynode.api.link_schemas import (
    ExchangeIn,
    LinkItemList,
    LinkItemOut,
    LinkTokenIn,
    LinkTokenOut,
    PublicTokenOut,
    SandboxPublicTokenIn,
    SandboxWebhookIn,
    SandboxWebhookOut,
)
from paynode.api.notify_schemas import InboundEvent
from paynode.domain.rails import link as rules
from paynode.storage import ach
from paynode.storage import link as store

log = logging.getLogger("paynode.api.link")
router = APIRouter(tags=["bank linking"])

# The aggregator's error codes a client can do something about.
_CLIENT_ERRORS = {
    rules.INVALID_LINK_TOKEN: p.INVALID_LINK_TOKEN,
    rules.INVALID_PUBLIC_TOKEN: p.INVALID_PUBLIC_TOKEN,
    rules.INVALID_INSTITUTION: p.INSTITUTION_NOT_FOUND,
    rules.ITEM_NOT_FOUND: p.LINK_ITEM_CLOSED,
    rules.INVALID_ACCESS_TOKEN: p.LINK_ITEM_CLOSED,
    rules.ITEM_LOGIN_REQUIRED: p.BANK_LINK_LOGIN_REQUIRED,
}


async def _ask(ctx: Context, method: str, *args: Any) -> rules.Answer:
    """One call to the aggregator; its error code is in the answer (not raised)."""
    if ctx.aggregator is None:
        raise p.ApiError(p.AGGREGATOR_UNAVAILABLE, "no aggregator is configured")
    from ray.exceptions import RayError

    try:
        raw = await getattr(ctx.aggregator, method).remote(*args)
    except RayError as e:
        log.error("link: the aggregator's %s failed: %s", method, type(e).__name__)
        raise p.ApiError(p.AGGREGATOR_UNAVAILABLE) from None
    return rules.decode_answer(raw)


def _refuse(answer: rules.Answer, field: str | None = None) -> None:
    if answer.error is not None:
        code = _CLIENT_ERRORS.get(answer.error)
        if code is None:
            log.error("link: the aggregator answered %s", answer.error)
            raise p.ApiError(p.AGGREGATOR_UNAVAILABLE)
        raise p.ApiError(code, field=field)


def _user_of(principal: Principal) -> str:
    if principal.user_id is None:
        raise p.ApiError(p.FORBIDDEN, "a bank is linked by its user (a user's token or key)")
    return principal.user_id


async def _item_out(ctx: Context, conn: Any, item: store.Item) -> LinkItemOut:
    accounts = await ach.item_accounts(conn, item.id)
    return LinkItemOut(
        id=item.id, institution_id=item.institution_id, institution_name=item.institution_name,
        status=item.status,  # type: ignore[arg-type]
        error_code=item.error_code, consent_expires_at=item.consent_expires_at,
        balances_at=item.balances_at, created_at=item.created_at, updated_at=item.updated_at,
        bank_accounts=[bank_out(ctx, b) for b in accounts],
    )  # fmt: skip


async def _own_item(ctx: Context, principal: Principal, item_id: str) -> store.Item:
    """The item, if this principal may see it: someone else's does not exist (404)."""
    async with ctx.engine.connect() as conn:
        found = await store.get_item(conn, item_id) if len(item_id) <= 64 else None
    if found is None or not principal.owns(found.owner_user_id):
        raise p.ApiError(p.LINK_ITEM_NOT_FOUND)
    return found


# -- link tokens, exchange ------------------------------------------------------------------


@router.post(
    "/v1/link/tokens",
    openapi_extra=contract.body(LinkTokenIn),
    responses=contract.replies(
        {201: (LinkTokenOut, "A link token for the aggregator's Link")},
        (400, 401, 403, 404, 409, 413, 422, 429, 503),
    ),
    status_code=201,
)
async def create_link_token(
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("bank_accounts:write"))],
) -> Response:
    """A new link, or with ``item_id`` a re-link of that item (update mode) once the bank
    asked for a new login."""
    user = _user_of(principal)
    body = await decode_body(request, LinkTokenIn, SMALL_BODY_LIMIT)
    access = None
    if body.item_id is not None:
        item = await _own_item(ctx, principal, body.item_id)
        if item.status in rules.CLOSED_STATES:
            raise p.ApiError(p.LINK_ITEM_CLOSED, field="$.item_id")
        async with ctx.engine.connect() as conn:
            access = await store.access_token(conn, ctx.keys, item.id)
    answer = await _ask(ctx, "create_link_token", user, access)
    _refuse(answer, "$.item_id")
    assert answer.token is not None
    return json_response(LinkTokenOut(
        link_token=answer.token.link_token,
        expiration=dt.datetime.fromtimestamp(answer.token.expiration, dt.UTC),
        mode="create" if access is None else "update", item_id=body.item_id,
    ), 201)  # fmt: skip


@router.post(
    "/v1/link/exchange",
    openapi_extra=contract.body(ExchangeIn),
    responses=contract.replies(
        {201: (LinkItemOut, "Linked: the item and its verified bank accounts"),
         200: (LinkItemOut, "Already linked (the same public token again, or a re-link)")},
        (400, 401, 403, 409, 413, 422, 429, 503),
    ),
    status_code=201,
)  # fmt: skip
async def exchange_public_token(
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("bank_accounts:write"))],
) -> Response:
    """Trade a public token for the item. The same token again (or a re-link's) answers
    the same item and the same bank accounts: nothing is linked twice."""
    user = _user_of(principal)
    body = await decode_body(request, ExchangeIn, SMALL_BODY_LIMIT)
    answer = await _ask(ctx, "exchange", body.public_token, user)
    _refuse(answer, "$.public_token")
    got = answer.exchanged
    assert got is not None
    if got.client_user_id != user:  # the aggregator checked it too
        raise p.ApiError(p.INVALID_PUBLIC_TOKEN, field="$.public_token")
    read = await _ask(ctx, "accounts", got.access_token)
    _refuse(read)
    item_id = new_id("li")
    fresh: list[tuple[str, str]] = []
    async with ctx.engine.begin() as conn:
        item, created = await store.create_item(
            conn, ctx.keys, item_id, user, PROVIDER, got.item_id, got.access_token,
            got.institution_id, got.institution_name,
        )  # fmt: skip
        if item.owner_user_id != user:
            raise p.ApiError(p.INVALID_PUBLIC_TOKEN, field="$.public_token")
        if item.status in rules.CLOSED_STATES:
            raise p.ApiError(p.LINK_ITEM_CLOSED, field="$.public_token")
        for a in read.accounts:
            bank, made = await ach.create_linked_bank_account(
                conn, ctx.keys, new_id("ba"), user, item.id, a.account_id, a.routing, a.account,
                a.subtype, a.owner_name, a.name, (a.available, a.current),
            )  # fmt: skip
            if made:
                fresh.append((bank.id, a.owner_name))
            else:
                await ach.set_balances(conn, item.id, a.account_id, (a.available, a.current))
        before = item.status
        item = await store.set_status(conn, item.id, rules.after_read(before, None),
                                      balances_read=True)  # fmt: skip
        if created:
            await store.emit(conn, "bank_link.created", item)
        elif before == "login_required":
            await store.emit(conn, "bank_link.repaired", item)
        await audit(conn, request, principal, "bank_link.exchange", item.id,
                    before=None if created else {"status": before},
                    after={"status": item.status, "institution_id": item.institution_id,
                           "accounts": len(read.accounts), "new_accounts": len(fresh)})  # fmt: skip
        out = await _item_out(ctx, conn, item)
    for bank_id, holder in fresh:  # screened once at link time, like any bank account
        await risk_gate.screen_bank_holder(ctx, bank_id, holder)
    return json_response(out, 201 if created else 200)


# -- items ---------------------------------------------------------------------------------


@router.get(
    "/v1/link/items",
    responses=contract.replies({200: (LinkItemList, "Yours, oldest first")}, (401, 403, 429)),
)
async def list_items(
    ctx: Ctx, principal: Annotated[Principal, Depends(require("bank_accounts:read"))]
) -> Response:
    async with ctx.engine.connect() as conn:
        found = await store.list_items(conn, None if principal.admin else principal.user_id)
        items = [await _item_out(ctx, conn, i) for i in found]
    return json_response(LinkItemList(items))


@router.get(
    "/v1/link/items/{item_id}",
    responses=contract.replies({200: (LinkItemOut, "The item")}, (401, 403, 404, 429)),
)
async def get_item(
    item_id: str,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("bank_accounts:read"))],
) -> Response:
    item = await _own_item(ctx, principal, item_id)
    async with ctx.engine.connect() as conn:
        return json_response(await _item_out(ctx, conn, item))


@router.post(
    "/v1/link/items/{item_id}/balances",
    responses=contract.replies(
        {200: (LinkItemOut, "Balances read from the bank now")}, (401, 403, 404, 409, 429, 503)
    ),
)
async def refresh_balances(
    item_id: str,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("bank_accounts:read"))],
) -> Response:
    item = await _own_item(ctx, principal, item_id)
    if item.status in rules.CLOSED_STATES:
        raise p.ApiError(p.LINK_ITEM_CLOSED)
    item, error = await refresh(ctx, item)
    if error is not None:
        raise p.ApiError(_CLIENT_ERRORS.get(error, p.AGGREGATOR_UNAVAILABLE))
    async with ctx.engine.connect() as conn:
        return json_response(await _item_out(ctx, conn, item))


@router.delete(
    "/v1/link/items/{item_id}",
    responses=contract.replies(
        {200: (LinkItemOut, "Unlinked: its bank accounts are closed")}, (401, 403, 404, 429, 503)
    ),
)
async def remove_item(
    item_id: str,
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("bank_accounts:write"))],
) -> Response:
    """The aggregator forgets the access token, and no new payment uses the item's
    accounts (payments already on their way go on). Unlinking again is a no-op."""
    item = await _own_item(ctx, principal, item_id)
    if item.status not in rules.CLOSED_STATES:
        async with ctx.engine.connect() as conn:
            access = await store.access_token(conn, ctx.keys, item.id)
        await _ask(ctx, "remove", access)  # an error: already gone there
        async with ctx.engine.begin() as conn:
            locked = await store.get_item(conn, item.id, lock=True)
            assert locked is not None
            if locked.status not in rules.CLOSED_STATES:
                closed = await ach.close_item_accounts(conn, item.id)
                item = await store.set_status(conn, item.id, "removed")
                await store.emit(conn, "bank_link.removed", item, {"closed_bank_accounts": closed})
                await audit(conn, request, principal, "bank_link.remove", item.id,
                            before={"status": locked.status},
                            after={"status": "removed", "closed": len(closed)})  # fmt: skip
            else:
                item = locked
    async with ctx.engine.connect() as conn:
        return json_response(await _item_out(ctx, conn, item))


# -- what the aggregator tells us -----------------------------------------------------------


async def refresh(ctx: Context, item: store.Item) -> tuple[store.Item, str | None]:
    """Read the item's accounts from the aggregator and store their balances; the item's
    state follows the answer (a login the bank refuses is ``login_required``). Returns
    the item and the aggregator's error code, if any."""
    async with ctx.engine.connect() as conn:
        access = await store.access_token(conn, ctx.keys, item.id)
    read = await _ask(ctx, "accounts", access)
    async with ctx.engine.begin() as conn:
        locked = await store.get_item(conn, item.id, lock=True)
        assert locked is not None
        status = rules.after_read(locked.status, read.error)
        if read.error is None:
            for a in read.accounts:
                await ach.set_balances(conn, item.id, a.account_id, (a.available, a.current))
        error = None if status == "active" else (read.error or locked.error_code)
        item = await store.set_status(conn, item.id, status, error,
                                      balances_read=read.error is None)  # fmt: skip
        if locked.status != status and status == "login_required":
            await store.emit(conn, "bank_link.login_required", item)
        elif locked.status == "login_required" and status == "active":
            await store.emit(conn, "bank_link.repaired", item)
        if read.error is None:
            await store.emit(conn, "bank_link.balances_updated", item, {"balances": [
                {"account_id": a.account_id, "mask": a.mask, "available": a.available,
                 "current": a.current} for a in read.accounts]})  # fmt: skip
    return item, read.error


def _consent_expiry(value: object) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


async def _from_aggregator(ctx: Context, provider: str, event: InboundEvent) -> str:
    """Act on an item webhook. One for an item we do not have is accepted and ignored."""
    data = event.data
    item_ref, kind, code = data.get("item_id"), data.get("webhook_type"), data.get("webhook_code")
    if not all(isinstance(v, str) for v in (item_ref, kind, code)):
        raise p.ApiError(p.INVALID_WEBHOOK_BODY, "item_id, webhook_type, webhook_code")
    assert isinstance(item_ref, str) and isinstance(kind, str) and isinstance(code, str)
    error = data.get("error")
    error_code = error.get("error_code") if isinstance(error, dict) else None
    action = rules.action_for(kind, code, error_code if isinstance(error_code, str) else None)
    async with ctx.engine.connect() as conn:
        item = await store.by_external(conn, provider, item_ref[:200])
    if item is None:
        log.warning("link: %s for an item we do not have", event.type)
        return "link.unknown_item"
    if action in ("refresh", "repaired"):
        if item.status not in rules.CLOSED_STATES:
            await refresh(ctx, item)
        return f"link.{action}"
    if action == "ignore":
        return "link.ignored"
    async with ctx.engine.begin() as conn:
        locked = await store.get_item(conn, item.id, lock=True)
        assert locked is not None
        status = rules.next_status(locked.status, action)
        if action == "login_required":
            if locked.status != status:
                item = await store.set_status(conn, item.id, status, rules.ITEM_LOGIN_REQUIRED)
                await store.emit(conn, "bank_link.login_required", item)
        elif action == "revoke":
            if locked.status != status:
                closed = await ach.close_item_accounts(conn, item.id)
                item = await store.set_status(conn, item.id, status, code)
                await store.emit(conn, "bank_link.revoked", item,
                                 {"closed_bank_accounts": closed})  # fmt: skip
        elif action == "expiring" and locked.status not in rules.CLOSED_STATES:
            expires = _consent_expiry(data.get("consent_expiration_time"))
            item = await store.set_status(conn, item.id, locked.status, locked.error_code,
                                          expires)  # fmt: skip
            await store.emit(conn, "bank_link.pending_expiration", item,
                             {"consent_expires_at": None if expires is None
                              else expires.isoformat()})  # fmt: skip
    return f"link.{action}"


for _prefix in rules.WEBHOOK_TYPES:
    inbound.register(PROVIDER, f"{_prefix}.", _from_aggregator)


# -- the simulator (sandbox) -----------------------------------------------------------------


def _sandbox(ctx: Context) -> None:
    if ctx.aggregator is None or not ctx.settings.link.sim_enabled:
        raise p.ApiError(p.NOT_FOUND, "the aggregator simulator is off")


@router.post(
    "/v1/link/sandbox/public-token",
    openapi_extra=contract.body(SandboxPublicTokenIn),
    responses=contract.replies(
        {201: (PublicTokenOut, "The user logged in at the test institution")},
        (400, 401, 403, 404, 409, 413, 422, 429, 503),
    ),
    status_code=201,
)
async def sandbox_public_token(
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("bank_accounts:write"))],
) -> Response:
    """Simulator only: what the aggregator's Link screens do when the user logs in
    (sandbox credentials always succeed). With an update-mode link token, it repairs
    the item's login."""
    _sandbox(ctx)
    user = _user_of(principal)
    body = await decode_body(request, SandboxPublicTokenIn, SMALL_BODY_LIMIT)
    answer = await _ask(ctx, "sandbox_public_token", body.link_token, body.institution_id, user)
    _refuse(answer, "$.institution_id" if answer.error == rules.INVALID_INSTITUTION
            else "$.link_token")  # fmt: skip
    assert answer.public_token is not None
    return json_response(PublicTokenOut(answer.public_token), 201)


@router.post(
    "/v1/link/sandbox/items/{item_id}/webhook",
    openapi_extra=contract.body(SandboxWebhookIn),
    responses=contract.replies(
        {202: (SandboxWebhookOut, "The simulated aggregator sends the webhook")},
        (400, 401, 403, 404, 409, 413, 422, 429, 503),
    ),
    status_code=202,
)
async def sandbox_fire_webhook(
    item_id: str,
    request: Request,
    ctx: Ctx,
    _: Annotated[Principal, Depends(require("admin"))],
) -> Response:
    """Simulator only (operators, tests): the bank asks for a new login, revokes consent,
    posts a transaction...; the aggregator's signed webhook reaches the node soon after."""
    _sandbox(ctx)
    body = await decode_body(request, SandboxWebhookIn, SMALL_BODY_LIMIT)
    async with ctx.engine.connect() as conn:
        item = await store.get_item(conn, item_id) if len(item_id) <= 64 else None
    if item is None:
        raise p.ApiError(p.LINK_ITEM_NOT_FOUND)
    answer = await _ask(ctx, "fire_webhook", item.external_item_id, body.webhook_code,
                        body.amount)  # fmt: skip
    _refuse(answer)
    return json_response(SandboxWebhookOut(item.id, body.webhook_code, "sent"), 202)


__all__ = ["refresh", "router"]
