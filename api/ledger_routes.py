"""Accounts, and reading transfers (creating them is ``api/transfers.py``, the hot path)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from paynode.api import contract
from paynode.api import problems as p
from paynode.api.auth.scopes import Principal
from paynode.api.deps import Ctx, check_owner, require
from paynode.api.fx_routes import FX_ACCOUNT_PREFIX
from paynode.api.http import decode_body, json_response
from paynode.api.render import (
    account_out,
    check_path_id,
    cursor_decode,
    cursor_encode,
    transfer_out,
)
from paynode.api.schemas import AccountIn, AccountOut, TransferOut, TransferPage
from paynode.api.validation import account_flags
from paynode.domain.ledger.model import AccountBalances, AccountSpec, Code
from paynode.domain.ledger.plan import canonical_metadata
from paynode.storage import identity, journal

router = APIRouter()


@router.post(
    "/v1/accounts",
    openapi_extra=contract.body(AccountIn),
    responses=contract.replies(
        {201: (AccountOut, "Created"), 200: (AccountOut, "Already existed, same fields")},
        (400, 401, 403, 404, 409, 413, 422, 429, 503, 507),
    ),
    status_code=201,
)
async def create_account(
    request: Request, ctx: Ctx, principal: Annotated[Principal, Depends(require("accounts:write"))]
) -> Response:
    body = await decode_body(request, AccountIn, ctx.settings.http.max_body_bytes)
    if not principal.admin and body.id.startswith(RESERVED_ACCOUNT_PREFIXES):
        raise p.ApiError(p.ACCOUNT_ID_RESERVED, field="$.id")
    owner = await _account_owner(ctx, principal, body.owner_user_id)
    spec = AccountSpec(
        body.id, body.currency, account_flags(body), canonical_metadata(body.metadata), 0, owner
    )
    result = await ctx.client.create_account(spec)
    if result.code not in (Code.OK, Code.EXISTS):
        raise p.ApiError(result.code)
    s = result.spec
    fresh = AccountBalances(s.id, s.currency, s.flags, s.metadata, s.ts, 0, 0, 0, 0, s.owner)
    if result.code == Code.EXISTS:
        fresh = await ctx.client.account(spec.id) or fresh
    return json_response(account_out(fresh), 201 if result.code == Code.OK else 200)


# The node's own accounts (FX positions and the card accounts are made on first use: a
# user must not take the name first).
RESERVED_ACCOUNT_PREFIXES = (FX_ACCOUNT_PREFIX, "card-")


async def _account_owner(ctx: Ctx, principal: Principal, wanted: str | None) -> str:
    """Who owns a new account: the caller's user; an admin may name anyone or no one."""
    if not principal.admin:
        if wanted is not None and wanted != principal.user_id:
            raise p.ApiError(
                p.FORBIDDEN, "only admins choose an account's owner", "$.owner_user_id"
            )
        assert principal.user_id is not None, "non-admin credentials always act as a user"
        return principal.user_id
    if wanted is None:
        return ""
    async with ctx.engine.connect() as conn:
        if not await identity.user_exists(conn, wanted):
            raise p.ApiError(p.USER_NOT_FOUND, field="$.owner_user_id", status=422)
    return wanted


@router.get(
    "/v1/accounts/{account_id}",
    responses=contract.replies({200: (AccountOut, "The account")}, (401, 403, 404, 429, 503)),
)
async def get_account(
    account_id: str, ctx: Ctx, principal: Annotated[Principal, Depends(require("accounts:read"))]
) -> Response:
    check_path_id(account_id, Code.ACCOUNT_NOT_FOUND)
    found = await ctx.client.account(account_id)
    if found is None:
        raise p.ApiError(Code.ACCOUNT_NOT_FOUND, status=404)
    check_owner(principal, found.owner)
    return json_response(account_out(found))


@router.get(
    "/v1/accounts/{account_id}/transfers",
    responses=contract.replies(
        {200: (TransferPage, "Newest first")}, (400, 401, 403, 404, 422, 429)
    ),
)
async def account_transfers(
    account_id: str,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("transfers:read"))],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    check_path_id(account_id, Code.ACCOUNT_NOT_FOUND)
    spec = (await ctx.client.resolve({account_id})).get(account_id)
    if spec is None:
        raise p.ApiError(Code.ACCOUNT_NOT_FOUND, status=404)
    check_owner(principal, spec.owner)
    before = cursor_decode(cursor) if cursor is not None else None
    async with ctx.engine.connect() as conn:
        rows = await journal.transfers_of(conn, account_id, limit + 1, before)
        more = len(rows) > limit
        rows = rows[:limit]
        outcomes = await journal.pending_outcomes(conn, rows)
    next_cursor = cursor_encode(rows[-1].ts, rows[-1].id) if more and rows else None
    page = [transfer_out(r, outcomes.get(r.id)) for r in rows]
    return json_response(TransferPage(page, next_cursor))


@router.get(
    "/v1/transfers/{transfer_id}",
    responses=contract.replies(
        {200: (TransferOut, "The transfer as journaled")}, (401, 403, 404, 429)
    ),
)
async def get_transfer(
    transfer_id: str, ctx: Ctx, principal: Annotated[Principal, Depends(require("transfers:read"))]
) -> Response:
    check_path_id(transfer_id, p.TRANSFER_NOT_FOUND)
    async with ctx.engine.connect() as conn:
        row = await journal.transfer(conn, transfer_id)
        outcomes = await journal.pending_outcomes(conn, [row] if row else [])
    if row is None:
        raise p.ApiError(p.TRANSFER_NOT_FOUND)
    if not principal.admin:
        # Either side may look: the payer and the payee both see the transfer.
        sides = await ctx.client.resolve({row.debit_account_id, row.credit_account_id})
        if not any(principal.owns(s.owner) for s in sides.values()):
            raise p.ApiError(p.FORBIDDEN)
    return json_response(transfer_out(row, outcomes.get(row.id)))
