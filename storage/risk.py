"""Risk state in PostgreSQL: what scoring reads, one-time codes, reviews, screening results.

The gate reads a user's standing with :func:`take_usage`, one statement in the
transaction that records the payment. It bumps the user's ``risk_usage`` row
by this payment and returns the totals before it: the upsert locks that row
until commit, so two payments of one user are decided one after the other and
daily and monthly limits hold under concurrency, while other users never wait.
A payment that fails gives its usage back (:func:`release_usage`).
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paynode.domain.risk.otp import Challenge
from paynode.storage import pii
from paynode.storage.pii import Keyring
from paynode.storage.rows import record


class Features(msgspec.Struct, frozen=True):
    """One user's standing before a payment (the payment itself excluded)."""

    kyc_status: str
    sanctions_hit: bool | None  # None: not screened against the current list
    payments_today: int
    amount_today: int  # minor units, in the limits' currency
    amount_month: int
    paid_payee_before: bool
    paid_before: bool
    paid_from_session: bool
    devices: int  # registered devices: where a one-time code can be sent
    payee_hit: bool | None  # the payee's owner, like sanctions_hit (None also: no owner)
    bank_hit: bool | None  # the bank account's holder (None also: no bank account)


# A payee or a device becomes known only by money that moved: a payment still waiting
# for its code must not vouch for the next one.
_MOVED = "('completed', 'pending', 'submitted', 'settled')"
# The upsert sees the latest committed row even under READ COMMITTED (it locks it
# first), so the totals are exact; the EXISTS reads use the statement's snapshot and
# can only miss a payment committed meanwhile, which scores higher, never lower.
# A clock a little behind another front's keeps adding to the later day.
_TAKE = sa.text(
    f"""
    WITH usage AS (
        INSERT INTO risk_usage AS r (user_id, day, day_count, day_amount, month, month_amount)
        VALUES (:u, :day, :n, :amt, :month, :amt)
        ON CONFLICT (user_id) DO UPDATE SET
            day_count = CASE WHEN r.day >= :day THEN r.day_count + :n ELSE :n END,
            day_amount = CASE WHEN r.day >= :day THEN r.day_amount + :amt ELSE :amt END,
            month_amount = CASE WHEN r.month >= :month THEN r.month_amount + :amt ELSE :amt END,
            day = greatest(r.day, :day),
            month = greatest(r.month, :month)
        RETURNING day_count, day_amount, month_amount
    )
    SELECT u.kyc_status,
           CASE WHEN u.sanctions_list = :list THEN u.sanctions_hit END,
           usage.day_count - :n, usage.day_amount - :amt, usage.month_amount - :amt,
           EXISTS (SELECT 1 FROM payments p WHERE p.owner_user_id = u.id
               AND p.credit_account_id = :payee AND p.status IN {_MOVED}),
           EXISTS (SELECT 1 FROM payments p WHERE p.owner_user_id = u.id
               AND p.status IN {_MOVED}),
           EXISTS (SELECT 1 FROM payments p WHERE p.session_id = :session
               AND p.owner_user_id = u.id AND p.status IN {_MOVED}),
           (SELECT count(*) FROM devices d WHERE d.user_id = u.id AND d.deleted_at IS NULL),
           (SELECT CASE WHEN pu.sanctions_list = :list THEN pu.sanctions_hit END
               FROM users pu WHERE pu.id = :payee_owner),
           (SELECT CASE WHEN b.sanctions_list = :list THEN b.sanctions_hit END
               FROM bank_accounts b WHERE b.id = :bank)
    FROM users u CROSS JOIN usage WHERE u.id = :u
    """
)
_RELEASE = sa.text(
    """
    UPDATE risk_usage SET
        day_count = greatest(0, day_count - CASE WHEN day = :day THEN :n ELSE 0 END),
        day_amount = greatest(0, day_amount - CASE WHEN day = :day THEN :amt ELSE 0 END),
        month_amount = greatest(0, month_amount - CASE WHEN month = :month THEN :amt ELSE 0 END)
    WHERE user_id = :u
    """
)


