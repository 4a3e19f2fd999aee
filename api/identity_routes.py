"""Routes for identity: register, login, refresh, logout, API keys, users and KYC.

Password hashing runs in a worker thread (scrypt is tens of milliseconds of
CPU by design). Each state change is one transaction; a refused request
changes nothing, except a refresh token re-use, which revokes the session on
purpose before it answers 401.
"""

from __future__ import annotations

import asyncio
import hmac
import re
from collections.abc import Callable
from typing import Annotated

import msgspec
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from paynode.api import contract, risk_gate
from paynode.api import problems as p
from paynode.api.audit_writer import audit
from paynode.api.auth import tokens
from paynode.api.auth.passwords import MIN_PASSWORD_CHARS, hash_password, verify_password
from paynode.api.auth.scopes import USER_SCOPES, Principal
from paynode.api.deps import Context, Ctx, check_owner, limit_auth_attempts, require
from paynode.api.http import SMALL_BODY_LIMIT, decode_body, json_response
from paynode.api.identity_schemas import (
    Address,
    KycEventOut,
    KycIn,
    KycOut,
    KycReviewIn,
    LoginIn,
    LogoutIn,
    Me,
    RefreshIn,
    RegisterIn,
    RegisterOut,
    TokenPair,
    UserIn,
    UserOut,
    UserPatch,
)
from paynode.storage import identity
from paynode.storage import risk as risk_store
from paynode.storage.identity import Profile, UserRecord

REFRESH_PREFIX = "rt"
_USER_ID = re.compile(r"usr_[0-9a-f]{32}\Z")

router = APIRouter()


async def _issue(ctx: Context, conn, user_id: str, session_id: str) -> TokenPair:
    token_id, secret, refresh = tokens.new_secret(REFRESH_PREFIX)
    await identity.store_refresh(
        conn,
        token_id,
        session_id,
        tokens.secret_hash(secret),
        ctx.settings.auth.refresh_token_ttl_s,
    )
    ttl = ctx.settings.auth.access_token_ttl_s
    access = tokens.issue_access(ctx.keys, user_id, session_id, list(USER_SCOPES), ttl)
    return TokenPair(access, refresh, "bearer", ttl)


# -- auth ---------------------------------------------------------------------------


@router.post(
    "/v1/auth/register",
    openapi_extra=contract.body(RegisterIn),
    responses=contract.replies({201: (RegisterOut, "Registered")}, (400, 409, 413, 422, 429)),
    status_code=201,
    dependencies=[Depends(limit_auth_attempts)],
    tags=["auth"],
)
async def register(request: Request, ctx: Ctx) -> Response:
    body = await decode_body(request, RegisterIn, SMALL_BODY_LIMIT)
    if len(body.password) < MIN_PASSWORD_CHARS:
        raise p.ApiError(p.WEAK_PASSWORD, f"at least {MIN_PASSWORD_CHARS} characters", "$.password")
    password_hash = await asyncio.to_thread(hash_password, body.password)
    user_id = tokens.new_id("usr")
    async with ctx.engine.begin() as conn:
        try:
            await identity.create_user(
                conn, ctx.keys, user_id, Profile(email=body.email, name=body.name), password_hash
            )
        except identity.EmailTaken:
            raise p.ApiError(p.EMAIL_TAKEN) from None
    return json_response(RegisterOut(user_id), 201)


@router.post(
    "/v1/auth/login",
    openapi_extra=contract.body(LoginIn),
    responses=contract.replies({200: (TokenPair, "Logged in")}, (400, 401, 413, 422, 429)),
    dependencies=[Depends(limit_auth_attempts)],
    tags=["auth"],
)
async def login(request: Request, ctx: Ctx) -> Response:
    body = await decode_body(request, LoginIn, SMALL_BODY_LIMIT)
    async with ctx.engine.connect() as conn:
        found = await identity.login_lookup(conn, ctx.keys, body.email)
    stored = found[1] if found else None
    if not await asyncio.to_thread(verify_password, body.password, stored) or found is None:
        raise p.ApiError(p.INVALID_CREDENTIALS)
    session_id = tokens.new_id("ses")
    async with ctx.engine.begin() as conn:
        await identity.create_session(conn, session_id, found[0])
        pair = await _issue(ctx, conn, found[0], session_id)
    return json_response(pair)


