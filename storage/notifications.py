"""Notifications sent through the API, their messages and attempts, and users'
notification preferences, in PostgreSQL (migration 24).

A notification has one message per channel; the notifier's delivery loop
(actors/notify/messages.py) claims due messages, sends them and records each
attempt here. Every function takes an open async connection so a caller controls
the transaction.
"""

from __future__ import annotations

import datetime as dt

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paynode.domain.notify.preferences import DEFAULT, Preferences
from paynode.storage import pii
from paynode.storage.keyring import Keyring
from paynode.storage.rows import record

MAX_ATTEMPTS_LISTED = 50  # per message in a read: the newest ones
MAX_DEVICES = 10  # a user's devices a push goes to (the newest)
MAX_DETAIL = 500  # characters of a provider's answer kept per attempt

Data = dict[str, str | int | float | bool]


class NewNotification(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    user_id: str
    template: str
    type: str
    data: Data
    urgent: bool
    channels: list[str]
    created_by: str


class Attempt(msgspec.Struct, kw_only=True):
    attempt: int
    outcome: str  # sent | retry | failed | error
    detail: str
    duration_ms: int
    at: dt.datetime


class Message(msgspec.Struct, kw_only=True):
    id: int
    channel: str
    status: str  # pending | sent | failed | dead | suppressed
    reason: str | None
    attempts: int
    replays: int
    next_attempt_at: dt.datetime | None  # pending only
    sent_at: dt.datetime | None
    history: list[Attempt] = msgspec.field(default_factory=list)


class Notification(msgspec.Struct, kw_only=True):
    id: str
    user_id: str
    template: str
    type: str
    data: Data
    urgent: bool
    channels: list[str]
    created_at: dt.datetime
    messages: list[Message] = msgspec.field(default_factory=list)


class Conflict(Exception):
    """The id exists with other fields (a different notification, not a retry)."""


_N_COLS = "id, user_id, template, type, data, urgent, channels, created_at"


def _same(existing: Notification, new: NewNotification) -> bool:
    return (existing.user_id, existing.template, existing.type, existing.data, existing.urgent,
            existing.channels) == (new.user_id, new.template, new.type, new.data, new.urgent,
                                   new.channels)  # fmt: skip


async def create(conn: AsyncConnection, new: NewNotification) -> tuple[Notification, bool]:
    """Insert ``new`` and its messages (one per channel); an existing id with the same
    fields is found (False), with other fields :class:`Conflict`."""
    row = (
        await conn.execute(
            sa.text(
                "INSERT INTO notifications (id, user_id, template, type, data, urgent, channels,"
                " created_by) VALUES (:id, :u, :t, :ty, CAST(:d AS jsonb), :urg, :ch, :by)"
                f" ON CONFLICT (id) DO NOTHING RETURNING {_N_COLS}"
            ),
            {
                "id": new.id,
                "u": new.user_id,
                "t": new.template,
                "ty": new.type,
                "d": msgspec.json.encode(new.data).decode(),
                "urg": new.urgent,
                "ch": list(new.channels),
                "by": new.created_by,
            },
        )
    ).first()
    if row is None:
        existing = await get(conn, new.id)
        assert existing is not None  # rows are never deleted
        if not _same(existing, new):
            raise Conflict(new.id)
        return existing, False
    await conn.execute(
        sa.text("INSERT INTO notification_messages (notification_id, channel) VALUES (:n, :c)"),
        [{"n": new.id, "c": c} for c in new.channels],
    )
    found = await get(conn, new.id)
    assert found is not None
    return found, True


async def get(conn: AsyncConnection, notification_id: str) -> Notification | None:
    """The notification with its messages and each message's newest attempts."""
    row = (
        await conn.execute(
            sa.text(f"SELECT {_N_COLS} FROM notifications WHERE id = :id"), {"id": notification_id}
        )
    ).first()
    if row is None:
        return None
    n = record(Notification, tuple(row), messages=[])
    rows = await conn.execute(
        sa.text(
            "SELECT id, channel, status, reason, attempts, replays,"
            " CASE WHEN status = 'pending' THEN next_attempt_at END, sent_at"
            " FROM notification_messages WHERE notification_id = :id ORDER BY id"
        ),
        {"id": notification_id},
    )
    n.messages = [record(Message, tuple(r), history=[]) for r in rows]
    for m in n.messages:
        hist = await conn.execute(
            sa.text(
                "SELECT attempt, outcome, detail, duration_ms, at FROM ("
                "  SELECT * FROM notification_attempts WHERE message_id = :m"
                "  ORDER BY id DESC LIMIT :lim) a ORDER BY id"
            ),
            {"m": m.id, "lim": MAX_ATTEMPTS_LISTED},
        )
        m.history = [record(Attempt, tuple(r)) for r in hist]
    return n


# -- delivery --------------------------------------------------------------------------


class Due(msgspec.Struct, kw_only=True):
    """A claimed message with what sending it needs."""

    id: int
    channel: str
    attempts: int
    notification_id: str
    user_id: str
    template: str
    type: str
    data: Data
    urgent: bool


async def claim_due(conn: AsyncConnection, limit: int, lease_s: float) -> list[Due]:
    """Due pending messages, each moved ``lease_s`` ahead so no other pass takes it.

    SKIP LOCKED keeps two claimers apart; the lease brings a message whose sender
    died back without any bookkeeping (at least once: its attempt is made again).
    """
    rows = await conn.execute(
        sa.text(
            "WITH due AS (SELECT id FROM notification_messages"
            "  WHERE status = 'pending' AND next_attempt_at <= now()"
            "  ORDER BY next_attempt_at LIMIT :lim FOR UPDATE SKIP LOCKED)"
            " UPDATE notification_messages m"
            " SET next_attempt_at = now() + make_interval(secs => :lease), updated_at = now()"
            " FROM due, notifications n WHERE m.id = due.id AND n.id = m.notification_id"
            " RETURNING m.id, m.channel, m.attempts, n.id, n.user_id, n.template, n.type,"
            " n.data, n.urgent"
        ),
        {"lim": limit, "lease": lease_s},
    )
    return sorted((record(Due, tuple(r)) for r in rows), key=lambda d: d.id)


async def record_attempt(
    conn: AsyncConnection,
    message_id: int,
    attempt: int,
    outcome: str,
    detail: str,
    duration_ms: int,
    status: str,
    retry_in_s: float = 0.0,
    provider_id: str | None = None,
) -> None:
    """One attempt and the message's new state (``status``; pending: due in ``retry_in_s``)."""
    await conn.execute(
        sa.text(
            "INSERT INTO notification_attempts (message_id, attempt, outcome, detail, duration_ms)"
            " VALUES (:m, :a, :o, :d, :ms)"
        ),
        {
            "m": message_id,
            "a": attempt,
            "o": outcome,
            "d": detail[:MAX_DETAIL],
            "ms": max(0, duration_ms),
        },
    )
    await conn.execute(
        sa.text(
            "UPDATE notification_messages SET status = :s, attempts = :a, updated_at = now(),"
            " reason = CASE WHEN :s = 'sent' THEN NULL ELSE :d END,"
            " next_attempt_at = now() + make_interval(secs => :w),"
            " provider_id = coalesce(:pid, provider_id),"
            " sent_at = CASE WHEN :s = 'sent' THEN now() ELSE sent_at END WHERE id = :m"
        ),
        {
            "s": status,
            "a": attempt,
            "d": detail[:MAX_DETAIL],
            "w": retry_in_s,
            "pid": provider_id,
            "m": message_id,
        },
    )


async def suppress(conn: AsyncConnection, message_id: int, reason: str) -> None:
    await conn.execute(
        sa.text(
            "UPDATE notification_messages SET status = 'suppressed', reason = :r,"
            " updated_at = now() WHERE id = :m"
        ),
        {"r": reason, "m": message_id},
    )


async def defer(conn: AsyncConnection, message_id: int, until: dt.datetime, reason: str) -> None:
    """Leave the message pending until ``until`` (quiet hours); no attempt is counted."""
    await conn.execute(
        sa.text(
            "UPDATE notification_messages SET next_attempt_at = :t, reason = :r,"
            " updated_at = now() WHERE id = :m"
        ),
        {"t": until, "r": reason, "m": message_id},
    )


class Replayed(msgspec.Struct, kw_only=True):
    id: int
    notification_id: str
    status: str


async def replay(conn: AsyncConnection, message_id: int) -> tuple[str | None, Replayed | None]:
    """Make a dead or failed message pending again, due now, with a fresh attempt count.

    Answers (its status before, the replayed message): (None, None) if there is no
    such message, (status, None) if it is not dead or failed.
    """
    row = (
        await conn.execute(
            sa.text("SELECT status FROM notification_messages WHERE id = :m FOR UPDATE"),
            {"m": message_id},
        )
    ).first()
    if row is None:
        return None, None
    if row[0] not in ("dead", "failed"):
        return row[0], None
    out = (
        await conn.execute(
            sa.text(
                "UPDATE notification_messages SET status = 'pending', attempts = 0,"
                " replays = replays + 1, reason = NULL, next_attempt_at = now(),"
                " updated_at = now() WHERE id = :m RETURNING id, notification_id, status"
            ),
            {"m": message_id},
        )
    ).one()
    return row[0], record(Replayed, tuple(out))


# -- recipients and preferences ----------------------------------------------------------


class Device(msgspec.Struct, frozen=True):
    id: str
    platform: str
    token: str  # a secret: never logged


class Recipient(msgspec.Struct, frozen=True, kw_only=True):
    """Where a user can be reached, opened from sealed columns: in memory only."""

    email: str | None
    phone: str | None
    devices: tuple[Device, ...]


async def recipient(conn: AsyncConnection, keys: Keyring, user_id: str) -> Recipient | None:
    row = (
        await conn.execute(
            sa.text("SELECT email_ct, phone_ct FROM users WHERE id = :u"), {"u": user_id}
        )
    ).first()
    if row is None:
        return None
    email = pii.open_opt(keys, row[0], "users", "email_ct", user_id)
    phone = pii.open_opt(keys, row[1], "users", "phone_ct", user_id)
    rows = await conn.execute(
        sa.text(
            "SELECT id, platform, token_ct FROM devices WHERE user_id = :u AND deleted_at IS NULL"
            " ORDER BY created_at DESC, id LIMIT :lim"
        ),
        {"u": user_id, "lim": MAX_DEVICES},
    )
    devices = tuple(
        Device(r[0], r[1], pii.open_(keys, bytes(r[2]), "devices", "token_ct", r[0])) for r in rows
    )
    return Recipient(email=email or None, phone=phone or None, devices=devices)


_decode_prefs = msgspec.json.Decoder(Preferences).decode


async def preferences(conn: AsyncConnection, user_id: str) -> Preferences:
    """The user's preferences; the defaults if they never set any."""
    row = (
        await conn.execute(
            sa.text("SELECT prefs::text FROM notification_preferences WHERE user_id = :u"),
            {"u": user_id},
        )
    ).first()
    return DEFAULT if row is None else _decode_prefs(row[0])


async def save_preferences(conn: AsyncConnection, user_id: str, prefs: Preferences) -> None:
    await conn.execute(
        sa.text(
            "INSERT INTO notification_preferences (user_id, prefs) VALUES (:u, CAST(:p AS jsonb))"
            " ON CONFLICT (user_id) DO UPDATE SET prefs = excluded.prefs, updated_at = now()"
        ),
        {"u": user_id, "p": msgspec.json.encode(prefs).decode()},
    )
