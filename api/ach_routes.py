"""Routes for bank accounts: linked (two micro-deposits), verified, made default, closed.

What the bank tells us about entries, and the operators' ACH routes, are
``api/ach_ops_routes.py``.
"""

from __future__ import annotations

import logging
import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from paynode.api import contract, risk_gate
from paynode.api import problems as p
from paynode.api.ach_schemas import (
    BankAccountIn,
    BankAccountList,
    BankAccountOut,
    BankBalancesOut,
    VerifyIn,
)
from paynode.api.audit_writer import audit
from paynode.api.auth.scopes import Principal
from paynode.api.auth.tokens import new_id
from paynode.api.deps import Context, Ctx, check_owner, require
from paynode.api.http import SMALL_BODY_LIMIT, decode_body, json_response
from paynode.api.schemas import TransferIn
from paynode.domain.rails.ach_rules import (
    CLEARING_ACCOUNT,
    MICRODEPOSIT_ACCOUNT,
    microdeposit_transfer_id,
)
from paynode.domain.rails.fedach import bank_name
from paynode.domain.rails.nacha import aba_valid
from paynode.storage import ach, payments

log = logging.getLogger("paynode.api.ach")
router = APIRouter(tags=["ach"])


def bank_out(ctx: Context, b: ach.BankAccount) -> BankAccountOut:
    return BankAccountOut(
        id=b.id, routing_number=b.routing_number, account_last4=b.account_last4,
        account_type=b.account_type, holder_type=b.holder_type, status=b.status,  # type: ignore[arg-type]
        verify_attempts_left=max(0, ach.MAX_VERIFY_ATTEMPTS - b.verify_attempts),
        created_at=b.created_at, verified_at=b.verified_at,
        bank_name=bank_name(ctx.banks, b.routing_number), default=b.is_default,
        verification_method=b.verification_method, link_item_id=b.link_item_id,  # type: ignore[arg-type]
        account_name=b.account_name,
        balances=None if b.balance_current is None else BankBalancesOut(
            available=b.balance_available, current=b.balance_current, as_of=b.balances_at),
    )  # fmt: skip


async def own_bank_account(ctx: Context, principal: Principal, bank_id: str) -> ach.BankAccount:
    async with ctx.engine.connect() as conn:
        found = await ach.get_bank_account(conn, bank_id) if len(bank_id) <= 64 else None
    if found is None:
        raise p.ApiError(p.BANK_ACCOUNT_NOT_FOUND)
    check_owner(principal, found.owner_user_id or "")
    return found


# -- bank accounts -------------------------------------------------------------------------


@router.post(
    "/v1/bank-accounts",
    openapi_extra=contract.body(BankAccountIn),
    responses=contract.replies(
        {201: (BankAccountOut, "Linked; two micro-deposits are on their way")},
        (400, 401, 403, 413, 422, 429, 503),
    ),
    status_code=201,
)
async def link_bank_account(
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("bank_accounts:write"))],
) -> Response:
    body = await decode_body(request, BankAccountIn, SMALL_BODY_LIMIT)
    if not aba_valid(body.routing_number):
        raise p.ApiError(p.INVALID_ROUTING_NUMBER, field="$.routing_number")
    bank_id = new_id("ba")
    micro = (secrets.randbelow(99) + 1, secrets.randbelow(99) + 1)
    async with ctx.engine.begin() as conn:
        created = await ach.create_bank_account(
            conn, ctx.keys, bank_id, principal.user_id, body.routing_number, body.account_number,
            body.account_type, body.holder_type, body.holder_name, micro,
        )  # fmt: skip
        await audit(conn, request, principal, "bank_account.link", bank_id,
                    after={"routing_number": body.routing_number, "last4": created.account_last4,
                           "account_type": body.account_type})  # fmt: skip
        await payments.register_rail(
            conn, [microdeposit_transfer_id(bank_id, n) for n in (1, 2)], "ach", None
        )
    # Screened once at link time; a payment screens again only if the list changed.
    await risk_gate.screen_bank_holder(ctx, bank_id, body.holder_name)
    # The micro-deposits cost the operator: expense -> clearing, then two NACHA credits.
    sends = [
        TransferIn(
            id=microdeposit_transfer_id(bank_id, i),
            debit_account_id=MICRODEPOSIT_ACCOUNT,
            credit_account_id=CLEARING_ACCOUNT,
            amount=amount,
            currency="USD",
            metadata={"bank_account_id": bank_id},
        )
        for i, amount in enumerate(micro, start=1)
    ]
    outcomes = await ctx.client.transfer(sends, None)
    if any(o.code for o in outcomes):
        raise p.ApiError(outcomes[0].code or outcomes[1].code)
    async with ctx.engine.begin() as conn:
        for amount in micro:
            await ach.add_entry(conn, bank_id, "microdeposit", amount)
    return json_response(bank_out(ctx, created), 201)