def day_and_month(now: dt.datetime) -> tuple[dt.date, dt.date]:
    """The UTC day and the first day of the UTC month containing ``now``."""
    day = now.astimezone(dt.UTC).date()
    return day, day.replace(day=1)


async def take_usage(
    conn: AsyncConnection,
    user_id: str,
    *,
    amount: int,
    session_id: str | None,
    payee_account: str,
    list_version: str,
    now: dt.datetime,
    count: int = 1,
    payee_owner: str | None = None,
    bank_id: str | None = None,
) -> Features | None:
    """Count ``count`` sends of ``amount`` in all (minor units of the limits' currency, 0
    for another) toward the user's usage and return their standing before them; None if
    no such user (then nothing was counted that outlives the caller's rollback)."""
    day, month = day_and_month(now)
    params = {"u": user_id, "day": day, "month": month, "amt": amount, "payee": payee_account,
              "session": session_id or "", "list": list_version, "n": count,
              "payee_owner": payee_owner or "", "bank": bank_id or ""}  # fmt: skip
    row: tuple[Any, ...] | None = (await conn.execute(_TAKE, params)).first()
    return None if row is None else Features(*row)


async def release_usage(
    conn: AsyncConnection, user_id: str, amount: int, made_at: dt.datetime, count: int = 1
) -> None:
    """Give back what failed sends made on ``made_at`` counted toward the usage."""
    day, month = day_and_month(made_at)
    await conn.execute(
        _RELEASE, {"u": user_id, "day": day, "month": month, "amt": amount, "n": count}
    )


# -- screening results ----------------------------------------------------------------


_SCREENED = ("users", "bank_accounts")  # tables holding a screened name


async def screening(
    conn: AsyncConnection, table: str, row_id: str, list_version: str
) -> bool | None:
    """Whether the row's name matched the current list; None if not screened against it."""
    assert table in _SCREENED, table
    row = (
        await conn.execute(
            sa.text(
                f"SELECT CASE WHEN sanctions_list = :l THEN sanctions_hit END FROM {table}"
                " WHERE id = :id"
            ),
            {"id": row_id, "l": list_version},
        )
    ).first()
    return None if row is None else row[0]


async def set_screening(
    conn: AsyncConnection, table: str, row_id: str, hit: bool, list_version: str
) -> None:
    assert table in _SCREENED, table
    await conn.execute(
        sa.text(f"UPDATE {table} SET sanctions_hit = :h, sanctions_list = :l WHERE id = :id"),
        {"id": row_id, "h": hit, "l": list_version},
    )


# -- one-time codes -------------------------------------------------------------------

_SECRET = ("otp_challenges", "secret_ct")


async def store_challenge(
    conn: AsyncConnection, keys: Keyring, payment_id: str, ch: Challenge
) -> None:
    sealed = pii.seal(keys, ch.secret.hex(), *_SECRET, payment_id)
    await conn.execute(
        sa.text(
            "INSERT INTO otp_challenges (payment_id, secret_ct, issued_at) VALUES (:p, :s, :t)"
        ),
        {"p": payment_id, "s": sealed, "t": ch.issued_at},
    )


async def load_challenge(
    conn: AsyncConnection, keys: Keyring, payment_id: str, lock: bool = False
) -> Challenge | None:
    """The payment's challenge; ``lock`` holds its row until commit (one check at a time)."""
    row = (
        await conn.execute(
            sa.text(
                "SELECT secret_ct, issued_at, attempts, used FROM otp_challenges"
                " WHERE payment_id = :p" + (" FOR UPDATE" if lock else "")
            ),
            {"p": payment_id},
        )
    ).first()
    if row is None:
        return None
    secret = bytes.fromhex(pii.open_(keys, bytes(row[0]), *_SECRET, payment_id))
    return Challenge(secret, row[1], row[2], row[3])


