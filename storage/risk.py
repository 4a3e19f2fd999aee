"""Risk state in PostgreSQL: what scoring reads, one-time codes, reviews, screening results.

Scoring reads a user's history with :func:`features` inside the transaction
that records the payment, after :func:`lock_user`: two payments of one user
are decided one after the other, so daily and monthly limits hold under
concurrency. Other users are not serialized with each other.
"""

from __future__ import annotations

import datetime as dt
import secrets

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from actors.risk.otp import Challenge

from . import pii
from .pii import Keyring
from .rows import record

_USER_LOCK = 0x7269736B  # "risk": namespace of the per-user advisory lock


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


async def lock_user(conn: AsyncConnection, user_id: str) -> None:
    await conn.execute(
        sa.text("SELECT pg_advisory_xact_lock(:ns, hashtext(:u))"), {"ns": _USER_LOCK, "u": user_id}
    )


# A payee or a device becomes known only by money that moved: a payment still waiting
# for its code must not vouch for the next one.
_MOVED = "('completed', 'pending', 'submitted', 'settled')"
# Limits count every payment not failed, waiting ones included (conservative).
_FEATURES = sa.text(
    """
    SELECT u.kyc_status,
           CASE WHEN u.sanctions_list = :list THEN u.sanctions_hit END,
           (SELECT count(*) FROM payments p WHERE p.owner_user_id = u.id
               AND p.created_at >= :day AND p.status <> 'failed'),
           (SELECT coalesce(sum(amount), 0) FROM payments p WHERE p.owner_user_id = u.id
               AND p.created_at >= :day AND p.status <> 'failed' AND p.currency = :cur),
           (SELECT coalesce(sum(amount), 0) FROM payments p WHERE p.owner_user_id = u.id
               AND p.created_at >= :month AND p.status <> 'failed' AND p.currency = :cur),
           EXISTS (SELECT 1 FROM payments p WHERE p.owner_user_id = u.id
               AND p.credit_account_id = :payee AND p.status IN {MOVED}),
           EXISTS (SELECT 1 FROM payments p WHERE p.owner_user_id = u.id
               AND p.status IN {MOVED}),
           EXISTS (SELECT 1 FROM payments p WHERE p.owner_user_id = u.id
               AND p.session_id = :session AND p.status IN {MOVED}),
           (SELECT count(*) FROM devices d WHERE d.user_id = u.id AND d.deleted_at IS NULL)
    FROM users u WHERE u.id = :u
    """.replace("{MOVED}", _MOVED)
)


def day_and_month(now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """Start of the UTC day and of the UTC month containing ``now``."""
    day = now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day, day.replace(day=1)


async def features(
    conn: AsyncConnection,
    user_id: str,
    *,
    session_id: str | None,
    payee_account: str,
    currency: str,
    list_version: str,
    now: dt.datetime,
) -> Features | None:
    """The user's standing (None if the user does not exist). Call after :func:`lock_user`."""
    day, month = day_and_month(now)
    params = {"u": user_id, "day": day, "month": month, "cur": currency, "payee": payee_account,
              "session": session_id or "", "list": list_version}  # fmt: skip
    row = (await conn.execute(_FEATURES, params)).first()
    return None if row is None else Features(*row)


# -- screening results ----------------------------------------------------------------


async def user_screening(conn: AsyncConnection, user_id: str, list_version: str) -> bool | None:
    """Whether the user matched the current list; None if not screened against it."""
    row = (
        await conn.execute(
            sa.text(
                "SELECT CASE WHEN sanctions_list = :l THEN sanctions_hit END FROM users"
                " WHERE id = :u"
            ),
            {"u": user_id, "l": list_version},
        )
    ).first()
    return None if row is None else row[0]


async def set_user_screening(
    conn: AsyncConnection, user_id: str, hit: bool, list_version: str
) -> None:
    await conn.execute(
        sa.text("UPDATE users SET sanctions_hit = :h, sanctions_list = :l WHERE id = :u"),
        {"u": user_id, "h": hit, "l": list_version},
    )


async def bank_screening(conn: AsyncConnection, bank_id: str, list_version: str) -> bool | None:
    row = (
        await conn.execute(
            sa.text(
                "SELECT CASE WHEN sanctions_list = :l THEN sanctions_hit END FROM bank_accounts"
                " WHERE id = :b"
            ),
            {"b": bank_id, "l": list_version},
        )
    ).first()
    return None if row is None else row[0]


async def set_bank_screening(
    conn: AsyncConnection, bank_id: str, hit: bool, list_version: str
) -> None:
    await conn.execute(
        sa.text("UPDATE bank_accounts SET sanctions_hit = :h, sanctions_list = :l WHERE id = :b"),
        {"b": bank_id, "h": hit, "l": list_version},
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
