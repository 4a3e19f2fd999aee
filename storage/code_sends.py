"""Sends of step-up codes (``otp_sends``) and SMS delivery status (``sms_status``).

A send row never holds the code or an address: the sender derives the code from
the sealed challenge when it sends, and reads the address from the user's
sealed profile then.
"""

from __future__ import annotations

import datetime as dt

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paynode.storage import pii
from paynode.storage.keyring import Keyring


class PendingSend(msgspec.Struct, frozen=True):
    id: int
    payment_id: str
    seq: int
    attempts: int


class SendState(msgspec.Struct, frozen=True):
    """What the resend limits look at: sends so far and when the last was asked for."""

    resends: int  # rows with seq > 0
    last_at: dt.datetime | None


async def queue(conn: AsyncConnection, payment_id: str, seq: int) -> None:
    await conn.execute(
        sa.text("INSERT INTO otp_sends (payment_id, seq) VALUES (:p, :s)"),
        {"p": payment_id, "s": seq},
    )


async def state(conn: AsyncConnection, payment_id: str) -> SendState:
    row = (
        await conn.execute(
            sa.text(
                "SELECT count(*) FILTER (WHERE seq > 0), max(created_at) FROM otp_sends"
                " WHERE payment_id = :p"
            ),
            {"p": payment_id},
        )
    ).one()
    return SendState(int(row[0]), row[1])


async def due(conn: AsyncConnection, limit: int) -> list[PendingSend]:
    rows = await conn.execute(
        sa.text(
            "SELECT id, payment_id, seq, attempts FROM otp_sends"
            " WHERE status = 'pending' AND due_at <= now() ORDER BY due_at, id LIMIT :n"
        ),
        {"n": limit},
    )
    return [PendingSend(r[0], r[1], r[2], r[3]) for r in rows]


async def next_due_s(conn: AsyncConnection) -> float | None:
    """Seconds until the earliest pending send is due (0 if one is), None if none."""
    row = (
        await conn.execute(
            sa.text(
                "SELECT extract(epoch FROM min(due_at) - now()) FROM otp_sends"
                " WHERE status = 'pending'"
            )
        )
    ).one()
    return None if row[0] is None else max(float(row[0]), 0.0)


async def mark(
    conn: AsyncConnection,
    send_id: int,
    status: str,
    result: str,
    channel: str | None = None,
    provider_id: str | None = None,
    retry_in_s: float = 0.0,
) -> None:
    await conn.execute(
        sa.text(
            "UPDATE otp_sends SET status = :st, result = :res, channel = :ch,"
            " provider_id = :pid, attempts = attempts + 1,"
            " due_at = now() + make_interval(secs => :wait),"
            " sent_at = CASE WHEN :st = 'sent' THEN now() END WHERE id = :id"
        ),
        {"id": send_id, "st": status, "res": result[:1000], "ch": channel,
         "pid": provider_id, "wait": retry_in_s},
    )  # fmt: skip


class SendRecord(msgspec.Struct, frozen=True):
    seq: int
    status: str
    channel: str | None
    result: str
    delivery: str | None  # the SMS provider's last status, if any


async def sends_of(conn: AsyncConnection, payment_id: str, limit: int = 50) -> list[SendRecord]:
    rows = await conn.execute(
        sa.text(
            "SELECT o.seq, o.status, o.channel, o.result, s.status FROM otp_sends o"
            " LEFT JOIN sms_status s ON s.provider_id = o.provider_id"
            " WHERE o.payment_id = :p ORDER BY o.seq LIMIT :n"
        ),
        {"p": payment_id, "n": limit},
    )
    return [SendRecord(r[0], r[1], r[2], r[3], r[4]) for r in rows]


async def record_sms_status(
    conn: AsyncConnection, provider_id: str, status: str, error_code: str | None
) -> None:
    """The provider's latest word on a message; a final state is not overwritten by a
    late intermediate one (callbacks may arrive out of order)."""
    await conn.execute(
        sa.text(
            "INSERT INTO sms_status (provider_id, status, error_code) VALUES (:p, :s, :e)"
            " ON CONFLICT (provider_id) DO UPDATE SET status = EXCLUDED.status,"
            " error_code = EXCLUDED.error_code, updated_at = now()"
            " WHERE sms_status.status NOT IN ('delivered', 'undelivered', 'failed', 'read')"
            "    OR EXCLUDED.status IN ('delivered', 'undelivered', 'failed', 'read')"
        ),
        {"p": provider_id[:64], "s": status, "e": error_code},
    )


async def sms_status(conn: AsyncConnection, provider_id: str) -> str | None:
    row = (
        await conn.execute(
            sa.text("SELECT status FROM sms_status WHERE provider_id = :p"), {"p": provider_id}
        )
    ).first()
    return None if row is None else row[0]


class DeviceAddress(msgspec.Struct, frozen=True):
    id: str
    platform: str  # apns | fcm
    token: str  # a secret: never logged


MAX_DEVICES = 20  # a code goes to at most this many of a user's devices


async def user_devices(conn: AsyncConnection, keys: Keyring, user_id: str) -> list[DeviceAddress]:
    rows = await conn.execute(
        sa.text(
            "SELECT id, platform, token_ct FROM devices WHERE user_id = :u AND deleted_at IS NULL"
            " ORDER BY created_at DESC LIMIT :n"
        ),
        {"u": user_id, "n": MAX_DEVICES},
    )
    return [
        DeviceAddress(r[0], r[1], pii.open_(keys, bytes(r[2]), "devices", "token_ct", r[0]))
        for r in rows
    ]
