"""Users, sessions, refresh tokens, API keys and the KYC trail in PostgreSQL.

Personal data is sealed with :mod:`storage.pii` before it reaches a query and
opened after; callers above this module only ever see plaintext in memory.
Every function takes an open async connection so a caller can make several
changes in one transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from paynode.storage import pii
from paynode.storage.keyring import Keyring
from paynode.storage.schema import api_keys, kyc_events, refresh_tokens, sessions, users

KycStatus = str  # 'unverified' | 'pending' | 'verified' | 'rejected'


class EmailTaken(Exception):
    pass


class Profile(msgspec.Struct, kw_only=True):
    """A user's personal data, in plaintext: only ever in memory."""

    email: str
    name: str | None = None
    phone: str | None = None
    birth_date: str | None = None
    address: dict[str, str] | None = None


class UserRecord(msgspec.Struct, kw_only=True):
    id: str
    profile: Profile
    kyc_status: KycStatus
    kyc_id_type: str | None
    kyc_id_last4: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


_PROFILE_COLUMNS = {
    "email": "email_ct",
    "name": "name_ct",
    "phone": "phone_ct",
    "birth_date": "birth_date_ct",
    "address": "address_ct",
}


def _seal_profile(keys: Keyring, user_id: str, profile: dict[str, object]) -> dict[str, object]:
    out: dict[str, object] = {}
    for field, value in profile.items():
        column = _PROFILE_COLUMNS[field]
        text = (
            None
            if value is None
            else (value if isinstance(value, str) else msgspec.json.encode(value).decode())
        )
        out[column] = pii.seal_opt(keys, text, "users", column, user_id)
        if field == "email":
            assert isinstance(value, str)
            out["email_index"] = email_index(keys, value)
    return out


def email_index(keys: Keyring, email: str) -> bytes:
    return pii.blind_index(keys, "email", pii.normalize_email(email))


def _record(keys: Keyring, row: sa.Row) -> UserRecord:
    m = row._mapping
    uid = m["id"]

    def get(column: str) -> str | None:
        return pii.open_opt(keys, m[column], "users", column, uid)

    address = get("address_ct")
    kyc_id = get("kyc_id_ct")
    return UserRecord(
        id=uid,
        profile=Profile(
            email=get("email_ct") or "",
            name=get("name_ct"),
            phone=get("phone_ct"),
            birth_date=get("birth_date_ct"),
            address=None if address is None else msgspec.json.decode(address),
        ),
        kyc_status=m["kyc_status"],
        kyc_id_type=m["kyc_id_type"],
        kyc_id_last4=None if kyc_id is None else kyc_id[-4:],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


# -- users ------------------------------------------------------------------------


async def create_user(
    conn: AsyncConnection, keys: Keyring, user_id: str, profile: Profile, password_hash: str | None
) -> None:
    values = _seal_profile(keys, user_id, msgspec.structs.asdict(profile))
    try:
        async with conn.begin_nested():
            await conn.execute(
                sa.insert(users).values(
                    id=user_id, password_hash=password_hash, kyc_status="unverified", **values
                )
            )
    except IntegrityError as e:
        if "email_index" in str(e.orig):
            raise EmailTaken from None
        raise


async def login_lookup(
    conn: AsyncConnection, keys: Keyring, email: str
) -> tuple[str, str | None] | None:
    """(user id, password hash) for an email, by its blind index."""
    row = (
        await conn.execute(
            sa.select(users.c.id, users.c.password_hash).where(
                users.c.email_index == email_index(keys, email)
            )
        )
    ).first()
    return None if row is None else (row[0], row[1])


async def get_user(conn: AsyncConnection, keys: Keyring, user_id: str) -> UserRecord | None:
    row = (await conn.execute(sa.select(users).where(users.c.id == user_id))).first()
    return None if row is None else _record(keys, row)


async def user_exists(conn: AsyncConnection, user_id: str) -> bool:
    q = sa.select(sa.literal(1)).where(users.c.id == user_id)
    return (await conn.execute(q)).first() is not None


async def update_profile(
    conn: AsyncConnection, keys: Keyring, user_id: str, changes: dict[str, object]
) -> bool:
    """Apply profile changes (a None value clears a field). False if there is no such user."""
    assert "email" not in changes or changes["email"] is not None, "email cannot be cleared"
    values = _seal_profile(keys, user_id, changes)
    if "name" in changes:
        values["sanctions_list"] = None  # a new name is screened again at its next payment
    try:
        async with conn.begin_nested():
            done = await conn.execute(
                sa.update(users)
                .where(users.c.id == user_id)
                .values(updated_at=sa.func.now(), **values)
            )
    except IntegrityError as e:
        if "email_index" in str(e.orig):
            raise EmailTaken from None
        raise
    return done.rowcount == 1


# -- sessions and refresh tokens -------------------------------------------------


async def create_session(conn: AsyncConnection, session_id: str, user_id: str) -> None:
    await conn.execute(sa.insert(sessions).values(id=session_id, user_id=user_id))


async def session_active(conn: AsyncConnection, session_id: str) -> bool:
    q = sa.select(sessions.c.revoked_at).where(sessions.c.id == session_id)
    row = (await conn.execute(q)).first()
    return row is not None and row[0] is None


# Every front caches credentials (api/auth/authenticate.py); a revocation tells them all,
# in the revoking transaction, so it reaches them exactly when it commits.
REVOKED_CHANNEL = "paynode_revoked"


async def _announce(conn: AsyncConnection, kind: str, object_id: str) -> None:
    await conn.execute(
        sa.text("SELECT pg_notify(:channel, :payload)"),
        {"channel": REVOKED_CHANNEL, "payload": f"{kind}:{object_id}"},
    )


async def revoke_session(conn: AsyncConnection, session_id: str, reason: str) -> None:
    await conn.execute(
        sa.update(sessions)
        .where(sessions.c.id == session_id, sessions.c.revoked_at.is_(None))
        .values(revoked_at=sa.func.now(), revoked_reason=reason)
    )
    await _announce(conn, "session", session_id)


async def store_refresh(
    conn: AsyncConnection, token_id: str, session_id: str, digest: bytes, ttl_s: int
) -> None:
    await conn.execute(
        sa.insert(refresh_tokens).values(
            id=token_id,
            session_id=session_id,
            secret_hash=digest,
            expires_at=sa.func.now() + sa.func.make_interval(0, 0, 0, 0, 0, 0, ttl_s),
        )
    )


class RefreshState(msgspec.Struct):
    session_id: str
    user_id: str
    secret_hash: bytes
    expired: bool
    used: bool
    session_revoked: bool


async def lock_refresh(conn: AsyncConnection, token_id: str) -> RefreshState | None:
    """The token's state, row-locked for the rest of the transaction (one use wins)."""
    q = (
        sa.select(
            refresh_tokens.c.session_id,
            sessions.c.user_id,
            refresh_tokens.c.secret_hash,
            refresh_tokens.c.expires_at <= sa.func.now(),
            refresh_tokens.c.used_at.is_not(None),
            sessions.c.revoked_at.is_not(None),
        )
        .join(sessions, sessions.c.id == refresh_tokens.c.session_id)
        .where(refresh_tokens.c.id == token_id)
        .with_for_update(of=refresh_tokens)
    )
    row = (await conn.execute(q)).first()
    return None if row is None else RefreshState(row[0], row[1], bytes(row[2]), *row[3:])


async def mark_refresh_used(conn: AsyncConnection, token_id: str) -> None:
    await conn.execute(
        sa.update(refresh_tokens)
        .where(refresh_tokens.c.id == token_id)
        .values(used_at=sa.func.now())
    )


# -- API keys --------------------------------------------------------------------


class ApiKeyRow(msgspec.Struct):
    id: str
    secret_hash: bytes
    name: str
    scopes: list[str]
    owner_user_id: str | None
    created_by: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None


async def create_api_key(
    conn: AsyncConnection,
    *,
    key_id: str,
    secret_hash: bytes,
    name: str,
    scopes: Sequence[str],
    owner_user_id: str | None,
    created_by: str,
) -> None:
    """A new key: the database stamps created_at; revoked_at starts NULL."""
    await conn.execute(
        sa.insert(api_keys).values(
            id=key_id, secret_hash=secret_hash, name=name, scopes=list(scopes),
            owner_user_id=owner_user_id, created_by=created_by,
        )
    )  # fmt: skip


async def get_api_key(conn: AsyncConnection, key_id: str) -> ApiKeyRow | None:
    row = (await conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id))).first()
    return None if row is None else ApiKeyRow(row[0], bytes(row[1]), *row[2:])


