"""ACH operations (cutoff, files, return files, dead letters) and what the bank tells us.

Settlement notices and return files arrive from the bank as signed webhooks
(``api/inbound.py``) or, for returns, uploaded by an operator. Each is
applied the same way: read the entries by trace number, move the ledger
(post or void the hold, or reverse a settled entry: ids derived from the
payment, so a repeat is a replay), then record the entries' and payments'
new status with their events in one transaction. Bank accounts are
``api/ach_routes.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from paynode.actors.ach import decode_cutoff
from paynode.actors.bank_sim import PROVIDER, decode_statement
from paynode.api import contract, inbound
from paynode.api import problems as p
from paynode.api.ach_schemas import (
    AchFileList,
    AchFileOut,
    CutoffOut,
    DeadLetterList,
    DeadLetterOut,
    ReturnsOut,
    StatementIn,
    StatementLineOut,
    StatementOut,
)
from paynode.api.audit_writer import audit
from paynode.api.auth.scopes import Principal
from paynode.api.auth.tokens import new_id
from paynode.api.deps import Context, Ctx, require
from paynode.api.http import SMALL_BODY_LIMIT, decode_body, json_response, public, read_body
from paynode.api.notify_schemas import InboundEvent
from paynode.api.schemas import TransferIn
from paynode.domain.rails.ach_rules import (
    hold_transfer_id,
    return_transfer_id,
    settle_transfer_id,
)
from paynode.domain.rails.nacha import NachaError, Return, parse_returns
from paynode.storage import ach, payments

log = logging.getLogger("paynode.api.ach")
router = APIRouter(tags=["ach"])
_RETURN_FILE_LIMIT = 4 * 1024 * 1024


# -- operators: files, cutoff, returns, the simulated bank's statements ---------------------


@router.post(
    "/v1/ach/cutoff",
    responses=contract.replies({200: (CutoffOut, "The file built now, if any")}, (401, 403, 429)),
)
async def cutoff(ctx: Ctx, _: Annotated[Principal, Depends(require("admin"))]) -> Response:
    result = decode_cutoff(await ctx.ach.cutoff.remote())
    return json_response(public(CutoffOut, result))


@router.get(
    "/v1/ach/files",
    responses=contract.replies({200: (AchFileList, "Newest first")}, (401, 403, 429)),
)
async def list_files(ctx: Ctx, _: Annotated[Principal, Depends(require("admin"))]) -> Response:
    async with ctx.engine.connect() as conn:
        found = await ach.list_files(conn, 100)
    return json_response(AchFileList([public(AchFileOut, f) for f in found]))


@router.get(
    "/v1/ach/files/{file_id}",
    responses={
        200: {
            "description": "The NACHA file (94-character records)",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **contract.replies({}, (401, 403, 404, 429)),
    },
)
async def download_file(
    file_id: str, ctx: Ctx, _: Annotated[Principal, Depends(require("admin"))]
) -> Response:
    async with ctx.engine.connect() as conn:
        found = await ach.get_file(conn, ctx.keys, file_id) if len(file_id) <= 64 else None
    if found is None:
        raise p.ApiError(p.ACH_FILE_NOT_FOUND)
    return Response(
        found[1], media_type="text/plain",
        headers={"Content-Disposition": f'attachment; filename="{file_id}.ach"'},
    )  # fmt: skip


@router.post(
    "/v1/ach/returns",
    openapi_extra={"requestBody": {"required": True, "content": {
        "text/plain": {"schema": {"type": "string", "description": "A NACHA return file"}}}}},
    responses=contract.replies({200: (ReturnsOut, "Applied")}, (400, 401, 403, 413, 422, 429)),
)  # fmt: skip
async def upload_returns(
    request: Request, ctx: Ctx, principal: Annotated[Principal, Depends(require("admin"))]
) -> Response:
    raw = await read_body(request, _RETURN_FILE_LIMIT)
    try:
        text = raw.decode("ascii")
        returns = parse_returns(text)
    except (NachaError, UnicodeDecodeError):
        # The parser's message may quote a record, and records hold account numbers.
        raise p.ApiError(p.INVALID_NACHA_FILE) from None
    file_id = new_id("achr")
    await _keep_return_file(ctx, file_id, text, returns, (request, principal))
    return json_response(await apply_returns(ctx, returns))


@router.get(
    "/v1/ach/dead-letters",
    responses=contract.replies({200: (DeadLetterList, "Oldest first")}, (401, 403, 422, 429)),
)
async def list_dead_letters(
    ctx: Ctx,
    _: Annotated[Principal, Depends(require("admin"))],
    state: Literal["open", "replayed", "all"] = "open",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    async with ctx.engine.connect() as conn:
        letters = await ach.dead_letters(conn, state, limit)
    return json_response(DeadLetterList([public(DeadLetterOut, d) for d in letters]))


@router.post(
    "/v1/ach/dead-letters/{letter_id}/replay",
    responses=contract.replies(
        {200: (DeadLetterOut, "Replayed: closed if it applied, else open with the new error")},
        (401, 403, 404, 429, 503),
    ),
)
async def replay_dead_letter(
    letter_id: int, ctx: Ctx, _: Annotated[Principal, Depends(require("admin"))]
) -> Response:
    """Apply a refused status update again, as when the bank sent it: after the cause was
    dealt with (the wallet that must give a returned pull back was funded, say)."""
    async with ctx.engine.connect() as conn:
        letter = await ach.get_dead_letter(conn, letter_id)
    if letter is None:
        raise p.ApiError(p.DEAD_LETTER_NOT_FOUND)
    if letter.replayed_at is None:
        if letter.kind == "settlement":
            await apply_settlement(ctx, [letter.trace_number])
        else:
            assert letter.return_code is not None
            again = Return(original_trace=letter.trace_number, return_code=letter.return_code,
                           amount=0, transaction_code=0, individual_id="")  # fmt: skip
            await apply_returns(ctx, [again])
        async with ctx.engine.connect() as conn:
            letter = await ach.get_dead_letter(conn, letter_id)
        assert letter is not None
    return json_response(public(DeadLetterOut, letter))


async def _keep_return_file(
    ctx: Context, file_id: str, text: str, returns: list[Return],
    uploaded_by: tuple[Request, Principal] | None = None,
) -> None:  # fmt: skip
    """Store a return file as received (sealed), beside our outbound files."""
    credit = sum(r.amount for r in returns if r.transaction_code in (21, 31))
    async with ctx.engine.begin() as conn:
        await ach.store_file(
            conn, ctx.keys, file_id[:64], "return", text, len(returns),
            sum(r.amount for r in returns) - credit, credit,
        )  # fmt: skip
        if uploaded_by is not None:
            await audit(conn, *uploaded_by, "ach.returns_upload", file_id[:64],
                        after={"entries": len(returns)})  # fmt: skip


@router.post(
    "/v1/bank-sim/statement",
    openapi_extra=contract.body(StatementIn),
    responses=contract.replies(
        {200: (StatementOut, "What the simulated bank shows the account holder")},
        (400, 401, 403, 404, 413, 422, 429),
    ),
)
async def bank_statement(
    request: Request, ctx: Ctx, _: Annotated[Principal, Depends(require("admin"))]
) -> Response:
    if ctx.bank_sim is None:
        raise p.ApiError(p.NOT_FOUND, "the bank simulator is off")
    body = await decode_body(request, StatementIn, SMALL_BODY_LIMIT)
    lines = decode_statement(
        await ctx.bank_sim.statement.remote(body.routing_number, body.account_number)
    )
    return json_response(StatementOut([public(StatementLineOut, x) for x in lines]))


# -- what the bank tells us ---------------------------------------------------------------


async def apply_settlement(ctx: Context, traces: Sequence[str]) -> int:
    """Post the holds of settled entries; mark them and their payments settled."""
    async with ctx.engine.connect() as conn:
        found = await ach.entries_by_trace(conn, traces)
    todo = [e for e in found.values() if e.status == "submitted"]
    trace_of = {e.id: t for t, e in found.items()}
    posts = [
        TransferIn(
            id=settle_transfer_id(e.payment_id),
            pending_id=hold_transfer_id(e.payment_id),
            flags=["post_pending"],
        )
        for e in todo
        if e.payment_id is not None
    ]
    outcomes = {o.id: o for o in (await ctx.client.transfer(posts, None) if posts else [])}
    settled = 0
    async with ctx.engine.begin() as conn:
        for e in todo:
            if e.payment_id is not None:
                o = outcomes[settle_transfer_id(e.payment_id)]
                if o.code:
                    log.error("ach: settlement of %s refused: %s (dead-lettered)",
                              e.payment_id, o.code)  # fmt: skip
                    await ach.dead_letter(conn, "settlement", e.id, e.payment_id,
                                          trace_of[e.id], None, o.code)  # fmt: skip
                    continue
                await payments.transition(conn, e.payment_id, "settled")
            await ach.set_entry_status(conn, e.id, "settled")
            await ach.close_dead_letters(conn, e.id, "settlement")
            settled += 1
    return settled


def _reversal(e: ach.EntryRef, pay: payments.Payment) -> TransferIn:
    """A settled entry returned: move the money back the other way."""
    return TransferIn(
        id=return_transfer_id(pay.id), debit_account_id=pay.credit_account_id,
        credit_account_id=pay.debit_account_id, amount=e.amount, currency=pay.currency,
        metadata={"payment_id": pay.id},
    )  # fmt: skip


async def apply_returns(ctx: Context, returns: Sequence[Return]) -> ReturnsOut:
    """Void the hold (or reverse a settled entry) of each returned entry; record the code."""
    async with ctx.engine.connect() as conn:
        found = await ach.entries_by_trace(conn, [r.original_trace for r in returns])
        pays = {e.payment_id: await payments.get(conn, e.payment_id)
                for e in found.values() if e.payment_id is not None}  # fmt: skip
    unknown = sum(1 for r in returns if r.original_trace not in found)
    todo = [(r, found[r.original_trace]) for r in returns if r.original_trace in found]
    already = sum(1 for _, e in todo if e.status == "returned")
    todo = [(r, e) for r, e in todo if e.status != "returned"]
    moves = []
    for _, e in todo:
        pay = pays.get(e.payment_id) if e.payment_id is not None else None
        if pay is None:
            continue
        if e.status == "settled":
            moves.append(_reversal(e, pay))
        else:
            void = TransferIn(
                id=return_transfer_id(pay.id),
                pending_id=hold_transfer_id(pay.id),
                flags=["void_pending"],
            )
            moves.append(void)
    outcomes = {o.id: o for o in (await ctx.client.transfer(moves, None) if moves else [])}
    dead = 0
    async with ctx.engine.begin() as conn:
        for r, e in todo:
            if e.payment_id is not None:
                o = outcomes[return_transfer_id(e.payment_id)]
                if o.code:
                    log.error("ach: return of %s not applied: %s (dead-lettered)",
                              e.payment_id, o.code)  # fmt: skip
                    await ach.dead_letter(conn, "return", e.id, e.payment_id, r.original_trace,
                                          r.return_code, o.code)  # fmt: skip
                    dead += 1
                    continue
                await payments.transition(
                    conn, e.payment_id, "returned", r.return_code,
                    extra={"return": {"code": r.return_code, "reason": r.reason}},
                )  # fmt: skip
            elif e.kind == "microdeposit":
                await ach.fail_verification(conn, r.original_trace)
            await ach.set_entry_status(conn, e.id, "returned", r.return_code)
            await ach.close_dead_letters(conn, e.id, "return")
    return ReturnsOut(len(todo) - dead, already, unknown, dead)


async def _from_bank(ctx: Context, provider: str, event: InboundEvent) -> str:
    if event.type == "ach.settlement":
        traces = event.data.get("trace_numbers")
        if not isinstance(traces, list) or not all(isinstance(t, str) for t in traces):
            raise p.ApiError(p.INVALID_WEBHOOK_BODY, "trace_numbers")
        await apply_settlement(ctx, traces[:100_000])
        return "ach.settlement"
    if event.type == "ach.returns":
        text = event.data.get("file")
        if not isinstance(text, str):
            raise p.ApiError(p.INVALID_NACHA_FILE)
        try:
            returns = parse_returns(text)
        except NachaError:
            raise p.ApiError(p.INVALID_NACHA_FILE) from None
        if not await _known_file(ctx, event.id):
            await _keep_return_file(ctx, event.id, text, returns)
        await apply_returns(ctx, returns)
        return "ach.returns"
    raise p.ApiError(p.INVALID_WEBHOOK_BODY, "unknown event type")


async def _known_file(ctx: Context, file_id: str) -> bool:
    async with ctx.engine.connect() as conn:
        return await ach.get_file(conn, ctx.keys, file_id[:64]) is not None


inbound.register(PROVIDER, "ach.", _from_bank)

__all__ = ["apply_returns", "apply_settlement", "router"]