@router.post(
    "/v1/auth/refresh",
    openapi_extra=contract.body(RefreshIn),
    responses=contract.replies({200: (TokenPair, "New token pair")}, (400, 401, 413, 422, 429)),
    dependencies=[Depends(limit_auth_attempts)],
    tags=["auth"],
)
async def refresh(request: Request, ctx: Ctx) -> Response:
    body = await decode_body(request, RefreshIn, SMALL_BODY_LIMIT)
    parts = tokens.split_secret(body.refresh_token, REFRESH_PREFIX)
    if parts is None:
        raise p.ApiError(p.INVALID_REFRESH_TOKEN)
    token_id, secret = parts
    reused: str | None = None
    async with ctx.engine.begin() as conn:
        state = await identity.lock_refresh(conn, token_id)
        if state is None or not hmac.compare_digest(tokens.secret_hash(secret), state.secret_hash):
            raise p.ApiError(p.INVALID_REFRESH_TOKEN)
        if state.used and not state.session_revoked:
            # A dead token came back: someone holds a copy. End the whole family.
            await identity.revoke_session(conn, state.session_id, "refresh_token_reused")
            reused = state.session_id
        elif state.used or state.session_revoked or state.expired:
            raise p.ApiError(p.INVALID_REFRESH_TOKEN)
        else:
            await identity.mark_refresh_used(conn, token_id)
            pair = await _issue(ctx, conn, state.user_id, state.session_id)
    if reused is not None:
        ctx.auth.forget_session(reused)
        raise p.ApiError(p.REFRESH_TOKEN_REUSED)
    return json_response(pair)


@router.post(
    "/v1/auth/logout",
    openapi_extra=contract.body(LogoutIn),
    responses={204: {"description": "Session ended"}, **contract.replies({}, contract.authed())},
    status_code=204,
    tags=["auth"],
)
async def logout(ctx: Ctx, principal: Annotated[Principal, Depends(require())]) -> Response:
    # The body is optional and carries nothing we need: the access token names the session.
    if principal.session_id is not None:
        async with ctx.engine.begin() as conn:
            await identity.revoke_session(conn, principal.session_id, "logout")
        ctx.auth.forget_session(principal.session_id)
    return Response(status_code=204)


@router.get(
    "/v1/auth/me",
    responses=contract.replies({200: (Me, "The caller")}, contract.authed()),
    tags=["auth"],
)
async def me(principal: Annotated[Principal, Depends(require())]) -> Response:
    return json_response(
        Me(principal.kind, principal.id, principal.user_id, sorted(principal.scopes))
    )


# -- users --------------------------------------------------------------------------------


def _user_out(u: UserRecord) -> UserOut:
    pr = u.profile
    address = None if pr.address is None else msgspec.convert(pr.address, Address)
    return UserOut(
        u.id, pr.email, pr.name, pr.phone, pr.birth_date, address, u.kyc_status,  # type: ignore[arg-type]
        u.created_at, u.updated_at,
    )  # fmt: skip


def _own_user(principal: Principal, user_id: str) -> None:
    """403 for another user's id (whether or not it exists); 404 for ids that cannot exist."""
    if not _USER_ID.match(user_id):
        raise p.ApiError(p.USER_NOT_FOUND)
    check_owner(principal, user_id)


async def _load_user(ctx: Context, conn, user_id: str) -> UserRecord:
    user = await identity.get_user(conn, ctx.keys, user_id)
    if user is None:
        raise p.ApiError(p.USER_NOT_FOUND)
    return user


def _profile_values(body: UserIn | UserPatch) -> dict[str, object]:
    out: dict[str, object] = {}
    for field in ("email", "name", "phone", "birth_date", "address"):
        value = getattr(body, field)
        if value is msgspec.UNSET:
            continue
        if field == "birth_date" and value is not None:
            value = value.isoformat()
        elif field == "address" and value is not None:
            value = msgspec.to_builtins(value)
        out[field] = value
    return out


@router.post(
    "/v1/users",
    openapi_extra=contract.body(UserIn),
    responses=contract.replies({201: (UserOut, "Created")}, contract.authed(400, 409, 413, 422)),
    status_code=201,
    tags=["users"],
)
async def create_user(
    request: Request, ctx: Ctx, principal: Annotated[Principal, Depends(require("admin"))]
) -> Response:
    body = await decode_body(request, UserIn, SMALL_BODY_LIMIT)
    user_id = tokens.new_id("usr")
    profile = msgspec.convert(_profile_values(body), Profile)
    async with ctx.engine.begin() as conn:
        try:
            await identity.create_user(conn, ctx.keys, user_id, profile, None)
        except identity.EmailTaken:
            raise p.ApiError(p.EMAIL_TAKEN) from None
        user = await _load_user(ctx, conn, user_id)
        await audit(conn, request, principal, "user.create", user_id)
    return json_response(_user_out(user), 201)


@router.get(
    "/v1/users/{user_id}",
    responses=contract.replies({200: (UserOut, "The profile")}, contract.authed(404)),
    tags=["users"],
)
async def get_user(
    user_id: str, ctx: Ctx, principal: Annotated[Principal, Depends(require("users:read"))]
) -> Response:
    _own_user(principal, user_id)
    async with ctx.engine.connect() as conn:
        user = await _load_user(ctx, conn, user_id)
    return json_response(_user_out(user))


@router.patch(
    "/v1/users/{user_id}",
    openapi_extra=contract.body(UserPatch),
    responses=contract.replies(
        {200: (UserOut, "Updated")}, contract.authed(400, 404, 409, 413, 422)
    ),
    tags=["users"],
)
async def patch_user(
    user_id: str,
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("users:write"))],
) -> Response:
    _own_user(principal, user_id)
    body = await decode_body(request, UserPatch, SMALL_BODY_LIMIT)
    changes = _profile_values(body)
    async with ctx.engine.begin() as conn:
        try:
            if not await identity.update_profile(conn, ctx.keys, user_id, changes):
                raise p.ApiError(p.USER_NOT_FOUND)
        except identity.EmailTaken:
            raise p.ApiError(p.EMAIL_TAKEN) from None
        user = await _load_user(ctx, conn, user_id)
    return json_response(_user_out(user))


