"""RTP: requests for payment our users receive, and what the network sends us.

A creditor's request for payment (ISO 20022 pain.013) arrives from the network as a
signed webhook (``api/inbound.py``); it is checked, stored for the payer and
announced with an ``rtp.request_received`` event, or refused back to the network
(pain.014 ``RJCT``). The payer lists it, accepts it (an RTP payment to the
creditor, ``api/payment_service.pay_request``) or declines it. Sending instant
payments is ``POST /v1/payments`` with ``rail: "rtp"`` (``api/rtp_service.py``).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from paynode.actors.host import ServiceRef
from paynode.actors.rtp_sim import PROVIDER, decode_statement
from paynode.api import contract, inbound, payment_service, rtp_service
from paynode.api import problems as p
from paynode.api.audit_writer import audit
from paynode.api.auth.scopes import Principal
from paynode.api.auth.tokens import new_id
from paynode.api.deps import Context, Ctx, require
from paynode.api.http import SMALL_BODY_LIMIT, decode_body, json_response, public
from paynode.api.notify_schemas import InboundEvent
from paynode.api.rails_routes import payment_out
from paynode.api.rails_schemas import PaymentOut
from paynode.api.rtp_schemas import (
    RtpAcceptIn,
    RtpCreditOut,
    RtpRequestOut,
    RtpRequestPage,
    RtpSimRequestIn,
    RtpSimRequestOut,
    RtpSimStatementIn,
    RtpStatementOut,
)
from paynode.domain.rails import iso20022 as iso
from paynode.domain.rails import rtp_rules
from paynode.storage import rtp

log = logging.getLogger("paynode.api.rtp")
RequestStatus = Literal["pending", "accepted", "declined", "expired"]
router = APIRouter(tags=["rtp"])


async def _request_out(ctx: Context, r: rtp.Request) -> RtpRequestOut:
    async with ctx.engine.connect() as conn:
        name = await rtp.creditor_name(conn, ctx.keys, r.id)
    lapsed = r.status == "pending" and r.expires_at <= dt.datetime.now(dt.UTC)
    return RtpRequestOut(
        id=r.id, status="expired" if lapsed else r.status,  # type: ignore[arg-type]
        account_id=r.account_id, amount=r.amount, currency=r.currency, creditor_name=name,
        creditor_routing_number=r.creditor_routing, creditor_account_last4=r.creditor_last4,
        remittance=r.remittance, expires_at=r.expires_at, payment_id=r.payment_id,
        end_to_end_id=r.end_to_end_id, created_at=r.created_at,
    )  # fmt: skip


# -- the payer ----------------------------------------------------------------------------


@router.get(
    "/v1/rtp/requests",
    responses=contract.replies({200: (RtpRequestPage, "Yours, by id")}, (401, 403, 422, 429)),
)
async def list_requests(
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("payments:read"))],
    status: Annotated[RequestStatus | None, Query()] = None,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    owner = None if principal.admin else principal.user_id
    async with ctx.engine.connect() as conn:
        found = await rtp.list_requests(conn, owner, status, after, limit + 1)
    more = len(found) > limit
    found = found[:limit]
    out = [await _request_out(ctx, r) for r in found]
    return json_response(RtpRequestPage(out, found[-1].id if more and found else None))


@router.get(
    "/v1/rtp/requests/{request_id}",
    responses=contract.replies({200: (RtpRequestOut, "The request")}, (401, 403, 404, 429)),
)
async def get_request(
    request_id: str, ctx: Ctx, principal: Annotated[Principal, Depends(require("payments:read"))]
) -> Response:
    found = await payment_service.visible_request(ctx, principal, request_id)
    return json_response(await _request_out(ctx, found))


@router.post(
    "/v1/rtp/requests/{request_id}/accept",
    openapi_extra=contract.body(RtpAcceptIn),
    responses=contract.replies(
        {
            201: (PaymentOut, "Paid: the RTP payment to the creditor (completed or failed;"
                  " pending if the network has not answered yet)"),
            200: (PaymentOut, "Replay (the same payment_id)"),
            202: (PaymentOut, "Waiting: the payment requires_action or is in_review"),
        },
        (400, 401, 403, 404, 409, 413, 422, 429, 503),
    ),
    status_code=201,
)  # fmt: skip
async def accept_request(
    request_id: str,
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("payments:write"))],
) -> Response:
    body = await decode_body(request, RtpAcceptIn, SMALL_BODY_LIMIT)
    pay, status = await payment_service.pay_request(
        ctx, request, principal, request_id, body.payment_id, body.memo
    )
    return json_response(await payment_out(ctx, pay), status)


@router.post(
    "/v1/rtp/requests/{request_id}/decline",
    responses=contract.replies(
        {200: (RtpRequestOut, "Declined (also when it was declined already)")},
        (401, 403, 404, 409, 429),
    ),
)
async def decline_request(
    request_id: str,
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("payments:write"))],
) -> Response:
    found = await payment_service.visible_request(ctx, principal, request_id)
    async with ctx.engine.begin() as conn:
        decided = await rtp.decide_request(conn, found.id, "declined", None)
        if decided.status == "declined" and found.status == "pending":
            await audit(conn, request, principal, "rtp_request.decline", found.id,
                        after={"status": "declined"})  # fmt: skip
    if decided.status != "declined":
        raise p.ApiError(p.RTP_REQUEST_ANSWERED, f"the request is {decided.status}")
    if found.status == "pending":
        await rtp_service.answer_request(ctx, decided, accepted=False)
    return json_response(await _request_out(ctx, decided))


# -- operators: the simulated network -----------------------------------------------------


def _simulator(ctx: Context) -> ServiceRef:
    if ctx.rtp_network is None:
        raise p.ApiError(p.NOT_FOUND, "the RTP simulator is off")
    return ctx.rtp_network


@router.post(
    "/v1/rtp-sim/requests",
    openapi_extra=contract.body(RtpSimRequestIn),
    responses=contract.replies(
        {200: (RtpSimRequestOut, "The simulated creditor's bank sent the request")},
        (400, 401, 403, 404, 413, 422, 429),
    ),
)
async def simulate_request(
    request: Request, ctx: Ctx, _: Annotated[Principal, Depends(require("admin"))]
) -> Response:
    """Development and tests: an outside creditor asks one of our users to pay, over the
    simulated network (it arrives like a real one, as a signed webhook)."""
    network = _simulator(ctx)
    body = await decode_body(request, RtpSimRequestIn, SMALL_BODY_LIMIT)
    creditor = iso.Party(body.creditor_name, body.creditor_account_number,
                         body.creditor_routing_number)  # fmt: skip
    debtor = iso.Party("", body.account_id, rtp_service.our_routing(ctx))
    e2e = await network.request_payment.remote(
        creditor, debtor, body.amount, body.remittance, body.expires_in_s
    )
    return json_response(RtpSimRequestOut(e2e))


@router.post(
    "/v1/rtp-sim/statement",
    openapi_extra=contract.body(RtpSimStatementIn),
    responses=contract.replies(
        {200: (RtpStatementOut, "The instant credits an outside account received")},
        (400, 401, 403, 404, 413, 422, 429),
    ),
)
async def simulated_statement(
    request: Request, ctx: Ctx, _: Annotated[Principal, Depends(require("admin"))]
) -> Response:
    network = _simulator(ctx)
    body = await decode_body(request, RtpSimStatementIn, SMALL_BODY_LIMIT)
    credits = decode_statement(
        await network.statement.remote(body.routing_number, body.account_number)
    )
    return json_response(RtpStatementOut([public(RtpCreditOut, c) for c in credits]))


# -- what the network sends us ------------------------------------------------------------


async def _refuse(ctx: Context, m: iso.PaymentRequest, reason: str) -> str:
    """Answer a request we will not present to anyone (pain.014 RJCT)."""
    log.info("rtp: request for payment refused: %s", reason)
    assert ctx.rtp_network is not None
    text = iso.build_request_status(iso.RequestStatus(
        message_id=rtp_rules.message_id(f"rfp-refusal:{m.end_to_end_id}"),
        original_message_id=m.message_id, original_end_to_end_id=m.end_to_end_id,
        status=iso.REJECTED, reason=reason, created_at=dt.datetime.now(dt.UTC),
    ))  # fmt: skip
    await ctx.rtp_network.respond.remote(text)
    return "rtp.request_for_payment"


async def _from_network(ctx: Context, provider: str, event: InboundEvent) -> str:
    if event.type != "rtp.request_for_payment":
        raise p.ApiError(p.INVALID_WEBHOOK_BODY, "unknown event type")
    text = event.data.get("message")
    if not isinstance(text, str):
        raise p.ApiError(p.INVALID_WEBHOOK_BODY, "data.message: a pain.013")
    try:
        m = iso.parse_payment_request(text)
    except iso.MessageError as e:
        raise p.ApiError(p.INVALID_WEBHOOK_BODY, str(e)) from None
    if ctx.rtp_network is None:
        raise p.ApiError(p.RAIL_NOT_AVAILABLE, "this node is not connected to RTP")
    if m.debtor.agent != rtp_service.our_routing(ctx):
        return await _refuse(ctx, m, "AC02")  # not an account at our bank
    spec = (await ctx.client.resolve({m.debtor.account})).get(m.debtor.account)
    if spec is None or not spec.owner or spec.currency != m.currency:
        return await _refuse(ctx, m, "AC02")  # no such wallet (or an operator's)
    if not rtp_rules.within_limit(m.amount, ctx.settings.rtp.limit):
        return await _refuse(ctx, m, "AM02")
    if m.expires_at <= dt.datetime.now(dt.UTC):
        return await _refuse(ctx, m, "AEXR")
    async with ctx.engine.begin() as conn:
        if await rtp.pending_requests(conn, spec.owner) >= ctx.settings.rtp.max_pending_requests:
            refuse = True
        else:
            refuse = False
            values = {
                "end_to_end_id": m.end_to_end_id, "message_id": m.message_id,
                "owner_user_id": spec.owner, "account_id": m.debtor.account,
                "amount": m.amount, "currency": m.currency, "remittance": m.remittance,
                "expires_at": m.expires_at,
            }  # fmt: skip
            stored, new = await rtp.add_request(conn, ctx.keys, new_id("rfp"), values, m.creditor)
            if new:
                await rtp.emit_received(conn, stored)
    if refuse:  # a bound on what one user can be sent: the creditor may ask again later
        return await _refuse(ctx, m, "MS03")
    return "rtp.request_for_payment"


inbound.register(PROVIDER, "rtp.", _from_network)

__all__ = ["router"]