async def list_api_keys(conn: AsyncConnection, owner: str | None, limit: int) -> list[ApiKeyRow]:
    q = sa.select(api_keys).order_by(api_keys.c.id).limit(limit)
    if owner is not None:
        q = q.where(api_keys.c.owner_user_id == owner)
    return [ApiKeyRow(r[0], bytes(r[1]), *r[2:]) for r in await conn.execute(q)]


async def revoke_api_key(conn: AsyncConnection, key_id: str) -> None:
    await conn.execute(
        sa.update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=sa.func.now())
    )
    await _announce(conn, "api_key", key_id)


# -- KYC ---------------------------------------------------------------------------


class KycEvent(msgspec.Struct):
    from_status: str
    to_status: str
    actor: str
    reason: str | None
    at: dt.datetime


async def lock_kyc_status(conn: AsyncConnection, user_id: str) -> str | None:
    q = sa.select(users.c.kyc_status).where(users.c.id == user_id).with_for_update()
    row = (await conn.execute(q)).first()
    return None if row is None else row[0]


async def set_kyc(
    conn: AsyncConnection,
    keys: Keyring,
    user_id: str,
    *,
    from_status: str,
    to_status: str,
    actor: str,
    reason: str | None = None,
    id_type: str | None = None,
    id_number: str | None = None,
) -> None:
    """Move KYC status and append the audit event in the caller's transaction."""
    values: dict[str, object] = {"kyc_status": to_status, "updated_at": sa.func.now()}
    if id_number is not None:
        values["kyc_id_type"] = id_type
        values["kyc_id_ct"] = pii.seal(keys, id_number, "users", "kyc_id_ct", user_id)
    await conn.execute(sa.update(users).where(users.c.id == user_id).values(**values))
    await conn.execute(
        sa.insert(kyc_events).values(
            user_id=user_id,
            from_status=from_status,
            to_status=to_status,
            actor=actor,
            reason=reason,
        )
    )


async def kyc_history(conn: AsyncConnection, user_id: str, limit: int = 100) -> list[KycEvent]:
    q = (
        sa.select(
            kyc_events.c.from_status,
            kyc_events.c.to_status,
            kyc_events.c.actor,
            kyc_events.c.reason,
            kyc_events.c.at,
        )
        .where(kyc_events.c.user_id == user_id)
        .order_by(kyc_events.c.id)
        .limit(limit)
    )
    rows: Iterable[tuple[Any, ...]] = await conn.execute(q)
    return [KycEvent(*r) for r in rows]
