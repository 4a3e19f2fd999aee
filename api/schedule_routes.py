"""Scheduled and recurring transfers: made, read, paused, resumed, canceled.

The runs are the scheduler's (``api/scheduler.py``); this module only changes a
schedule's state, each change under the schedule's row lock.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import msgspec
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from paynode.api import contract
from paynode.api import problems as p
from paynode.api.audit_writer import audit
from paynode.api.auth.scopes import Principal
from paynode.api.deps import Context, Ctx, check_owner, require
from paynode.api.http import SMALL_BODY_LIMIT, decode_body, json_response
from paynode.api.schedule_schemas import ScheduleIn, ScheduleOut, SchedulePage, ScheduleRunOut
from paynode.api.scheduler import next_run_at
from paynode.domain.ledger.model import Code
from paynode.domain.rails import schedule as rules
from paynode.storage import schedules as store

router = APIRouter(tags=["schedules"])
RUNS_SHOWN = 20


async def _out(ctx: Context, s: store.Schedule) -> ScheduleOut:
    async with ctx.engine.connect() as conn:
        runs = await store.runs_of(conn, s.id, RUNS_SHOWN)
    return ScheduleOut(
        id=s.id, state=s.state, debit_account_id=s.debit_account_id,  # type: ignore[arg-type]
        credit_account_id=s.credit_account_id, amount=s.amount, currency=s.currency,
        every=s.every, start_at=s.start_at, end_at=s.end_at,  # type: ignore[arg-type]
        max_runs=s.max_runs, catch_up=s.catch_up,  # type: ignore[arg-type]
        metadata=msgspec.json.decode(s.metadata), owner_user_id=s.owner_user_id,
        next_occurrence=s.next_occurrence, next_run_at=s.next_run_at, created_at=s.created_at,
        runs=[ScheduleRunOut(r.occurrence, r.due_at, r.transfer_id, r.status,  # type: ignore[arg-type]
                             r.code, r.ran_at) for r in runs],
    )  # fmt: skip


def _same(s: store.Schedule, wanted: store.Schedule) -> bool:
    fields = ("debit_account_id", "credit_account_id", "amount", "currency", "every",
              "start_at", "end_at", "max_runs", "catch_up", "metadata")  # fmt: skip
    return all(getattr(s, f) == getattr(wanted, f) for f in fields)


@router.post(
    "/v1/schedules",
    openapi_extra=contract.body(ScheduleIn),
    responses=contract.replies(
        {201: (ScheduleOut, "Scheduled"), 200: (ScheduleOut, "Replay")},
        (400, 401, 403, 409, 413, 422, 429),
    ),
    status_code=201,
)
async def create_schedule(
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("transfers:write"))],
) -> Response:
    body = await decode_body(request, ScheduleIn, SMALL_BODY_LIMIT)
    for name, value in (("start_at", body.start_at), ("end_at", body.end_at)):
        if value is not None and value.tzinfo is None:
            raise p.ApiError(p.INVALID_FIELD, "a time with its zone offset", f"$.{name}")
    if body.end_at is not None and body.end_at < body.start_at:
        raise p.ApiError(p.INVALID_FIELD, "end_at is before start_at", "$.end_at")
    if body.debit_account_id == body.credit_account_id:
        raise p.ApiError(Code.SAME_ACCOUNT, field="$.credit_account_id")
    specs = await ctx.client.resolve({body.debit_account_id, body.credit_account_id})
    for field in ("debit_account_id", "credit_account_id"):
        spec = specs.get(getattr(body, field))
        if spec is None:
            raise p.ApiError(Code.ACCOUNT_NOT_FOUND, field=f"$.{field}")
        if spec.currency != body.currency:
            raise p.ApiError(Code.CURRENCY_MISMATCH, field="$.currency")
    # Whoever may debit the account now may schedule its debits (checked once: runs
    # are the node's own transfers).
    check_owner(principal, specs[body.debit_account_id].owner)
    start = body.start_at.astimezone(dt.UTC)
    now = dt.datetime.now(dt.UTC)
    wanted = store.Schedule(
        id=body.id, owner_user_id=principal.user_id, debit_account_id=body.debit_account_id,
        credit_account_id=body.credit_account_id, amount=body.amount, currency=body.currency,
        every=body.every, start_at=start,
        end_at=body.end_at.astimezone(dt.UTC) if body.end_at else None, max_runs=body.max_runs,
        catch_up=body.catch_up, metadata=msgspec.json.encode(body.metadata).decode(),
        state="active", next_occurrence=0, next_run_at=start, created_at=now, updated_at=now,
    )  # fmt: skip
    async with ctx.engine.begin() as conn:
        stored, new = await store.create(conn, wanted)
        if new:
            await audit(conn, request, principal, "schedule.create", stored.id,
                        after={"every": stored.every, "amount": stored.amount})  # fmt: skip
    if not new and (not _same(stored, wanted) or stored.owner_user_id != wanted.owner_user_id):
        raise p.ApiError(Code.EXISTS_WITH_DIFFERENT_FIELDS, field="$.id")
    return json_response(await _out(ctx, stored), 201 if new else 200)


async def _visible(ctx: Context, principal: Principal, schedule_id: str) -> store.Schedule:
    async with ctx.engine.connect() as conn:
        found = await store.get(conn, schedule_id) if len(schedule_id) <= 64 else None
    if found is None or not (principal.admin or found.owner_user_id == principal.user_id):
        raise p.ApiError(p.SCHEDULE_NOT_FOUND)  # someone else's does not exist
    return found


@router.get(
    "/v1/schedules",
    responses=contract.replies({200: (SchedulePage, "Yours, by id")}, (401, 403, 422, 429)),
)
async def list_schedules(
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("transfers:read"))],
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    owner = None if principal.admin else (principal.user_id or "")
    async with ctx.engine.connect() as conn:
        found = await store.list_of(conn, owner, after, limit + 1)
    page = [await _out(ctx, s) for s in found[:limit]]
    more = len(found) > limit
    return json_response(SchedulePage(page, page[-1].id if more and page else None))


@router.get(
    "/v1/schedules/{schedule_id}",
    responses=contract.replies({200: (ScheduleOut, "With its latest runs")}, (401, 403, 404, 429)),
)
async def get_schedule(
    schedule_id: str, ctx: Ctx, principal: Annotated[Principal, Depends(require("transfers:read"))]
) -> Response:
    return json_response(await _out(ctx, await _visible(ctx, principal, schedule_id)))


async def _change(
    ctx: Context, request: Request, principal: Principal, schedule_id: str, action: str
) -> Response:
    """pause: active -> paused; resume: paused -> active (from the next occurrence due
    after now); cancel: active or paused -> canceled. The same again is a no-op."""
    await _visible(ctx, principal, schedule_id)
    now = dt.datetime.now(dt.UTC)
    async with ctx.engine.begin() as conn:
        s = await store.get(conn, schedule_id, lock=True)
        assert s is not None
        target = {"pause": "paused", "resume": "active", "cancel": "canceled"}[action]
        allowed = {"pause": ("active",), "resume": ("paused",), "cancel": ("active", "paused")}
        if s.state != target:
            if s.state not in allowed[action]:
                raise p.ApiError(p.SCHEDULE_NOT_CHANGEABLE, f"the schedule is {s.state}")
            n, at = s.next_occurrence, s.next_run_at
            if action == "resume":  # what fell due while paused never runs
                n = rules.first_after(s.start_at, s.every, n, now, s.end_at, s.max_runs)
                at = next_run_at(s, n)
            elif action == "cancel":
                at = None
            state = "finished" if action == "resume" and at is None else target
            s = await store.set_state(conn, s.id, state, n, at)
            await audit(conn, request, principal, f"schedule.{action}", s.id,
                        after={"state": s.state})  # fmt: skip
    return json_response(await _out(ctx, s))


_CHANGED = contract.replies({200: (ScheduleOut, "Its state now")}, (401, 403, 404, 409, 429))


def _action(action: str, summary: str) -> None:
    async def endpoint(
        schedule_id: str,
        request: Request,
        ctx: Ctx,
        principal: Annotated[Principal, Depends(require("transfers:write"))],
    ) -> Response:
        return await _change(ctx, request, principal, schedule_id, action)

    endpoint.__name__ = f"{action}_schedule"
    router.post(
        f"/v1/schedules/{{schedule_id}}/{action}",
        summary=summary,
        responses=_CHANGED,
    )(endpoint)


_action("pause", "Pause: no occurrence runs until resumed")
_action("resume", "Resume from the next occurrence due after now")
_action("cancel", "Cancel for good")