async def challenge_state(conn: AsyncConnection, payment_id: str) -> tuple[float, int] | None:
    """(issued_at, attempts) of the payment's challenge, without opening its secret."""
    row = (
        await conn.execute(
            sa.text("SELECT issued_at, attempts FROM otp_challenges WHERE payment_id = :p"),
            {"p": payment_id},
        )
    ).first()
    return None if row is None else (row[0], row[1])


async def save_challenge(conn: AsyncConnection, payment_id: str, ch: Challenge) -> None:
    await conn.execute(
        sa.text(
            "UPDATE otp_challenges SET attempts = :a, used = :u, version = version + 1"
            " WHERE payment_id = :p"
        ),
        {"p": payment_id, "a": ch.attempts, "u": ch.used},
    )


# -- reviews --------------------------------------------------------------------------


class Review(msgspec.Struct, kw_only=True):
    id: str
    kind: str  # payment | user | bank_account
    subject_id: str
    user_id: str | None
    status: str  # open | approved | rejected
    reason: str
    matches: str  # JSON list of the listed entries that matched
    created_at: dt.datetime
    decided_at: dt.datetime | None
    decided_by: str | None
    note: str | None


_REVIEW_COLS = ", ".join(Review.__struct_fields__)


async def open_review(
    conn: AsyncConnection, kind: str, subject_id: str, user_id: str | None, reason: str,
    matches: list[dict],
) -> Review:  # fmt: skip
    """Open a review of ``subject_id`` unless one is open already (then return that one)."""
    params = {"id": "rev_" + secrets.token_hex(16), "k": kind, "s": subject_id, "u": user_id,
              "r": reason, "m": msgspec.json.encode(matches).decode()}  # fmt: skip
    row = (
        await conn.execute(
            sa.text(
                "INSERT INTO reviews (id, kind, subject_id, user_id, status, reason, matches)"
                " VALUES (:id, :k, :s, :u, 'open', :r, CAST(:m AS jsonb))"
                " ON CONFLICT (kind, subject_id) WHERE status = 'open' DO NOTHING"
                f" RETURNING {_REVIEW_COLS.replace('matches', 'matches::text')}"
            ),
            params,
        )
    ).first()
    if row is not None:
        return record(Review, row)
    found = await open_review_of(conn, kind, subject_id)
    assert found is not None
    return found


_SELECT_REVIEW = f"SELECT {_REVIEW_COLS.replace('matches', 'matches::text')} FROM reviews"


async def open_review_of(conn: AsyncConnection, kind: str, subject_id: str) -> Review | None:
    row = (
        await conn.execute(
            sa.text(_SELECT_REVIEW + " WHERE kind = :k AND subject_id = :s AND status = 'open'"),
            {"k": kind, "s": subject_id},
        )
    ).first()
    return None if row is None else record(Review, row)


async def get_review(conn: AsyncConnection, review_id: str, lock: bool = False) -> Review | None:
    row = (
        await conn.execute(
            sa.text(_SELECT_REVIEW + " WHERE id = :id" + (" FOR UPDATE" if lock else "")),
            {"id": review_id},
        )
    ).first()
    return None if row is None else record(Review, row)


async def list_reviews(
    conn: AsyncConnection, status: str | None, after: str | None, limit: int
) -> list[Review]:
    rows = await conn.execute(
        sa.text(
            _SELECT_REVIEW + " WHERE (CAST(:st AS text) IS NULL OR status = :st)"
            " AND (CAST(:after AS text) IS NULL OR id > :after) ORDER BY id LIMIT :n"
        ),
        {"st": status, "after": after, "n": limit},
    )
    return [record(Review, r) for r in rows]


async def decide(
    conn: AsyncConnection, review_id: str, status: str, by: str, note: str | None
) -> Review:
    row = (
        await conn.execute(
            sa.text(
                "UPDATE reviews SET status = :st, decided_at = now(), decided_by = :by,"
                " note = :note WHERE id = :id"
                f" RETURNING {_REVIEW_COLS.replace('matches', 'matches::text')}"
            ),
            {"id": review_id, "st": status, "by": by, "note": note},
        )
    ).one()
    return record(Review, row)
