"""Routes for card disputes: the merchant lists them and answers each (evidence, or
acceptance); what moves money is ``api/dispute_service.py``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from paynode.api import contract, dispute_service
from paynode.api.audit_writer import audit
from paynode.api.auth.scopes import Principal
from paynode.api.deps import Ctx, require
from paynode.api.dispute_schemas import DisputeOut, DisputePage, EvidenceIn
from paynode.api.http import decode_body, json_response, public
from paynode.domain.rails.disputes import MAX_EVIDENCE_CHARS
from paynode.storage import disputes

router = APIRouter(tags=["disputes"])


@router.get(
    "/v1/disputes",
    responses=contract.replies({200: (DisputePage, "Yours, by id")}, (401, 403, 422, 429)),
)
async def list_disputes(
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("payments:read"))],
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    owner = None if principal.admin else principal.user_id or ""
    async with ctx.engine.connect() as conn:
        found = await disputes.list_for(conn, owner, after, limit + 1)
    more = len(found) > limit
    found = found[:limit]
    out = [public(DisputeOut, d) for d in found]
    return json_response(DisputePage(out, found[-1].id if more and found else None))


@router.get(
    "/v1/disputes/{dispute_id}",
    responses=contract.replies({200: (DisputeOut, "The dispute")}, (401, 403, 404, 429)),
)
async def get_dispute(
    dispute_id: str, ctx: Ctx, principal: Annotated[Principal, Depends(require("payments:read"))]
) -> Response:
    return json_response(public(DisputeOut, await dispute_service.own(ctx, principal, dispute_id)))


@router.post(
    "/v1/disputes/{dispute_id}/evidence",
    openapi_extra=contract.body(EvidenceIn),
    responses=contract.replies(
        {200: (DisputeOut, "Sent to the issuer: under_review until it decides")},
        (400, 401, 403, 404, 409, 413, 422, 429, 503),
    ),
)
async def submit_evidence(
    dispute_id: str,
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("payments:write"))],
) -> Response:
    body = await decode_body(request, EvidenceIn, MAX_EVIDENCE_CHARS * 4 + 1024)
    d = await dispute_service.answer(ctx, principal, dispute_id, body.text)
    async with ctx.engine.begin() as conn:
        await audit(conn, request, principal, "dispute.evidence", d.id,
                    after={"status": d.status})  # fmt: skip
    return json_response(public(DisputeOut, d))


@router.post(
    "/v1/disputes/{dispute_id}/accept",
    responses=contract.replies(
        {200: (DisputeOut, "Accepted: the issuer decides it lost")},
        (401, 403, 404, 409, 429, 503),
    ),
)
async def accept_dispute(
    dispute_id: str,
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("payments:write"))],
) -> Response:
    d = await dispute_service.answer(ctx, principal, dispute_id, None)
    async with ctx.engine.begin() as conn:
        await audit(conn, request, principal, "dispute.accept", d.id, after={"status": d.status})
    return json_response(public(DisputeOut, d))