@router.get(
    "/v1/bank-accounts",
    responses=contract.replies({200: (BankAccountList, "Yours")}, (401, 403, 429)),
)
async def list_bank_accounts(
    ctx: Ctx, principal: Annotated[Principal, Depends(require("bank_accounts:read"))]
) -> Response:
    async with ctx.engine.connect() as conn:
        found = await ach.list_bank_accounts(conn, None if principal.admin else principal.user_id)
    return json_response(BankAccountList([bank_out(ctx, b) for b in found]))


@router.get(
    "/v1/bank-accounts/{bank_account_id}",
    responses=contract.replies({200: (BankAccountOut, "The account")}, (401, 403, 404, 429)),
)
async def get_bank_account(
    bank_account_id: str,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("bank_accounts:read"))],
) -> Response:
    return json_response(bank_out(ctx, await own_bank_account(ctx, principal, bank_account_id)))


@router.post(
    "/v1/bank-accounts/{bank_account_id}/verify",
    openapi_extra=contract.body(VerifyIn),
    responses=contract.replies(
        {200: (BankAccountOut, "Verified")}, (400, 401, 403, 404, 409, 413, 422, 429)
    ),
)
async def verify_bank_account(
    bank_account_id: str,
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("bank_accounts:write"))],
) -> Response:
    found = await own_bank_account(ctx, principal, bank_account_id)
    body = await decode_body(request, VerifyIn, SMALL_BODY_LIMIT)
    if found.status in ("verification_failed", "closed"):
        raise p.ApiError(p.VERIFICATION_LOCKED)
    async with ctx.engine.begin() as conn:
        updated, matched = await ach.verify(conn, ctx.keys, bank_account_id, body.amounts)
        await audit(conn, request, principal, "bank_account.verify", bank_account_id,
                    before={"status": found.status},
                    after={"status": updated.status, "matched": matched})  # fmt: skip
    if not matched:
        code = p.VERIFICATION_LOCKED if updated.status == "verification_failed" else (
            p.VERIFICATION_FAILED)  # fmt: skip
        left = max(0, ach.MAX_VERIFY_ATTEMPTS - updated.verify_attempts)
        raise p.ApiError(code, f"{left} attempts left")
    return json_response(bank_out(ctx, updated))


@router.delete(
    "/v1/bank-accounts/{bank_account_id}",
    responses=contract.replies({200: (BankAccountOut, "Closed")}, (401, 403, 404, 429)),
)
async def close_bank_account(
    bank_account_id: str,
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("bank_accounts:write"))],
) -> Response:
    """No new payment uses a closed account; payments already on their way go on. Closing
    it again is a no-op."""
    found = await own_bank_account(ctx, principal, bank_account_id)
    if found.status == "closed":
        return json_response(bank_out(ctx, found))
    async with ctx.engine.begin() as conn:
        closed = await ach.close_bank_account(conn, bank_account_id)
        await audit(conn, request, principal, "bank_account.close", bank_account_id,
                    before={"status": found.status}, after={"status": "closed"})  # fmt: skip
    return json_response(bank_out(ctx, closed))


@router.post(
    "/v1/bank-accounts/{bank_account_id}/default",
    responses=contract.replies(
        {200: (BankAccountOut, "The owner's default now")}, (401, 403, 404, 409, 429)
    ),
)
async def make_default_bank_account(
    bank_account_id: str,
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("bank_accounts:write"))],
) -> Response:
    found = await own_bank_account(ctx, principal, bank_account_id)
    if found.status == "closed":
        raise p.ApiError(p.BANK_ACCOUNT_CLOSED)
    async with ctx.engine.begin() as conn:
        made = await ach.make_default(conn, bank_account_id, found.owner_user_id)
        await audit(conn, request, principal, "bank_account.default", bank_account_id,
                    after={"default": True})  # fmt: skip
    return json_response(bank_out(ctx, made))


__all__ = ["bank_out", "own_bank_account", "router"]
