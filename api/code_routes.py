"""Step-up codes after the payment: the payer's resend, and the SMS provider's status callbacks.

``POST /v1/payments/{id}/resend-code`` queues the challenge's code again (the
same code and expiry: one challenge has one code) for the notifier to send by
whichever channel reaches the payer. Limited per challenge (``otp.max_resends``)
and in time (``otp.resend_interval_s`` since the last send was asked for), under
the challenge's row lock so concurrent resends are counted one by one.

``POST /v1/callbacks/sms-status`` is where a Twilio-shaped provider reports a
message's fate. It carries no bearer: ``X-Twilio-Signature`` (HMAC-SHA1 of the
public URL and the sorted form parameters, keyed by the auth token) is checked
before anything is recorded, and every callback lands in the inbound log.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from paynode.actors.notify.sms import STATUS_CALLBACK_PATH
from paynode.api import contract, payment_service, risk_gate
from paynode.api import problems as p
from paynode.api.audit_writer import audit
from paynode.api.auth.scopes import Principal
from paynode.api.deps import Ctx, require
from paynode.api.http import json_response, read_body
from paynode.api.risk_schemas import CodeSendOut, ResendOut
from paynode.domain.notify import twilio
from paynode.storage import code_sends, notify, payments
from paynode.storage import risk as store

log = logging.getLogger("paynode.api.codes")
router = APIRouter()

SMS_STATUS_PATH = STATUS_CALLBACK_PATH  # the URL the SMS channel gives the provider
SMS_PROVIDER = "sms"  # the provider name in the inbound log
_CALLBACK_MAX_BYTES = 16 * 1024  # a status callback is a few hundred bytes


@router.post(
    "/v1/payments/{payment_id}/resend-code",
    responses=contract.replies(
        {202: (ResendOut, "Queued: the code goes out again by the channel that reaches you")},
        (401, 403, 404, 409, 429),
    ),
    status_code=202,
    tags=["payments"],
)
async def resend_code(
    payment_id: str,
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("payments:write"))],
) -> Response:
    pay = await payment_service.visible(ctx, principal, payment_id)
    if pay.owner_user_id is None or pay.owner_user_id != principal.user_id:
        raise p.ApiError(p.FORBIDDEN, "only the payer asks for the code again")
    s = ctx.settings.otp
    async with ctx.engine.begin() as conn:
        ch = await store.load_challenge(conn, ctx.keys, payment_id, lock=True)
        current = await payments.get(conn, payment_id)
        if ch is None or current is None or current.status != "requires_action":
            raise p.ApiError(p.NO_ACTION_REQUIRED)
        if ch.used or ch.attempts >= s.max_attempts or time.time() - ch.issued_at > s.max_age_s:
            raise p.ApiError(p.NO_ACTION_REQUIRED, "the code expired or is locked")
        sent = await code_sends.state(conn, payment_id)
        if sent.resends >= s.max_resends:
            raise p.ApiError(p.OTP_RESEND_LIMIT, f"at most {s.max_resends} resends per code")
        now = dt.datetime.now(dt.UTC)
        if sent.last_at is not None:
            wait_s = (
                sent.last_at + dt.timedelta(seconds=s.resend_interval_s) - now
            ).total_seconds()
            if wait_s > 0:
                raise p.ApiError(p.OTP_RESEND_TOO_SOON, f"retry in {math.ceil(wait_s)} s",
                                 headers={"Retry-After": str(math.ceil(wait_s))})  # fmt: skip
        seq = sent.resends + 1
        await code_sends.queue(conn, payment_id, seq)
        await audit(conn, request, principal, "payment.resend_code", payment_id,
                    after={"seq": seq})  # fmt: skip
        records = await code_sends.sends_of(conn, payment_id)
    await risk_gate.code_queued(ctx)
    out = ResendOut(
        payment_id=payment_id,
        resends_left=max(0, s.max_resends - seq),
        next_resend_at=now + dt.timedelta(seconds=s.resend_interval_s),
        sends=[CodeSendOut(r.seq, r.status, r.channel, r.delivery) for r in records],  # type: ignore[arg-type]
    )
    return json_response(out, 202)


@router.post(
    SMS_STATUS_PATH,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}},
        },
        "parameters": [
            {
                "name": twilio.HEADER,
                "in": "header",
                "required": True,
                "schema": {"type": "string"},
                "description": "base64 HMAC-SHA1 (auth token) of the URL + sorted POST params",
            }
        ],
    },
    responses={
        204: {"description": "Recorded (or already recorded)"},
        **contract.replies({}, (401, 404, 413, 422)),
    },
    status_code=204,
    tags=["notifications"],
)
async def sms_status(
    request: Request, ctx: Ctx, _: Annotated[None, Depends(contract.signed_by_provider)]
) -> Response:
    """The SMS provider's report on a message it accepted (Twilio's status callback)."""
    token = ctx.settings.sms.auth_token
    raw = await read_body(request, _CALLBACK_MAX_BYTES)
    try:
        params = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                           max_num_fields=twilio.MAX_PARAMS)  # fmt: skip
    except (UnicodeDecodeError, ValueError):
        params = []
    fields = dict(params)
    sid, status = fields.get("MessageSid", ""), fields.get("MessageStatus", "")
    given = request.headers.get(twilio.HEADER, "")
    # The URL the provider was given: the node's public one, not what a proxy forwards.
    url = ctx.settings.front_url() + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    code = None
    if not token:
        code = p.UNKNOWN_PROVIDER  # no SMS provider configured: nothing can sign
    elif not given:
        code = p.SIGNATURE_MISSING
    elif not twilio.valid(token, url, params, given):
        code = p.SIGNATURE_MISMATCH
    elif not sid or status not in twilio.STATUSES:
        code = p.INVALID_WEBHOOK_BODY
    event_id = f"{sid[:64]}:{status[:32]}" if sid else None
    async with ctx.engine.begin() as conn:
        try:
            await notify.record_inbound(
                conn, ctx.keys, SMS_PROVIDER, event_id, "sms.status", int(time.time()),
                "refused" if code else "accepted", code, raw,
            )  # fmt: skip
        except notify.InboundReplayed:
            return Response(status_code=204)  # the provider retried one already recorded
        if code is None:
            await code_sends.record_sms_status(conn, sid, status, fields.get("ErrorCode") or None)
    if code is not None:
        log.info("sms status callback refused: %s", code)
        raise p.ApiError(code)
    return Response(status_code=204)