# -- KYC ------------------------------------------------------------------------------------


async def _kyc_out(ctx: Context, conn, user_id: str) -> KycOut:
    user = await _load_user(ctx, conn, user_id)
    history = await identity.kyc_history(conn, user_id)
    return KycOut(
        user_id,
        user.kyc_status,  # type: ignore[arg-type]
        user.kyc_id_type,  # type: ignore[arg-type]
        user.kyc_id_last4,
        [KycEventOut(e.from_status, e.to_status, e.actor, e.reason, e.at) for e in history],  # type: ignore[arg-type]
    )


async def _move_kyc(
    ctx: Context,
    request: Request,
    principal: Principal,
    user_id: str,
    refusal: Callable[[str], str | None],
    to_status: str,
    actor: str,
    **details: str | None,
) -> KycOut:
    """One KYC transition and its audit row, in one transaction, under the user's row lock."""
    async with ctx.engine.begin() as conn:
        status = await identity.lock_kyc_status(conn, user_id)
        if status is None:
            raise p.ApiError(p.USER_NOT_FOUND)
        code = refusal(status)
        if code is not None:
            raise p.ApiError(code)
        await identity.set_kyc(
            conn, ctx.keys, user_id, from_status=status, to_status=to_status, actor=actor,
            **details,
        )  # fmt: skip
        await audit(conn, request, principal, "kyc." + to_status, user_id,
                    before={"kyc_status": status}, after={"kyc_status": to_status})  # fmt: skip
        return await _kyc_out(ctx, conn, user_id)


@router.post(
    "/v1/users/{user_id}/kyc",
    openapi_extra=contract.body(KycIn),
    responses=contract.replies(
        {200: (KycOut, "Submitted; status is pending")}, contract.authed(400, 404, 409, 413, 422)
    ),
    tags=["kyc"],
)
async def submit_kyc(
    user_id: str,
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("users:write"))],
) -> Response:
    _own_user(principal, user_id)
    body = await decode_body(request, KycIn, SMALL_BODY_LIMIT)
    digits = body.id_number.replace("-", "")
    if body.id_type in ("ssn", "itin") and not (digits.isdigit() and len(digits) == 9):
        raise p.ApiError(p.INVALID_FIELD, "an SSN or ITIN has 9 digits", "$.id_number")
    refusals = {"verified": p.KYC_ALREADY_VERIFIED, "pending": p.KYC_IN_REVIEW}
    out = await _move_kyc(
        ctx, request, principal, user_id, refusals.get, "pending", principal.id,
        id_type=body.id_type, id_number=digits,
    )  # fmt: skip
    # Screened at every submission; a match opens a review (GET /v1/reviews) that must be
    # cleared before the KYC can be verified.
    await risk_gate.screen_user(ctx, user_id)
    return json_response(out)


@router.get(
    "/v1/users/{user_id}/kyc",
    responses=contract.replies({200: (KycOut, "Status and audit trail")}, contract.authed(404)),
    tags=["kyc"],
)
async def get_kyc(
    user_id: str, ctx: Ctx, principal: Annotated[Principal, Depends(require("users:read"))]
) -> Response:
    if not principal.has("kyc:review"):
        _own_user(principal, user_id)
    elif not _USER_ID.match(user_id):
        raise p.ApiError(p.USER_NOT_FOUND)
    async with ctx.engine.connect() as conn:
        out = await _kyc_out(ctx, conn, user_id)
    return json_response(out)


@router.post(
    "/v1/users/{user_id}/kyc/review",
    openapi_extra=contract.body(KycReviewIn),
    responses=contract.replies(
        {200: (KycOut, "Decided")}, contract.authed(400, 404, 409, 413, 422)
    ),
    tags=["kyc"],
)
async def review_kyc(
    user_id: str,
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require("kyc:review"))],
) -> Response:
    if not _USER_ID.match(user_id):
        raise p.ApiError(p.USER_NOT_FOUND)
    if principal.user_id == user_id:
        # Separation of duties: a reviewer key owned by this user cannot clear itself.
        raise p.ApiError(p.FORBIDDEN, "nobody reviews their own KYC")
    body = await decode_body(request, KycReviewIn, SMALL_BODY_LIMIT)
    if body.decision == "verified":
        async with ctx.engine.connect() as conn:
            if await risk_store.open_review_of(conn, "user", user_id) is not None:
                raise p.ApiError(p.SANCTIONS_REVIEW_OPEN)
    out = await _move_kyc(
        ctx, request, principal, user_id,
        lambda status: None if status == "pending" else p.KYC_NOT_PENDING,
        body.decision, principal.id, reason=body.reason,
    )  # fmt: skip
    return json_response(out)
